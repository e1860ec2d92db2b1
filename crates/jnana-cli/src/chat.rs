//! `jnana chat`: one question, or an interactive multi-turn chat, streamed to stdout.

use anyhow::{Context, Result};
use jnana::bundle::{self, DirProvider, LoadOptions, LoadProgress};
use jnana::pipeline::AudioInput;
use jnana::weights::QuantizedMatmul;
use jnana::{Conversation, GenerationParams, Jnana, Request};
use jnana_gpu::engine::GpuModels;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ChatArgs {
    /// A bundle folder or its manifest.json
    #[arg(long)]
    pub bundle: PathBuf,
    /// A picture to ask about (PNG, JPEG, WebP, GIF, BMP)
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The question; without it (and without --image/--transcript) the chat is interactive
    #[arg(long)]
    pub text: Option<String>,
    /// A spoken question (WAV, MP3, OGG/Vorbis, FLAC, M4A/AAC), transcribed by the bundle's Whisper
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// A spoken question's transcript, given directly
    #[arg(long)]
    pub transcript: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print the answer's token ids to stderr after it
    #[arg(long)]
    pub ids: bool,
    /// Check every file's sha256 against the manifest before loading
    #[arg(long)]
    pub verify: bool,
    /// Dequantize GGUF weights at load and multiply in float32 (exact, more memory)
    #[arg(long)]
    pub dequantize: bool,
    /// Where the language and vision models run: `cpu` (candle) or `wgpu` (the GPU engine;
    /// speech stays on the CPU)
    #[arg(long, default_value = "cpu")]
    pub backend: crate::Backend,
}

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Most tokens per answer (default: the bundle's setting, 200)
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// 0 = greedy, as the seed decodes
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 299_792_458)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self, default_max: usize) -> GenerationParams {
        GenerationParams {
            max_new_tokens: self.max_tokens.unwrap_or(default_max),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..GenerationParams::default()
        }
    }
}

/// Loads a bundle folder (or manifest path) onto `backend`, reporting progress on stderr; for
/// `wgpu`, straight onto the GPU engine `gpu` (layers uploaded as they are read, the CPU copies
/// freed).
pub fn load(
    path: &Path,
    verify: bool,
    dequantize: bool,
    backend: crate::Backend,
    gpu: Option<Rc<jnana_gpu::Gpu>>,
) -> Result<(Jnana, jnana::bundle::Manifest, Option<GpuModels>)> {
    let (manifest, dir) = bundle::read_manifest(path)?;
    let mut provider = DirProvider::new(dir);
    provider.verify_sha256 = verify;
    let options = LoadOptions {
        device: backend.candle_device()?,
        quantized_matmul: if dequantize {
            QuantizedMatmul::Dequantize
        } else {
            QuantizedMatmul::IntegerDot
        },
        skip_vision: false,
        skip_speech: false,
    };
    let mut progress = |p: LoadProgress| eprintln!("loading [{}/{}] {}", p.step, p.steps, p.what);
    let (model, models) = match gpu {
        None => (
            bundle::load(&manifest, &mut provider, &options, &mut progress),
            None,
        ),
        Some(gpu) => {
            match GpuModels::load(gpu, &manifest, &mut provider, &options, &mut progress) {
                Ok((model, models)) => (Ok(model), Some(models)),
                Err(e) => (Err(e), None),
            }
        }
    };
    let model = model.with_context(|| format!("loading {}", path.display()))?;
    Ok((model, manifest, models))
}

