//! Checks the crate against a reference fixture folder laid out like `shared/fixtures/*`
//! (Hugging Face `transformers` outputs for small random models): every check that applies to
//! the folder's contents runs, reporting its error and tolerance. Dimensions, file names and
//! tolerances come from the folder (its `config.json` and the "suggested atol" column of its
//! `README.md`), so other seeds and sizes need no code changes.

use crate::audio::mel::{self, LogMel, MelConfig};
use crate::audio::AudioStream;
use crate::bundle::{apply_adapter, load_clip};
use crate::error::{Error, Result};
use crate::generation::{Generation, GenerationParams};
use crate::lora::LoraAdapter;
use crate::models::clip_vision::{self, ClipVision};
use crate::models::phi2::{self, layout, Phi2};
use crate::models::projector::Projector;
use crate::models::whisper::{self, Whisper};
use crate::pipeline::PromptPart;
use crate::preprocess::{self, PreprocessConfig};
use crate::speech;
use crate::tokenizer::Tokenizer;
use crate::weights::{
    self, GgufSource, Prefixed, QuantizedMatmul, SafetensorsSource, TensorSource, Union, Weights,
};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tolerance when a fixture's README suggests none for a tensor.
pub const DEFAULT_ATOL: f64 = 1e-4;
/// Integer-dot kernels that round activations in other blocks than ggml's reference Q8_0 (candle
/// 0.11's AVX512-VNNI path for Q8_0 weights uses 256-wide Q8_K blocks) flip a few roundings: the
/// fixture README bounds such kernels at ~6e-2 against `logits_q8act.*`.
pub const INTEGER_DOT_ATOL: f64 = 6e-2;
/// Preprocessing may differ from PIL's bicubic by this many 8-bit levels per channel.
pub const PIXEL_LEVELS_ATOL: f64 = 2.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Largest absolute difference, its tolerance, and the mean absolute difference.
    MaxAbs { max: f64, mean: f64, atol: f64 },
    /// Exact comparison (token ids, round trips); `detail` says what differed.
    Exact { equal: bool, detail: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
}

impl Check {
    pub fn passed(&self) -> bool {
        match &self.outcome {
            Outcome::MaxAbs { max, atol, .. } => max.is_finite() && max <= atol,
            Outcome::Exact { equal, .. } => *equal,
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.passed() { "ok  " } else { "FAIL" };
        match &self.outcome {
            Outcome::MaxAbs { max, mean, atol } => write!(
                f,
                "{status} {:<52} max abs err {max:.3e}  (mean {mean:.3e})  tol {atol:.1e}",
                self.name
            ),
            Outcome::Exact { equal, detail } => write!(
                f,
                "{status} {:<52} {}{}",
                self.name,
                if *equal { "exact match" } else { "MISMATCH" },
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
        }
    }
}

/// What kind of fixture a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Phi,
    ClipVision,
    Projector,
    Multimodal,
    Lora,
    ProjectorPth,
    PhiGguf,
    Tokenizers,
    Whisper,
}

pub fn detect(dir: &Path) -> Result<Kind> {
    let config = read_json(&dir.join("config.json")).ok();
    let get = |k: &str| config.as_ref().and_then(|c| c.get(k));
    let model_type = get("model_type").and_then(Value::as_str).unwrap_or("");
    Ok(if dir.join("cases.json").exists() {
        Kind::Tokenizers
    } else if get("gguf").is_some() {
        Kind::PhiGguf
    } else if dir.join("adapter").is_dir() && dir.join("base").is_dir() {
        Kind::Lora
    } else if get("expected_from").is_some() {
        Kind::ProjectorPth
    } else if get("text_config").is_some() && get("vision_config").is_some() {
        Kind::Multimodal
    } else if model_type == "whisper" {
        Kind::Whisper
    } else if model_type == "phi" {
        Kind::Phi
    } else if model_type == "clip_vision_model" {
        Kind::ClipVision
    } else if get("type").and_then(Value::as_str) == Some("linear+llava_simple_res_block") {
        Kind::Projector
    } else {
        return Err(Error::file(
            dir.display().to_string(),
            format!(
                "no check applies to this folder (model_type `{model_type}`); covered: phi, \
                 clip_vision, projector, multimodal, lora, projector_pth, phi_gguf, tokenizers, whisper"
            ),
        ));
    })
}

/// Where a check's model computations run. Every engine gets the same CPU models, loaded and
/// configured by the same code (the GPU engine uploads them), and reports what the CPU models
/// report.
pub trait Engine {
    /// What the report calls it.
    fn name(&self) -> &'static str;
    /// Where the checked models and the fixture's tensors are loaded.
    fn device(&self) -> Device {
        Device::Cpu
    }
    /// Phi-2 on `embeds` (`[1, seq, hidden]`) from an empty cache.
    fn phi_trace(&self, phi: &Phi2, embeds: &Tensor) -> Result<phi2::Trace>;
    /// Greedy ids after `embeds`, end-of-text included when produced (as HF returns it).
    fn phi_greedy(
        &self,
        phi: &Phi2,
        embeds: &Tensor,
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>>;
    /// CLIP's hidden states `0..=index` of `[1, 3, S, S]` pixel values.
    fn clip_trace(
        &self,
        clip: &ClipVision,
        pixels: &Tensor,
        index: usize,
    ) -> Result<clip_vision::VisionOutput>;
    /// The projector's `(after linear, after pre-norm, projected)`.
    fn projector_trace(
        &self,
        projector: &Projector,
        features: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)>;
    /// Whisper's encoder on `[1, n_mels, frames]` features.
    fn whisper_encode(&self, model: &Whisper, mel: &Tensor) -> Result<whisper::EncoderOutput>;
    /// Decoder hidden states (`[1, ids, d_model]`) and logits (`[ids, vocab]`) of `ids` fed
    /// from an empty state.
    fn whisper_decode(
        &self,
        model: &Whisper,
        encoder_hidden: &Tensor,
        ids: &[u32],
    ) -> Result<(Tensor, Tensor)>;
    /// A decoder window on an encoder output (`[1, positions, d_model]`).
    fn whisper_window<'a>(
        &'a self,
        model: &'a Whisper,
        encoder_hidden: &Tensor,
    ) -> Result<Box<dyn speech::WhisperWindow + 'a>>;
}

/// The candle models themselves, on a candle device (the CPU, or CUDA in a `cuda` build).
pub struct CandleModels(pub Device);

impl Engine for CandleModels {
    fn name(&self) -> &'static str {
        match self.0 {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::Metal(_) => "metal",
        }
    }

