//! Deterministic random weights with the real architectures, at any size: a `tiny` preset for
//! tests and the browser's offline development, and a `phi2` preset with Phi-2's real shapes
//! (2.7B parameters, Q4_K GGUF, ~1.6 GB) for speed work. The same seed gives the same bytes on
//! every machine: values come from ChaCha8 streams keyed by (seed, tensor name).

use crate::bundle::{BundleFile, FileFormat, Manifest, Role, Settings, FORMAT_VERSION};
use crate::convert::WeightDtype;
use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::models::clip_vision;
use crate::models::phi2::{self, layout};
use crate::models::whisper;
use crate::weights::write_safetensors;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub name: String,
    pub text: phi2::Config,
    pub vision: clip_vision::Config,
    /// Block type of Phi-2's matrices (norms and biases stay F32).
    pub text_quant: GgmlDType,
    /// F16 or F32 for CLIP and the projector.
    pub vision_dtype: DType,
    /// Whisper's shapes (with the multilingual vocabulary) and precision; `None` leaves speech out.
    pub speech: Option<(whisper::Config, WeightDtype)>,
    pub seed: u64,
}

/// Whisper with `d_model` width and `layers` encoder and decoder layers, multilingual vocabulary.
fn whisper_shape(d_model: usize, layers: usize, heads: usize) -> whisper::Config {
    whisper::Config {
        num_mel_bins: 80,
        d_model,
        encoder_layers: layers,
        encoder_attention_heads: heads,
        encoder_ffn_dim: 4 * d_model,
        decoder_layers: layers,
        decoder_attention_heads: heads,
        decoder_ffn_dim: 4 * d_model,
        vocab_size: 51865,
        max_source_positions: 1500,
        max_target_positions: 448,
        scale_embedding: false,
        activation_function: Activation::GeluErf,
        suppress_tokens: Vec::new(),
        begin_suppress_tokens: Vec::new(),
    }
}

impl SynthSpec {
    /// A few megabytes: Phi-2's layout at width 64 with the real 51 200-row vocabulary (so the
    /// real tokenizer works), CLIP's layout at width 32.
    pub fn tiny() -> Self {
        Self {
            name: "jnana-tiny (random weights)".into(),
            text: phi2::Config {
                vocab_size: 51200,
                hidden_size: 64,
                intermediate_size: 256,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: Some(4),
                hidden_act: Activation::GeluTanh,
                max_position_embeddings: 2048,
                layer_norm_eps: 1e-5,
                rope_theta: 10000.0,
                rotary_dim: 6,
                eos_token_id: Some(50256),
            },
            vision: clip_vision::Config {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                ..clip_vision::Config::vit_base_patch32()
            },
            text_quant: GgmlDType::Q8_0,
            vision_dtype: DType::F32,
            speech: Some((whisper_shape(64, 2, 4), WeightDtype::Q8_0)),
            seed: 0,
        }
    }

