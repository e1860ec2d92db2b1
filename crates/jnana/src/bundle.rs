//! Model bundles: a `manifest.json` listing every file (role, format, size, sha256, URLs, parts)
//! and the loader that builds [`Jnana`] from it. Files come from a [`FileProvider`], so the
//! same loader serves a local folder (the CLI) and browser storage (the web app).

use crate::error::{Error, InFile, Result};
use crate::lora::LoraAdapter;
use crate::models::clip_vision::{self, ClipLayerParams, ClipVision};
use crate::models::phi2::{self, layout, LayerParams, Phi2};
use crate::models::projector::Projector;
use crate::models::whisper::{self, TakeWhisperLayer, WhisperLayer};
use crate::pipeline::{Jnana, PromptFormat, VisionStack};
use crate::preprocess::PreprocessConfig;
use crate::tokenizer::Tokenizer;
use crate::weights::{self, Prefixed, QuantizedMatmul, ReadSeek, TensorSource, Union, Weights};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FORMAT_VERSION: &str = "jnana-bundle/1";

/// What a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Phi-2 weights (GGUF, or HF safetensors with `text_config`).
    LanguageModel,
    Tokenizer,
    /// CLIP weights with `vision_model.*` names (text-tower tensors are ignored).
    VisionModel,
    /// The projector as one file (`linear.*`, `res.*`).
    Projector,
    /// The seed's `proj_lin_layer` state dict (`weight`, `bias`).
    ProjectorLinear,
    /// The seed's residual block state dict (`pre_norm.*`, `proj.0.*`, `proj.2.*`).
    ProjectorBlock,
    /// PEFT `adapter_config.json`.
    LoraConfig,
    /// PEFT `adapter_model.safetensors` / `.bin`.
    LoraWeights,
    /// Whisper weights: HF safetensors, GGUF with HF names, or a CTranslate2 `model.bin`.
    SpeechModel,
    /// Whisper's HF `config.json` (or CTranslate2's, for a `model.bin`).
    SpeechConfig,
    /// Whisper's `tokenizer.json`.
    SpeechTokenizer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Gguf,
    Safetensors,
    Pth,
    Json,
}

/// A contiguous piece of a large file, fetched and stored on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub urls: Vec<String>,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub role: Role,
    pub format: FileFormat,
    /// Bytes; `None` only in manifests of third-party files whose size is not recorded.
    #[serde(default)]
    pub size: Option<u64>,
    /// Hex digest; `None` for third-party files not yet pinned (see the README).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the whole file can be fetched (mirrors, relative to the manifest or absolute).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Or: the parts it is split into, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub prompt: PromptFormat,
    pub max_new_tokens: usize,
    pub eos_token_id: Option<u32>,
    /// Fold a LoRA adapter into the weights (`true`) or keep it beside them (`false`); unset:
    /// merge into float weights, keep beside quantized ones (no second quantization error, no
    /// minutes of re-quantizing in the browser).
    pub merge_lora: Option<bool>,
    pub projector_layer_norm_eps: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prompt: PromptFormat::default(),
            max_new_tokens: 200,
            eos_token_id: Some(50256),
            merge_lora: None,
            projector_layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub settings: Settings,
    /// HF `PhiConfig`; needed for safetensors weights, optional for GGUF (metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_config: Option<serde_json::Value>,
    /// HF `CLIPVisionConfig`; ViT-B/32 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_config: Option<serde_json::Value>,
    /// HF `CLIPImageProcessor` settings; CLIP's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<serde_json::Value>,
}

