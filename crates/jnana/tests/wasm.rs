//! The crate in a real browser (wasm32 + SIMD128, headless Chromium through
//! `wasm-bindgen-test`): tokenizer, preprocessing, float and quantized Phi-2 forwards against the
//! reference fixtures, and a tiny bundle answering end to end.

#![cfg(target_arch = "wasm32")]

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use jnana::bundle::{self, LoadOptions, MemoryProvider};
use jnana::conformance::{
    abs_diff, cpu_kernel_matches_dequantized, greedy, ids_of, INTEGER_DOT_ATOL,
};
use jnana::models::phi2::{self, layout, Phi2};
use jnana::preprocess::{self, PreprocessConfig};
use jnana::tokenizer::Tokenizer;
use jnana::weights::{GgufSource, QuantizedMatmul, SafetensorsSource, Weights};
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/",
            $path
        ))
    };
}

fn tensors(bytes: &[u8]) -> HashMap<String, Tensor> {
    SafetensorsSource::new("fixture", Box::new(Cursor::new(bytes.to_vec())))
        .unwrap()
        .read_all(&Device::Cpu)
        .unwrap()
}

#[wasm_bindgen_test]
fn tokenizer_matches_tiktoken() {
    let tok = Tokenizer::from_bytes("tokenizer.json", fixture!("tokenizers/gpt2/tokenizer.json"))
        .unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(fixture!("tokenizers/cases.json")).unwrap();
    assert_eq!(cases.len(), 42);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["gpt2_ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "{}", case["name"]);
        assert_eq!(tok.decode(&want).unwrap(), text);
    }
}

