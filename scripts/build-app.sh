#!/usr/bin/env bash
# Builds the static app into dist/ with trunk (release). Needs scripts/setup.sh's tools.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/jnana/target}
# trunk is told wasm-opt "version_132" (Trunk.toml); this is where that one lives.
export PATH="$PWD/tests/e2e/node_modules/.bin:$HOME/.cargo/bin:$PATH"
trunk build --release
