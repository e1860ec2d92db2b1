//! The `jnana` binary end to end: synth → chat (one-shot and interactive), conformance on the
//! reference fixtures, convert from published-format files, bench.

#[path = "../../jnana/tests/common/mod.rs"]
mod common;

use common::{fixture, test_asset};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn jnana() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jnana"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("jnana runs");
    if !out.status.success() {
        panic!(
            "jnana failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jnana-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn synth_tiny(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    run(jnana()
        .args(["synth", "--preset", "tiny", "--out"])
        .arg(&dir));
    dir
}

fn ids(stderr: &[u8]) -> Vec<u32> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ids: "))
        .expect("an ids line");
    line.split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

#[test]
fn conformance_passes_on_every_covered_fixture_and_fails_otherwise() {
    let dirs = [
        "phi",
        "clip_vision",
        "projector",
        "multimodal",
        "lora",
        "projector_pth",
        "phi_gguf",
        "tokenizers",
        "whisper",
    ];
    let out = run(jnana()
        .arg("conformance")
        .args(dirs.iter().map(|d| fixture(d))));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("all checks passed"), "{text}");
    assert!(
        text.contains("max abs err") && text.contains("tol"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    // The fixtures' parent folder is no fixture: nothing applies, and that is a failure.
    let out = jnana()
        .arg("conformance")
        .arg(fixture(""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no check applies"));
}

#[test]
fn synth_then_chat_streams_an_answer() {
    let dir = synth_tiny("chat");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"sha256\"") && manifest.contains("language_model"));
    let picture = fixture("clip_vision/image.png");
    let ask = |extra: &[&str]| {
        run(jnana()
            .args(["chat", "--bundle"])
            .arg(&dir)
            .args(["--image"])
            .arg(&picture)
            .args([
                "--text",
                "What is this?",
                "--max-tokens",
                "12",
                "--ids",
                "--verify",
            ])
            .args(extra))
    };
    let a = ask(&[]);
    let b = ask(&[]);
    assert_eq!(
        ids(&a.stderr),
        ids(&b.stderr),
        "greedy answers are deterministic"
    );
    assert_eq!(ids(&a.stderr).len(), 12);
    assert!(String::from_utf8_lossy(&a.stderr).contains("tok/s"));
    let sampled = ask(&["--temperature", "0.9", "--seed", "3"]);
    assert_eq!(ids(&sampled.stderr).len(), 12);

    // Asking with the manifest path works the same as with the folder.
    let out = run(jnana()
        .args(["chat", "--bundle"])
        .arg(dir.join("manifest.json"))
        .args(["--text", "", "--max-tokens", "3"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Please give me an image"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn interactive_chat_takes_follow_ups() {
    let dir = synth_tiny("repl");
    let mut child = jnana()
        .args(["chat", "--bundle"])
        .arg(&dir)
        .args(["--max-tokens", "4", "--ids"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let picture = fixture("clip_vision/image.png");
    let script = format!(
        "/image {}\nWhat is here?\nAnd the colour?\n/new\nHello\n/quit\n",
        picture.display()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("ids: ").count(), 3, "{err}");
    assert!(
        err.contains("picture attached") && err.contains("new conversation"),
        "{err}"
    );
}

#[test]
fn chat_reports_bad_bundles_clearly() {
    let dir = synth_tiny("bad");
    let gguf = dir.join("phi2.gguf");
    let mut bytes = std::fs::read(&gguf).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&gguf, bytes).unwrap();
    let out = jnana()
        .args(["chat", "--bundle"])
        .arg(&dir)
        .args(["--text", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("phi2.gguf") && err.contains("manifest says"),
        "{err}"
    );
    let out = jnana()
        .args(["chat", "--bundle", "/nonexistent/bundle", "--text", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bundle"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn convert_fixture(out: &Path, tokenizer: &Path) -> Output {
    jnana()
        .arg("convert")
        .arg("--phi")
        .arg(fixture("lora/base/model.safetensors"))
        .arg("--phi-config")
        .arg(fixture("lora/base/config.json"))
        .arg("--adapter")
        .arg(fixture("lora/adapter"))
        .arg("--clip")
        .arg(fixture("clip_vision/model.safetensors"))
        .arg("--clip-config")
        .arg(fixture("clip_vision/config.json"))
        .arg("--projector-linear")
        .arg(fixture("projector_pth/proj_ll_f16.pth"))
        .arg("--projector-block")
        .arg(fixture("projector_pth/proj_block_f16.pth"))
        .arg("--tokenizer")
        .arg(tokenizer)
        .args(["--quant", "f32", "--vision-dtype", "f16", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn convert_turns_published_files_into_a_bundle_that_answers() {
    let out = temp_dir("convert");
    let scratch = temp_dir("tok");
    std::fs::create_dir_all(&scratch).unwrap();

    // GPT-2's 50 257 tokens cannot index the fixture's 1 000-row embedding.
    let refused = convert_fixture(&out, &fixture("tokenizers/gpt2/tokenizer.json"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("do not fit the model's 1000 embedding rows"),
        "{err}"
    );

    // HF safetensors + PEFT adapter + CLIP + the seed's f16 .pth projector → a bundle.
    let converted = convert_fixture(&out, &write_small_tokenizer(&scratch));
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let answer = run(jnana()
        .args(["chat", "--bundle"])
        .arg(&out)
        .arg("--image")
        .arg(fixture("clip_vision/image.png"))
        .args(["--text", "hello", "--max-tokens", "5", "--ids", "--verify"]));
    assert_eq!(ids(&answer.stderr).len(), 5);

    // A GGUF base converts too (re-quantized to Q8_0).
    let requant = temp_dir("requant");
    run(jnana()
        .arg("convert")
        .arg("--phi")
        .arg(fixture("phi_gguf/phi2-tiny-f32.gguf"))
        .arg("--tokenizer")
        .arg(scratch.join("tokenizer.json"))
        .args(["--quant", "q8_0", "--out"])
        .arg(&requant));
    let answer = run(jnana().args(["chat", "--bundle"]).arg(&requant).args([
        "--text",
        "hello",
        "--max-tokens",
        "5",
        "--ids",
    ]));
    assert_eq!(ids(&answer.stderr).len(), 5);
    for d in [out, scratch, requant] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// GPT-2's first 999 tokens and `<|endoftext|>` = 999, matching the fixtures' vocabulary size.
fn write_small_tokenizer(dir: &Path) -> PathBuf {
    let gpt2 = std::fs::read_to_string(fixture("tokenizers/gpt2/tokenizer.json")).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(
        &path,
        jnana::synth::truncated_tokenizer_json(&gpt2, 1000).unwrap(),
    )
    .unwrap();
    path
}

/// Each of `keys` is a positive number in `report`.
fn assert_positive(report: &serde_json::Value, keys: &[&str]) {
    for key in keys {
        let v = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {report}"));
        assert!(v > 0.0, "{key} = {v}");
    }
}

#[test]
fn bench_prints_its_numbers() {
    let dir = synth_tiny("bench");
    let out = run(jnana().args(["bench", "--bundle"]).arg(&dir).args([
        "--prompt-tokens",
        "32,48",
        "--decode-tokens",
        "8",
        "--runs",
        "1",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_positive(
        &report,
        &[
            "load_s",
            "prefill_tok_per_s",
            "decode_tok_per_s",
            "image_encode_ms",
            "first_token_ms_picture_and_question",
            "whisper_real_time_factor",
            "peak_rss_mb",
        ],
    );
    // One row per context, in the order asked.
    let contexts = report["contexts"].as_array().unwrap();
    let lengths: Vec<u64> = contexts
        .iter()
        .map(|c| c["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(lengths, [32, 48]);
    for c in contexts {
        assert_positive(c, &["prefill_tok_per_s", "decode_tok_per_s"]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_gpu_backend_chats_benches_and_checks_fixtures() {
    let dir = synth_tiny("gpu");
    let chat = |extra: &[&str]| {
        let out = run(jnana()
            .args(["chat", "--bundle"])
            .arg(&dir)
            .args([
                "--text",
                "What is in the picture?",
                "--max-tokens",
                "16",
                "--ids",
            ])
            .args(extra));
        (
            ids(&out.stderr),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The GPU computes in f32 on the quantized blocks: the float CPU path is its reference.
    let (gpu_ids, gpu_log) = chat(&["--backend", "wgpu"]);
    assert!(gpu_log.contains("computing on: GPU"), "{gpu_log}");
    assert_eq!(gpu_ids, chat(&["--dequantize"]).0);
    let out = run(jnana().args(["bench", "--bundle"]).arg(&dir).args([
        "--backend",
        "wgpu",
        "--prompt-tokens",
        "16",
        "--decode-tokens",
        "4",
        "--runs",
        "1",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_positive(
        &report,
        &[
            "load_s",
            "gpu_weights_mb",
            "prefill_tok_per_s",
            "decode_tok_per_s",
            "image_encode_ms",
            "first_token_ms_picture_and_question",
        ],
    );
    assert!(report["device"].as_str().unwrap().starts_with("wgpu"));
    // Where a decode step's time went: recording on the CPU and waiting for the GPU.
    assert_positive(&report["gpu_decode_step"], &["recording_ms", "waiting_ms"]);
    let out = run(jnana()
        .args(["conformance", "--backend", "wgpu"])
        .arg(fixture("projector")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(wgpu)"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A build without CUDA says so and how to get one, for every command that takes a backend.
#[cfg(not(feature = "cuda"))]
#[test]
fn the_cuda_backend_is_refused_clearly_without_cuda() {
    let dir = synth_tiny("nocuda");
    for args in [
        vec!["bench", "--backend", "cuda", "--bundle"],
        vec!["chat", "--backend", "cuda", "--text", "hi", "--bundle"],
    ] {
        let out = jnana().args(&args).arg(&dir).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("built without CUDA") && err.contains("scripts/build-cuda.sh"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn transcribe_and_convert_real_whisper_weights() {
    let jfk = test_asset("jfk.wav");
    let ct2 = test_asset("whisper-tiny.en");
    // Straight from the CTranslate2 folder…
    let out = run(jnana().arg("transcribe").arg(&jfk).arg("--model").arg(&ct2));
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("x real time"));
    // …and converted to HF-named Q8_0.
    let converted = temp_dir("ct2");
    run(jnana()
        .args(["convert", "ct2-whisper"])
        .arg(&ct2)
        .arg("--out")
        .arg(&converted)
        .args(["--dtype", "q8_0"]));
    for f in ["model-q8_0.gguf", "config.json", "tokenizer.json"] {
        assert!(converted.join(f).exists(), "{f}");
    }
    let out = run(jnana()
        .arg("transcribe")
        .arg(&jfk)
        .arg("--model")
        .arg(&converted)
        .arg("--json"));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("ask what you can do for your country"));
    assert_eq!(t["windows"].as_array().unwrap().len(), 1);
    let bad = jnana()
        .arg("transcribe")
        .arg(fixture("clip_vision/image.png"))
        .arg("--model")
        .arg(&converted)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an audio file"));
    std::fs::remove_dir_all(converted).unwrap();
}

#[test]
fn chat_hears_a_spoken_question() {
    let dir = synth_tiny("audio");
    let wav = dir.join("question.wav");
    let status = Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("What is in this picture?")
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(jnana()
        .args(["chat", "--bundle"])
        .arg(&dir)
        .arg("--audio")
        .arg(&wav)
        .args(["--max-tokens", "4", "--ids"]));
    let err = String::from_utf8_lossy(&out.stderr);
    // The tiny bundle's Whisper is random: it hears something or only silence, and says which.
    assert!(
        err.contains("(heard)") || err.contains("heard only silence"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