    /// microsoft/phi-2's and ViT-B/32's real shapes.
    pub fn phi2() -> Self {
        Self {
            name: "jnana-phi2-shapes (random weights)".into(),
            text: phi2::Config::phi2(),
            vision: clip_vision::Config::vit_base_patch32(),
            text_quant: GgmlDType::Q4K,
            vision_dtype: DType::F16,
            // Whisper base's shapes.
            speech: Some((whisper_shape(512, 6, 8), WeightDtype::F16)),
            seed: 0,
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "phi2" => Ok(Self::phi2()),
            other => Err(Error::Input(format!(
                "unknown preset `{other}` (tiny or phi2)"
            ))),
        }
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// Uniform with this standard deviation around `mean`.
    Uniform { mean: f32, std: f32 },
}

fn draw(seed: u64, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
    let Init::Uniform { mean, std } = init;
    let mut key = Sha256::new();
    key.update(seed.to_le_bytes());
    key.update(name.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(key.finalize().into());
    // Uniform on [-a, a] has standard deviation a / sqrt(3).
    let half_width = std * 3f32.sqrt();
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            mean + (2.0 * unit - 1.0) * half_width
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

fn linear_init(fan_in: usize) -> Init {
    Init::Uniform {
        mean: 0.0,
        std: (fan_in as f32).powf(-0.5),
    }
}

const BIAS: Init = Init::Uniform {
    mean: 0.0,
    std: 0.02,
};
const NORM_WEIGHT: Init = Init::Uniform {
    mean: 1.0,
    std: 0.05,
};
const NORM_BIAS: Init = Init::Uniform {
    mean: 0.0,
    std: 0.02,
};

/// Phi-2's tensors under HF names (`qkv_proj` fused), with the shape and init of each.
fn phi_tensors(cfg: &phi2::Config) -> Vec<(String, Vec<usize>, Init)> {
    let (h, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads()) * cfg.head_dim();
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![v, h],
        Init::Uniform {
            mean: 0.0,
            std: 0.5,
        },
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h], NORM_WEIGHT),
            (format!("{p}.input_layernorm.bias"), vec![h], NORM_BIAS),
            (
                format!("{p}.self_attn.qkv_proj.weight"),
                vec![qkv, h],
                linear_init(h),
            ),
            (format!("{p}.self_attn.qkv_proj.bias"), vec![qkv], BIAS),
            (
                format!("{p}.self_attn.dense.weight"),
                vec![h, h],
                linear_init(h),
            ),
            (format!("{p}.self_attn.dense.bias"), vec![h], BIAS),
            (format!("{p}.mlp.fc1.weight"), vec![ff, h], linear_init(h)),
            (format!("{p}.mlp.fc1.bias"), vec![ff], BIAS),
            (format!("{p}.mlp.fc2.weight"), vec![h, ff], linear_init(ff)),
            (format!("{p}.mlp.fc2.bias"), vec![h], BIAS),
        ]);
    }
    out.extend([
        (
            "model.final_layernorm.weight".to_string(),
            vec![h],
            NORM_WEIGHT,
        ),
        ("model.final_layernorm.bias".to_string(), vec![h], NORM_BIAS),
        ("lm_head.weight".to_string(), vec![v, h], linear_init(h)),
        ("lm_head.bias".to_string(), vec![v], BIAS),
    ]);
    out
}

fn clip_tensors(cfg: &clip_vision::Config) -> Vec<(String, Vec<usize>, Init)> {
    let (h, ff, p, c) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.patch_size,
        cfg.num_channels,
    );
    let e = "vision_model.embeddings";
    let mut out = vec![
        (
            format!("{e}.class_embedding"),
            vec![h],
            Init::Uniform {
                mean: 0.0,
                std: 1.0,
            },
        ),
        (
            format!("{e}.patch_embedding.weight"),
            vec![h, c, p, p],
            linear_init(c * p * p),
        ),
        (
            format!("{e}.position_embedding.weight"),
            vec![cfg.num_patches() + 1, h],
            Init::Uniform {
                mean: 0.0,
                std: 0.5,
            },
        ),
        (
            "vision_model.pre_layrnorm.weight".into(),
            vec![h],
            NORM_WEIGHT,
        ),
        ("vision_model.pre_layrnorm.bias".into(), vec![h], NORM_BIAS),
        (
            "vision_model.post_layernorm.weight".into(),
            vec![h],
            NORM_WEIGHT,
        ),
        (
            "vision_model.post_layernorm.bias".into(),
            vec![h],
            NORM_BIAS,
        ),
    ];
    for i in 0..cfg.num_hidden_layers {
        let l = format!("vision_model.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((
                format!("{l}.self_attn.{proj}.weight"),
                vec![h, h],
                linear_init(h),
            ));
            out.push((format!("{l}.self_attn.{proj}.bias"), vec![h], BIAS));
        }
        out.extend([
            (format!("{l}.layer_norm1.weight"), vec![h], NORM_WEIGHT),
            (format!("{l}.layer_norm1.bias"), vec![h], NORM_BIAS),
            (format!("{l}.layer_norm2.weight"), vec![h], NORM_WEIGHT),
            (format!("{l}.layer_norm2.bias"), vec![h], NORM_BIAS),
            (format!("{l}.mlp.fc1.weight"), vec![ff, h], linear_init(h)),
            (format!("{l}.mlp.fc1.bias"), vec![ff], BIAS),
            (format!("{l}.mlp.fc2.weight"), vec![h, ff], linear_init(ff)),
            (format!("{l}.mlp.fc2.bias"), vec![h], BIAS),
        ]);
    }
    out
}

