//! `jnana`: the native command line of the model crate.

mod bench;
mod chat;
mod convert;
mod files;
mod peer;
mod transcribe;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "jnana",
    version,
    about = "Jñāna: a private multimodal assistant (CLIP + Phi-2) on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask a question about a picture and/or text; streams the answer. Without --text, an
    /// interactive multi-turn chat.
    Chat(chat::ChatArgs),
    /// Write a bundle of deterministic random weights with the real architectures.
    Synth {
        /// `tiny` (a few MB, for tests) or `phi2` (Phi-2's real shapes, ~1.6 GB Q4_K)
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Block type of Phi-2's matrices: q4k, q8_0, q4_0, f16 or f32 (default: the preset's)
        #[arg(long)]
        quant: Option<String>,
    },
    /// Convert published weights (HF safetensors, PEFT adapter, .pth projector, CLIP, Whisper)
    /// into a browser bundle; `convert ct2-whisper` converts a CTranslate2 Whisper alone.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Convert(Box<convert::ConvertArgs>),
    /// Check the crate against a reference fixture folder; exit 1 on any failure.
    Conformance {
        /// Folders laid out like shared/fixtures/*
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the models run: `cpu` (candle) or `wgpu` (the GPU engine)
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// Transcribe speech with a Whisper model.
    Transcribe(transcribe::TranscribeArgs),
    /// Measure load time, prefill and decode speed, image encoding and peak memory.
    Bench(bench::BenchArgs),
}

/// Where the models compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// candle on the CPU
    Cpu,
    /// Jñāna's GPU engine on wgpu (Vulkan, Metal, DX12)
    Wgpu,
    /// candle on NVIDIA GPU 0 (a build with `--features cuda`: scripts/build-cuda.sh)
    Cuda,
}

impl Backend {
    /// The candle device the models are built on (the GPU engine uploads from the CPU).
    pub fn candle_device(self) -> Result<candle_core::Device> {
        match self {
            Backend::Cpu | Backend::Wgpu => Ok(candle_core::Device::Cpu),
            Backend::Cuda if !cfg!(feature = "cuda") => anyhow::bail!(
                "this jnana was built without CUDA; build it with `bash scripts/build-cuda.sh` \
                 (or `cargo build --release -p jnana-cli --features cuda`)"
            ),
            Backend::Cuda => candle_core::Device::new_cuda(0)
                .map_err(|e| anyhow::anyhow!("starting CUDA on GPU 0: {e}")),
        }
    }

    /// The candle device for a command that only candle runs (`cpu` or `cuda`); `wgpu` is
    /// refused, naming where the GPU engine does that work instead.
    pub fn candle_only(self, what: &str, on_gpu_engine: &str) -> Result<candle_core::Device> {
        if self == Backend::Wgpu {
            anyhow::bail!("{what} runs on `cpu` or `cuda`; {on_gpu_engine}");
        }
        self.candle_device()
    }

    /// The GPU engine, for `wgpu`.
    pub fn gpu(self) -> Result<Option<std::rc::Rc<jnana_gpu::Gpu>>> {
        Ok(match self {
            Backend::Wgpu => Some(std::rc::Rc::new(jnana_gpu::Gpu::new_blocking()?)),
            Backend::Cpu | Backend::Cuda => None,
        })
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Chat(args) => chat::run(args)?,
        Command::Synth {
            preset,
            out,
            seed,
            quant,
        } => {
            let mut spec = jnana::synth::SynthSpec::preset(&preset)?;
            spec.seed = seed;
            if let Some(q) = quant {
                spec.text_quant = files::parse_quant(&q)?;
            }
            let tokenizer = jnana::synth::phi2_tokenizer_json(files::GPT2_TOKENIZER)?;
            let started = std::time::Instant::now();
            let (manifest, bundle) = jnana::synth::synthesize(
                &spec,
                &tokenizer,
                Some(files::WHISPER_TOKENIZER),
                &|what, i, n| {
                    if i == n || i % 16 == 0 {
                        eprint!("\r{what}: {i}/{n} tensors        ");
                    }
                },
            )?;
            eprintln!();
            files::write_bundle(&out, &manifest, &bundle)?;
            eprintln!(
                "wrote {} ({:.1} MB) in {:.1} s",
                out.display(),
                manifest.total_size() as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Convert(args) => convert::run(*args)?,
        Command::Conformance { dirs, backend } => {
            let gpu = backend.gpu()?;
            let engine: Box<dyn jnana::conformance::Engine> = match &gpu {
                Some(gpu) => {
                    println!("GPU: {:?}", gpu.summary);
                    Box::new(jnana_gpu::conformance::GpuEngine { gpu: gpu.as_ref() })
                }
                None => Box::new(jnana::conformance::CandleModels(backend.candle_device()?)),
            };
            let mut failed = 0;
            for dir in dirs {
                println!("== {} ({})", dir.display(), engine.name());
                match jnana::conformance::run_with(&dir, engine.as_ref()) {
                    Ok(checks) => {
                        for c in &checks {
                            println!("{c}");
                        }
                        failed += checks.iter().filter(|c| !c.passed()).count();
                    }
                    Err(e) => {
                        println!("FAIL {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                println!("{failed} check(s) failed");
                return Ok(ExitCode::FAILURE);
            }
            println!("all checks passed");
        }
        Command::Bench(args) => bench::run(args)?,
        Command::Transcribe(args) => transcribe::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}