    fn device(&self) -> Device {
        self.0.clone()
    }

    fn phi_trace(&self, phi: &Phi2, embeds: &Tensor) -> Result<phi2::Trace> {
        phi.forward_trace(embeds, &mut phi.new_cache())
    }

    fn phi_greedy(
        &self,
        phi: &Phi2,
        embeds: &Tensor,
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        greedy(phi, embeds, max_new, eos)
    }

    fn clip_trace(
        &self,
        clip: &ClipVision,
        pixels: &Tensor,
        index: usize,
    ) -> Result<clip_vision::VisionOutput> {
        clip.forward_trace(pixels, index)
    }

    fn projector_trace(
        &self,
        projector: &Projector,
        features: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        projector.forward_trace(features)
    }

    fn whisper_encode(&self, model: &Whisper, mel: &Tensor) -> Result<whisper::EncoderOutput> {
        model.encode(mel)
    }

    fn whisper_decode(
        &self,
        model: &Whisper,
        encoder_hidden: &Tensor,
        ids: &[u32],
    ) -> Result<(Tensor, Tensor)> {
        let mut state = model.new_state(encoder_hidden)?;
        let hidden = model.decode_hidden(ids, &mut state)?;
        let mut state = model.new_state(encoder_hidden)?;
        Ok((hidden, model.decode(ids, &mut state)?))
    }

    fn whisper_window<'a>(
        &'a self,
        model: &'a Whisper,
        encoder_hidden: &Tensor,
    ) -> Result<Box<dyn speech::WhisperWindow + 'a>> {
        Ok(Box::new(speech::CandleWindow::from_hidden(
            model,
            encoder_hidden.clone(),
        )?))
    }
}

/// Runs every check that applies to `dir` on the CPU models.
pub fn run(dir: &Path) -> Result<Vec<Check>> {
    run_with(dir, &CandleModels(Device::Cpu))
}

/// Runs every check that applies to `dir` on `engine`.
pub fn run_with(dir: &Path, engine: &dyn Engine) -> Result<Vec<Check>> {
    let mut fx = Fixture::open(dir, engine)?;
    match detect(dir)? {
        Kind::Phi => fx.phi()?,
        Kind::ClipVision => fx.clip()?,
        Kind::Projector => fx.projector()?,
        Kind::Multimodal => fx.multimodal()?,
        Kind::Lora => fx.lora()?,
        Kind::ProjectorPth => fx.projector_pth()?,
        Kind::PhiGguf => fx.phi_gguf()?,
        Kind::Tokenizers => fx.tokenizers()?,
        Kind::Whisper => fx.whisper()?,
    }
    if fx.checks.is_empty() {
        return Err(Error::file(
            dir.display().to_string(),
            "no expected tensors found to check",
        ));
    }
    Ok(fx.checks)
}

struct Fixture<'a> {
    engine: &'a dyn Engine,
    dir: PathBuf,
    device: Device,
    atols: HashMap<String, f64>,
    expected: HashMap<String, Tensor>,
    inputs: HashMap<String, Tensor>,
    config: Value,
    checks: Vec<Check>,
}

impl<'a> Fixture<'a> {
    fn open(dir: &Path, engine: &'a dyn Engine) -> Result<Self> {
        let device = engine.device();
        let load = |name: &str| -> Result<HashMap<String, Tensor>> {
            let path = dir.join(name);
            if path.exists() {
                read_all(&path, &device)
            } else {
                Ok(HashMap::new())
            }
        };
        Ok(Self {
            engine,
            dir: dir.to_path_buf(),
            atols: std::fs::read_to_string(dir.join("README.md"))
                .map(|r| suggested_atols(&r))
                .unwrap_or_default(),
            expected: load("expected.safetensors")?,
            inputs: load("inputs.safetensors")?,
            config: read_json(&dir.join("config.json")).unwrap_or(Value::Null),
            device,
            checks: Vec::new(),
        })
    }

