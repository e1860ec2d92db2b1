//! Every reference fixture in tests/fixtures on the GPU engine: the same checks as the CPU
//! (`jnana::conformance`), with the fixtures' own tolerances, and none of them left out.

mod common;
use common::gpu;

use jnana::conformance::{run, run_with};
use jnana_gpu::conformance::GpuEngine;
use std::path::Path;

fn assert_conforms_on_gpu(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let checks = run_with(&dir, &GpuEngine { gpu: gpu() }).unwrap();
    for c in &checks {
        eprintln!("{c}");
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(failed.is_empty(), "{name} on the GPU: {failed:#?}");
    let cpu: Vec<_> = run(&dir).unwrap().into_iter().map(|c| c.name).collect();
    let gpu: Vec<_> = checks.into_iter().map(|c| c.name).collect();
    assert_eq!(gpu, cpu, "the GPU ran other checks than the CPU");
}

#[test]
fn phi() {
    assert_conforms_on_gpu("phi");
}

#[test]
fn phi_gguf() {
    assert_conforms_on_gpu("phi_gguf");
}

#[test]
fn lora() {
    assert_conforms_on_gpu("lora");
}

#[test]
fn clip_vision() {
    assert_conforms_on_gpu("clip_vision");
}

#[test]
fn projector() {
    assert_conforms_on_gpu("projector");
}

#[test]
fn projector_pth() {
    assert_conforms_on_gpu("projector_pth");
}

#[test]
fn multimodal() {
    assert_conforms_on_gpu("multimodal");
}

#[test]
fn whisper() {
    assert_conforms_on_gpu("whisper");
}
