//! Parity with the Hugging Face reference fixtures (`tests/fixtures/*`, copied from the shared
//! fixture set): every check of `jnana::conformance` must pass for each folder this crate covers.

#![cfg(not(target_arch = "wasm32"))]

use jnana::conformance;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn assert_conforms(name: &str) {
    let checks = conformance::run(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    for c in &checks {
        println!("{name}: {c}");
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(
        failed.is_empty(),
        "{name}: {} checks failed: {failed:#?}",
        failed.len()
    );
}

#[test]
fn phi() {
    assert_conforms("phi");
}

#[test]
fn clip_vision() {
    assert_conforms("clip_vision");
}

#[test]
fn projector() {
    assert_conforms("projector");
}

#[test]
fn multimodal() {
    assert_conforms("multimodal");
}

#[test]
fn lora() {
    assert_conforms("lora");
}

#[test]
fn projector_pth() {
    assert_conforms("projector_pth");
}

#[test]
fn phi_gguf() {
    assert_conforms("phi_gguf");
}

#[test]
fn tokenizers() {
    assert_conforms("tokenizers");
}

#[test]
fn whisper() {
    assert_conforms("whisper");
}
