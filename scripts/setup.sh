#!/usr/bin/env bash
# Installs what the app and the tests need, only where missing: the wasm target, clippy/rustfmt,
# Debian's Chromium + ChromeDriver (headless browser tests), espeak-ng and sox (test speech and
# audio files), wasm-bindgen-cli at the version in Cargo.lock, trunk, and from npm binaryen's
# wasm-opt and playwright-core (tests/e2e/package-lock.json).
# Safe to run again; nothing downloads a binary outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

apt_install() {
  as_root apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt_install chromium chromium-driver
# Speech for the Whisper tests (a question spoken at 22.05 kHz) and FLAC/OGG/MP3 test files.
command -v espeak-ng >/dev/null || apt_install espeak-ng
command -v sox >/dev/null && sox -h 2>/dev/null | grep -q mp3 || apt_install sox libsox-fmt-base libsox-fmt-mp3
command -v npm >/dev/null || apt_install npm
# The peer benchmark (bench/peers.py) builds llama.cpp from its PyPI sdist.
command -v cmake >/dev/null || apt_install cmake
command -v g++ >/dev/null && command -v make >/dev/null || apt_install g++ make
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
# A Vulkan adapter for the GPU engine's tests: Mesa's software lavapipe.
[ -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || apt_install mesa-vulkan-drivers libvulkan1

wb_version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"/\1/p;}' Cargo.lock | head -1)
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q "$wb_version"; then
  # Not --locked: the registry here lacks one of its pinned transitive versions.
  cargo install wasm-bindgen-cli --version "$wb_version"
fi

if ! trunk --version 2>/dev/null | grep -q '0\.21\.14'; then
  cargo install trunk --locked --version 0.21.14
fi
# wasm-opt 132 (Debian's 108 breaks the optimized app) and playwright-core, from npm.
if [ ! -x tests/e2e/node_modules/.bin/wasm-opt ] || [ ! -d tests/e2e/node_modules/playwright-core ]; then
  (cd tests/e2e && npm ci --no-audit --no-fund)
fi
