//! `jnana convert`: published weights → a browser bundle.

use crate::files;
use anyhow::{bail, Context, Result};
use jnana::convert::{ConvertInputs, WeightDtype};
use jnana::weights::{Prefixed, TensorSource, Union};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ConvertArgs {
    #[command(subcommand)]
    pub what: Option<ConvertWhat>,
    #[command(flatten)]
    pub bundle: BundleArgs,
}

#[derive(clap::Subcommand)]
pub enum ConvertWhat {
    /// A CTranslate2 / faster-whisper Whisper folder (model.bin, config.json, tokenizer.json) →
    /// HF-named safetensors (or a Q8_0 GGUF), config.json and tokenizer.json
    Ct2Whisper {
        /// The CTranslate2 folder
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// f16, f32 or q8_0
        #[arg(long, default_value = "f16")]
        dtype: String,
    },
}

#[derive(clap::Args)]
pub struct BundleArgs {
    /// Phi-2 weights: HF safetensors (all shards) or a GGUF
    #[arg(long, num_args = 1.., required = true)]
    pub phi: Vec<PathBuf>,
    /// Phi-2's HF config.json (needed for safetensors)
    #[arg(long)]
    pub phi_config: Option<PathBuf>,
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors or .bin), merged in
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// CLIP weights (a full openai/clip-vit-base-patch32 checkpoint or its vision tower)
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// CLIP's config.json (default: ViT-B/32)
    #[arg(long)]
    pub clip_config: Option<PathBuf>,
    /// The projector as one file (linear.*, res.*)
    #[arg(long, conflicts_with_all = ["projector_linear", "projector_block"])]
    pub projector: Option<PathBuf>,
    /// The seed's phi2_proj_model_offset_ll.pth
    #[arg(long, requires = "projector_block")]
    pub projector_linear: Option<PathBuf>,
    /// The seed's phi2_proj_model_offset_projmodel.pth
    #[arg(long, requires = "projector_linear")]
    pub projector_block: Option<PathBuf>,
    /// Phi-2's tokenizer.json
    #[arg(long, required = true)]
    pub tokenizer: Option<PathBuf>,
    /// A Whisper folder (CTranslate2 or converted) to include as the speech model
    #[arg(long)]
    pub whisper: Option<PathBuf>,
    /// Block type of Phi-2's matrices: q4k, q8_0, q4_0, f16, f32
    #[arg(long, default_value = "q4k")]
    pub quant: String,
    /// CLIP, projector and Whisper precision: f16, f32 or q8_0
    #[arg(long, default_value = "f16")]
    pub vision_dtype: String,
    #[arg(long, default_value = "Jñāna (converted)")]
    pub name: String,
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
}

fn open(path: &Path) -> Result<Arc<dyn TensorSource>> {
    Ok(jnana::conformance::open_path(path)?)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn run(args: ConvertArgs) -> Result<()> {
    match args.what {
        Some(ConvertWhat::Ct2Whisper { dir, out, dtype }) => ct2_whisper(&dir, &out, &dtype),
        None => bundle(args.bundle),
    }
}

/// A Whisper folder's files, converted (HF names, suppressed tokens in the config).
fn whisper_files(dir: &Path, dtype: &str, prefix: &str) -> Result<Vec<jnana::bundle::BundleFile>> {
    let weights = ["model.bin", "model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .with_context(|| format!("{} has no model.bin or model.safetensors", dir.display()))?;
    let config = dir.join("config.json");
    let config = config.exists().then(|| read_json(&config)).transpose()?;
    let tokenizer = std::fs::read(dir.join("tokenizer.json"))
        .with_context(|| format!("reading {}/tokenizer.json", dir.display()))?;
    Ok(jnana::convert::whisper_files(
        open(&weights)?,
        config.as_ref(),
        tokenizer,
        dtype.parse()?,
        prefix,
    )?)
}

fn ct2_whisper(dir: &Path, out: &Path, dtype: &str) -> Result<()> {
    let files = whisper_files(dir, dtype, "")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for f in &files {
        std::fs::write(out.join(&f.entry.name), &f.bytes)
            .with_context(|| format!("writing {}", f.entry.name))?;
    }
    eprintln!(
        "wrote {}: {}",
        out.display(),
        files
            .iter()
            .map(|f| f.entry.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn bundle(args: BundleArgs) -> Result<()> {
    let (Some(tokenizer), Some(out)) = (&args.tokenizer, &args.out) else {
        bail!("--tokenizer and --out are required");
    };
    let adapter = match &args.adapter {
        None => None,
        Some(dir) => {
            let config = std::fs::read_to_string(dir.join("adapter_config.json"))
                .with_context(|| format!("reading {}/adapter_config.json", dir.display()))?;
            let weights = ["adapter_model.safetensors", "adapter_model.bin"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .with_context(|| {
                    format!("{} has no adapter_model.safetensors or .bin", dir.display())
                })?;
            Some((config, open(&weights)?))
        }
    };
    let projector: Option<Arc<dyn TensorSource>> = match (
        &args.projector,
        &args.projector_linear,
        &args.projector_block,
    ) {
        (Some(p), _, _) => Some(open(p)?),
        (None, Some(l), Some(b)) => Some(Arc::new(Union::new(vec![
            Arc::new(Prefixed::new("linear.", open(l)?)),
            Arc::new(Prefixed::new("res.", open(b)?)),
        ]))),
        _ => None,
    };
    if args.clip.is_some() && projector.is_none() {
        bail!("--clip needs --projector or --projector-linear + --projector-block");
    }
    let vision_dtype: WeightDtype = args.vision_dtype.parse()?;
    let inputs = ConvertInputs {
        name: args.name.clone(),
        phi: args.phi.iter().map(|p| open(p)).collect::<Result<_>>()?,
        phi_config: args.phi_config.as_deref().map(read_json).transpose()?,
        adapter,
        clip: args.clip.as_deref().map(open).transpose()?,
        clip_config: args.clip_config.as_deref().map(read_json).transpose()?,
        projector,
        tokenizer_json: std::fs::read_to_string(tokenizer)
            .with_context(|| format!("reading {}", tokenizer.display()))?,
        text_quant: files::parse_quant(&args.quant)?,
        vision_dtype,
    };
    let (mut manifest, mut bundle) =
        jnana::convert::convert(inputs, &mut |step| eprintln!("{step}…"))?;
    if let Some(dir) = &args.whisper {
        eprintln!("converting Whisper…");
        let speech = whisper_files(dir, &args.vision_dtype, "whisper-")?;
        manifest
            .files
            .extend(speech.iter().map(|f| f.entry.clone()));
        bundle.extend(speech);
        manifest.validate()?;
    }
    files::write_bundle(out, &manifest, &bundle)?;
    eprintln!(
        "wrote {} ({} files, {:.1} MB)",
        out.display(),
        bundle.len(),
        manifest.total_size() as f64 / 1e6
    );
    Ok(())
}
