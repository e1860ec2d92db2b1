#!/usr/bin/env bash
# Chat with Jñāna from the terminal. With no argument, a tiny bundle of random weights is made
# first (answers are gibberish; everything else is real). Pass a bundle folder for real weights:
#   bash scripts/run.sh path/to/bundle
# Extra arguments go to `jnana chat` (e.g. --image photo.jpg --text "What is this?").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/jnana/target}
cargo build --release -p jnana-cli
jnana="$CARGO_TARGET_DIR/release/jnana"
bundle=${1:-bundles/tiny}
[ $# -gt 0 ] && shift
if [ ! -f "$bundle/manifest.json" ] && [ ! -f "$bundle" ]; then
  "$jnana" synth --preset tiny --out "$bundle"
fi
exec "$jnana" chat --bundle "$bundle" "$@"
