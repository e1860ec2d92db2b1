//! Reading and writing bundle folders.

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use jnana::bundle::{BundleFile, Manifest};
use std::path::Path;

/// GPT-2's tokenizer (Phi-2's first 50 257 tokens), from the reference fixtures; `synth` adds
/// Phi-2's 38 whitespace tokens to it.
pub const GPT2_TOKENIZER: &str =
    include_str!("../../../tests/fixtures/tokenizers/gpt2/tokenizer.json");

/// Whisper's multilingual tokenizer (from the reference fixtures), for synthesized speech models.
pub const WHISPER_TOKENIZER: &str =
    include_str!("../../../tests/fixtures/tokenizers/whisper_multilingual/tokenizer.json");

pub fn parse_quant(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q4k" | "q4_k" => GgmlDType::Q4K,
        "q5k" | "q5_k" => GgmlDType::Q5K,
        "q6k" | "q6_k" => GgmlDType::Q6K,
        "q8_0" | "q8" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "f16" => GgmlDType::F16,
        "f32" => GgmlDType::F32,
        other => bail!("unknown quantization `{other}` (q4k, q5k, q6k, q8_0, q4_0, f16, f32)"),
    })
}

pub fn write_bundle(dir: &Path, manifest: &Manifest, files: &[BundleFile]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in files {
        let path = dir.join(&f.entry.name);
        std::fs::write(&path, &f.bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_json())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
