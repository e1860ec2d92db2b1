//! Broken files and hostile inputs get a clear error that names the problem; nothing panics.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use candle_core::{Device, Tensor};
use common::*;
use jnana::bundle::{self, FileProvider, LoadOptions, Manifest, MemoryProvider, Role};
use jnana::lora::LoraAdapter;
use jnana::models::phi2::{self, Phi2};
use jnana::models::projector::Projector;
use jnana::preprocess;
use jnana::weights::{self, write_safetensors, TensorSource, Weights};
use std::io::Cursor;
use std::sync::Arc;

fn open_bytes(name: &str, bytes: Vec<u8>) -> jnana::Result<Arc<dyn TensorSource>> {
    weights::open_source(name, Box::new(Cursor::new(bytes)))
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap()
}

#[test]
fn truncated_and_garbage_gguf() {
    let full = read("phi_gguf/phi2-tiny-q8_0.gguf");
    let cut = full[..full.len() / 2].to_vec();
    let e = error_text(open_bytes("phi2.gguf", cut));
    assert!(e.contains("phi2.gguf") && e.contains("truncated"), "{e}");

    let header_only = full[..200].to_vec();
    let e = error_text(open_bytes("phi2.gguf", header_only));
    assert!(e.contains("phi2.gguf"), "{e}");

    let mut garbage = b"GGUF".to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let e = error_text(open_bytes("model.gguf", garbage));
    assert!(e.contains("model.gguf") && e.contains("GGUF"), "{e}");
}

#[test]
fn truncated_and_garbage_safetensors() {
    let full = read("phi/model.safetensors");
    let e = error_text(open_bytes(
        "model.safetensors",
        full[..full.len() - 1000].to_vec(),
    ));
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    let e = error_text(open_bytes("model.safetensors", full[..5].to_vec()));
    assert!(e.contains("not a safetensors file"), "{e}");
    let e = error_text(open_bytes(
        "weights.bin",
        b"hello, this is not a weight file at all".to_vec(),
    ));
    assert!(
        e.contains("weights.bin") && e.contains("not a safetensors file"),
        "{e}"
    );
    let e = error_text(open_bytes("empty.safetensors", Vec::new()));
    assert!(e.contains("empty.safetensors"), "{e}");
}

#[test]
fn truncated_and_garbage_pth() {
    let full = read("projector_pth/proj_block.pth");
    let e = error_text(open_bytes(
        "proj_block.pth",
        full[..full.len() / 3].to_vec(),
    ));
    assert!(e.contains("proj_block.pth"), "{e}");
    let mut fake_zip = b"PK\x03\x04".to_vec();
    fake_zip.extend([0u8; 64]);
    let e = error_text(open_bytes("x.pth", fake_zip));
    assert!(e.contains("x.pth") && e.contains("PyTorch"), "{e}");
}

#[test]
fn wrong_shape_and_missing_tensor_name_the_tensor() {
    let device = Device::Cpu;
    let cfg_json = std::fs::read_to_string(fixture("phi/config.json")).unwrap();
    let cfg = phi2::Config::from_hf_json("config.json", &cfg_json).unwrap();
    let source = jnana::conformance::open_path(&fixture("phi/model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = source
        .names()
        .into_iter()
        .map(|n| (n.clone(), source.read_f32(&n, &device).unwrap()))
        .collect();

    // Missing: drop one bias.
    let missing: Vec<_> = tensors
        .iter()
        .filter(|(n, _)| n != "model.layers.1.mlp.fc2.bias")
        .cloned()
        .collect();
    let src = open_bytes("phi.safetensors", write_safetensors(&missing).unwrap()).unwrap();
    let e = error_text(Phi2::new(&cfg, &Weights::new(src, &device)));
    assert!(
        e.contains("phi.safetensors")
            && e.contains("model.layers.1.mlp.fc2.bias")
            && e.contains("missing"),
        "{e}"
    );

    // Wrong shape: a config that disagrees with the weights.
    let wide = phi2::Config {
        intermediate_size: 384,
        ..cfg.clone()
    };
    let src = open_bytes("phi.safetensors", write_safetensors(&tensors).unwrap()).unwrap();
    let e = error_text(Phi2::new(&wide, &Weights::new(src, &device)));
    assert!(
        e.contains("model.layers.0.mlp.fc1.weight")
            && e.contains("[320, 80]")
            && e.contains("[384, 80]"),
        "{e}"
    );

    // Wrong shape inside a projector.
    let proj = jnana::conformance::open_path(&fixture("projector/model.safetensors")).unwrap();
    tensors = proj
        .names()
        .into_iter()
        .map(|n| (n.clone(), proj.read_f32(&n, &device).unwrap()))
        .collect();
    for (n, t) in tensors.iter_mut() {
        if n == "res.proj.2.weight" {
            *t = Tensor::zeros((80, 79), candle_core::DType::F32, &device).unwrap();
        }
    }
    let src = open_bytes(
        "projector.safetensors",
        write_safetensors(&tensors).unwrap(),
    )
    .unwrap();
    let e = error_text(Projector::new(&Weights::new(src, &device), 1e-5));
    assert!(
        e.contains("projector.safetensors")
            && e.contains("res.proj.2.weight")
            && e.contains("[80, 79]"),
        "{e}"
    );
}

#[test]
fn undecodable_pictures() {
    let cfg = preprocess::PreprocessConfig::default();
    let dev = Device::Cpu;
    let e = error_text(preprocess::image_to_pixel_values(
        b"definitely not a picture",
        &cfg,
        &dev,
    ));
    assert!(
        e.starts_with("image:") && e.contains("not a picture"),
        "{e}"
    );
    let e = error_text(preprocess::image_to_pixel_values(&[], &cfg, &dev));
    assert!(e.contains("empty"), "{e}");
    let good = png(100, 80);
    let e = error_text(preprocess::image_to_pixel_values(
        &good[..good.len() / 2],
        &cfg,
        &dev,
    ));
    assert!(e.starts_with("image:"), "{e}");
}

/// A PNG whose header claims `w` x `h` pixels, with a token of pixel data (a decompression
/// bomb would be just as small).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    // zlib: an empty stored block.
    out.extend(chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
        ],
    ));
    out.extend(chunk(b"IEND", &[]));
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_40000_pixel_png_is_refused_from_its_header() {
    let bytes = png_header(40_000, 40_000);
    assert!(bytes.len() < 80);
    let e = error_text(preprocess::decode_image(&bytes));
    assert!(
        e.contains("40000x40000") && e.contains("largest accepted side"),
        "{e}"
    );
    // Through the pipeline too.
    let model = tiny_model();
    let e = error_text(model.encode_image(&bytes));
    assert!(e.contains("40000x40000"), "{e}");
}