    fn atol(&self, tensor: &str) -> f64 {
        self.atols.get(tensor).copied().unwrap_or(DEFAULT_ATOL)
    }

    fn expected(&self, name: &str) -> Result<&Tensor> {
        self.expected.get(name).ok_or_else(|| {
            Error::tensor(
                self.dir.join("expected.safetensors").display().to_string(),
                name,
                "missing",
            )
        })
    }

    fn input(&self, name: &str) -> Result<&Tensor> {
        self.inputs.get(name).ok_or_else(|| {
            Error::tensor(
                self.dir.join("inputs.safetensors").display().to_string(),
                name,
                "missing",
            )
        })
    }

    fn compare(&mut self, label: &str, tensor: &str, ours: &Tensor) -> Result<()> {
        let expected = self.expected(tensor)?.clone();
        let atol = self.atol(tensor);
        self.compare_with(label, ours, &expected, atol)
    }

    fn compare_with(
        &mut self,
        label: &str,
        ours: &Tensor,
        expected: &Tensor,
        atol: f64,
    ) -> Result<()> {
        let outcome = if ours.dims() != expected.dims() {
            Outcome::Exact {
                equal: false,
                detail: format!("shape {:?}, expected {:?}", ours.dims(), expected.dims()),
            }
        } else {
            let (max, mean) = abs_diff(ours, expected)?;
            Outcome::MaxAbs { max, mean, atol }
        };
        self.checks.push(Check {
            name: label.to_string(),
            outcome,
        });
        Ok(())
    }

    fn compare_ids(&mut self, label: &str, ours: &[u32], expected: &[u32]) {
        let equal = ours == expected;
        let detail = if equal {
            format!("{} ids", ours.len())
        } else {
            format!("got {ours:?}, expected {expected:?}")
        };
        self.checks.push(Check {
            name: label.to_string(),
            outcome: Outcome::Exact { equal, detail },
        });
    }

    fn expected_ids(&self, name: &str) -> Result<Vec<u32>> {
        ids_of(self.expected(name)?)
    }

    fn source(&self, file: &str) -> Result<Arc<dyn TensorSource>> {
        open_path(&self.dir.join(file))
    }

    fn phi_from(&self, dir: &Path, config: &Value, mode: QuantizedMatmul) -> Result<Phi2> {
        let cfg = phi2::Config::from_hf_value("config.json", config)?;
        let source = open_path(&dir.join("model.safetensors"))?;
        Phi2::new(
            &cfg,
            &Weights::new(source, &self.device).with_quantized_matmul(mode),
        )
    }

    /// Logits (and hidden states when expected) of `phi` on a tensor input.
    fn check_logits(
        &mut self,
        phi: &Phi2,
        label: &str,
        input: Embeds,
        logits_name: &str,
    ) -> Result<()> {
        let embeds = input.embeddings(phi, self)?;
        let trace = self.engine.phi_trace(phi, &embeds)?;
        self.compare(
            &format!("{label} {logits_name}"),
            logits_name,
            &trace.logits,
        )?;
        if matches!(input, Embeds::Ids("input_ids")) && logits_name == "logits" {
            for (i, h) in trace.hidden_states.iter().enumerate() {
                let name = format!("hidden_states.{i}");
                if self.expected.contains_key(&name) {
                    self.compare(&format!("{label} {name}"), &name, h)?;
                }
            }
        }
        Ok(())
    }

    /// Greedy generation; the expected output is HF's raw `generate` result (prompt ids first
    /// when the prompt was ids).
    fn check_greedy(
        &mut self,
        phi: &Phi2,
        label: &str,
        input: Embeds,
        expected: &str,
        eos: Option<u32>,
    ) -> Result<()> {
        let want = self.expected_ids(expected)?;
        let (prefix, max_new) = match input {
            Embeds::Ids(name) => {
                let p = ids_of(self.input(name)?)?;
                let n = want.len().saturating_sub(p.len());
                (p, n)
            }
            _ => (Vec::new(), want.len()),
        };
        let embeds = input.embeddings(phi, self)?;
        let ids = self.engine.phi_greedy(phi, &embeds, max_new, eos)?;
        let got: Vec<u32> = prefix.into_iter().chain(ids).collect();
        self.compare_ids(&format!("{label} {expected}"), &got, &want);
        Ok(())
    }

    fn phi(&mut self) -> Result<()> {
        let config = self.config.clone();
        let phi = self.phi_from(&self.dir.clone(), &config, QuantizedMatmul::IntegerDot)?;
        self.check_phi_runs(&phi, "phi")
    }

    fn check_phi_runs(&mut self, phi: &Phi2, label: &str) -> Result<()> {
        let eos = phi.config().eos_token_id;
        for (input, logits) in [
            (Embeds::Ids("input_ids"), "logits"),
            (Embeds::Tensor("inputs_embeds"), "logits_from_embeds"),
        ] {
            if self.expected.contains_key(logits) {
                self.check_logits(phi, label, input, logits)?;
            }
        }
        for (input, name) in [
            (Embeds::Ids("prompt_ids"), "greedy_ids"),
            (Embeds::Tensor("prompt_embeds"), "greedy_from_embeds_ids"),
            (
                Embeds::Tensor("random_prompt_embeds"),
                "greedy_from_random_embeds_ids",
            ),
        ] {
            if self.expected.contains_key(name) {
                self.check_greedy(phi, label, input, name, eos)?;
            }
        }
        Ok(())
    }