fn whisper_tensors(cfg: &whisper::Config) -> Vec<(String, Vec<usize>, Init)> {
    let d = cfg.d_model;
    let mut out = vec![
        (
            "model.encoder.conv1.weight".to_string(),
            vec![d, cfg.num_mel_bins, 3],
            linear_init(cfg.num_mel_bins * 3),
        ),
        ("model.encoder.conv1.bias".to_string(), vec![d], BIAS),
        (
            "model.encoder.conv2.weight".to_string(),
            vec![d, d, 3],
            linear_init(d * 3),
        ),
        ("model.encoder.conv2.bias".to_string(), vec![d], BIAS),
        (
            "model.encoder.embed_positions.weight".to_string(),
            vec![cfg.max_source_positions, d],
            Init::Uniform {
                mean: 0.0,
                std: 0.5,
            },
        ),
        (
            "model.encoder.layer_norm.weight".to_string(),
            vec![d],
            NORM_WEIGHT,
        ),
        (
            "model.encoder.layer_norm.bias".to_string(),
            vec![d],
            NORM_BIAS,
        ),
        (
            "model.decoder.embed_tokens.weight".to_string(),
            vec![cfg.vocab_size, d],
            Init::Uniform {
                mean: 0.0,
                std: 0.2,
            },
        ),
        (
            "model.decoder.embed_positions.weight".to_string(),
            vec![cfg.max_target_positions, d],
            Init::Uniform {
                mean: 0.0,
                std: 0.5,
            },
        ),
        (
            "model.decoder.layer_norm.weight".to_string(),
            vec![d],
            NORM_WEIGHT,
        ),
        (
            "model.decoder.layer_norm.bias".to_string(),
            vec![d],
            NORM_BIAS,
        ),
    ];
    let attention = |p: &str, out: &mut Vec<(String, Vec<usize>, Init)>| {
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((format!("{p}.{proj}.weight"), vec![d, d], linear_init(d)));
            if proj != "k_proj" {
                out.push((format!("{p}.{proj}.bias"), vec![d], BIAS));
            }
        }
    };
    for (side, layers, ffn) in [
        ("encoder", cfg.encoder_layers, cfg.encoder_ffn_dim),
        ("decoder", cfg.decoder_layers, cfg.decoder_ffn_dim),
    ] {
        for i in 0..layers {
            let l = format!("model.{side}.layers.{i}");
            let mut norms = vec!["self_attn_layer_norm", "final_layer_norm"];
            attention(&format!("{l}.self_attn"), &mut out);
            if side == "decoder" {
                attention(&format!("{l}.encoder_attn"), &mut out);
                norms.push("encoder_attn_layer_norm");
            }
            for norm in norms {
                out.push((format!("{l}.{norm}.weight"), vec![d], NORM_WEIGHT));
                out.push((format!("{l}.{norm}.bias"), vec![d], NORM_BIAS));
            }
            out.extend([
                (format!("{l}.fc1.weight"), vec![ffn, d], linear_init(d)),
                (format!("{l}.fc1.bias"), vec![ffn], BIAS),
                (format!("{l}.fc2.weight"), vec![d, ffn], linear_init(ffn)),
                (format!("{l}.fc2.bias"), vec![d], BIAS),
            ]);
        }
    }
    out
}

fn projector_tensors(vision: usize, text: usize) -> Vec<(String, Vec<usize>, Init)> {
    vec![
        (
            "linear.weight".into(),
            vec![text, vision],
            linear_init(vision),
        ),
        ("linear.bias".into(), vec![text], BIAS),
        ("res.pre_norm.weight".into(), vec![text], NORM_WEIGHT),
        ("res.pre_norm.bias".into(), vec![text], NORM_BIAS),
        (
            "res.proj.0.weight".into(),
            vec![text, text],
            linear_init(text),
        ),
        ("res.proj.0.bias".into(), vec![text], BIAS),
        (
            "res.proj.2.weight".into(),
            vec![text, text],
            linear_init(text),
        ),
        ("res.proj.2.bias".into(), vec![text], BIAS),
    ]
}

