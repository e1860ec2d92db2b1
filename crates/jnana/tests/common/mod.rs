//! Helpers shared by the integration tests.
#![allow(dead_code)]

use jnana::bundle::{self, BundleFile, LoadOptions, Manifest, MemoryProvider};
use jnana::synth::{self, SynthSpec};
use jnana::Jnana;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

pub fn phi2_tokenizer() -> String {
    let gpt2 = std::fs::read_to_string(fixture("tokenizers/gpt2/tokenizer.json")).unwrap();
    synth::phi2_tokenizer_json(&gpt2).unwrap()
}

pub fn whisper_tokenizer() -> String {
    std::fs::read_to_string(fixture("tokenizers/whisper_multilingual/tokenizer.json")).unwrap()
}

/// A tiny random bundle, optionally adjusted.
pub fn tiny_bundle(adjust: impl FnOnce(&mut SynthSpec)) -> (Manifest, Vec<BundleFile>) {
    let mut spec = SynthSpec::tiny();
    adjust(&mut spec);
    synth::synthesize(
        &spec,
        &phi2_tokenizer(),
        Some(&whisper_tokenizer()),
        &|_, _, _| {},
    )
    .unwrap()
}

pub fn load(manifest: &Manifest, files: &[BundleFile]) -> Jnana {
    let mut provider = MemoryProvider::from_files(files);
    bundle::load(
        manifest,
        &mut provider,
        &LoadOptions::default(),
        &mut |_| {},
    )
    .unwrap()
}

pub fn tiny_model() -> Jnana {
    let (m, f) = tiny_bundle(|_| {});
    load(&m, &f)
}

/// A small PNG with some structure.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn error_text<T>(r: jnana::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A file fetched by `scripts/fetch-test-assets.sh` (the README's test command runs it first).
pub fn test_asset(rel: &str) -> PathBuf {
    let root = std::env::var_os("JNANA_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/test-assets")
        });
    let path = root.join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-test-assets.sh (the README's test command does)",
        path.display()
    );
    path
}
