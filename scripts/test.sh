#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, the Rust test suites (which start their
# own PostgreSQL from the machine's binaries), and the offline chart and Dockerfile checks.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "pinned OpenCode for the real-OpenCode e2e suite"
scripts/install-opencode.sh

step "cargo test"
cargo test --workspace --locked

step "README quick start, as written (the api-server binary cargo test built)"
scripts/check-quickstart.sh

step "OpenAPI document against the api-server (schemathesis, all checks, stateful)"
scripts/check-openapi.sh

if [ -d charts/terarchitect ] || [ -f Dockerfile.agent ]; then
  step "offline tools (helm, kubernetes-validate, hadolint)"
  scripts/install-tools.sh
  export PATH="$PWD/.tools/bin:$PATH"
fi

if [ -d charts/terarchitect ]; then
  step "chart checks"
  scripts/check-chart.sh
fi

for dockerfile in Dockerfile.*; do
  [ -f "$dockerfile" ] || continue
  step "hadolint $dockerfile"
  hadolint "$dockerfile"
done

step "all checks passed"