/// A chat in progress: the model, its conversation and how answers are printed.
struct Session {
    model: Jnana,
    conversation: Conversation,
    params: GenerationParams,
    print_ids: bool,
    generating: Arc<AtomicBool>,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let gpu = args.backend.gpu()?;
    let (model, manifest, on_gpu) = load(
        &args.bundle,
        args.verify,
        args.dequantize,
        args.backend,
        gpu,
    )?;
    let conversation = match on_gpu {
        None => model.new_conversation(),
        Some(models) => Conversation::with_engine(&model, Box::new(models.engine()?)),
    };
    eprintln!("computing on: {}", conversation.engine_name());
    let mut session = Session {
        params: args.sampling.params(manifest.settings.max_new_tokens),
        print_ids: args.ids,
        generating: Arc::new(AtomicBool::new(false)),
        conversation,
        model,
    };
    {
        let generating = session.generating.clone();
        let cancel = session.conversation.cancel_flag();
        // Ctrl-C stops the answer being written; at the prompt it quits.
        ctrlc::set_handler(move || {
            if generating.load(Ordering::Relaxed) {
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    let one_shot = args.text.is_some()
        || args.image.is_some()
        || args.transcript.is_some()
        || args.audio.is_some();
    if one_shot {
        let transcript = match (&args.transcript, &args.audio) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(audio)) => session.listen(audio)?,
            (None, None) => None,
        };
        return session.answer(&Request {
            image: args.image.as_deref().map(read_file).transpose()?,
            audio: None,
            transcript,
            text: args.text.clone(),
        });
    }
    eprintln!(
        "Ask away. /image PATH attaches a picture, /audio PATH a spoken question, /new starts \
         over, /quit leaves."
    );
    let mut image = None;
    let mut transcript = None;
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if let Some(path) = line.strip_prefix("/image ") {
            match read_file(Path::new(path.trim())) {
                Ok(bytes) => {
                    image = Some(bytes);
                    eprintln!("(picture attached to your next question)");
                }
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if let Some(path) = line.strip_prefix("/audio ") {
            match session.listen(Path::new(path.trim())) {
                Ok(heard) => {
                    transcript = heard;
                    eprintln!("(the transcript goes with your next question; press Enter to send it alone)");
                }
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        match line {
            "/quit" | "/exit" => break,
            "/new" => {
                session.conversation.reset();
                eprintln!("(new conversation)");
                continue;
            }
            _ => {}
        }
        let request = Request {
            image: image.take(),
            audio: None,
            transcript: transcript.take(),
            text: Some(line.to_string()),
        };
        if let Err(e) = session.answer(&request) {
            eprintln!("error: {e:#}");
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Session {
    /// Transcribes a recording, showing what was heard (as the app shows it for editing).
    fn listen(&self, path: &Path) -> Result<Option<String>> {
        let audio = AudioInput::Encoded(read_file(path)?);
        let transcript = self.model.transcribe(&audio, |p| {
            if let Some(total) = p.total.filter(|&t| t > 1) {
                eprintln!("(listening: window {}/{total})", p.index + 1);
            }
            ControlFlow::Continue(())
        })?;
        if transcript.text.is_empty() {
            eprintln!("(heard only silence)");
            return Ok(None);
        }
        eprintln!("(heard) {}", transcript.text);
        Ok(Some(transcript.text))
    }

    /// Streams one answer to stdout, then its statistics to stderr.
    fn answer(&mut self, request: &Request) -> Result<()> {
        let started = Instant::now();
        let mut first_token = None;
        let mut stdout = std::io::stdout();
        self.generating.store(true, Ordering::Relaxed);
        let result = self
            .conversation
            .ask(&self.model, request, &self.params, |event| {
                first_token.get_or_insert_with(|| started.elapsed());
                if let Some(text) = &event.text {
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
                ControlFlow::Continue(())
            });
        self.generating.store(false, Ordering::Relaxed);
        let answer = result?;
        println!();
        let elapsed = started.elapsed().as_secs_f64();
        let ttft = first_token.map_or(elapsed, |d| d.as_secs_f64());
        let decode_s = (elapsed - ttft).max(1e-9);
        match answer.finish {
            None => println!("{}", answer.text),
            Some(finish) => eprintln!(
                "[{} tokens, first after {:.0} ms, {:.1} tok/s, {:?}{}]",
                answer.tokens.len(),
                ttft * 1e3,
                answer.tokens.len().saturating_sub(1) as f64 / decode_s,
                finish,
                if answer.dropped_turns > 0 {
                    format!(
                        ", {} oldest turn(s) dropped to fit the context",
                        answer.dropped_turns
                    )
                } else {
                    String::new()
                }
            ),
        }
        if self.print_ids {
            let ids: Vec<String> = answer.tokens.iter().map(u32::to_string).collect();
            eprintln!("ids: {}", ids.join(" "));
        }
        Ok(())
    }
}