impl Manifest {
    pub fn from_json(json: &str) -> Result<Self> {
        let m: Self = serde_json::from_str(json)
            .map_err(|e| Error::Manifest(format!("not a valid manifest: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifests serialize")
    }

    /// The manifest of the public weights the app downloads by default.
    pub fn default_public() -> Self {
        Self::from_json(include_str!("../assets/default-manifest.json"))
            .expect("the built-in manifest is valid")
    }

    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT_VERSION {
            return Err(Error::Manifest(format!(
                "format `{}` is not `{FORMAT_VERSION}`",
                self.format
            )));
        }
        let count = |role| self.files.iter().filter(|f| f.role == role).count();
        if count(Role::LanguageModel) != 1 || count(Role::Tokenizer) != 1 {
            return Err(Error::Manifest(
                "needs exactly one language_model and one tokenizer file".into(),
            ));
        }
        let projector =
            count(Role::Projector) + count(Role::ProjectorLinear).min(count(Role::ProjectorBlock));
        if count(Role::VisionModel) > 0 && projector == 0 {
            return Err(Error::Manifest(
                "a vision_model needs a projector (or a projector_linear + projector_block pair)"
                    .into(),
            ));
        }
        if count(Role::SpeechModel) > 0 && count(Role::SpeechTokenizer) == 0 {
            return Err(Error::Manifest(
                "a speech_model needs its speech_tokenizer".into(),
            ));
        }
        if (count(Role::LoraConfig) > 0) != (count(Role::LoraWeights) > 0) {
            return Err(Error::Manifest(
                "a LoRA adapter needs both lora_config and lora_weights".into(),
            ));
        }
        for f in &self.files {
            if f.name.is_empty()
                || f.name.contains('/')
                || f.name.contains('\\')
                || f.name.starts_with('.')
            {
                return Err(Error::Manifest(format!(
                    "file name `{}` must be a plain name (no folders)",
                    f.name
                )));
            }
            if f.urls.is_empty() && f.parts.is_empty() {
                return Err(Error::Manifest(format!(
                    "`{}` has no URL and no parts",
                    f.name
                )));
            }
            if let (Some(size), false) = (f.size, f.parts.is_empty()) {
                let sum: u64 = f.parts.iter().map(|p| p.size).sum();
                if sum != size {
                    return Err(Error::Manifest(format!(
                        "`{}`: parts add up to {sum} bytes, the file is {size}",
                        f.name
                    )));
                }
            }
            if let Some(h) = &f.sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::Manifest(format!(
                        "`{}`: sha256 is not 64 hex digits",
                        f.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn file(&self, role: Role) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// Bytes to download in all (files of unknown size count as 0).
    pub fn total_size(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size).sum()
    }
}

/// A file of a bundle being written (by `synth` or `convert`), with its manifest entry.
pub struct BundleFile {
    pub entry: FileEntry,
    pub bytes: Vec<u8>,
}

impl BundleFile {
    /// An entry whose only URL is its own name (a bundle served from one folder).
    pub fn new(name: &str, role: Role, format: FileFormat, bytes: Vec<u8>) -> Self {
        Self {
            entry: FileEntry {
                name: name.to_string(),
                role,
                format,
                size: Some(bytes.len() as u64),
                sha256: Some(hex(&Sha256::digest(&bytes))),
                urls: vec![name.to_string()],
                parts: Vec::new(),
            },
            bytes,
        }
    }
}

/// Where the bytes of the bundle's files come from.
pub trait FileProvider {
    fn open(&mut self, entry: &FileEntry) -> Result<Box<dyn ReadSeek>>;
}

/// A bundle held in memory (tests, and the browser once files are read from storage).
#[derive(Default, Clone)]
pub struct MemoryProvider {
    pub files: std::collections::HashMap<String, Vec<u8>>,
    /// Hash every file against the manifest before use.
    pub verify_sha256: bool,
}

impl MemoryProvider {
    pub fn from_files(files: &[BundleFile]) -> Self {
        Self {
            files: files
                .iter()
                .map(|f| (f.entry.name.clone(), f.bytes.clone()))
                .collect(),
            verify_sha256: true,
        }
    }
}

impl FileProvider for MemoryProvider {
    fn open(&mut self, entry: &FileEntry) -> Result<Box<dyn ReadSeek>> {
        let bytes = self
            .files
            .get(&entry.name)
            .ok_or_else(|| Error::file(&entry.name, "is not in storage"))?;
        let mut reader: Box<dyn ReadSeek> = Box::new(std::io::Cursor::new(bytes.clone()));
        check_file(entry, &mut reader, self.verify_sha256)?;
        Ok(reader)
    }
}

/// A bundle in a local folder: each file by its name, or its parts by the last segment of their
/// first URL.
pub struct DirProvider {
    dir: PathBuf,
    /// Hash every file against the manifest before use (slow for gigabytes; sizes are always
    /// checked).
    pub verify_sha256: bool,
}

impl DirProvider {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            verify_sha256: false,
        }
    }

    fn open_file(&self, name: &str) -> Result<std::fs::File> {
        let path = self.dir.join(name);
        std::fs::File::open(&path).map_err(|e| Error::file(path.display().to_string(), e))
    }
}

impl FileProvider for DirProvider {
    fn open(&mut self, entry: &FileEntry) -> Result<Box<dyn ReadSeek>> {
        let whole = self.dir.join(&entry.name);
        let mut reader: Box<dyn ReadSeek> = if whole.exists() || entry.parts.is_empty() {
            Box::new(std::io::BufReader::new(self.open_file(&entry.name)?))
        } else {
            let mut parts = Vec::new();
            for p in &entry.parts {
                let url = p.urls.first().map(String::as_str).unwrap_or_default();
                let name = url.rsplit('/').next().unwrap_or(url);
                let file: Box<dyn ReadSeek> = Box::new(self.open_file(name)?);
                parts.push((file, p.size));
            }
            Box::new(ConcatReader::new(parts)?)
        };
        check_file(entry, &mut reader, self.verify_sha256)?;
        Ok(reader)
    }
}

/// Checks size (always) and sha256 (when asked) of a file against its manifest entry.
pub fn check_file(entry: &FileEntry, reader: &mut dyn ReadSeek, hash: bool) -> Result<()> {
    let len = reader.seek(SeekFrom::End(0))?;
    reader.rewind()?;
    if let Some(size) = entry.size {
        if len != size {
            return Err(Error::file(
                &entry.name,
                format!("is {len} bytes, the manifest says {size} (incomplete or wrong download?)"),
            ));
        }
    }
    if let (true, Some(expected)) = (hash, &entry.sha256) {
        let actual = sha256_hex(reader)?;
        reader.rewind()?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::file(
                &entry.name,
                format!(
                    "sha256 {actual} does not match the manifest's {expected} (corrupt download?)"
                ),
            ));
        }
    }
    Ok(())
}