#[test]
fn manifest_problems_are_named() {
    let (manifest, files) = tiny_bundle(|_| {});
    let e = error_text(Manifest::from_json("{ not json"));
    assert!(e.contains("manifest"), "{e}");
    let mut no_tok = manifest.clone();
    no_tok.files.retain(|f| f.role != Role::Tokenizer);
    assert!(error_text(no_tok.validate()).contains("tokenizer"));
    let mut sneaky = manifest.clone();
    sneaky.files[0].name = "../../etc/passwd".into();
    assert!(error_text(sneaky.validate()).contains("plain name"));

    // A corrupted file fails its checksum; a short one fails its size.
    let mut provider = MemoryProvider::from_files(&files);
    let gguf = provider.files.get_mut("phi2.gguf").unwrap();
    let mid = gguf.len() / 2;
    gguf[mid] ^= 0xFF;
    let e = error_text(bundle::load(
        &manifest,
        &mut provider,
        &LoadOptions::default(),
        &mut |_| {},
    ));
    assert!(e.contains("phi2.gguf") && e.contains("sha256"), "{e}");
    let mut provider = MemoryProvider::from_files(&files);
    provider
        .files
        .get_mut("clip.safetensors")
        .unwrap()
        .truncate(1000);
    let entry = manifest.file(Role::VisionModel).unwrap().clone();
    let e = error_text(provider.open(&entry).map(|_| ()));
    assert!(
        e.contains("clip.safetensors") && e.contains("1000 bytes"),
        "{e}"
    );
}

#[test]
fn adapters_that_match_nothing_are_refused() {
    let device = Device::Cpu;
    let cfg = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["foo"]}"#;
    let a = Tensor::zeros((2, 8), candle_core::DType::F32, &device).unwrap();
    let b = Tensor::zeros((8, 2), candle_core::DType::F32, &device).unwrap();
    let stray = vec![
        (
            "base_model.model.encoder.block.0.foo.lora_A.weight".to_string(),
            a.clone(),
        ),
        (
            "base_model.model.encoder.block.0.foo.lora_B.weight".to_string(),
            b.clone(),
        ),
    ];
    let src = open_bytes(
        "adapter_model.safetensors",
        write_safetensors(&stray).unwrap(),
    )
    .unwrap();
    let e = error_text(LoraAdapter::load(
        "adapter_config.json",
        cfg,
        src.as_ref(),
        &device,
    ));
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("match nothing"),
        "{e}"
    );

    // Modules that exist in Phi-2 but not in this 2-layer model.
    let deep = vec![
        (
            "base_model.model.model.layers.9.mlp.fc1.lora_A.weight".to_string(),
            Tensor::zeros((2, 80), candle_core::DType::F32, &device).unwrap(),
        ),
        (
            "base_model.model.model.layers.9.mlp.fc1.lora_B.weight".to_string(),
            Tensor::zeros((320, 2), candle_core::DType::F32, &device).unwrap(),
        ),
    ];
    let src = open_bytes(
        "adapter_model.safetensors",
        write_safetensors(&deep).unwrap(),
    )
    .unwrap();
    let adapter = LoraAdapter::load("adapter_config.json", cfg, src.as_ref(), &device).unwrap();
    let cfg_json = std::fs::read_to_string(fixture("phi/config.json")).unwrap();
    let phi_cfg = phi2::Config::from_hf_json("config.json", &cfg_json).unwrap();
    let base = jnana::conformance::open_path(&fixture("phi/model.safetensors")).unwrap();
    let mut phi = Phi2::new(&phi_cfg, &Weights::new(base, &device)).unwrap();
    let e = error_text(bundle::apply_adapter(
        &mut phi,
        &adapter,
        true,
        "adapter_model.safetensors",
    ));
    assert!(
        e.contains("1 of the adapter's 1 modules match no layer"),
        "{e}"
    );
}

#[test]
fn token_ids_beyond_the_vocabulary_are_refused() {
    let model = tiny_model();
    let e = error_text(model.phi.embed(&[1, 2, 60_000]));
    assert!(e.contains("60000") && e.contains("vocabulary"), "{e}");
}

#[test]
fn a_long_thin_picture_is_preprocessed_without_resizing_all_of_it() {
    // Resized whole, a 1 x 12 000 strip would be 224 x 2 688 000 pixels (1.8 GB).
    let strip = png(1, 12_000);
    let t = preprocess::image_to_pixel_values(
        &strip,
        &preprocess::PreprocessConfig::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(t.dims(), [1, 3, 224, 224]);
    let e = error_text(preprocess::decode_image(&png(1, 12_001)));
    assert!(e.contains("1x12001"), "{e}");
}