    fn clip_config(&self) -> Result<clip_vision::Config> {
        let v = self.config.get("vision_config").unwrap_or(&self.config);
        clip_vision::Config::from_hf_value("config.json", v)
    }

    fn clip(&mut self) -> Result<()> {
        let cfg = self.clip_config()?;
        let clip = load_clip(
            self.source("model.safetensors")?,
            &cfg,
            &self.device,
            QuantizedMatmul::IntegerDot,
        )?;
        let pixels = self.input("pixel_values")?.clone();
        let last = clip.last_layer_index();
        let out = self.engine.clip_trace(&clip, &pixels, last)?;
        self.compare("clip embeddings", "embeddings", &out.embeddings)?;
        for (i, h) in out.hidden_states.iter().enumerate() {
            let name = format!("hidden_states.{i}");
            if self.expected.contains_key(&name) {
                self.compare(&format!("clip {name}"), &name, h)?;
            }
        }
        let last_state = &out.hidden_states[last];
        self.compare("clip last_hidden_state", "last_hidden_state", last_state)?;
        if self.expected.contains_key("hidden_states_m2") {
            let m2 = &out.hidden_states[clip.hidden_state_index(-2)?];
            self.compare(
                "clip hidden_states[-2] (LLaVA layer)",
                "hidden_states_m2",
                m2,
            )?;
        }
        self.compare(
            "clip pooler_output",
            "pooler_output",
            &clip.pooled(last_state)?,
        )?;
        self.check_preprocessing()
    }

    fn check_preprocessing(&mut self) -> Result<()> {
        let image = self.dir.join("image.png");
        let Some(reference) = self.expected.get("pixel_values_pil").cloned() else {
            return Ok(());
        };
        let bytes =
            std::fs::read(&image).map_err(|e| Error::file(image.display().to_string(), e))?;
        let pre = PreprocessConfig::from_hf_value(&self.config);
        let ours = preprocess::image_to_pixel_values(&bytes, &pre, &self.device)?;
        // Compare in 8-bit levels (before normalisation): x_level = (x * std + mean) * 255.
        let to_levels = |t: &Tensor| -> Result<Tensor> {
            let std = Tensor::new(&pre.image_std, &self.device)?.reshape((1, 3, 1, 1))?;
            let mean = Tensor::new(&pre.image_mean, &self.device)?.reshape((1, 3, 1, 1))?;
            Ok(((t.broadcast_mul(&std)?.broadcast_add(&mean))? * 255.0)?)
        };
        self.compare_with(
            "preprocessing vs PIL bicubic (8-bit levels)",
            &to_levels(&ours)?,
            &to_levels(&reference)?,
            PIXEL_LEVELS_ATOL,
        )
    }

