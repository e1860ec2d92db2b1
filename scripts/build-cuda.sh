#!/usr/bin/env bash
# Builds the native CLI with candle's CUDA backend (`--features cuda`) on a machine with no CUDA
# toolkit and no GPU, from NVIDIA's own PyPI wheels (nvcc, nvvm, runtime, cccl, cuBLAS, cuRAND,
# NVRTC of one CUDA release), so the build needs only the package registries.
#
#   bash scripts/build-cuda.sh [compute capability, default 90 = H100/H200] [cuda release, default 13.0]
#
# The binary lands in $CARGO_TARGET_DIR/release/jnana (default .cache/cuda-target). It needs, where
# it runs, an NVIDIA driver for that CUDA release or newer and the same major version of cuBLAS,
# cuRAND, NVRTC and the runtime (any CUDA toolkit of that major version, or the same wheels).
# Why the stub: cudarc links libcuda.so.1 by name, and that library is part of the driver, never
# of a toolkit wheel; a stub with the driver's symbols satisfies the linker, and the real driver
# library is the one loaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

cap=${1:-90}
release=${2:-13.0}
major=${release%%.*}
root=${JNANA_CUDA_ROOT:-$PWD/.cache/cuda-$release}

if [ ! -x "$root/bin/nvcc" ]; then
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
    -d "$wheels" \
    "nvidia-cuda-nvcc==$release.*" "nvidia-cuda-crt==$release.*" "nvidia-nvvm==$release.*" "nvidia-cuda-runtime==$release.*" \
    "nvidia-cuda-cccl==$release.*" "nvidia-cuda-nvrtc==$release.*" "nvidia-cublas==$release.*" \
    "nvidia-curand<11"
  unpacked=$(mktemp -d)
  for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$unpacked"; done
  rm -rf "$root" && mkdir -p "$(dirname "$root")"
  mv "$unpacked/nvidia/cu$major" "$root"
  rm -rf "$wheels" "$unpacked"
  chmod +x "$root"/bin/* "$root"/nvvm/bin/*
  ln -s lib "$root/lib64"
  for lib in "$root"/lib/lib*.so.*; do
    base=${lib%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
  done
  cargo fetch --quiet
  cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'cudarc-*' | sort -V | tail -1)
  mkdir -p "$root/lib/stubs"
  grep -ohE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys/mod.rs" \
    | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/int \1(void) { return 999; }/' | sort -u >"$root/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/cuda_stub.c"
fi

export CUDA_ROOT=$root CUDA_HOME=$root CUDA_PATH=$root NVCC=$root/bin/nvcc PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=$cap
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/.cache/cuda-target}
cargo build --release -p jnana-cli --features cuda
echo "built $CARGO_TARGET_DIR/release/jnana (CUDA $release, sm_$cap)"
