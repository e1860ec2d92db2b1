//! CLIP's vision tower (tests/fixtures/clip_vision) and the projector (tests/fixtures/projector) on
//! the GPU engine against the Hugging Face fixtures:
//! every hidden state and the patch features the projector receives, within the fixture's
//! suggested float32 tolerance (2e-5).

mod common;
use common::{gpu, max_abs_diff};

use candle_core::Device;
use jnana::models::clip_vision::Config;
use jnana::weights::QuantizedMatmul;
use jnana_gpu::models::clip_vision::GpuClipVision;
use std::path::Path;

#[test]
fn clip_vision_fixture() {
    let g = gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip_vision");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = Config::from_hf_value(
        "config.json",
        config.get("vision_config").unwrap_or(&config),
    )
    .unwrap();
    let source = jnana::conformance::open_path(&dir.join("model.safetensors")).unwrap();
    let clip =
        jnana::bundle::load_clip(source, &cfg, &Device::Cpu, QuantizedMatmul::IntegerDot).unwrap();
    let inputs =
        candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let pixels = inputs["pixel_values"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let model = GpuClipVision::upload(g, &clip).unwrap();
    for index in 0..=cfg.num_hidden_layers {
        let state = model.hidden_state(g, &pixels, index).unwrap();
        let err = max_abs_diff(
            &g.read_blocking(&state).unwrap(),
            &expected[&format!("hidden_states.{index}")],
        );
        eprintln!("hidden_states.{index}: {err:.2e}");
        assert!(err <= 2e-5, "hidden_states.{index}: {err}");
    }
    let features = model
        .image_features(g, &pixels, cfg.num_hidden_layers)
        .unwrap();
    let last = &expected["last_hidden_state"];
    let want = last.narrow(1, 1, last.dim(1).unwrap() - 1).unwrap();
    let err = max_abs_diff(&g.read_blocking(&features).unwrap(), &want);
    assert!(err <= 2e-5, "patch features: {err}");
    assert!(
        model.hidden_state(g, &pixels[1..], 0).is_err(),
        "a wrong pixel count is refused"
    );
}

#[test]
fn projector_fixture() {
    use jnana::models::projector::Projector;
    use jnana::weights::Weights;
    use jnana_gpu::models::projector::GpuProjector;
    let g = gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/projector");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let eps = config
        .get("layer_norm_eps")
        .and_then(|v| v.as_f64())
        .unwrap_or(1e-5);
    let source = jnana::conformance::open_path(&dir.join("model.safetensors")).unwrap();
    let projector = Projector::new(&Weights::new(source, &Device::Cpu), eps).unwrap();
    let inputs =
        candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let features = &inputs["image_features"];
    let (_, rows, width) = features.dims3().unwrap();
    let x = g
        .upload(
            &features.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &[rows, width],
        )
        .unwrap();
    let y = GpuProjector::upload(g, &projector)
        .unwrap()
        .forward(g, &x)
        .unwrap();
    let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &expected["projected"]);
    eprintln!("projected: {err:.2e}");
    assert!(err <= 2e-5, "projected: {err}");
}