pub fn sha256_hex(reader: &mut dyn Read) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Several readers seen as one file (a large file stored in parts).
pub struct ConcatReader {
    parts: Vec<(Box<dyn ReadSeek>, u64)>,
    starts: Vec<u64>,
    len: u64,
    pos: u64,
}

impl ConcatReader {
    /// `parts`: each reader with the size it must have.
    pub fn new(mut parts: Vec<(Box<dyn ReadSeek>, u64)>) -> Result<Self> {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for (i, (r, size)) in parts.iter_mut().enumerate() {
            let actual = r.seek(SeekFrom::End(0))?;
            if actual != *size {
                return Err(Error::Input(format!(
                    "part {} is {actual} bytes, expected {size}",
                    i + 1
                )));
            }
            starts.push(len);
            len += *size;
        }
        Ok(Self {
            parts,
            starts,
            len,
            pos: 0,
        })
    }
}

impl Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let i = self.starts.partition_point(|&s| s <= self.pos) - 1;
        let (reader, size) = &mut self.parts[i];
        let within = self.pos - self.starts[i];
        reader.seek(SeekFrom::Start(within))?;
        let n = (buf.len() as u64).min(*size - within) as usize;
        let read = reader.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl Seek for ConcatReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_position(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

/// A byte count for people: "528 B", "42.9 kB", "840.0 MB", "1.57 GB".
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

/// Where a `seek(to)` from `pos` in a stream of `len` bytes lands (past the end is allowed, as
/// for files; before the start is an error).
pub fn seek_position(pos: u64, len: u64, to: SeekFrom) -> std::io::Result<u64> {
    let target = match to {
        SeekFrom::Start(p) => p as i128,
        SeekFrom::End(d) => len as i128 + d as i128,
        SeekFrom::Current(d) => pos as i128 + d as i128,
    };
    if target < 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "seek before the start",
        ));
    }
    Ok(target as u64)
}

/// Options of [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub quantized_matmul: QuantizedMatmul,
    /// Skip CLIP and the projector (text-only use).
    pub skip_vision: bool,
    /// Skip Whisper.
    pub skip_speech: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            quantized_matmul: QuantizedMatmul::default(),
            skip_vision: false,
            skip_speech: false,
        }
    }
}

/// A step of [`load`], for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    pub step: usize,
    pub steps: usize,
    pub what: String,
}

