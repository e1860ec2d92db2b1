//! `jnana bench`: the numbers users feel, on a bundle: load time, prefill and decode speed,
//! image encoding, peak memory.

use crate::{chat, Backend};
use anyhow::Result;
use jnana::engine::{now, CandleEngine, LanguageEngine};
use jnana::speech::{CandleWhisper, WhisperEngine};
use jnana::{Conversation, GenerationParams, Jnana, Request};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A bundle folder or its manifest.json
    #[arg(long)]
    pub bundle: std::path::PathBuf,
    /// Prompt lengths (contexts) for the prefill and decode measurements, comma-separated;
    /// decode is timed after a prompt of each length
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub prompt_tokens: Vec<usize>,
    /// Tokens generated for the decode measurement
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Repetitions; the median is reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Dequantize GGUF weights at load (float32 matmuls)
    #[arg(long)]
    pub dequantize: bool,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    /// Only the language model (no image encoding, no Whisper)
    #[arg(long)]
    pub text_only: bool,
    /// Time another implementation on the bundle's Phi-2 GGUF with the same prompt instead of
    /// ours: `candle` (candle-transformers' `quantized_phi`, CPU). Implies --text-only.
    #[arg(long)]
    pub peer: Option<Peer>,
    /// Whisper folders to time instead of the bundle's speech model, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub whisper: Vec<std::path::PathBuf>,
    /// Audio for the Whisper measurement (default: 30 s of synthetic sound)
    #[arg(long)]
    pub audio: Option<std::path::PathBuf>,
    /// Where the models run: `cpu` (candle), `wgpu` (the GPU engine: Phi-2, CLIP + projector
    /// and Whisper) or `cuda` (candle on NVIDIA GPU 0, in a `cuda` build)
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Peer {
    Candle,
}

/// The benchmark's prompt: a fixed, deterministic run of ordinary token ids.
pub fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7919 + 13) % (vocab as u32).min(50000))
        .collect()
}

/// What a generation timing feeds the model: the whole prompt into an empty cache, or one
/// token at a position.
pub enum Feed {
    Prompt,
    Token(u32, usize),
}

/// Median prefill and decode speeds (tokens/s) over `runs`: `feed` returns the greedy next id.
pub fn speeds(
    runs: usize,
    prompt_len: usize,
    decode_tokens: usize,
    mut feed: impl FnMut(Feed) -> Result<u32>,
) -> Result<(f64, f64)> {
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let mut id = feed(Feed::Prompt)?;
        prefill.push(prompt_len as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..decode_tokens {
            id = feed(Feed::Token(id, prompt_len + i))?;
        }
        decode.push(decode_tokens as f64 / t.elapsed().as_secs_f64());
    }
    Ok((median(prefill), median(decode)))
}