/// Draws every tensor, on all cores; results come back in input order.
fn draw_all<T: Send>(
    seed: u64,
    specs: &[(String, Vec<usize>, Init)],
    finish: &(dyn Fn(Tensor) -> Result<T> + Sync),
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<(String, T)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<T>>>> =
        specs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((name, shape, init)) = specs.get(i) else {
            break;
        };
        let q = draw(seed, name, shape, *init).and_then(finish);
        *results[i].lock().expect("no panics while holding") = Some(q);
        progress(i);
    };
    if cfg!(target_arch = "wasm32") || threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    specs
        .iter()
        .zip(results)
        .map(|((name, _, _), r)| {
            let q = r
                .into_inner()
                .expect("no panics")
                .expect("every index is drawn")?;
            Ok((name.clone(), q))
        })
        .collect()
}

pub(crate) fn quantize_for(dtype: GgmlDType, t: &Tensor) -> Result<QTensor> {
    // Vectors (norms, biases) stay F32, as llama.cpp keeps them.
    let ty = if t.rank() < 2 { GgmlDType::F32 } else { dtype };
    let cols = t.dims().last().copied().unwrap_or(0);
    if cols % ty.block_size() != 0 {
        return Err(Error::Input(format!(
            "rows of {cols} values do not split into {ty:?} blocks of {}; pick a width that is a multiple",
            ty.block_size()
        )));
    }
    crate::weights::quantize(t, ty)
}

/// llama.cpp's `general.file_type` for a bundle quantized to `ty`.
pub fn gguf_file_type(ty: GgmlDType) -> u32 {
    match ty {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q4K => 15,
        GgmlDType::Q5K => 17,
        GgmlDType::Q6K => 18,
        _ => 0,
    }
}

/// A complete bundle of random weights: Phi-2 GGUF, tokenizer, CLIP, projector, Whisper and
/// manifest. `tokenizer_json` is Phi-2's tokenizer (see [`phi2_tokenizer_json`]),
/// `speech_tokenizer_json` Whisper's multilingual one (needed when the spec has speech).
pub fn synthesize(
    spec: &SynthSpec,
    tokenizer_json: &str,
    speech_tokenizer_json: Option<&str>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Manifest, Vec<BundleFile>)> {
    let text = phi_tensors(&spec.text);
    let n = text.len();
    let quant = spec.text_quant;
    let tensors = draw_all(spec.seed, &text, &|t| quantize_for(quant, &t), &|i| {
        progress("language model", i + 1, n)
    })?;
    let vocab = layout::GgufVocab::from_tokenizer_json(tokenizer_json, spec.text.vocab_size)?;
    let gguf = layout::write_llama_cpp_gguf(
        &spec.text,
        &spec.name,
        &tensors,
        &vocab,
        gguf_file_type(quant),
    )?;
    drop(tensors);

    let float = |specs: Vec<(String, Vec<usize>, Init)>, what: &str| -> Result<Vec<u8>> {
        let n = specs.len();
        let dtype = spec.vision_dtype;
        let tensors = draw_all(spec.seed, &specs, &|t| Ok(t.to_dtype(dtype)?), &|i| {
            progress(what, i + 1, n)
        })?;
        write_safetensors(&tensors)
    };
    let clip = float(clip_tensors(&spec.vision), "vision model")?;
    let projector = float(
        projector_tensors(spec.vision.hidden_size, spec.text.hidden_size),
        "projector",
    )?;

    let file = BundleFile::new;
    let mut files = vec![
        file("phi2.gguf", Role::LanguageModel, FileFormat::Gguf, gguf),
        file(
            "tokenizer.json",
            Role::Tokenizer,
            FileFormat::Json,
            tokenizer_json.as_bytes().to_vec(),
        ),
        file(
            "clip.safetensors",
            Role::VisionModel,
            FileFormat::Safetensors,
            clip,
        ),
        file(
            "projector.safetensors",
            Role::Projector,
            FileFormat::Safetensors,
            projector,
        ),
    ];
    if let Some((cfg, dtype)) = &spec.speech {
        let tok = speech_tokenizer_json
            .ok_or_else(|| Error::Input("a spec with speech needs Whisper's tokenizer".into()))?;
        let specs = whisper_tensors(cfg);
        let n = specs.len();
        let tensors = draw_all(spec.seed, &specs, &|t| Ok(t), &|i| {
            progress("speech model", i + 1, n)
        })?;
        let source: std::sync::Arc<dyn crate::weights::TensorSource> =
            std::sync::Arc::new(crate::weights::SafetensorsSource::new(
                "whisper",
                Box::new(std::io::Cursor::new(write_safetensors(&tensors)?)),
            )?);
        drop(tensors);
        files.extend(crate::convert::whisper_files(
            source,
            Some(&cfg.to_hf_json()),
            tok.as_bytes().to_vec(),
            *dtype,
            "whisper-",
        )?);
    }
    let manifest = Manifest {
        format: FORMAT_VERSION.into(),
        name: spec.name.clone(),
        description: format!(
            "Random weights with the real architectures (seed {}): Phi-2 {:?} GGUF, CLIP vision {:?}, projector. Answers are gibberish; shapes and speed are real.",
            spec.seed, spec.text_quant, spec.vision_dtype
        ),
        files: files.iter().map(|f| f.entry.clone()).collect(),
        settings: Settings {
            eos_token_id: Some(vocab.eos),
            ..Settings::default()
        },
        text_config: None,
        vision_config: Some(spec.vision.to_hf_json()),
        preprocessor: None,
    };
    manifest.validate()?;
    Ok((manifest, files))
}