    fn projector(&mut self) -> Result<()> {
        let eps = self
            .config
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5);
        let vb = Weights::new(self.source("model.safetensors")?, &self.device);
        let projector = Projector::new(&vb, eps)?;
        let (linear, normed, out) = self
            .engine
            .projector_trace(&projector, self.input("image_features")?)?;
        self.compare("projector after_linear", "after_linear", &linear)?;
        self.compare("projector after_pre_norm", "after_pre_norm", &normed)?;
        self.compare("projector projected", "projected", &out)
    }

    fn projector_pth(&mut self) -> Result<()> {
        let eps = self
            .config
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5);
        let from = self.config["expected_from"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (tensor, files) in from {
            let files: Vec<String> = serde_json::from_value(files)
                .map_err(|e| Error::file("config.json", format!("expected_from: {e}")))?;
            let [ll, block] = &files[..] else {
                return Err(Error::file(
                    "config.json",
                    "expected_from lists two files per tensor",
                ));
            };
            let source: Arc<dyn TensorSource> = Arc::new(Union::new(vec![
                Arc::new(Prefixed::new("linear.", self.source(ll)?)),
                Arc::new(Prefixed::new("res.", self.source(block)?)),
            ]));
            let projector = Projector::new(&Weights::new(source, &self.device), eps)?;
            let out = self
                .engine
                .projector_trace(&projector, self.input("image_features")?)?
                .2;
            self.compare(&format!("projector from {ll} + {block}"), &tensor, &out)?;
        }
        Ok(())
    }

    fn multimodal(&mut self) -> Result<()> {
        let source = self.source("model.safetensors")?;
        let vb = Weights::new(source, &self.device);
        let text_cfg = phi2::Config::from_hf_value("config.json", &self.config["text_config"])?;
        let phi = Phi2::new(&text_cfg, &vb.pp("language_model"))?;
        let clip = ClipVision::new(&self.clip_config()?, &vb.pp("vision_tower.vision_model"))?;
        let eps = self.config["projector"]["layer_norm_eps"]
            .as_f64()
            .unwrap_or(1e-5);
        let projector = Projector::new(&vb.pp("mm_projector"), eps)?;

        let index = clip.hidden_state_index(-1)?;
        let state = self
            .engine
            .clip_trace(&clip, self.input("pixel_values")?, index)?
            .hidden_states
            .swap_remove(index);
        let features = state.narrow(1, 1, state.dim(1)? - 1)?;
        let image = self.engine.projector_trace(&projector, &features)?.2;
        let parts: Vec<PromptPart> = std::iter::once(Ok(PromptPart::Image(image)))
            .chain(
                ["eoi_ids", "question_ids", "eoq_ids"]
                    .iter()
                    .map(|n| Ok(PromptPart::Tokens(ids_of(self.input(n)?)?))),
            )
            .collect::<Result<_>>()?;
        let embeds = embed_parts(&phi, &parts)?;
        self.compare(
            "multimodal inputs_embeds (from pixels)",
            "inputs_embeds",
            &embeds,
        )?;

        let stored = self.expected("inputs_embeds")?.clone();
        let trace = self.engine.phi_trace(&phi, &stored)?;
        self.compare("multimodal logits", "logits", &trace.logits)?;
        let max_new = self.config["max_new_tokens"].as_u64().unwrap_or(15) as usize;
        for (name, eos_key) in [
            ("generated_ids", "eos_token_id_full"),
            ("generated_ids_eos_stop", "eos_token_id_stop"),
        ] {
            if !self.expected.contains_key(name) {
                continue;
            }
            let eos = self.config[eos_key].as_u64().map(|v| v as u32);
            let ids = self.engine.phi_greedy(&phi, &embeds, max_new, eos)?;
            let want = self.expected_ids(name)?;
            self.compare_ids(&format!("multimodal {name} (end to end)"), &ids, &want);
        }
        Ok(())
    }

    fn lora(&mut self) -> Result<()> {
        let base_dir = self.dir.join("base");
        let base_cfg = read_json(&base_dir.join("config.json"))?;
        let adapter_dir = self.dir.join("adapter");
        let cfg_path = adapter_dir.join("adapter_config.json");
        let cfg_json = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::file(cfg_path.display().to_string(), e))?;
        let mut adapters = Vec::new();
        for file in ["adapter_model.safetensors", "adapter_model.bin"] {
            let path = adapter_dir.join(file);
            if path.exists() {
                adapters.push((
                    file,
                    LoraAdapter::load(
                        "adapter_config.json",
                        &cfg_json,
                        open_path(&path)?.as_ref(),
                        &self.device,
                    )?,
                ));
            }
        }
        let Some((_, adapter)) = adapters.first().cloned() else {
            return Err(Error::file(
                adapter_dir.display().to_string(),
                "no adapter_model.safetensors or .bin",
            ));
        };
        // Both serializations must hold the same factors.
        for (file, other) in adapters.iter().skip(1) {
            let mut worst = 0f64;
            for (k, u) in &adapter.updates {
                let v = other
                    .updates
                    .get(k)
                    .ok_or_else(|| Error::file(*file, format!("lacks {k}")))?;
                worst = worst
                    .max(abs_diff(&u.a, &v.a)?.0)
                    .max(abs_diff(&u.b, &v.b)?.0);
            }
            self.checks.push(Check {
                name: format!("lora {file} == adapter_model.safetensors"),
                outcome: Outcome::MaxAbs {
                    max: worst,
                    mean: 0.0,
                    atol: 0.0,
                },
            });
        }

        let base = self.phi_from(&base_dir, &base_cfg, QuantizedMatmul::IntegerDot)?;
        if self.expected.contains_key("logits_base") {
            self.check_logits(&base, "lora base", Embeds::Ids("input_ids"), "logits_base")?;
        }
        let mut separate = base.clone();
        apply_adapter(&mut separate, &adapter, false, "adapter")?;
        let mut merged = base;
        apply_adapter(&mut merged, &adapter, true, "adapter")?;

        let merged_file = self.dir.join("merged.safetensors");
        if merged_file.exists() {
            let reference = open_path(&merged_file)?;
            let atol = self
                .atols
                .get("merged.safetensors (adapted weights)")
                .copied()
                .unwrap_or(1e-6);
            let mut worst = (0f64, 0f64);
            let weights = merged.adaptable_weights()?;
            for (name, w) in &weights {
                let (max, mean) = abs_diff(w, &reference.read_f32(name, &self.device)?)?;
                worst = (worst.0.max(max), worst.1 + mean / weights.len() as f64);
            }
            self.checks.push(Check {
                name: "lora merged weights vs merged.safetensors".into(),
                outcome: Outcome::MaxAbs {
                    max: worst.0,
                    mean: worst.1,
                    atol,
                },
            });
        }
        for (phi, label, pairs) in [
            (
                &separate,
                "lora unmerged",
                [
                    ("input_ids", "logits"),
                    ("inputs_embeds", "logits_from_embeds"),
                ],
            ),
            (
                &merged,
                "lora merged",
                [
                    ("input_ids", "logits_merged"),
                    ("inputs_embeds", "logits_merged_from_embeds"),
                ],
            ),
        ] {
            for (input, name) in pairs {
                if self.expected.contains_key(name) {
                    let embeds = if input == "input_ids" {
                        Embeds::Ids(input)
                    } else {
                        Embeds::Tensor(input)
                    };
                    self.check_logits(phi, label, embeds, name)?;
                }
            }
        }
        let eos = merged.config().eos_token_id;
        if self.expected.contains_key("greedy_ids") {
            self.check_greedy(
                &merged,
                "lora merged",
                Embeds::Ids("prompt_ids"),
                "greedy_ids",
                eos,
            )?;
            self.check_greedy(
                &separate,
                "lora unmerged",
                Embeds::Ids("prompt_ids"),
                "greedy_ids",
                eos,
            )?;
        }
        Ok(())
    }

    fn phi_gguf(&mut self) -> Result<()> {
        let files = self.config["gguf"]["files"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let hf_cfg = phi2::Config::from_hf_value("config.json", &self.config)?;
        for (ty, file) in files {
            let file = file.as_str().unwrap_or_default().to_string();
            let path = self.dir.join(&file);
            let reader = std::fs::File::open(&path)
                .map_err(|e| Error::file(path.display().to_string(), e))?;
            let gguf: Arc<dyn TensorSource> = Arc::new(GgufSource::new(
                &file,
                Box::new(std::io::BufReader::new(reader)),
            )?);
            let (_, hf) = layout::hf_view(gguf.clone())?;
            let cfg = layout::config_from_gguf(gguf.gguf().expect("a GGUF source"), hf.as_ref())?;
            // GGUF stores the epsilon as f32.
            let same = phi2::Config {
                layer_norm_eps: hf_cfg.layer_norm_eps,
                ..cfg.clone()
            } == hf_cfg
                && (cfg.layer_norm_eps - hf_cfg.layer_norm_eps).abs() < 1e-9;
            self.checks.push(Check {
                name: format!("{file} metadata == config.json"),
                outcome: Outcome::Exact {
                    equal: same,
                    detail: if same {
                        String::new()
                    } else {
                        format!("{cfg:?} vs {hf_cfg:?}")
                    },
                },
            });
            let dequant = format!("dequant.{ty}.blk.0.attn_qkv.weight");
            if self.expected.contains_key(&dequant) {
                let w = gguf.read_f32("blk.0.attn_qkv.weight", &self.device)?;
                self.compare_with(
                    &format!("{file} dequantized attn_qkv"),
                    &w,
                    &self.expected(&dequant)?.clone(),
                    0.0,
                )?;
            }
            for (mode, logits, label) in [
                (
                    QuantizedMatmul::Dequantize,
                    format!("logits.{ty}"),
                    "dequantized",
                ),
                (
                    QuantizedMatmul::IntegerDot,
                    format!("logits_q8act.{ty}"),
                    "integer-dot",
                ),
            ] {
                let phi = Phi2::new(
                    &cfg,
                    &Weights::new(hf.clone(), &self.device).with_quantized_matmul(mode),
                )?;
                // An f32 file has no integer path: its matmuls are float either way.
                let logits = if self.expected.contains_key(&logits) {
                    logits
                } else {
                    format!("logits.{ty}")
                };
                if logits.starts_with("logits_q8act") {
                    let atol = self.atol(&logits).max(INTEGER_DOT_ATOL);
                    self.atols.insert(logits.clone(), atol);
                }
                self.check_logits(
                    &phi,
                    &format!("{file} {label}"),
                    Embeds::Ids("input_ids"),
                    &logits,
                )?;
                self.check_greedy(
                    &phi,
                    &format!("{file} {label}"),
                    Embeds::Ids("prompt_ids"),
                    &format!("greedy_ids.{ty}"),
                    cfg.eos_token_id,
                )?;
            }
        }
        Ok(())
    }

    fn whisper(&mut self) -> Result<()> {
        let cfg = whisper::Config::from_hf_value("config.json", &self.config)?;
        let fe = &self.config["feature_extractor"];
        let mel_cfg = MelConfig {
            n_mels: cfg.num_mel_bins,
            n_fft: fe["n_fft"].as_u64().unwrap_or(400) as usize,
            hop_length: fe["hop_length"].as_u64().unwrap_or(160) as usize,
            sample_rate: fe["sampling_rate"].as_u64().unwrap_or(16000) as usize,
            chunk_length: fe["chunk_length"].as_u64().unwrap_or(30) as usize,
        };
        let n_freqs = mel_cfg.n_fft / 2 + 1;
        let filters = mel::mel_filters(mel_cfg.n_mels, mel_cfg.n_fft, mel_cfg.sample_rate);
        let filters = Tensor::from_vec(filters, (mel_cfg.n_mels, n_freqs), &self.device)?;
        self.compare("whisper mel filter bank", "mel_filters_hf", &filters)?;

        let audio = self.input("audio")?.clone();
        let wav = self.dir.join("speech.wav");
        if wav.exists() {
            let bytes = std::fs::read(&wav)?;
            let decoded = AudioStream::from_bytes(bytes)?.read_all()?;
            let decoded = Tensor::new(decoded.as_slice(), &self.device)?;
            self.compare_with("speech.wav decoded == inputs.audio", &decoded, &audio, 0.0)?;
        }
        let samples = audio.to_vec1::<f32>()?;
        let features = LogMel::new(mel_cfg.clone()).compute(&samples);
        let features = Tensor::from_vec(
            features,
            (1, mel_cfg.n_mels, mel_cfg.n_frames()),
            &self.device,
        )?;
        self.compare(
            "whisper log-mel input_features",
            "input_features",
            &features,
        )?;

        let source = self.source("model.safetensors")?;
        let model = Whisper::new(&cfg, &Weights::new(source, &self.device))?;
        let stored = self.expected("input_features")?.clone();
        let encoded = self.engine.whisper_encode(&model, &stored)?;
        self.compare(
            "whisper encoder_embeddings",
            "encoder_embeddings",
            &encoded.embeddings,
        )?;
        self.compare(
            "whisper encoder_last_hidden_state",
            "encoder_last_hidden_state",
            &encoded.hidden,
        )?;
        let ids = ids_of(self.input("decoder_input_ids")?)?;
        let (hidden, logits) = self.engine.whisper_decode(&model, &encoded.hidden, &ids)?;
        self.compare(
            "whisper decoder_last_hidden_state",
            "decoder_last_hidden_state",
            &hidden,
        )?;
        self.compare("whisper logits", "logits", &logits.unsqueeze(0)?)?;

        let prefix = ids_of(self.input("greedy_prefix_ids")?)?;
        let want = self.expected_ids("greedy_ids")?;
        let eot = self.config["eos_token_id"].as_u64().unwrap_or(0) as u32;
        let opts = speech::GreedyOptions {
            max_new_tokens: want.len() - prefix.len(),
            end_of_text: eot,
            suppress: cfg.suppress_tokens.clone(),
            suppress_begin: cfg.begin_suppress_tokens.clone(),
            repetition_guard: true,
        };
        let mut window = self.engine.whisper_window(&model, &encoded.hidden)?;
        let decoded = crate::engine::now(speech::greedy_loop(
            cfg.vocab_size,
            cfg.max_target_positions,
            &prefix,
            &opts,
            window.as_mut(),
        ))??;
        let mut got = prefix.clone();
        got.extend(&decoded.tokens);
        if got.len() < want.len() && want.last() == Some(&eot) {
            got.push(eot);
        }
        self.compare_ids("whisper greedy_ids", &got, &want);
        Ok(())
    }

    fn tokenizers(&mut self) -> Result<()> {
        let cases: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("cases.json"))
                .map_err(|e| Error::file("cases.json", e))?,
        )
        .map_err(|e| Error::file("cases.json", e))?;
        let mut dirs: Vec<_> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("tokenizer.json").exists())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let bytes = std::fs::read(dir.join("tokenizer.json"))?;
            let tok = Tokenizer::from_bytes(&format!("{name}/tokenizer.json"), &bytes)?;
            // `gpt2/` reads `gpt2_ids`, `whisper_multilingual/` reads `multilingual_ids`.
            let key = cases
                .first()
                .and_then(Value::as_object)
                .and_then(|o| {
                    o.keys()
                        .filter_map(|k| k.strip_suffix("_ids"))
                        .find(|k| name == *k || name.ends_with(&format!("_{k}")))
                        .map(|k| format!("{k}_ids"))
                })
                .unwrap_or_else(|| format!("{name}_ids"));
            let (mut ids_ok, mut round_ok, mut total) = (0, 0, 0);
            let mut first_bad = String::new();
            for case in &cases {
                let (Some(text), Some(want)) = (case["text"].as_str(), case.get(&key)) else {
                    continue;
                };
                let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap_or_default();
                total += 1;
                let got = tok.encode(text)?;
                if got == want {
                    ids_ok += 1;
                } else if first_bad.is_empty() {
                    first_bad = format!("`{}`: got {got:?}, expected {want:?}", case["name"]);
                }
                if tok.decode(&want)? == text {
                    round_ok += 1;
                }
            }
            self.checks.push(Check {
                name: format!("{name} tokenizer ids ({total} cases)"),
                outcome: Outcome::Exact {
                    equal: total > 0 && ids_ok == total,
                    detail: format!("{ids_ok}/{total} {first_bad}"),
                },
            });
            self.checks.push(Check {
                name: format!("{name} decode round trip"),
                outcome: Outcome::Exact {
                    equal: total > 0 && round_ok == total,
                    detail: format!("{round_ok}/{total}"),
                },
            });
        }
        Ok(())
    }
}

