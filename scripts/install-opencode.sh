#!/usr/bin/env bash
# Installs the pinned OpenCode (npm `opencode-ai`, the version of Dockerfile.agent) into
# .tools/opencode for the real-OpenCode end-to-end suite (e2e/tests/real_opencode.rs), which finds
# it at .tools/opencode/node_modules/.bin/opencode (or wherever OPENCODE_BIN points). Idempotent.
#
# When it cannot be installed (no npm, registry unreachable, broken binary) it writes the reason
# to .tools/opencode/INSTALL_FAILED and exits 0: the suite then skips with that reason (loudly),
# and only then; without the marker a missing binary fails the suite under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${OPENCODE_VERSION:-$(sed -n 's/^ARG OPENCODE_VERSION=//p' Dockerfile.agent)}"
VERSION="${VERSION:-1.18.33}"
DIR="$PWD/.tools/opencode"
BIN="$DIR/node_modules/.bin/opencode"
MARKER="$DIR/INSTALL_FAILED"
mkdir -p "$DIR"

installed() { [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null)" = "$VERSION" ]; }

fail() {
  echo "install-opencode: $*" | tee "$MARKER" >&2
  echo "install-opencode: the real-OpenCode e2e suite will be skipped" >&2
  exit 0
}

if installed; then
  rm -f "$MARKER"
  echo "opencode $VERSION already installed ($BIN)"
  exit 0
fi
command -v npm >/dev/null || fail "npm is not installed; cannot install opencode-ai@$VERSION"
# npm 11 warns that the package's install script was not run; the platform package's binary
# (a dependency of opencode-ai) works without it.
if ! log=$(npm install --prefix "$DIR" --no-audit --no-fund --no-save --loglevel=error \
  "opencode-ai@$VERSION" 2>&1); then
  fail "npm install opencode-ai@$VERSION failed: $(printf '%s' "$log" | tail -n 5)"
fi
installed || fail "opencode-ai@$VERSION installed, but '$BIN --version' does not print $VERSION"
rm -f "$MARKER"
echo "installed opencode $VERSION ($BIN)"
