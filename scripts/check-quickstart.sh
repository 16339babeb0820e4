#!/usr/bin/env bash
# Runs the README's quick start as written: the fenced shell block(s) after a
# `<!-- quickstart ... -->` line in README.md, against the built api-server started on its
# embedded default (an empty temporary directory, an empty environment, a free loopback port),
# then checks the outcome: the ticket's job is queued and the generated secret key file is
# owner-only. When the binary knows TERARCHITECT_ADMIN_TOKEN, the block runs a second time
# against a server with an admin token, with the token in the block's environment.
# Only the address changes: `localhost:5010` in the block becomes the server's address.
# Usage: scripts/check-quickstart.sh [api-server binary]
#   (default: $CARGO_TARGET_DIR/debug/terarchitect-api-server, or target/debug/…)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/terarchitect-api-server}
[ -x "$bin" ] || { echo "no api-server binary at $bin (cargo build -p terarchitect-api-server)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "the quick start needs $tool" >&2; exit 1; }
done

# The marked blocks: from the fence after a `<!-- quickstart` line to its closing fence.
block=$(awk '
  /^<!-- quickstart/ { armed = 1; next }
  armed && /^```/ && !inside { inside = 1; next }
  inside && /^```/ { inside = 0; armed = 0; next }
  inside { print }
' README.md)
[ -n "$block" ] || { echo "README.md has no <!-- quickstart --> block" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the binary in an empty directory with only the given environment; sets $addr.
start_server() {
  local dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && exec env -i PATH="$PATH" TERARCHITECT_BIND=127.0.0.1:0 "$@" "$bin" >server.log 2>&1) &
  server_pid=$!
  addr=
  for _ in $(seq 300); do
    addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$dir/server.log" 2>/dev/null | head -1 | cut -d= -f2) || true
    [ -n "$addr" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the api-server did not start:" >&2; cat "$dir/server.log" >&2; exit 1
}

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

# Runs the block in a fresh bash (errors and failed pipes stop it) and checks the queued job.
run_block() {
  local dir=$1 auth=${2:-}
  local script="${block//localhost:5010/$addr}"
  printf '%s\n%s\n' "$script" 'printf "%s %s\n" "$PROJECT" "$TICKET" >"$QUICKSTART_IDS"' >"$dir/quickstart.sh"
  if ! env -i PATH="$PATH" HOME="$dir" QUICKSTART_IDS="$dir/ids" ${auth:+TERARCHITECT_ADMIN_TOKEN="$auth"} \
      bash -euo pipefail "$dir/quickstart.sh" >"$dir/quickstart.out" 2>&1; then
    echo "the quick start failed:" >&2; cat "$dir/quickstart.out" >&2
    echo "--- server log" >&2; cat "$dir/server.log" >&2; exit 1
  fi
  read -r project ticket <"$dir/ids"
  local jobs
  jobs=$(curl -sS --fail-with-body ${auth:+-H "Authorization: Bearer $auth"} \
    "http://$addr/api/projects/$project/tickets/$ticket/jobs")
  if ! jq -e 'length == 1 and .[0].status == "pending" and .[0].kind == "ticket"' <<<"$jobs" >/dev/null; then
    echo "expected one pending ticket job, got: $jobs" >&2; exit 1
  fi
  echo "ok: project $project, ticket $ticket, job $(jq -r '.[0].job_id' <<<"$jobs") pending"
}

check_key_file() {
  local key=$1/terarchitect.db.secret-key
  [ "$(ls -l "$key" | cut -c1-10)" = "-rw-------" ] || { echo "$key is not mode 600" >&2; exit 1; }
  grep -Eq '^[0-9a-f]{64}$' "$key" || { echo "$key does not hold a 64-hex key" >&2; exit 1; }
}

echo "quick start on the embedded default"
start_server "$work/open"
run_block "$work/open"
check_key_file "$work/open"
stop_server

if "$bin" --help | grep -q TERARCHITECT_ADMIN_TOKEN; then
  echo "quick start with an admin token"
  token=quickstart-admin-token-0123456789
  start_server "$work/admin" TERARCHITECT_ADMIN_TOKEN="$token"
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/api/projects")
  [ "$status" = 401 ] || { echo "without the token /api/projects answered $status, not 401" >&2; exit 1; }
  # The landing document and the probes stay public.
  for path in / /health; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr$path")
    [ "$status" = 200 ] || { echo "without the token $path answered $status, not 200" >&2; exit 1; }
  done
  run_block "$work/admin" "$token"
  stop_server
fi