/// Where a forward's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embeds {
    /// Token ids in `inputs.safetensors`, embedded by the model.
    Ids(&'static str),
    /// Embeddings stored in `inputs.safetensors`.
    Tensor(&'static str),
}

impl Embeds {
    fn embeddings(&self, phi: &Phi2, fx: &Fixture) -> Result<Tensor> {
        match self {
            Self::Ids(name) => Ok(phi.embed(&ids_of(fx.input(name)?)?)?.unsqueeze(0)?),
            Self::Tensor(name) => Ok(fx.input(name)?.clone()),
        }
    }
}

/// Greedy decoding, with the end-of-text id included when produced (as HF returns it).
pub fn greedy(phi: &Phi2, embeds: &Tensor, max_new: usize, eos: Option<u32>) -> Result<Vec<u32>> {
    let params = GenerationParams {
        max_new_tokens: max_new,
        ..GenerationParams::default()
    };
    let mut cache = phi.new_cache();
    let generation = Generation::start(
        phi,
        &mut cache,
        embeds,
        &params,
        eos,
        phi.config().vocab_size,
    )?;
    let (mut ids, finish) = generation.run_to_end(phi, &mut cache)?;
    if finish == crate::FinishReason::EndOfText {
        ids.extend(eos);
    }
    Ok(ids)
}

fn embed_parts(phi: &Phi2, parts: &[PromptPart]) -> Result<Tensor> {
    let rows = parts
        .iter()
        .map(|p| match p {
            PromptPart::Image(t) => Ok(t.squeeze(0)?),
            PromptPart::Tokens(ids) => phi.embed(ids),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?.unsqueeze(0)?)
}

/// Max and mean absolute difference.
/// Our own CPU kernel for `dtype` (Q4_K or Q8_0) in a [`weights::Linear`] against candle's
/// dequantized weight in f32, for decode (1 row) and prompts that do not fill a pass (3, 6
/// rows): the only differences are the 8-bit activations, within 1% of the output's range. The
/// weight read back from the kernel's tiles must be the original blocks byte for byte. `Ok`
/// says whether the kernel took the weight (only where the CPU runs it).
pub fn cpu_kernel_matches_dequantized(
    dtype: candle_core::quantized::GgmlDType,
) -> std::result::Result<bool, String> {
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::Module;
    let fail = |e: candle_core::Error| e.to_string();
    let (n, k) = (48, 512);
    let dev = Device::Cpu;
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
        .collect();
    let w = Tensor::from_vec(w, (n, k), &dev).map_err(fail)?;
    let q = QTensor::quantize(&w, dtype).map_err(fail)?;
    let original = q.data().map_err(fail)?.to_vec();
    let reference_w = q.dequantize(&dev).map_err(fail)?;
    let mut linear = weights::Linear::new(QMatMul::from_qtensor(q).map_err(fail)?, None, k, n);
    linear.prepare_cpu_kernel();
    let took = linear.kernel_bytes() > 0;
    for m in [1, 3, 6] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| (i * 104_729 % 997) as f32 / 498.5 - 1.0)
            .collect();
        let xs = Tensor::from_vec(x, (m, k), &dev).map_err(fail)?;
        let reference = xs.matmul(&reference_w.t().map_err(fail)?).map_err(fail)?;
        let reference: Vec<f32> = reference
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(fail)?;
        let got: Vec<f32> = linear
            .forward(&xs)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(fail)?;
        let scale = reference.iter().fold(0f32, |a, b| a.max(b.abs()));
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            if (g - r).abs() > 0.01 * scale {
                return Err(format!("{dtype:?} m={m} [{i}]: {g} vs {r} (scale {scale})"));
            }
        }
    }
    match linear.weight().map_err(fail)? {
        QMatMul::QTensor(back) if back.dtype() == dtype => {
            if *back.data().map_err(fail)? != original[..] {
                return Err(format!(
                    "{dtype:?}: the weight read back differs from its blocks"
                ));
            }
        }
        other => return Err(format!("{dtype:?}: the weight came back as {other:?}")),
    }
    Ok(took)
}