/// Receives the layers of Phi-2, CLIP and Whisper one by one as they are read (another engine
/// uploads them), with the model's config and the layer's index.
pub trait TakeLayers {
    fn whisper_layer(&mut self, config: &whisper::Config, layer: WhisperLayer<'_>) -> Result<()>;
    fn phi_layer(&mut self, config: &phi2::Config, index: usize, p: LayerParams<'_>) -> Result<()>;
    fn clip_layer(
        &mut self,
        config: &clip_vision::Config,
        index: usize,
        p: ClipLayerParams<'_>,
    ) -> Result<()>;
}

/// Builds all models of a bundle.
pub fn load(
    manifest: &Manifest,
    provider: &mut dyn FileProvider,
    options: &LoadOptions,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Jnana> {
    load_with(manifest, provider, options, progress, None)
}

/// [`load`] handing the layers of Phi-2, CLIP and Whisper to `layers` one by one as they are
/// read (another engine uploads them), so they are never all in memory: the model comes back
/// released (see [`Jnana::release_layers`]); the projector is loaded whole.
pub fn load_streaming(
    manifest: &Manifest,
    provider: &mut dyn FileProvider,
    options: &LoadOptions,
    progress: &mut dyn FnMut(LoadProgress),
    layers: &mut dyn TakeLayers,
) -> Result<Jnana> {
    load_with(manifest, provider, options, progress, Some(layers))
}

fn load_with(
    manifest: &Manifest,
    provider: &mut dyn FileProvider,
    options: &LoadOptions,
    progress: &mut dyn FnMut(LoadProgress),
    mut layers: Option<&mut dyn TakeLayers>,
) -> Result<Jnana> {
    manifest.validate()?;
    let device = &options.device;
    let has_vision = manifest.file(Role::VisionModel).is_some() && !options.skip_vision;
    let has_lora = manifest.file(Role::LoraWeights).is_some();
    let has_speech = manifest.file(Role::SpeechModel).is_some() && !options.skip_speech;
    let steps = 2 + usize::from(has_vision) * 2 + usize::from(has_lora) + usize::from(has_speech);
    let mut step = 0;
    let mut report = |what: &str| {
        step += 1;
        progress(LoadProgress {
            step,
            steps,
            what: what.to_string(),
        })
    };

    report("tokenizer");
    let tok_entry = manifest.file(Role::Tokenizer).expect("validated");
    let mut tok_bytes = Vec::new();
    provider.open(tok_entry)?.read_to_end(&mut tok_bytes)?;
    let tokenizer = Tokenizer::from_bytes(&tok_entry.name, &tok_bytes)?;

    // The adapter is read before the model so that streamed layers can be adapted as they pass.
    let adapter = match (
        manifest.file(Role::LoraConfig),
        manifest.file(Role::LoraWeights),
    ) {
        (Some(cfg_entry), Some(w_entry)) => {
            report("LoRA adapter");
            let mut json = String::new();
            provider
                .open(cfg_entry)?
                .read_to_string(&mut json)
                .in_file(&cfg_entry.name)?;
            let source = weights::open_source(&w_entry.name, provider.open(w_entry)?)?;
            let adapter = LoraAdapter::load(&cfg_entry.name, &json, source.as_ref(), device)?;
            Some((adapter, w_entry.name.clone()))
        }
        _ => None,
    };

    report("language model");
    let lm_entry = manifest.file(Role::LanguageModel).expect("validated");
    let lm_source = weights::open_source(&lm_entry.name, provider.open(lm_entry)?)?;
    let (config, vb) = phi_weights(
        lm_source,
        manifest.text_config.as_ref(),
        device,
        options.quantized_matmul,
    )?;
    let merge = manifest.settings.merge_lora;
    let phi = match layers.as_deref_mut() {
        None => {
            // Packed as read (part of loading, not of the first answer; one layer at a time
            // in the file's form).
            let lora = adapter.as_ref().map(|(a, _)| (&a.updates, merge));
            let (phi, applied) = Phi2::new_packed(&config, &vb, lora)?;
            if let Some((adapter, file)) = &adapter {
                check_adapter_applied(&phi, adapter, applied, file)?;
            }
            phi
        }
        Some(take) => {
            let lora = adapter.as_ref().map(|(a, _)| (&a.updates, merge));
            let (phi, applied) =
                Phi2::new_streaming(&config, &vb, lora, &mut |c, i, p| take.phi_layer(c, i, p))?;
            if let Some((adapter, file)) = &adapter {
                check_adapter_applied(&phi, adapter, applied, file)?;
            }
            phi
        }
    };

    let vision = if has_vision {
        report("vision model");
        let entry = manifest.file(Role::VisionModel).expect("checked");
        let config = match &manifest.vision_config {
            Some(v) => clip_vision::Config::from_hf_value("manifest vision_config", v)?,
            None => clip_vision::Config::vit_base_patch32(),
        };
        let source = weights::open_source(&entry.name, provider.open(entry)?)?;
        let vb = clip_weights(source, device, options.quantized_matmul);
        let clip = match &mut layers {
            None => ClipVision::new(&config, &vb)?,
            Some(take) => {
                ClipVision::new_streaming(&config, &vb, &mut |i, p| take.clip_layer(&config, i, p))?
            }
        };
        report("projector");
        let source = projector_source(manifest, provider)?;
        let vb = Weights::new(source, device)
            .with_quantized_matmul(options.quantized_matmul)
            .with_f16_kept();
        let projector = Projector::new(&vb, manifest.settings.projector_layer_norm_eps)?;
        let preprocess = manifest
            .preprocessor
            .as_ref()
            .map(PreprocessConfig::from_hf_value)
            .unwrap_or_default();
        Some(VisionStack {
            clip,
            projector,
            preprocess,
        })
    } else {
        None
    };

    let speech = if has_speech {
        report("speech model");
        let entry = manifest.file(Role::SpeechModel).expect("checked");
        let source = weights::open_source(&entry.name, provider.open(entry)?)?;
        let config = match manifest.file(Role::SpeechConfig) {
            Some(c) => Some(read_json(provider, c)?),
            None => None,
        };
        let tok = manifest.file(Role::SpeechTokenizer).expect("validated");
        let mut tok_bytes = Vec::new();
        provider.open(tok)?.read_to_end(&mut tok_bytes)?;
        let mut take = layers
            .as_mut()
            .map(|t| move |c: &whisper::Config, l: WhisperLayer<'_>| t.whisper_layer(c, l));
        Some(crate::speech::load_with(
            source,
            config.as_ref(),
            &tok_bytes,
            device,
            options.quantized_matmul,
            take.as_mut().map(|t| t as &mut TakeWhisperLayer<'_>),
        )?)
    } else {
        None
    };

    let eos = manifest.settings.eos_token_id.or(phi.config().eos_token_id);
    Ok(Jnana::new(
        phi,
        tokenizer,
        vision,
        manifest.settings.prompt.clone(),
        eos,
    )?
    .with_speech(speech))
}

fn read_json(provider: &mut dyn FileProvider, entry: &FileEntry) -> Result<serde_json::Value> {
    let mut text = String::new();
    provider
        .open(entry)?
        .read_to_string(&mut text)
        .in_file(&entry.name)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::file(&entry.name, format!("not valid JSON: {e}")))
}

/// Applies an adapter and insists that every update found a home.
pub fn apply_adapter(phi: &mut Phi2, adapter: &LoraAdapter, merge: bool, file: &str) -> Result<()> {
    let applied = phi.apply_lora(&adapter.updates, merge)?;
    check_adapter_applied(phi, adapter, applied, file)
}

fn check_adapter_applied(
    phi: &Phi2,
    adapter: &LoraAdapter,
    applied: usize,
    file: &str,
) -> Result<()> {
    if applied != adapter.updates.len() {
        let layers = phi.config().num_hidden_layers;
        return Err(Error::file(
            file,
            format!(
                "{} of the adapter's {} modules match no layer of this {layers}-layer model",
                adapter.updates.len() - applied,
                adapter.updates.len()
            ),
        ));
    }
    Ok(())
}

/// Phi-2 from any supported weight file, the config from `text_config` or the GGUF metadata.
pub fn load_phi(
    source: Arc<dyn TensorSource>,
    text_config: Option<&serde_json::Value>,
    device: &Device,
    quantized_matmul: QuantizedMatmul,
) -> Result<Phi2> {
    let (config, vb) = phi_weights(source, text_config, device, quantized_matmul)?;
    Phi2::new(&config, &vb)
}

/// Phi-2's config and its weights under transformers' names.
fn phi_weights(
    source: Arc<dyn TensorSource>,
    text_config: Option<&serde_json::Value>,
    device: &Device,
    quantized_matmul: QuantizedMatmul,
) -> Result<(phi2::Config, Weights)> {
    let file = source.file_name().to_string();
    let (_layout, hf) = layout::hf_view(source.clone())?;
    let config = match text_config {
        Some(v) => {
            phi2::Config::from_hf_value("manifest text_config", v.get("text_config").unwrap_or(v))?
        }
        None => {
            let gguf = source.gguf().ok_or_else(|| {
                Error::file(
                    &file,
                    "safetensors weights need a text_config (HF config.json) in the manifest",
                )
            })?;
            layout::config_from_gguf(gguf, hf.as_ref())?
        }
    };
    Ok((
        config,
        Weights::new(hf, device).with_quantized_matmul(quantized_matmul),
    ))
}

/// CLIP's vision tower from a file with `vision_model.*` names (or bare names).
pub fn load_clip(
    source: Arc<dyn TensorSource>,
    config: &clip_vision::Config,
    device: &Device,
    quantized_matmul: QuantizedMatmul,
) -> Result<ClipVision> {
    ClipVision::new(config, &clip_weights(source, device, quantized_matmul))
}

/// The vision tower's weights, under `vision_model` wherever the file keeps it.
fn clip_weights(
    source: Arc<dyn TensorSource>,
    device: &Device,
    quantized_matmul: QuantizedMatmul,
) -> Weights {
    let vb = Weights::new(source, device)
        .with_quantized_matmul(quantized_matmul)
        .with_f16_kept();
    let prefix = ["vision_model", "vision_tower.vision_model"]
        .into_iter()
        .find(|p| vb.pp(p).contains("embeddings.class_embedding"));
    match prefix {
        Some(p) => vb.pp(p),
        None => vb,
    }
}

fn projector_source(
    manifest: &Manifest,
    provider: &mut dyn FileProvider,
) -> Result<Arc<dyn TensorSource>> {
    if let Some(entry) = manifest.file(Role::Projector) {
        return weights::open_source(&entry.name, provider.open(entry)?);
    }
    let (Some(linear), Some(block)) = (
        manifest.file(Role::ProjectorLinear),
        manifest.file(Role::ProjectorBlock),
    ) else {
        return Err(Error::Manifest("no projector file".into()));
    };
    let linear = weights::open_source(&linear.name, provider.open(linear)?)?;
    let block = weights::open_source(&block.name, provider.open(block)?)?;
    Ok(Arc::new(Union::new(vec![
        Arc::new(Prefixed::new("linear.", linear)),
        Arc::new(Prefixed::new("res.", block)),
    ])))
}

/// Reads a manifest from a bundle folder or a manifest path.
pub fn read_manifest(path: &Path) -> Result<(Manifest, PathBuf)> {
    let (file, dir) = if path.is_dir() {
        (path.join("manifest.json"), path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let json =
        std::fs::read_to_string(&file).map_err(|e| Error::file(file.display().to_string(), e))?;
    Ok((Manifest::from_json(&json)?, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_manifest_names_the_public_weights() {
        let m = Manifest::default_public();
        for role in [
            Role::LanguageModel,
            Role::Tokenizer,
            Role::LoraConfig,
            Role::LoraWeights,
            Role::VisionModel,
            Role::ProjectorLinear,
            Role::ProjectorBlock,
            Role::SpeechModel,
            Role::SpeechConfig,
            Role::SpeechTokenizer,
        ] {
            let f = m.file(role).unwrap_or_else(|| panic!("{role:?} missing"));
            assert!(f
                .urls
                .iter()
                .all(|u| u.starts_with("https://huggingface.co/")));
        }
        assert_eq!(m.settings.prompt.image_marker, "caption image:");
        assert_eq!(m.settings.eos_token_id, Some(50256));
        // Not pinned: nothing here can download them (see the README).
        assert!(m.files.iter().all(|f| f.sha256.is_none()));
    }

    #[test]
    fn concatenated_parts_read_and_seek_as_one_file() {
        let parts: Vec<(Box<dyn ReadSeek>, u64)> = vec![
            (Box::new(std::io::Cursor::new(b"hello ".to_vec())), 6),
            (Box::new(std::io::Cursor::new(b"wide ".to_vec())), 5),
            (Box::new(std::io::Cursor::new(b"world".to_vec())), 5),
        ];
        let mut r = ConcatReader::new(parts).unwrap();
        let mut all = String::new();
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "hello wide world");
        r.seek(SeekFrom::Start(8)).unwrap();
        let mut buf = [0u8; 6];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"de wor");
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), 14);
        let short: Vec<(Box<dyn ReadSeek>, u64)> =
            vec![(Box::new(std::io::Cursor::new(vec![0u8; 3])), 4)];
        assert!(ConcatReader::new(short).is_err());
    }
}
