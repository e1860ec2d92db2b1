//! Turns the files people publish (HF safetensors + `config.json`, a PEFT adapter, the seed's
//! `.pth` projector, CLIP's full checkpoint) into the bundle the browser loads: a llama.cpp
//! GGUF Phi-2 with the adapter merged, CLIP's vision tower alone (f16, f32 or Q8_0) and the
//! projector as one safetensors file, plus `manifest.json`.

use crate::bundle::{self, BundleFile, FileFormat, Manifest, Role, Settings, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::lora::LoraAdapter;
use crate::models::clip_vision;
use crate::models::phi2::layout;
use crate::models::projector::Projector;
use crate::synth::{gguf_file_type, quantize_for};
use crate::weights::{write_safetensors, QuantizedMatmul, TensorSource, Union, Weights};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// How float checkpoints (CLIP, the projector, Whisper) are stored in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
    /// Matmul weights in Q8_0 (a GGUF file); convolutions, positions and norms stay F32.
    Q8_0,
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            other => Err(Error::Input(format!(
                "unknown precision `{other}` (f32, f16, q8_0)"
            ))),
        }
    }
}

pub struct ConvertInputs {
    pub name: String,
    /// Phi-2 weights: one file or the shards of one checkpoint.
    pub phi: Vec<Arc<dyn TensorSource>>,
    /// HF `config.json` (required unless the weights are GGUF with metadata).
    pub phi_config: Option<serde_json::Value>,
    /// PEFT `adapter_config.json` text and the adapter weights.
    pub adapter: Option<(String, Arc<dyn TensorSource>)>,
    pub clip: Option<Arc<dyn TensorSource>>,
    pub clip_config: Option<serde_json::Value>,
    /// The projector under bundle names (`linear.*`, `res.*`); see [`bundle`] for the `.pth` pair.
    pub projector: Option<Arc<dyn TensorSource>>,
    pub tokenizer_json: String,
    pub text_quant: GgmlDType,
    pub vision_dtype: WeightDtype,
}

pub fn convert(
    inputs: ConvertInputs,
    progress: &mut dyn FnMut(&str),
) -> Result<(Manifest, Vec<BundleFile>)> {
    let device = Device::Cpu;
    progress("reading Phi-2");
    let source: Arc<dyn TensorSource> = match inputs.phi.len() {
        0 => return Err(Error::Input("no Phi-2 weights given".into())),
        1 => inputs.phi[0].clone(),
        _ => Arc::new(Union::new(inputs.phi.clone())),
    };
    let mut phi = bundle::load_phi(
        source,
        inputs.phi_config.as_ref(),
        &device,
        QuantizedMatmul::Dequantize,
    )?;
    if let Some((config_json, weights)) = &inputs.adapter {
        progress("merging the LoRA adapter");
        let adapter = LoraAdapter::load(
            "adapter_config.json",
            config_json,
            weights.as_ref(),
            &device,
        )?;
        bundle::apply_adapter(&mut phi, &adapter, true, weights.file_name())?;
    }
    progress("quantizing Phi-2");
    let tensors = phi
        .export_f32()?
        .into_iter()
        .map(|(name, t)| Ok((name, quantize_for(inputs.text_quant, &t)?)))
        .collect::<Result<Vec<_>>>()?;
    let vocab =
        layout::GgufVocab::from_tokenizer_json(&inputs.tokenizer_json, phi.config().vocab_size)?;
    let gguf = layout::write_llama_cpp_gguf(
        phi.config(),
        &inputs.name,
        &tensors,
        &vocab,
        gguf_file_type(inputs.text_quant),
    )?;
    drop(tensors);

    let mut files = vec![
        BundleFile::new("phi2.gguf", Role::LanguageModel, FileFormat::Gguf, gguf),
        BundleFile::new(
            "tokenizer.json",
            Role::Tokenizer,
            FileFormat::Json,
            inputs.tokenizer_json.as_bytes().to_vec(),
        ),
    ];
    let mut vision_config = None;
    if let Some(clip) = &inputs.clip {
        progress("extracting CLIP's vision tower");
        let config = match &inputs.clip_config {
            Some(v) => clip_vision::Config::from_hf_value("CLIP config.json", v)?,
            None => clip_vision::Config::vit_base_patch32(),
        };
        // Loading validates every tensor's shape before anything is written.
        bundle::load_clip(clip.clone(), &config, &device, QuantizedMatmul::Dequantize)?;
        files.push(vision_file(clip.as_ref(), inputs.vision_dtype, &device)?);
        vision_config = Some(config.to_hf_json());
        let projector = inputs
            .projector
            .as_ref()
            .ok_or_else(|| Error::Input("a vision model needs its projector".into()))?;
        progress("converting the projector");
        Projector::new(&Weights::new(projector.clone(), &device), 1e-5)?;
        let dtype = match inputs.vision_dtype {
            WeightDtype::F32 => DType::F32,
            _ => DType::F16,
        };
        let tensors = projector
            .names()
            .into_iter()
            .map(|n| Ok((n.clone(), projector.read_f32(&n, &device)?.to_dtype(dtype)?)))
            .collect::<Result<Vec<_>>>()?;
        files.push(BundleFile::new(
            "projector.safetensors",
            Role::Projector,
            FileFormat::Safetensors,
            write_safetensors(&tensors)?,
        ));
    }
    let manifest = Manifest {
        format: FORMAT_VERSION.into(),
        name: inputs.name.clone(),
        description: "Converted by `jnana convert`.".into(),
        files: files.iter().map(|f| f.entry.clone()).collect(),
        settings: Settings {
            eos_token_id: Some(vocab.eos),
            merge_lora: None,
            ..Settings::default()
        },
        text_config: None,
        vision_config,
        preprocessor: None,
    };
    manifest.validate()?;
    Ok((manifest, files))
}

