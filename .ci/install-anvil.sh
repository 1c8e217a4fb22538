#!/usr/bin/env bash
# Install anvil (Foundry's local EVM node) into .cache/npm, idempotently.
#
# The EVM rail's integration tests (tests/integration/test_evm_rail.py) look
# for anvil at $REMEMBRANCER_ANVIL or .cache/npm/node_modules/.bin/anvil.
# The npm package @foundry-rs/anvil ships the native binary in a per-platform
# optional dependency (@foundry-rs/anvil-<os>-<arch>), so no download happens
# outside the npm registry; its postinstall script is not needed (and npm 11
# does not run it by default), hence --ignore-scripts.
#
# Usage: bash .ci/install-anvil.sh        (ANVIL_VERSION overrides the pin)
set -euo pipefail
cd "$(dirname "$0")/.."

ANVIL_VERSION="${ANVIL_VERSION:-1.7.1}"
PREFIX=".cache/npm"
BIN="$PREFIX/node_modules/.bin/anvil"

installed_version() {
  "$BIN" --version 2>/dev/null | sed -n 's/^anvil Version: \([0-9][0-9.]*\).*/\1/p' | head -1
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$ANVIL_VERSION" ]; then
  echo "anvil $ANVIL_VERSION already installed at $BIN"
  exit 0
fi

command -v npm >/dev/null || { echo "install-anvil: npm is not installed (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --ignore-scripts --loglevel=error \
  "@foundry-rs/anvil@$ANVIL_VERSION"

got="$(installed_version)"
if [ "$got" != "$ANVIL_VERSION" ]; then
  echo "install-anvil: $BIN does not run as anvil $ANVIL_VERSION (got '${got:-nothing}')" >&2
  exit 1
fi
echo "anvil $got installed at $BIN"