#[wasm_bindgen_test]
fn preprocessing_matches_pil_within_two_levels() {
    let expected = tensors(fixture!("clip_vision/expected.safetensors"));
    let cfg = PreprocessConfig::default();
    let ours =
        preprocess::image_to_pixel_values(fixture!("clip_vision/image.png"), &cfg, &Device::Cpu)
            .unwrap();
    let std = Tensor::new(&cfg.image_std, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let levels = |t: &Tensor| (t.broadcast_mul(&std).unwrap() * 255.0).unwrap();
    let (max, _) = abs_diff(&levels(&ours), &levels(&expected["pixel_values_pil"])).unwrap();
    assert!(max <= 2.0 + 1e-3, "{max} levels");
}

/// Logits of `input_ids` within `atol` of `logits`, and greedy ids equal to `greedy`.
fn check_phi(
    phi: &Phi2,
    inputs: &[u8],
    expected: &[u8],
    logits: &str,
    atol: f64,
    greedy_name: &str,
) {
    let inputs = tensors(inputs);
    let expected = tensors(expected);
    let embeds = phi
        .embed(&ids_of(&inputs["input_ids"]).unwrap())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ours = phi
        .forward_trace(&embeds, &mut phi.new_cache())
        .unwrap()
        .logits;
    let (max, _) = abs_diff(&ours, &expected[logits]).unwrap();
    assert!(max <= atol, "{logits}: {max}");
    let want = ids_of(&expected[greedy_name]).unwrap();
    let prompt = ids_of(&inputs["prompt_ids"]).unwrap();
    let pe = phi.embed(&prompt).unwrap().unsqueeze(0).unwrap();
    let mut got = prompt.clone();
    got.extend(
        greedy(
            phi,
            &pe,
            want.len() - prompt.len(),
            phi.config().eos_token_id,
        )
        .unwrap(),
    );
    assert_eq!(got, want, "{logits}");
}

#[wasm_bindgen_test]
fn phi_logits_match_transformers() {
    let cfg = phi2::Config::from_hf_json(
        "config.json",
        std::str::from_utf8(fixture!("phi/config.json")).unwrap(),
    )
    .unwrap();
    let bytes = fixture!("phi/model.safetensors").to_vec();
    let source = Arc::new(
        SafetensorsSource::new("model.safetensors", Box::new(Cursor::new(bytes))).unwrap(),
    );
    let phi = Phi2::new(&cfg, &Weights::new(source, &Device::Cpu)).unwrap();
    check_phi(
        &phi,
        fixture!("phi/inputs.safetensors"),
        fixture!("phi/expected.safetensors"),
        "logits",
        2e-5,
        "greedy_ids",
    );
}

#[wasm_bindgen_test]
fn quantized_phi_matches_transformers() {
    let bytes = fixture!("phi_gguf/phi2-tiny-q8_0.gguf").to_vec();
    let gguf: Arc<dyn jnana::weights::TensorSource> =
        Arc::new(GgufSource::new("q8_0.gguf", Box::new(Cursor::new(bytes))).unwrap());
    let (_, hf) = layout::hf_view(gguf.clone()).unwrap();
    let cfg = layout::config_from_gguf(gguf.gguf().unwrap(), hf.as_ref()).unwrap();
    for (mode, name, atol) in [
        (QuantizedMatmul::Dequantize, "logits.q8_0", 2e-5),
        (
            QuantizedMatmul::IntegerDot,
            "logits_q8act.q8_0",
            INTEGER_DOT_ATOL,
        ),
    ] {
        let phi = Phi2::new(
            &cfg,
            &Weights::new(hf.clone(), &Device::Cpu).with_quantized_matmul(mode),
        )
        .unwrap();
        check_phi(
            &phi,
            fixture!("phi_gguf/inputs.safetensors"),
            fixture!("phi_gguf/expected.safetensors"),
            name,
            atol,
            "greedy_ids.q8_0",
        );
    }
}

/// Our SIMD128 kernels take Q4_K and Q8_0 weights in the browser, compute what candle's
/// dequantized weights do (within the 8-bit activations' rounding) and give the blocks back.
#[wasm_bindgen_test]
fn our_simd128_kernels_match_the_dequantized_matmul() {
    for dtype in [GgmlDType::Q4K, GgmlDType::Q8_0] {
        assert_eq!(cpu_kernel_matches_dequantized(dtype), Ok(true), "{dtype:?}");
    }
}

/// The tiny random bundle, synthesized and loaded in the browser.
fn tiny_model() -> jnana::Jnana {
    let tokenizer = jnana::synth::phi2_tokenizer_json(
        std::str::from_utf8(fixture!("tokenizers/gpt2/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let whisper =
        std::str::from_utf8(fixture!("tokenizers/whisper_multilingual/tokenizer.json")).unwrap();
    let spec = jnana::synth::SynthSpec::tiny();
    let (manifest, files) =
        jnana::synth::synthesize(&spec, &tokenizer, Some(whisper), &|_, _, _| {}).unwrap();
    let mut provider = MemoryProvider::from_files(&files);
    bundle::load(
        &manifest,
        &mut provider,
        &LoadOptions::default(),
        &mut |_| {},
    )
    .unwrap()
}

#[wasm_bindgen_test]
fn a_tiny_bundle_answers_a_picture_question() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    let request = jnana::Request {
        image: Some(fixture!("clip_vision/image.png").to_vec()),
        text: Some("What is in the picture?".into()),
        ..Default::default()
    };
    let params = jnana::GenerationParams {
        max_new_tokens: 8,
        ..Default::default()
    };
    let mut streamed = 0;
    let answer = conv
        .ask(&model, &request, &params, |_| {
            streamed += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(answer.tokens.len(), 8);
    assert!(streamed >= 8);
    assert_eq!(answer.prompt_positions, 49 + 4 + 6 + 4);
}

#[wasm_bindgen_test]
fn whisper_front_end_and_model_match_transformers() {
    use jnana::audio::mel::{LogMel, MelConfig};
    use jnana::models::whisper::{Config, Whisper};
    let inputs = tensors(fixture!("whisper/inputs.safetensors"));
    let expected = tensors(fixture!("whisper/expected.safetensors"));
    // The WAV decoder (symphonia) and the log-mel front end.
    let decoded = jnana::audio::AudioStream::from_bytes(fixture!("whisper/speech.wav").to_vec())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(decoded, inputs["audio"].to_vec1::<f32>().unwrap());
    let mel = LogMel::new(MelConfig::whisper(80)).compute(&decoded);
    let mel = Tensor::from_vec(mel, (1, 80, 3000), &Device::Cpu).unwrap();
    let (max, _) = abs_diff(&mel, &expected["input_features"]).unwrap();
    assert!(max < 5e-4, "log-mel {max}");
    // Encoder and decoder.
    let cfg: serde_json::Value = serde_json::from_slice(fixture!("whisper/config.json")).unwrap();
    let cfg = Config::from_hf_value("config.json", &cfg).unwrap();
    let bytes = fixture!("whisper/model.safetensors").to_vec();
    let source = Arc::new(
        SafetensorsSource::new("model.safetensors", Box::new(Cursor::new(bytes))).unwrap(),
    );
    let model = Whisper::new(&cfg, &Weights::new(source, &Device::Cpu)).unwrap();
    let encoded = model.encode(&expected["input_features"]).unwrap();
    let (max, _) = abs_diff(&encoded.hidden, &expected["encoder_last_hidden_state"]).unwrap();
    assert!(max < 2e-5, "encoder {max}");
    let ids = ids_of(&inputs["decoder_input_ids"]).unwrap();
    let mut state = model.new_state(&encoded.hidden).unwrap();
    let logits = model
        .decode(&ids, &mut state)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (max, _) = abs_diff(&logits, &expected["logits"]).unwrap();
    assert!(max < 5e-5, "logits {max}");
}

#[wasm_bindgen_test]
fn the_tiny_bundle_listens_to_browser_pcm() {
    let model = tiny_model();
    // 1.5 s of stereo 44.1 kHz PCM, as WebAudio decodes a recording.
    let samples: Vec<f32> = (0..66_150 * 2)
        .map(|i| ((i / 2) as f32 * 0.05).sin() * 0.3)
        .collect();
    let audio = jnana::pipeline::AudioInput::Pcm {
        samples,
        sample_rate: 44_100,
        channels: 2,
    };
    let t = model
        .transcribe(&audio, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(t.windows.len(), 1);
    assert!((t.audio_seconds - 1.5).abs() < 1e-3);
}
