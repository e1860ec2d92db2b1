//! `jnana convert`: published weights → a browser bundle.

use crate::files;
use anyhow::{bail, Context, Result};
use jnana::convert::{ConvertInputs, VisionDtype};
use jnana::weights::{Prefixed, TensorSource, Union};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Phi-2 weights: HF safetensors (all shards) or a GGUF
    #[arg(long, required = true, num_args = 1..)]
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
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Block type of Phi-2's matrices: q4k, q8_0, q4_0, f16, f32
    #[arg(long, default_value = "q4k")]
    pub quant: String,
    /// CLIP and projector precision: f16, f32 or q8_0
    #[arg(long, default_value = "f16")]
    pub vision_dtype: String,
    #[arg(long, default_value = "Jñāna (converted)")]
    pub name: String,
    #[arg(long)]
    pub out: PathBuf,
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
    let vision_dtype = match args.vision_dtype.as_str() {
        "f16" => VisionDtype::F16,
        "f32" => VisionDtype::F32,
        "q8_0" => VisionDtype::Q8_0,
        other => bail!("unknown --vision-dtype `{other}` (f16, f32, q8_0)"),
    };
    let inputs = ConvertInputs {
        name: args.name.clone(),
        phi: args.phi.iter().map(|p| open(p)).collect::<Result<_>>()?,
        phi_config: args.phi_config.as_deref().map(read_json).transpose()?,
        adapter,
        clip: args.clip.as_deref().map(open).transpose()?,
        clip_config: args.clip_config.as_deref().map(read_json).transpose()?,
        projector,
        tokenizer_json: std::fs::read_to_string(&args.tokenizer)
            .with_context(|| format!("reading {}", args.tokenizer.display()))?,
        text_quant: files::parse_quant(&args.quant)?,
        vision_dtype,
    };
    let (manifest, bundle) = jnana::convert::convert(inputs, &mut |step| eprintln!("{step}…"))?;
    files::write_bundle(&args.out, &manifest, &bundle)?;
    eprintln!(
        "wrote {} ({} files, {:.1} MB)",
        args.out.display(),
        bundle.len(),
        manifest.total_size() as f64 / 1e6
    );
    Ok(())
}
