//! Phi-2 on the GPU engine against the Hugging Face reference fixtures (tests/fixtures/phi and
//! phi_gguf): logits of every position ≤ 1e-3 and greedy ids identical, through the GPU KV cache.
//! The GGUF files keep their q4_0 / q8_0 blocks on the GPU; activations stay f32, so the
//! reference is the dequantized-weights model (`logits.<type>`).

mod common;
use common::{gpu, max_abs_diff};

use candle_core::{DType, Device, Tensor};
use jnana::models::phi2::{layout, Config, Phi2};
use jnana::weights::{GgufSource, TensorSource, Weights};
use jnana_gpu::models::phi2::GpuPhi2;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(dir)
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn embed(phi: &Phi2, ids: &[u32]) -> Vec<f32> {
    phi.embed(ids)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Logits of `input_ids` at every position, and greedy decoding of `prompt_ids` one token at a
/// time through the cache.
fn check(
    phi: &Phi2,
    label: &str,
    inputs: &HashMap<String, Tensor>,
    expected: &HashMap<String, Tensor>,
    logits: &str,
    greedy: &str,
) {
    let g = gpu();
    let model = GpuPhi2::upload(g, phi).unwrap();
    let mut cache = model.new_cache(g).unwrap();
    let out = model
        .forward_all(g, &embed(phi, &ids(&inputs["input_ids"])), &mut cache)
        .unwrap();
    let err = max_abs_diff(&g.read_blocking(&out).unwrap(), &expected[logits]);
    eprintln!("{label}: logits max abs error {err:.2e}");
    assert!(err <= 1e-3, "{label}: logits {err}");

    let want = ids(&expected[greedy]);
    let prompt = ids(&inputs["prompt_ids"]);
    let want = if want.len() > prompt.len() && want.starts_with(&prompt) {
        want[prompt.len()..].to_vec()
    } else {
        want
    };
    let mut cache = model.new_cache(g).unwrap();
    let mut got = Vec::new();
    let mut next = embed(phi, &prompt);
    for _ in 0..want.len() {
        let id = pollster::block_on(model.next_greedy(g, &next, &mut cache)).unwrap();
        got.push(id);
        next = embed(phi, &[id]);
    }
    assert_eq!(got, want, "{label}: greedy ids");
    assert_eq!(cache.len(), prompt.len() + want.len() - 1);
}

#[test]
fn phi_fixture_float_weights() {
    let dir = fixture("phi");
    let cfg = Config::from_hf_json(
        "config.json",
        &std::fs::read_to_string(dir.join("config.json")).unwrap(),
    )
    .unwrap();
    let source = jnana::conformance::open_path(&dir.join("model.safetensors")).unwrap();
    let phi = Phi2::new(&cfg, &Weights::new(source, &Device::Cpu)).unwrap();
    check(
        &phi,
        "phi f32",
        &tensors(&dir.join("inputs.safetensors")),
        &tensors(&dir.join("expected.safetensors")),
        "logits",
        "greedy_ids",
    );
}

#[test]
fn phi_gguf_fixture_quantized_blocks_on_the_gpu() {
    let dir = fixture("phi_gguf");
    let inputs = tensors(&dir.join("inputs.safetensors"));
    let expected = tensors(&dir.join("expected.safetensors"));
    for ty in ["f32", "q4_0", "q8_0"] {
        let file = format!("phi2-tiny-{ty}.gguf");
        let reader = std::io::BufReader::new(std::fs::File::open(dir.join(&file)).unwrap());
        let gguf: Arc<dyn TensorSource> =
            Arc::new(GgufSource::new(&file, Box::new(reader)).unwrap());
        let (_, hf) = layout::hf_view(gguf.clone()).unwrap();
        let cfg = layout::config_from_gguf(gguf.gguf().unwrap(), hf.as_ref()).unwrap();
        let phi = Phi2::new(&cfg, &Weights::new(hf, &Device::Cpu)).unwrap();
        check(
            &phi,
            &file,
            &inputs,
            &expected,
            &format!("logits.{ty}"),
            &format!("greedy_ids.{ty}"),
        );
    }
}
