#!/usr/bin/env bash
# Builds and serves the app on http://127.0.0.1:${PORT:-8080}/ . The page offers the default
# public bundle (Phi-2 q4k, CLIP, projector, Whisper base: your browser downloads them); a tiny
# bundle of random weights is also served from this origin for trying the app offline:
#   http://127.0.0.1:8080/?manifest=./bundles/tiny/manifest.json
# Any bundle folder placed under bundles/ is served the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/jnana/target}
bash scripts/setup.sh
bash scripts/build-app.sh
cargo build --release -p jnana-cli
[ -f bundles/tiny/manifest.json ] || "$CARGO_TARGET_DIR/release/jnana" synth --preset tiny --out bundles/tiny
exec node tests/e2e/server.mjs dist bundles "${PORT:-8080}"
