//! `jnana transcribe`: speech to text with a Whisper model folder.

use anyhow::{Context, Result};
use jnana::audio::AudioStream;
use jnana::speech::{self, Transcriber};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct TranscribeArgs {
    /// An audio file (WAV, MP3, OGG/Vorbis, FLAC, M4A/AAC)
    pub audio: PathBuf,
    /// A Whisper folder: converted (model.safetensors or .gguf + config.json + tokenizer.json)
    /// or CTranslate2/faster-whisper (model.bin + config.json + tokenizer.json)
    #[arg(long)]
    pub model: PathBuf,
    /// Language code (multilingual models); detected when absent
    #[arg(long)]
    pub language: Option<String>,
    /// Print the whole result as JSON (windows, tokens, languages)
    #[arg(long)]
    pub json: bool,
    /// Where Whisper runs: `cpu` or `cuda` (a `cuda` build); the GPU engine transcribes inside
    /// `chat` and `bench`
    #[arg(long, default_value = "cpu")]
    pub backend: crate::Backend,
}

pub fn load_model(dir: &Path, device: &candle_core::Device) -> Result<Transcriber> {
    speech::load_dir(dir, device)
        .with_context(|| format!("loading the Whisper model in {}", dir.display()))
}

/// Streams an audio file through the transcriber, reporting each window on stderr.
pub fn transcribe_file(transcriber: &Transcriber, audio: &Path) -> Result<speech::Transcript> {
    let file =
        std::fs::File::open(audio).with_context(|| format!("opening {}", audio.display()))?;
    let stream = AudioStream::open(Box::new(file))
        .with_context(|| format!("reading {}", audio.display()))?;
    let total = stream
        .duration_seconds()
        .map(|s| (s / 30.0).ceil().max(1.0) as usize);
    let transcript = transcriber.transcribe_chunks(stream, total, |p| {
        let of = p.total.map_or(String::new(), |t| format!("/{t}"));
        eprintln!(
            "[window {}{of}, {:.0}-{:.0} s{}] {}",
            p.index + 1,
            p.window.start_seconds,
            p.window.end_seconds,
            p.window
                .language
                .as_deref()
                .map_or(String::new(), |l| format!(", {l}")),
            if p.window.silent {
                "(silence)"
            } else {
                &p.window.text
            }
        );
        ControlFlow::Continue(())
    })?;
    Ok(transcript)
}

pub fn run(args: TranscribeArgs) -> Result<()> {
    let device = args.backend.candle_only(
        "transcribe",
        "the GPU engine transcribes inside `chat --backend wgpu` and `bench --backend wgpu`",
    )?;
    let mut transcriber = load_model(&args.model, &device)?;
    transcriber.options.language = args.language.clone();
    let started = Instant::now();
    let transcript = transcribe_file(&transcriber, &args.audio)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string(&transcript)?);
    } else {
        println!("{}", transcript.text);
    }
    eprintln!(
        "[{:.1} s of audio in {seconds:.1} s: {:.1}x real time]",
        transcript.audio_seconds,
        transcript.audio_seconds / seconds
    );
    Ok(())
}