/// Phi-2's `tokenizer.json` rebuilt from GPT-2's (which holds Phi-2's first 50 257 tokens): the
/// 38 whitespace tokens CodeGen added, ids 50 257..50 294 (31 down to 2 spaces, then 9 down to
/// 2 tabs), are appended as non-special added tokens.
pub fn phi2_tokenizer_json(gpt2_tokenizer_json: &str) -> Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(gpt2_tokenizer_json)
        .map_err(|e| Error::file("tokenizer.json", format!("not valid JSON: {e}")))?;
    let added = v["added_tokens"]
        .as_array_mut()
        .ok_or_else(|| Error::file("tokenizer.json", "no added_tokens"))?;
    if added.iter().any(|t| t["id"].as_u64() == Some(50257)) {
        return Ok(gpt2_tokenizer_json.to_string());
    }
    let runs = (2..=31)
        .rev()
        .map(|n| " ".repeat(n))
        .chain((2..=9).rev().map(|n| "\t".repeat(n)));
    for (i, content) in runs.enumerate() {
        added.push(serde_json::json!({
            "id": 50257 + i,
            "content": content,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": true,
            "special": false
        }));
    }
    Ok(serde_json::to_string(&v).expect("JSON serializes"))
}

/// A byte-level BPE `tokenizer.json` cut down to `size` tokens: the first `size - 1` of the
/// vocabulary, the merges among them, and `<|endoftext|>` as the last id (the layout of the
/// reference fixtures' 1 000-token GGUF vocabulary). For models too small for the real tokenizer.
pub fn truncated_tokenizer_json(tokenizer_json: &str, size: usize) -> Result<String> {
    let bad = |m: &str| Error::file("tokenizer.json", m);
    let mut v: serde_json::Value =
        serde_json::from_str(tokenizer_json).map_err(|e| bad(&format!("not valid JSON: {e}")))?;
    let keep = size
        .checked_sub(1)
        .ok_or_else(|| bad("size must be at least 1"))? as u64;
    let vocab: serde_json::Map<String, serde_json::Value> = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab"))?
        .iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|id| id < keep))
        .map(|(k, id)| (k.clone(), id.clone()))
        .collect();
    let merges: Vec<serde_json::Value> = v["model"]["merges"]
        .as_array()
        .ok_or_else(|| bad("no model.merges"))?
        .iter()
        .filter(|m| {
            m.as_str()
                .and_then(|s| s.split_once(' '))
                .is_some_and(|(a, b)| {
                    vocab.contains_key(a)
                        && vocab.contains_key(b)
                        && vocab.contains_key(&format!("{a}{b}"))
                })
        })
        .cloned()
        .collect();
    v["model"]["vocab"] = serde_json::Value::Object(vocab);
    v["model"]["merges"] = serde_json::Value::Array(merges);
    v["added_tokens"] = serde_json::json!([{
        "id": keep, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true
    }]);
    Ok(v.to_string())
}
