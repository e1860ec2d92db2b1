#!/usr/bin/env bash
# Runs every test: formatting and lints, the native suite (reference-fixture parity, formats,
# bad input, pipeline, CLI), and the wasm32 build with its tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/jnana/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { echo; echo "=== $* ($(date +%T))"; }

step "prerequisites"
bash scripts/setup.sh
bash scripts/fetch-test-assets.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy -p jnana --target wasm32-unknown-unknown --all-targets --release -- -D warnings

step "native tests"
cargo test --workspace --release

step "wasm32 build and browser tests (headless Chromium)"
cargo build -p jnana --target wasm32-unknown-unknown --release
CHROMEDRIVER=$(command -v chromedriver) \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
WASM_BINDGEN_TEST_TIMEOUT=300 \
  cargo test -p jnana --target wasm32-unknown-unknown --release --test wasm

step "all tests passed"