/// The prefill and decode lines of a report.
pub fn print_speeds(report: &serde_json::Value) {
    println!(
        "prefill           {:.1} tok/s ({} tokens)",
        report["prefill_tok_per_s"].as_f64().unwrap_or(0.0),
        report["prompt_tokens"]
    );
    println!(
        "decode            {:.2} tok/s ({} tokens)",
        report["decode_tok_per_s"].as_f64().unwrap_or(0.0),
        report["decode_tokens"]
    );
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process in MB (Linux), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(Peer::Candle) = args.peer {
        return crate::peer::candle_phi(&args);
    }
    let runs = args.runs.max(1);
    let gpu = args.backend.gpu()?;
    let started = Instant::now();
    let (model, _, on_gpu) = chat::load(
        &args.bundle,
        false,
        args.dequantize,
        args.backend,
        gpu.clone(),
    )?;
    let load_s = started.elapsed().as_secs_f64();
    let phi = &model.phi;
    // The speech models timed: the bundle's, or each --whisper folder, on the bench's backend
    // (none with --text-only, so none are loaded for nothing).
    let mut whispers = Vec::new();
    if let (false, true, Some(t)) = (args.text_only, args.whisper.is_empty(), &model.speech) {
        let on_gpu = on_gpu.as_ref().and_then(|m| m.speech().cloned());
        whispers.push(("the bundle's".to_string(), t.clone(), on_gpu));
    }
    for dir in args.whisper.iter().filter(|_| !args.text_only) {
        let t = crate::transcribe::load_model(dir, &args.backend.candle_device()?)?;
        let on_gpu = match &gpu {
            Some(gpu) => Some(jnana_gpu::engine::GpuSpeech::upload(gpu.clone(), &t.model)?),
            None => None,
        };
        whispers.push((dir.display().to_string(), t, on_gpu));
    }
    // The engines: candle, or the GPU engine with every model loaded onto it.
    let gpu_weights = gpu.as_ref().map(|g| g.uploaded_bytes());
    let device = match (&gpu, model.device()) {
        (Some(gpu), _) => {
            let s = &gpu.summary;
            format!(
                "wgpu {} on {}{}",
                s.backend,
                s.name,
                if s.fallback { " (software)" } else { "" }
            )
        }
        (None, candle_core::Device::Cpu) => "cpu (candle)".to_string(),
        (None, candle_core::Device::Cuda(_)) => "cuda:0 (candle)".to_string(),
        (None, other) => format!("{other:?} (candle)"),
    };
    // A fresh conversation on the same engine (for the whole-pipeline timing).
    let conversation = |m: &Jnana| -> Result<Conversation> {
        Ok(match &on_gpu {
            Some(models) => Conversation::with_engine(m, Box::new(models.engine()?)),
            None => m.new_conversation(),
        })
    };
    let mut engine: Box<dyn LanguageEngine> = match &on_gpu {
        Some(models) => Box::new(models.engine()?),
        None => Box::new(CandleEngine::new(phi.clone())),
    };
    let contexts = args
        .prompt_tokens
        .iter()
        .map(|&n| {
            time_context(
                &mut *engine,
                &model,
                gpu.as_deref(),
                n,
                args.decode_tokens,
                runs,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let image_ms = match &model.vision {
        _ if args.text_only => None,
        None => None,
        Some(_) => {
            let picture = test_picture()?;
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let pixels = model.pixel_values(&picture)?;
                match engine.encode_pixels(&pixels) {
                    Some(on_engine) => now(on_engine)??,
                    None => model.encode_pixels(&pixels)?,
                };
                // CUDA queues work; the picture is encoded when the queue has run.
                model.device().synchronize()?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Some(median(times))
        }
    };
    // What a user waits for: picture + question in, first answer token out (image decoding,
    // CLIP, projector, the prompt's prefill), through the conversation as the app runs it.
    let first_token_ms = match &model.vision {
        _ if args.text_only => None,
        None => None,
        Some(_) => {
            let request = Request {
                image: Some(test_picture()?),
                text: Some("What is in this picture?".into()),
                ..Request::default()
            };
            let params = GenerationParams {
                max_new_tokens: 1,
                ..GenerationParams::default()
            };
            let mut times = Vec::new();
            for _ in 0..runs {
                let mut conversation = conversation(&model)?;
                let t = Instant::now();
                let mut first = None;
                conversation.ask(&model, &request, &params, |_| {
                    first.get_or_insert(t.elapsed());
                    std::ops::ControlFlow::Continue(())
                })?;
                times.push(first.unwrap_or(t.elapsed()).as_secs_f64() * 1e3);
            }
            Some(median(times))
        }
    };
    let samples = match (&args.audio, whispers.is_empty()) {
        (_, true) => Vec::new(),
        (Some(path), false) => {
            jnana::audio::AudioStream::open(Box::new(std::fs::File::open(path)?))?.read_all()?
        }
        (None, false) => synthetic_sound(30.0),
    };
    let mut speech = Vec::new();
    for (name, t, on_gpu) in &whispers {
        let candle = CandleWhisper(&t.model);
        let engine: &dyn WhisperEngine = match on_gpu {
            Some(g) => g,
            None => &candle,
        };
        let windows = samples.len().div_ceil(t.window_samples());
        let mut rtf = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let out = now(t.transcribe_chunks_on(
                engine,
                std::iter::once(Ok(samples.clone())),
                Some(windows),
                |_| std::ops::ControlFlow::Continue(()),
            ))??;
            rtf.push(out.audio_seconds / t0.elapsed().as_secs_f64());
        }
        speech.push(serde_json::json!({"model": name, "real_time_factor": median(rtf)}));
    }
    let gpu_weights_mb = gpu_weights.map(|bytes| bytes as f64 / 1e6);
    let first = &contexts[0];
    let report = serde_json::json!({
        "bundle": args.bundle.display().to_string(),
        "device": device,
        "gpu_weights_mb": gpu_weights_mb,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "load_s": load_s,
        "prompt_tokens": first["prompt_tokens"],
        "prefill_tok_per_s": first["prefill_tok_per_s"],
        "decode_tokens": args.decode_tokens,
        "decode_tok_per_s": first["decode_tok_per_s"],
        "gpu_decode_step": first["gpu_decode_step"],
        "contexts": contexts,
        "image_encode_ms": image_ms,
        "first_token_ms_picture_and_question": first_token_ms,
        "whisper_real_time_factor": speech.first().map(|w| w["real_time_factor"].clone()),
        "whisper": speech,
        "peak_rss_mb": peak_rss_mb(),
        "runs": runs,
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!("bundle            {}", args.bundle.display());
    println!(
        "device            {} ({} threads)",
        report["device"].as_str().unwrap_or("?"),
        report["threads"]
    );
    match gpu_weights_mb {
        None => println!("load              {load_s:.2} s"),
        Some(mb) => println!(
            "load              {load_s:.2} s (streamed onto the GPU: {mb:.0} MB of weights there)"
        ),
    }
    for context in &contexts {
        print_speeds(context);
        if let Some(split) = context["gpu_decode_step"].as_object() {
            println!(
                "  per token       {:.2} ms recording on the CPU, {:.2} ms waiting for the GPU",
                split["recording_ms"].as_f64().unwrap_or(0.0),
                split["waiting_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    match image_ms {
        Some(ms) => println!("image encode      {ms:.1} ms (CLIP + projector, 640x480 PNG)"),
        None if args.text_only => println!("image encode      - (--text-only)"),
        None => println!("image encode      - (no vision model)"),
    }
    match first_token_ms {
        Some(ms) => println!("first token       {ms:.1} ms (picture + question, whole pipeline)"),
        None => println!("first token       - (no picture measurement)"),
    }
    let sound = args
        .audio
        .as_ref()
        .map_or("30 s synthetic sound".to_string(), |p| {
            p.display().to_string()
        });
    for w in &speech {
        println!(
            "whisper           {:.1}x real time ({}, {sound})",
            w["real_time_factor"].as_f64().unwrap_or(0.0),
            w["model"].as_str().unwrap_or("?")
        );
    }
    if speech.is_empty() {
        match args.text_only {
            true => println!("whisper           - (--text-only)"),
            false => println!("whisper           - (no speech model)"),
        }
    }
    match peak_rss_mb() {
        Some(mb) => println!("peak RSS          {mb:.0} MB"),
        None => println!("peak RSS          - (not on Linux)"),
    }
    Ok(())
}

/// Prefill and decode speeds at one context length, with the GPU engine's split of a decode
/// step into CPU recording and GPU waiting.
fn time_context(
    engine: &mut dyn LanguageEngine,
    model: &Jnana,
    gpu: Option<&jnana_gpu::Gpu>,
    prompt_tokens: usize,
    decode_tokens: usize,
    runs: usize,
) -> Result<serde_json::Value> {
    let phi = &model.phi;
    let prompt = prompt_ids(prompt_tokens, model.vocab_limit());
    let embeds = phi.embed(&prompt)?.unsqueeze(0)?;
    let greedy =
        |logits: &candle_core::Tensor| -> Result<u32> { Ok(logits.argmax(0)?.to_scalar::<u32>()?) };
    let timing = || gpu.map(|g| g.timing());
    let (mut recording, mut waiting, mut timed) = (0.0, 0.0, 0usize);
    let (prefill, decode) = speeds(runs, prompt.len(), decode_tokens, |feed| match feed {
        Feed::Prompt => {
            engine.clear();
            greedy(&now(engine.forward(&embeds))??)
        }
        Feed::Token(id, _) => {
            let before = timing();
            let id = greedy(&now(engine.forward(&phi.embed(&[id])?.unsqueeze(0)?))??)?;
            if let (Some(b), Some(a)) = (before, timing()) {
                recording += (a.recording - b.recording).as_secs_f64() * 1e3;
                waiting += (a.waiting - b.waiting).as_secs_f64() * 1e3;
                timed += 1;
            }
            Ok(id)
        }
    })?;
    let split = (timed > 0).then(|| {
        serde_json::json!({
            "recording_ms": recording / timed as f64,
            "waiting_ms": waiting / timed as f64,
        })
    });
    Ok(serde_json::json!({
        "prompt_tokens": prompt.len(),
        "decode_tokens": decode_tokens,
        "prefill_tok_per_s": prefill,
        "decode_tok_per_s": decode,
        "gpu_decode_step": split,
    }))
}

/// Sound with speech-like structure (gliding harmonics, syllable-rate envelope), so the decoder
/// has something to chew on.
fn synthetic_sound(seconds: f32) -> Vec<f32> {
    let n = (seconds * 16_000.0) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let pitch = 140.0 + 30.0 * (t * 0.7).sin();
            let envelope = (t * 4.0 * std::f32::consts::PI).sin().abs();
            let voice: f32 = (1..6)
                .map(|h| (t * pitch * h as f32 * std::f32::consts::TAU).sin() / h as f32)
                .sum();
            0.2 * envelope * voice
        })
        .collect()
}

/// A 640x480 gradient PNG, so image timing includes decoding and resizing.
fn test_picture() -> Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}
