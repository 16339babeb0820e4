#!/usr/bin/env bash
# Checks that the api-server's OpenAPI document tells the truth: schemathesis (PyPI, pinned,
# installed into .tools/schemathesis) generates requests from `/api/openapi.json` and runs every
# check against the built api-server, started on SQLite in a temporary directory on a free
# loopback port with an admin token and a worker key: first the examples, coverage and fuzzing
# phases, then the stateful phase, which follows the document's links (project -> tickets ->
# jobs) for a fixed time. Any finding fails the step.
# Configuration: api-server/schemathesis.toml (which credential each security scheme takes).
# Usage: scripts/check-openapi.sh [api-server binary] [schemathesis run options…]
#   (default binary: $CARGO_TARGET_DIR/debug/terarchitect-api-server, or target/debug/…;
#   e.g. `scripts/check-openapi.sh --phases stateful`)
#   ST_MAX_EXAMPLES (cases per operation; default: api-server/schemathesis.toml),
#   ST_STATEFUL_SECONDS (time of the stateful phase, default 60) and ST_SEED (default: random)
#   tune the run; ST_SERVER_LOG=<file> keeps the api-server's log.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bin=${CARGO_TARGET_DIR:-target}/debug/terarchitect-api-server
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then bin=$1; shift; fi
[ -x "$bin" ] || { echo "no api-server binary at $bin (cargo build -p terarchitect-api-server)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# schemathesis in its own virtual environment (its dependencies stay apart from the chart tools').
SCHEMATHESIS_VERSION=4.32.5
venv=$repo/.tools/schemathesis
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "${ST_SERVER_LOG:-}" ]; then cp "$work/server.log" "$ST_SERVER_LOG" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

admin_token=openapi-check-admin-$RANDOM$RANDOM
worker_key=openapi-check-worker-$RANDOM$RANDOM
webhook_secret=openapi-check-webhook-$RANDOM$RANDOM
# GitHub is a closed local port: the review endpoints that call it answer 502 at once; the PR
# poller is off.
(cd "$work" && exec env -i PATH="$PATH" TERARCHITECT_BIND=127.0.0.1:0 RUST_LOG=warn,terarchitect_api_server=info \
  TERARCHITECT_ADMIN_TOKEN="$admin_token" TERARCHITECT_WORKER_API_KEY="$worker_key" \
  GITHUB_WEBHOOK_SECRET="$webhook_secret" GITHUB_API_URL=http://127.0.0.1:9 TERARCHITECT_PR_POLL_SEC=0 \
  "$bin" >server.log 2>&1) &
server_pid=$!
addr=
for _ in $(seq 300); do
  addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$work/server.log" 2>/dev/null | head -1 | cut -d= -f2) || true
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$addr" ] || { echo "the api-server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

# A project on a GitHub repository with a ticket that has a pull request, for the pull request
# endpoints (see api-server/schemathesis.toml); sets $pr_project and $pr_ticket.
seed_pull_request() {
  local api=http://$addr json="Content-Type: application/json" project ticket
  project=$(curl -sS --fail-with-body -H "Authorization: Bearer $admin_token" -H "$json" "$api/api/projects" \
    -d '{"name": "openapi-check", "github_url": "https://github.com/acme/shop", "is_existing_repo": true}')
  pr_project=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$project")
  ticket=$(curl -sS --fail-with-body -H "Authorization: Bearer $admin_token" -H "$json" \
    "$api/api/projects/$pr_project/tickets" -d '{"title": "With a pull request", "column_id": "backlog"}')
  pr_ticket=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$ticket")
  curl -sS --fail-with-body -o /dev/null -H "Authorization: Bearer $worker_key" -H "$json" \
    "$api/api/projects/$pr_project/tickets/$pr_ticket/complete" \
    -d '{"pr_url": "https://github.com/acme/shop/pull/7", "pr_number": 7}'
}
seed_pull_request

# Runs schemathesis with every check against the server; extra arguments are added.
schemathesis_run() {
  HYPOTHESIS_STORAGE_DIRECTORY=$venv/hypothesis ST_ADMIN_TOKEN=$admin_token ST_WORKER_KEY=$worker_key \
    ST_WEBHOOK_SECRET=$webhook_secret ST_PR_PROJECT=$pr_project ST_PR_TICKET=$pr_ticket \
    "$venv/bin/schemathesis" --config-file "$repo/api-server/schemathesis.toml" run \
    "http://$addr/api/openapi.json" --checks all --workers 1 \
    ${ST_SEED:+--seed "$ST_SEED"} "$@"
}

cd "$repo"
status=0
# Examples, coverage and fuzzing: a fixed number of cases per operation.
echo "== schemathesis: examples, coverage, fuzzing"
schemathesis_run --phases examples,coverage,fuzzing \
  ${ST_MAX_EXAMPLES:+--max-examples "$ST_MAX_EXAMPLES"} \
  --report junit --report-dir "$work/report-fuzzing" "$@" || status=$?
# Stateful: scenarios along the document's links (project -> tickets -> jobs) for a fixed time,
# on the same server (the data of the first run stays).
if [ "$status" = 0 ]; then
  echo "== schemathesis: stateful (${ST_STATEFUL_SECONDS:-60} s)"
  schemathesis_run --phases stateful --max-time "${ST_STATEFUL_SECONDS:-60}" \
    --report junit --report-dir "$work/report-stateful" "$@" || status=$?
fi
if [ "$status" != 0 ]; then
  echo "--- api-server log (errors only)" >&2
  grep -E 'ERROR|panicked' "$work/server.log" >&2 || true
  exit "$status"
fi
