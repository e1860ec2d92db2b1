#!/usr/bin/env python3
"""Our speed beside the peers', on the same files, the same prompt and the same machine.

Builds what it needs from registry sources (llama.cpp from the PyPI sdist of llama-cpp-python,
which vendors it; our CLI with cargo), writes the `phi2`-preset bundles (Phi-2's real shapes,
random weights, a valid llama.cpp `phi2` GGUF), then times, alternately (A B C A B C ...):

  ours     jnana bench --text-only            (candle CPU kernels through our Phi-2)
  llama    llama-bench                        (llama.cpp on the same GGUF file)
  candle   jnana bench --peer candle          (candle-transformers' own quantized_phi)

Prefill is timed on a `context`-token prompt from an empty cache; decode is `--decode` tokens
generated after a `context`-token prompt. Every number is the median of `--runs` runs, and each
run is its own process (load included in its wall time, not in the speeds); peak memory is each
process's maximum RSS (as ours and candle report it; llama-bench does not). Prints one table (and `--json`), and with `--out` writes it as Markdown
with the machine, the peers' versions and our commit.

  python3 bench/peers.py                     # the full table (bench/RESULTS.md records one)
  python3 bench/peers.py --quick             # the tiny bundle, seconds: CI checks it runs
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "peers"
LLAMA_CPP_PYTHON = "0.3.36"  # its sdist vendors the llama.cpp that is built


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$", " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/jnana/target"))


def build_jnana():
    # The same build folder as scripts/test.sh, so a tested build is reused.
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir()))
    run(["cargo", "build", "--release", "-p", "jnana-cli"], cwd=ROOT, env=env)
    return target_dir() / "release" / "jnana"


def build_llama_bench():
    src = CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    exe = src / "build" / "bin" / "llama-bench"
    if exe.exists():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        run([sys.executable, "-m", "pip", "download", "--no-deps",
             "--no-binary", "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
             "-d", CACHE])
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and len(m.name) > len(prefix):
                m.name = m.name[len(prefix):]
                members.append(m)
        tar.extractall(src, members=members, filter="data")
    cmake = shutil.which("cmake")
    if cmake is None:
        sys.exit("cmake is needed to build llama.cpp (bash scripts/setup.sh installs it)")
    run([cmake, "-S", src, "-B", src / "build", "-DCMAKE_BUILD_TYPE=Release",
         "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"],
        stdout=subprocess.DEVNULL)
    run([cmake, "--build", src / "build", "--target", "llama-bench",
         "-j", str(os.cpu_count() or 1)], stdout=subprocess.DEVNULL)
    return exe


def ensure_bundle(jnana, preset, quant):
    out = CACHE / f"{preset}-{quant}"
    if not (out / "manifest.json").exists():
        run([jnana, "synth", "--preset", preset, "--quant", quant, "--out", out],
            stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    gguf = next(f["name"] for f in manifest["files"] if f["role"] == "language_model")
    return out, out / gguf


def timed(cmd):
    """Runs `cmd`; its stdout and wall seconds."""
    log("$", " ".join(str(c) for c in cmd))
    started = time.monotonic()
    p = subprocess.run([str(c) for c in cmd], capture_output=True)
    wall = time.monotonic() - started
    if p.returncode:
        sys.exit(f"{cmd[0]} failed:\n{p.stderr.decode(errors='replace')[-3000:]}")
    return p.stdout.decode(), wall


class Programs:
    def __init__(self, jnana, llama_bench, threads):
        self.jnana, self.llama_bench, self.threads = jnana, llama_bench, threads

    def ours(self, bundle, gguf, context, decode, peer=None):
        cmd = [self.jnana, "bench", "--bundle", bundle, "--text-only", "--json", "--runs", "1",
               "--prompt-tokens", context, "--decode-tokens", decode]
        if peer:
            cmd += ["--peer", peer]
        out, wall = timed(cmd)
        r = json.loads(out)
        return {"prefill": r["prefill_tok_per_s"], "decode": r["decode_tok_per_s"],
                "peak_mb": r.get("peak_rss_mb"), "wall_s": wall}

    def candle(self, bundle, gguf, context, decode):
        return self.ours(bundle, gguf, context, decode, peer="candle")

    def llama(self, bundle, gguf, context, decode):
        common = [self.llama_bench, "-m", gguf, "-t", self.threads, "-r", "1", "-o", "json"]
        out, wall_p = timed(common + ["-p", context, "-n", "0"])
        prefill = json.loads(out)[0]
        out, wall_d = timed(common + ["-p", "0", "-n", decode, "-d", context])
        generate = json.loads(out)[0]
        self.build = f"{prefill.get('build_commit')} (build {prefill.get('build_number')})"
        return {"prefill": prefill["avg_ts"], "decode": generate["avg_ts"], "peak_mb": None,
                "wall_s": wall_p + wall_d}


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def candle_version():
    lock = (ROOT / "Cargo.lock").read_text()
    i = lock.find('name = "candle-transformers"')
    return lock[i:].split("\n")[1].split('"')[1] if i >= 0 else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--contexts", default="64,512,1500")
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--quants", default="q4k,q8_0")
    ap.add_argument("--long-quants", default="q4k",
                    help="quants timed at every context; the others at the first only")
    ap.add_argument("--candle-contexts", default="64,512",
                    help="contexts candle's quantized_phi is timed at (it shares our kernels, "
                         "so its long prefills would mostly repeat ours)")
    ap.add_argument("--quick", action="store_true",
                    help="the tiny bundle, 2 runs, 16-token context: checks that it runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path, help="write the table as Markdown here")
    a = ap.parse_args()
    preset = "phi2"
    if a.quick:
        preset, a.runs, a.contexts, a.decode, a.candle_contexts = "tiny", 2, "16", 4, "16"
        a.quants = a.long_quants = "q4_0"  # the tiny preset's rows are too short for q4k
    contexts = [int(c) for c in a.contexts.split(",")]
    started = time.monotonic()
    jnana = build_jnana()
    progs = Programs(jnana, build_llama_bench(), os.cpu_count() or 1)
    names = ["ours", "llama", "candle"]
    results = []
    for quant in a.quants.split(","):
        bundle, gguf = ensure_bundle(jnana, preset, quant)
        for context in contexts if quant in a.long_quants.split(",") else contexts[:1]:
            timed_here = [n for n in names
                          if n != "candle" or str(context) in a.candle_contexts.split(",")]
            samples = {n: [] for n in names}
            for _ in range(a.runs):
                for n in timed_here:  # alternately: A B C A B C ...
                    samples[n].append(getattr(progs, n)(bundle, gguf, context, a.decode))
            row = {"quant": quant, "context": context, "decode_tokens": a.decode}
            for n in names:
                for key in ("prefill", "decode", "peak_mb"):
                    values = [s[key] for s in samples[n] if s[key] is not None]
                    row[f"{n}_{key}"] = statistics.median(values) if values else None
            for peer in ("llama", "candle"):
                for key in ("prefill", "decode"):
                    theirs = row[f"{peer}_{key}"]
                    row[f"ours_over_{peer}_{key}"] = row[f"ours_{key}"] / theirs if theirs else None
            results.append(row)
    report = {
        "command": " ".join(["python3", "bench/peers.py"] + sys.argv[1:]),
        "machine": machine(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "llama_cpp": f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist's llama.cpp, "
                     f"{getattr(progs, 'build', '?')}",
        "candle_transformers": candle_version(),
        "threads": progs.threads,
        "runs": a.runs,
        "minutes": (time.monotonic() - started) / 60,
        "rows": results,
    }
    table = markdown(report)
    print(json.dumps(report) if a.json else table)
    if a.out:
        a.out.write_text(table)


def markdown(r):
    f = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        f"`{r['command']}`",
        "",
        f"Machine: {r['machine']}; {r['threads']} threads for every program.",
        f"Ours: commit {r['commit']}. llama.cpp: {r['llama_cpp']}. "
        f"candle-transformers {r['candle_transformers']} (`quantized_phi`).",
        f"Medians of {r['runs']} alternating runs each; whole command {r['minutes']:.1f} min.",
        "",
        "| weights | context | prefill tok/s ours / llama.cpp / candle | decode tok/s ours / "
        "llama.cpp / candle | ours ÷ llama.cpp (prefill, decode) | ours ÷ candle (prefill, "
        "decode) | peak RSS MB ours / candle |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['quant']} | {x['context']} "
            f"| {f(x['ours_prefill'])} / {f(x['llama_prefill'])} / {f(x['candle_prefill'])} "
            f"| {f(x['ours_decode'], 2)} / {f(x['llama_decode'], 2)} / "
            f"{f(x['candle_decode'], 2)} "
            f"| {f(x['ours_over_llama_prefill'], 2)}, {f(x['ours_over_llama_decode'], 2)} "
            f"| {f(x['ours_over_candle_prefill'], 2)}, {f(x['ours_over_candle_decode'], 2)} "
            f"| {f(x['ours_peak_mb'], 0)} / {f(x['candle_peak_mb'], 0)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