pub fn abs_diff(a: &Tensor, b: &Tensor) -> Result<(f64, f64)> {
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?;
    if d.elem_count() == 0 {
        return Ok((0.0, 0.0));
    }
    let max = d.max(0)?.to_scalar::<f64>()?;
    let mean = d.mean(0)?.to_scalar::<f64>()?;
    // NaN anywhere must fail, not compare as small.
    let has_nan = d.to_vec1::<f64>()?.iter().any(|v| v.is_nan());
    Ok((if has_nan { f64::NAN } else { max }, mean))
}

pub fn ids_of(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|v| v as u32)
        .collect())
}

/// Every tensor of a safetensors file in its stored dtype.
pub fn read_all(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path.display().to_string(), e))?;
    let source = SafetensorsSource::new(
        &path.display().to_string(),
        Box::new(std::io::BufReader::new(file)),
    )?;
    source
        .names()
        .into_iter()
        .map(|n| Ok((n.clone(), source.read_raw(&n, device)?)))
        .collect()
}

pub fn open_path(path: &Path) -> Result<Arc<dyn TensorSource>> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path.display().to_string(), e))?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    weights::open_source(&name, Box::new(std::io::BufReader::new(file)))
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::file(path.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path.display().to_string(), e))
}

/// The "suggested atol" column of a fixture README's precision table, per tensor. Where a tensor
/// has several rows, the float32-vs-float64 rows set the bound (the precision a float32
/// implementation should reach); otherwise the smallest row does.
pub fn suggested_atols(readme: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    let mut from_f64: HashMap<String, f64> = HashMap::new();
    let mut in_table = false;
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if line.contains("suggested atol") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || cells.len() < 4 {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        if let Ok(atol) = cells[cells.len() - 2].parse::<f64>() {
            if cells[2].contains("float64") {
                let entry = from_f64.entry(name.clone()).or_insert(atol);
                *entry = entry.min(atol);
            }
            let entry = out.entry(name).or_insert(atol);
            *entry = entry.min(atol);
        }
    }
    out.extend(from_f64);
    out
}
