#!/usr/bin/env bash
# The prepared run for a lent NVIDIA machine: cpu vs cuda vs wgpu (Vulkan) on the real card, with
# the card's memory-bandwidth roofline for decode. It needs only what it is given: a `jnana`
# built with `--features cuda` (scripts/build-cuda.sh; here as .device/jnana.xz), for Vulkan the
# loader's .deb files in .gl/ (the machine has the NVIDIA driver but no loader), and for the
# llama.cpp peer a CUDA `llama-bench` (.device/llama-bench.xz: llama.cpp built with -DGGML_CUDA=ON).
#
#   bash bench/gpu.sh [out dir]     # every result as one JSON line in <out>/results.jsonl
#   JNANA_GPU_GROUPS="cuda llama" bash bench/gpu.sh   # some of: cuda wgpu wgpu-split cpu llama
#
# Each step has its own time limit and a failed step is logged and skipped, so one run gives
# every number it can.
set -u
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/jnana-gpu}}
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
results=$out/results.jsonl
work=/tmp/jnana-gpu-work
mkdir -p "$work"
started=$(date +%s)
elapsed() { echo "[$(($(date +%s) - started)) s]"; }

groups=" ${JNANA_GPU_GROUPS:-cuda wgpu cpu llama} "
want() { [[ $groups == *" $1 "* ]]; }
unpack() { # unpack <.xz> <to>
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$1" "$2"
  chmod +x "$2"
}
bin=$work/jnana
if [ -f .device/jnana.xz ]; then
  unpack .device/jnana.xz "$bin"
else
  cp "${JNANA_BIN:?give .device/jnana.xz or JNANA_BIN}" "$bin"
fi
llama=$work/llama-bench
[ -f .device/llama-bench.xz ] && unpack .device/llama-bench.xz "$llama"

# CUDA's user libraries of the binary's major version, wherever this machine keeps them.
libdirs=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.1*' -o -name 'libnvrtc.so.1*' \
  -o -name 'libcurand.so.1*' -o -name 'libcudart.so.1*' 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${libdirs}${LD_LIBRARY_PATH:-}
ldd "$bin" | grep -E 'cuda|cublas|nvrtc|curand|not found'

if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory,clocks.max.sm --format=csv
echo "CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

# The card's reachable bandwidth: a large device-to-device copy (bytes read + written).
timeout 60 python3 - <<'EOF' | tee -a "$results"
import json, torch
x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize()
a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
a.record()
for _ in range(10):
    y.copy_(x)
b.record()
torch.cuda.synchronize()
s = a.elapsed_time(b) / 1e3
print(json.dumps({"what": "copy_bandwidth", "gb_per_s": 10 * 2 * x.numel() / s / 1e9,
                  "gpu": torch.cuda.get_device_name(0)}))
EOF

step() { # step <label> <seconds> <command...>: a JSON result line tagged with the label
  local label=$1 limit=$2
  shift 2
  echo "$(elapsed) == $label: $*"
  local line
  if line=$(timeout "$limit" "$@" 2>"$work/stderr"); then
    echo "{\"what\": \"$label\", \"result\": $line}" | tee -a "$results"
  else
    echo "FAILED ($?): $label"
    tail -20 "$work/stderr"
  fi
}

preset=${JNANA_PRESET:-phi2} # `tiny` dry-runs this script anywhere in seconds
for quant in ${JNANA_GPU_QUANTS:-q4k q8_0}; do
  echo "$(elapsed) synth $quant"
  timeout 120 "$bin" synth --preset "$preset" --quant "$quant" --out "$work/phi2-$quant" 2>&1 | tail -1
done
q4k=$work/phi2-q4k
q8=$work/phi2-q8_0

# Correctness on the real card first: every reference fixture, through candle's CUDA backend and
# through our WebGPU engine on Vulkan.
for backend in cuda wgpu; do
  want $backend || continue
  echo "$(elapsed) == conformance $backend"
  timeout 120 "$bin" conformance tests/fixtures/*/ --backend "$backend" >"$out/conformance-$backend.txt" 2>&1
  echo "exit $?, $(grep -c '^ok' "$out/conformance-$backend.txt") checks ok"
  grep -v '^ok' "$out/conformance-$backend.txt" | grep -vE '^ +[0-9]+: ' | tail -25
done

for backend in cuda wgpu; do
  want $backend || continue
  step "$backend q4k ctx64 full" 150 "$bin" bench --bundle "$q4k" --backend "$backend" \
    --prompt-tokens 64 --decode-tokens 128 --runs 3 --json
  for ctx in 512 1500; do
    step "$backend q4k ctx$ctx" 90 "$bin" bench --bundle "$q4k" --backend "$backend" --text-only \
      --prompt-tokens $ctx --decode-tokens 128 --runs 3 --json
  done
  step "$backend q8_0 ctx64" 90 "$bin" bench --bundle "$q8" --backend "$backend" --text-only \
    --prompt-tokens 64 --decode-tokens 128 --runs 3 --json
done
if want wgpu-split && ! want wgpu; then # decode timings only, to see where their time goes
  for ctx in 64 512; do
    step "wgpu q4k ctx$ctx" 90 "$bin" bench --bundle "$q4k" --backend wgpu --text-only \
      --prompt-tokens $ctx --decode-tokens 128 --runs 3 --json
  done
fi
if want cuda; then
  for ctx in 64 512; do
    step "candle-quantized_phi cuda q4k ctx$ctx" 60 "$bin" bench --bundle "$q4k" --backend cuda \
      --peer candle --prompt-tokens $ctx --decode-tokens 128 --runs 3 --json
  done
  step "cuda-dequantized q4k ctx64" 90 "$bin" bench --bundle "$q4k" --backend cuda --text-only \
    --dequantize --prompt-tokens 64 --decode-tokens 128 --runs 3 --json
fi
if want llama && [ -x "$llama" ]; then
  # As bench/peers.py runs it: prefill from an empty cache, decode after a `ctx`-token prompt.
  for quant in q4k q8_0; do
    gguf=$(ls "$work/phi2-$quant"/*.gguf | head -1)
    for ctx in 64 512 1500; do
      [ $quant = q8_0 ] && [ $ctx != 64 ] && continue
      step "llama.cpp cuda $quant prefill ctx$ctx" 60 "$llama" -m "$gguf" -ngl 99 -r 3 -o jsonl \
        -p $ctx -n 0
      step "llama.cpp cuda $quant decode ctx$ctx" 60 "$llama" -m "$gguf" -ngl 99 -r 3 -o jsonl \
        -p 0 -n 128 -d $ctx
    done
  done
fi
if want cpu; then
  for ctx in 64 512; do
    step "cpu q4k ctx$ctx" 120 "$bin" bench --bundle "$q4k" --backend cpu --text-only \
      --prompt-tokens $ctx --decode-tokens 32 --runs 3 --json
  done
  step "cpu q4k ctx64 full" 150 "$bin" bench --bundle "$q4k" --backend cpu \
    --prompt-tokens 64 --decode-tokens 16 --runs 2 --json
fi
ls -l "$q4k" "$q8" | tee -a "$out/log.txt" >/dev/null
echo "$(elapsed) done"
