#!/usr/bin/env bash
# Runs every test: formatting and lints, the native suite (reference-fixture parity, formats,
# bad input, pipeline, CLI), the wasm32 build with its tests in headless Chromium, and the app
# end to end in headless Chromium (built with trunk, compared with the native CLI).
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
cargo clippy -p jnana --target wasm32-unknown-unknown --all-targets --release --features relaxed-simd -- -D warnings
cargo clippy -p jnana-app --target wasm32-unknown-unknown --release -- -D warnings
cargo clippy -p jnana-app --target wasm32-unknown-unknown --release --features relaxed-simd -- -D warnings
cargo clippy -p jnana-gpu --target wasm32-unknown-unknown --release -- -D warnings

step "native tests"
cargo test --workspace --release

step "wasm32 build and browser tests (headless Chromium)"
cargo build -p jnana --target wasm32-unknown-unknown --release
CHROMEDRIVER=$(command -v chromedriver) \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
WASM_BINDGEN_TEST_TIMEOUT=300 \
  cargo test -p jnana --target wasm32-unknown-unknown --release --test wasm
# The same in the build for browsers with relaxed SIMD (its own Q4_K kernel).
CHROMEDRIVER=$(command -v chromedriver) \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
WASM_BINDGEN_TEST_TIMEOUT=300 \
  cargo test -p jnana --target wasm32-unknown-unknown --release --features relaxed-simd --test wasm

step "the app end to end (trunk build, headless Chromium)"
bash scripts/build-app.sh
e2e=$(mktemp -d)
trap 'rm -rf "$e2e"' EXIT
jnana="$CARGO_TARGET_DIR/release/jnana"
# Random Phi-2/CLIP/projector with Q4_0 blocks (the kernels native x86 and wasm SIMD share, so
# ids can be compared exactly) and the real Whisper tiny.en, so the browser hears real words.
"$jnana" synth --preset tiny --quant q4_0 --out "$e2e/synth" >/dev/null
"$jnana" convert ct2-whisper .cache/test-assets/whisper-tiny.en --out "$e2e/whisper-tiny.en" --dtype f16 >/dev/null
node tests/e2e/make-bundle.mjs "$e2e/synth" "$e2e/whisper-tiny.en" "$e2e/bundles/tiny"
# The same with Q8_0 blocks, which our SIMD128 kernel tiles: the two CPU workers split them.
"$jnana" synth --preset tiny --quant q8_0 --out "$e2e/synth-q8_0" >/dev/null
node tests/e2e/make-bundle.mjs "$e2e/synth-q8_0" "$e2e/whisper-tiny.en" "$e2e/bundles/tiny-q8_0"
espeak-ng -w "$e2e/question.wav" "What is the colour of the bus in this picture?"
JNANA_CLI="$jnana" JNANA_DIST=dist JNANA_BUNDLE="$e2e/bundles/tiny" JNANA_BUNDLE_Q8="$e2e/bundles/tiny-q8_0" \
JNANA_ARTIFACTS=target/e2e-artifacts \
JNANA_IMAGE=tests/fixtures/clip_vision/image.png JNANA_WAV="$e2e/question.wav" \
  node --test --test-concurrency=1 tests/e2e/app.test.mjs

step "the peer benchmark runs (tiny bundle; llama.cpp built from its PyPI sdist)"
python3 bench/peers.py --quick

step "all tests passed"