/// CLIP's `vision_model.*` tensors alone (a full CLIP checkpoint also holds the text tower).
fn vision_file(clip: &dyn TensorSource, dtype: WeightDtype, device: &Device) -> Result<BundleFile> {
    let names: Vec<String> = clip
        .names()
        .into_iter()
        .filter(|n| n.starts_with("vision_model."))
        .collect();
    if names.is_empty() {
        return Err(Error::file(
            clip.file_name(),
            "holds no `vision_model.*` tensors",
        ));
    }
    let tensors = read_tensors(clip, &names, device)?;
    weights_file(
        tensors,
        dtype,
        "clip_vision",
        "clip-vision",
        Role::VisionModel,
    )
}

fn read_tensors(
    source: &dyn TensorSource,
    names: &[String],
    device: &Device,
) -> Result<Vec<(String, Tensor)>> {
    names
        .iter()
        .map(|n| Ok((n.clone(), source.read_f32(n, device)?)))
        .collect()
}

/// Float weights as safetensors, or Q8_0 as a GGUF with the same (HF) names: the matmul weights
/// are quantized, convolutions, embeddings of positions and norms stay F32.
fn weights_file(
    tensors: Vec<(String, Tensor)>,
    dtype: WeightDtype,
    arch: &str,
    stem: &str,
    role: Role,
) -> Result<BundleFile> {
    match dtype {
        WeightDtype::F32 | WeightDtype::F16 => {
            let dt = if dtype == WeightDtype::F32 {
                DType::F32
            } else {
                DType::F16
            };
            let tensors = tensors
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_dtype(dt)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(BundleFile::new(
                &format!("{stem}.safetensors"),
                role,
                FileFormat::Safetensors,
                write_safetensors(&tensors)?,
            ))
        }
        WeightDtype::Q8_0 => {
            let quantized = tensors
                .iter()
                .map(|(n, t)| {
                    let is_matmul = t.rank() == 2
                        && !n.contains("position")
                        && t.dims()[1] % GgmlDType::Q8_0.block_size() == 0;
                    let ty = if is_matmul {
                        GgmlDType::Q8_0
                    } else {
                        GgmlDType::F32
                    };
                    Ok((n.clone(), crate::weights::quantize(t, ty)?))
                })
                .collect::<Result<Vec<_>>>()?;
            let arch = gguf_file::Value::String(arch.into());
            let md = [("general.architecture", &arch)];
            let ts: Vec<(&str, &QTensor)> =
                quantized.iter().map(|(n, q)| (n.as_str(), q)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &md, &ts)?;
            Ok(BundleFile::new(
                &format!("{stem}-q8_0.gguf"),
                role,
                FileFormat::Gguf,
                out.into_inner(),
            ))
        }
    }
}

/// A Whisper checkpoint (CTranslate2 `model.bin`, HF safetensors, …) as bundle files named
/// `{prefix}model.*`, `{prefix}config.json` and `{prefix}tokenizer.json`: HF names, the
/// suppressed tokens in the config.
pub fn whisper_files(
    source: Arc<dyn TensorSource>,
    config: Option<&serde_json::Value>,
    tokenizer_json: Vec<u8>,
    dtype: WeightDtype,
    prefix: &str,
) -> Result<Vec<BundleFile>> {
    let device = Device::Cpu;
    let cfg = crate::speech::whisper_config(source.as_ref(), config)?;
    // Loading checks every tensor's shape, and the tokenizer's special tokens, before writing.
    let transcriber = crate::speech::load(
        source.clone(),
        Some(&cfg.to_hf_json()),
        &tokenizer_json,
        &device,
        QuantizedMatmul::Dequantize,
    )?;
    drop(transcriber);
    let names = source.names();
    let tensors = read_tensors(source.as_ref(), &names, &device)?;
    Ok(vec![
        weights_file(
            tensors,
            dtype,
            "whisper",
            &format!("{prefix}model"),
            Role::SpeechModel,
        )?,
        BundleFile::new(
            &format!("{prefix}config.json"),
            Role::SpeechConfig,
            FileFormat::Json,
            serde_json::to_vec_pretty(&cfg.to_hf_json()).expect("JSON serializes"),
        ),
        BundleFile::new(
            &format!("{prefix}tokenizer.json"),
            Role::SpeechTokenizer,
            FileFormat::Json,
            tokenizer_json,
        ),
    ])
}
