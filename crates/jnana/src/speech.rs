//! Speech to text with Whisper, decoded the way CTranslate2 (faster-whisper, the seed's
//! WhisperX) does greedily: prompt `<|startoftranscript|>` [language `<|transcribe|>`]
//! `<|notimestamps|>`, the checkpoint's suppressed tokens at every step plus a blank and
//! end-of-text at the first, until `<|endoftext|>` or 224 tokens. Beyond it: the language is
//! detected for multilingual checkpoints, audio longer than 30 s is read in consecutive windows
//! (streamed: memory stays bounded), silent windows are skipped, a looping decoder is stopped.

use crate::audio::mel::{LogMel, MelConfig};
use crate::audio::SAMPLE_RATE;
use crate::engine::{now, LocalFuture};
use crate::error::{Error, Result};
use crate::models::whisper::{self, DecoderState, TakeWhisperLayer, Whisper};
use crate::tokenizer::Tokenizer;
use crate::weights::{QuantizedMatmul, TensorSource, Weights};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::sync::Arc;

/// Whisper's special tokens, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub start_of_transcript: u32,
    pub end_of_text: u32,
    pub transcribe: Option<u32>,
    pub no_timestamps: u32,
    pub no_speech: Option<u32>,
    /// (code, id) of every language token (empty for English-only checkpoints).
    pub languages: Vec<(String, u32)>,
}

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer, vocab_size: usize) -> Result<Self> {
        let need = |t: &str| {
            tok.token_id(t).ok_or_else(|| {
                Error::file("tokenizer.json", format!("lacks Whisper's `{t}` token"))
            })
        };
        let sot = need("<|startoftranscript|>")?;
        let translate = tok.token_id("<|translate|>");
        // Multilingual checkpoints have 51 865+ tokens; `.en` ones keep a single <|en|> that
        // they were never trained to expect in the prompt.
        let languages = match translate {
            Some(end) if vocab_size >= 51_865 => (sot + 1..end)
                .filter_map(|id| {
                    let t = tok.inner().id_to_token(id)?;
                    let code = t.strip_prefix("<|")?.strip_suffix("|>")?;
                    Some((code.to_string(), id))
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            start_of_transcript: sot,
            end_of_text: need("<|endoftext|>")?,
            transcribe: tok.token_id("<|transcribe|>"),
            no_timestamps: need("<|notimestamps|>")?,
            no_speech: tok
                .token_id("<|nospeech|>")
                .or_else(|| tok.token_id("<|nocaptions|>")),
            languages,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        !self.languages.is_empty()
    }
}

/// Greedy decoding settings.
#[derive(Debug, Clone)]
pub struct GreedyOptions {
    pub max_new_tokens: usize,
    pub end_of_text: u32,
    /// Never generated.
    pub suppress: Vec<u32>,
    /// Not generated first.
    pub suppress_begin: Vec<u32>,
    /// Stop a decoder that keeps repeating itself.
    pub repetition_guard: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// New tokens, without end-of-text.
    pub tokens: Vec<u32>,
    /// Mean log-probability of the chosen tokens, end-of-text included.
    pub avg_logprob: f64,
    /// Whether it stopped because it was looping.
    pub repetition_stopped: bool,
}

/// Where a repeated tail starts to repeat: a pattern of up to 32 tokens seen at least three
/// times in a row and covering at least 24 tokens; returns the length to keep (one copy).
fn repeated_tail(tokens: &[u32]) -> Option<usize> {
    let n = tokens.len();
    for period in 1..=32.min(n / 3) {
        let tail = &tokens[n - period..];
        let mut reps = 1;
        while (reps + 1) * period <= n
            && &tokens[n - (reps + 1) * period..n - reps * period] == tail
        {
            reps += 1;
        }
        if reps >= 3 && reps * period >= 24 {
            return Some(n - (reps - 1) * period);
        }
    }
    None
}

/// One window of audio, encoded, with a decoder fed token by token — on whichever engine
/// encoded it (the candle model, or the GPU engine).
pub trait WhisperWindow {
    /// Feeds `ids` after what the decoder holds; the logits of every fed position, row-major
    /// `[ids, vocab]`.
    fn decode<'a>(&'a mut self, ids: &'a [u32]) -> LocalFuture<'a, Result<Vec<f32>>>;
    /// Forgets the fed tokens; the audio's encoding stays.
    fn restart(&mut self) -> Result<()>;
    /// Positions fed so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where Whisper computes.
pub trait WhisperEngine {
    /// What the UI shows.
    fn name(&self) -> String;
    /// Encodes one window's `[1, n_mels, frames]` log-mel features.
    fn window<'a>(
        &'a self,
        mel: &'a Tensor,
    ) -> LocalFuture<'a, Result<Box<dyn WhisperWindow + 'a>>>;
}

/// The candle Whisper as an engine.
pub struct CandleWhisper<'m>(pub &'m Whisper);

/// A window on the candle Whisper.
pub struct CandleWindow<'m> {
    model: &'m Whisper,
    hidden: Tensor,
    state: DecoderState,
}

impl<'m> CandleWindow<'m> {
    /// A window whose encoder output (`[1, positions, d_model]`) is already known.
    pub fn from_hidden(model: &'m Whisper, hidden: Tensor) -> Result<Self> {
        Ok(Self {
            state: model.new_state(&hidden)?,
            model,
            hidden,
        })
    }
}

impl WhisperWindow for CandleWindow<'_> {
    fn decode<'a>(&'a mut self, ids: &'a [u32]) -> LocalFuture<'a, Result<Vec<f32>>> {
        let logits = self
            .model
            .decode(ids, &mut self.state)
            .and_then(|l| Ok(l.flatten_all()?.to_vec1::<f32>()?));
        Box::pin(std::future::ready(logits))
    }

    fn restart(&mut self) -> Result<()> {
        self.state = self.model.new_state(&self.hidden)?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.state.len()
    }
}

impl WhisperEngine for CandleWhisper<'_> {
    fn name(&self) -> String {
        "CPU".into()
    }

    fn window<'a>(
        &'a self,
        mel: &'a Tensor,
    ) -> LocalFuture<'a, Result<Box<dyn WhisperWindow + 'a>>> {
        let window = self.0.encode(mel).and_then(|encoded| {
            Ok(Box::new(CandleWindow::from_hidden(self.0, encoded.hidden)?)
                as Box<dyn WhisperWindow + 'a>)
        });
        Box::pin(std::future::ready(window))
    }
}

/// Whisper's greedy loop after `prompt` on `window` (its decoder window limited to
/// `max_target_positions`).
pub async fn greedy_loop(
    vocab: usize,
    max_target_positions: usize,
    prompt: &[u32],
    opts: &GreedyOptions,
    window: &mut dyn WhisperWindow,
) -> Result<Decoded> {
    let room = max_target_positions.saturating_sub(window.len() + prompt.len());
    let max_new = opts.max_new_tokens.min(room);
    let last_row = |all: Vec<f32>| -> Vec<f32> {
        let n = all.len();
        all[n - vocab.min(n)..].to_vec()
    };
    let mut values = last_row(window.decode(prompt).await?);
    let mut tokens = Vec::new();
    let mut sum_logprob = 0f64;
    let mut repetition_stopped = false;
    for step_index in 0..=max_new {
        let banned = opts.suppress.iter().chain(if step_index == 0 {
            opts.suppress_begin.iter()
        } else {
            [].iter()
        });
        for &id in banned {
            if let Some(v) = values.get_mut(id as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        // Only end-of-text may follow the last allowed token.
        if step_index == max_new {
            sum_logprob += log_softmax_at(&values, opts.end_of_text as usize);
            break;
        }
        let next = values
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < vocab)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .ok_or_else(|| Error::Input("empty logits".into()))?;
        sum_logprob += log_softmax_at(&values, next as usize);
        if next == opts.end_of_text {
            break;
        }
        tokens.push(next);
        if opts.repetition_guard {
            if let Some(keep) = repeated_tail(&tokens) {
                tokens.truncate(keep);
                repetition_stopped = true;
                break;
            }
        }
        values = last_row(window.decode(&[next]).await?);
    }
    Ok(Decoded {
        avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
        tokens,
        repetition_stopped,
    })
}

fn log_softmax_at(values: &[f32], index: usize) -> f64 {
    let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = values.iter().map(|&v| (v as f64 - max).exp()).sum();
    values
        .get(index)
        .map_or(f64::NEG_INFINITY, |&v| v as f64 - max - sum.ln())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TranscribeOptions {
    /// ISO code (`en`, `de`, …); `None` detects it per window on multilingual checkpoints.
    pub language: Option<String>,
    pub max_new_tokens: usize,
    /// Windows whose loudest 25 ms frame stays below this (dBFS) are silence.
    pub silence_dbfs: f32,
    /// Whisper's own silence test: no-speech probability above this …
    pub no_speech_threshold: f64,
    /// … and mean token log-probability below this.
    pub logprob_threshold: f64,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            max_new_tokens: 224,
            silence_dbfs: -50.0,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowTranscript {
    pub start_seconds: f64,
    pub end_seconds: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub language: Option<String>,
    pub no_speech_prob: Option<f64>,
    /// Judged silent (by level or by the model) and left empty.
    pub silent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// All windows' text, joined and trimmed; empty for silence.
    pub text: String,
    pub windows: Vec<WindowTranscript>,
    pub audio_seconds: f64,
    /// Stopped by the progress callback before the end of the audio.
    pub cancelled: bool,
}

/// Reported after every window.
#[derive(Debug, Clone)]
pub struct WindowProgress<'a> {
    pub index: usize,
    /// Known when the audio's length is.
    pub total: Option<usize>,
    pub window: &'a WindowTranscript,
}

/// A loaded Whisper with its tokenizer and front end.
#[derive(Debug, Clone)]
pub struct Transcriber {
    pub model: Whisper,
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    mel: std::sync::Arc<LogMelShared>,
    pub options: TranscribeOptions,
}

/// `LogMel` holds an FFT plan; shared, it is built once.
struct LogMelShared(LogMel);

impl std::fmt::Debug for LogMelShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogMel({:?})", self.0.config())
    }
}

impl Transcriber {
    pub fn new(model: Whisper, tokenizer: Tokenizer) -> Result<Self> {
        let special = SpecialTokens::from_tokenizer(&tokenizer, model.config().vocab_size)?;
        let mel = LogMel::new(MelConfig::whisper(model.config().num_mel_bins));
        if mel.config().n_frames() != model.config().n_frames() {
            return Err(Error::Input(format!(
                "the encoder takes {} frames, a 30 s window has {}",
                model.config().n_frames(),
                mel.config().n_frames()
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            special,
            mel: std::sync::Arc::new(LogMelShared(mel)),
            options: TranscribeOptions::default(),
        })
    }

    pub fn window_samples(&self) -> usize {
        self.mel.0.config().n_samples()
    }

    /// `[1, n_mels, frames]` features of one window (up to 30 s of 16 kHz audio).
    pub fn features(&self, window: &[f32]) -> Result<Tensor> {
        let cfg = self.mel.0.config();
        Ok(Tensor::from_vec(
            self.mel.0.compute(window),
            (1, cfg.n_mels, cfg.n_frames()),
            &self.model.device(),
        )?)
    }

    fn language_token(&self, code: &str) -> Result<u32> {
        self.special
            .languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
            .ok_or_else(|| {
                Error::Input(format!(
                    "this Whisper model does not know the language `{code}`"
                ))
            })
    }

    /// The most likely language of an encoded window (multilingual checkpoints); the window
    /// is restarted afterwards.
    async fn detect_language(&self, window: &mut dyn WhisperWindow) -> Result<(String, u32)> {
        let logits = window.decode(&[self.special.start_of_transcript]).await?;
        window.restart()?;
        self.special
            .languages
            .iter()
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .cloned()
            .ok_or_else(|| Error::Input("this Whisper model is English-only".into()))
    }

    fn greedy_options(&self) -> GreedyOptions {
        let cfg = self.model.config();
        GreedyOptions {
            max_new_tokens: self.options.max_new_tokens,
            end_of_text: self.special.end_of_text,
            suppress: cfg.suppress_tokens.clone(),
            suppress_begin: cfg.begin_suppress_tokens.clone(),
            repetition_guard: true,
        }
    }

    /// Transcribes one window of at most 30 s starting at `start_seconds`.
    pub fn transcribe_window(
        &self,
        window: &[f32],
        start_seconds: f64,
    ) -> Result<WindowTranscript> {
        now(self.transcribe_window_on(&CandleWhisper(&self.model), window, start_seconds))?
    }

    /// [`Self::transcribe_window`] on `engine`.
    pub async fn transcribe_window_on(
        &self,
        engine: &dyn WhisperEngine,
        window: &[f32],
        start_seconds: f64,
    ) -> Result<WindowTranscript> {
        let end_seconds = start_seconds + window.len() as f64 / SAMPLE_RATE as f64;
        let mut result = WindowTranscript {
            start_seconds,
            end_seconds,
            text: String::new(),
            tokens: Vec::new(),
            language: None,
            no_speech_prob: None,
            silent: true,
        };
        if loudest_frame_dbfs(window) < self.options.silence_dbfs {
            return Ok(result);
        }
        let features = self.features(window)?;
        let mut encoded = engine.window(&features).await?;
        let sot = self.special.start_of_transcript;
        let mut prompt = vec![sot];
        if self.special.is_multilingual() {
            let (code, id) = match &self.options.language {
                Some(code) => (code.clone(), self.language_token(code)?),
                None => self.detect_language(encoded.as_mut()).await?,
            };
            prompt.push(id);
            prompt.extend(self.special.transcribe);
            result.language = Some(code);
        }
        prompt.push(self.special.no_timestamps);
        // The prompt is fed in two steps so the position right after <|startoftranscript|> can
        // report its no-speech probability, as Whisper's silence test needs.
        let first = encoded.decode(&prompt[..prompt.len() - 1]).await?;
        let cfg = self.model.config();
        if let Some(no_speech) = self.special.no_speech {
            let row = &first[..cfg.vocab_size.min(first.len())];
            result.no_speech_prob = Some(log_softmax_at(row, no_speech as usize).exp());
        }
        let decoded = greedy_loop(
            cfg.vocab_size,
            cfg.max_target_positions,
            &prompt[prompt.len() - 1..],
            &self.greedy_options(),
            encoded.as_mut(),
        )
        .await?;
        let model_says_silence = result.no_speech_prob.unwrap_or(0.0)
            > self.options.no_speech_threshold
            && decoded.avg_logprob < self.options.logprob_threshold;
        if model_says_silence {
            return Ok(result);
        }
        let text_ids: Vec<u32> = decoded
            .tokens
            .iter()
            .copied()
            .filter(|&t| t < self.special.end_of_text)
            .collect();
        result.text = self.tokenizer.decode(&text_ids)?.trim().to_string();
        result.tokens = decoded.tokens;
        result.silent = false;
        Ok(result)
    }

    /// Transcribes 16 kHz mono audio held in memory.
    pub fn transcribe(
        &self,
        samples: &[f32],
        progress: impl FnMut(&WindowProgress) -> ControlFlow<()>,
    ) -> Result<Transcript> {
        let total = samples.len().div_ceil(self.window_samples());
        self.transcribe_chunks(std::iter::once(Ok(samples.to_vec())), Some(total), progress)
    }

    /// Transcribes a stream of 16 kHz mono chunks window by window (at most one window is held).
    pub fn transcribe_chunks(
        &self,
        chunks: impl Iterator<Item = Result<Vec<f32>>>,
        total_windows: Option<usize>,
        progress: impl FnMut(&WindowProgress) -> ControlFlow<()>,
    ) -> Result<Transcript> {
        let engine = CandleWhisper(&self.model);
        now(self.transcribe_chunks_on(&engine, chunks, total_windows, progress))?
    }

    /// [`Self::transcribe_chunks`] on `engine`.
    pub async fn transcribe_chunks_on(
        &self,
        engine: &dyn WhisperEngine,
        chunks: impl Iterator<Item = Result<Vec<f32>>>,
        total_windows: Option<usize>,
        mut progress: impl FnMut(&WindowProgress) -> ControlFlow<()>,
    ) -> Result<Transcript> {
        let size = self.window_samples();
        let mut buffer: Vec<f32> = Vec::with_capacity(size);
        let mut windows = Vec::new();
        let mut consumed = 0usize;
        let mut cancelled = false;
        let mut run = async |window: &[f32], start: usize, windows: &mut Vec<WindowTranscript>| {
            crate::audio::check_samples(window)?;
            let w = self
                .transcribe_window_on(engine, window, start as f64 / SAMPLE_RATE as f64)
                .await?;
            windows.push(w);
            let report = WindowProgress {
                index: windows.len() - 1,
                total: total_windows,
                window: windows.last().expect("just pushed"),
            };
            Ok::<_, Error>(progress(&report).is_break())
        };
        'outer: for chunk in chunks {
            let mut chunk = chunk?;
            while !chunk.is_empty() {
                let take = (size - buffer.len()).min(chunk.len());
                buffer.extend(chunk.drain(..take));
                if buffer.len() == size {
                    if run(&buffer, consumed, &mut windows).await? {
                        cancelled = true;
                        break 'outer;
                    }
                    consumed += size;
                    buffer.clear();
                }
            }
        }
        if !cancelled && !buffer.is_empty() {
            cancelled = run(&buffer, consumed, &mut windows).await?;
            consumed += buffer.len();
        }
        if consumed == 0 && !cancelled {
            return Err(Error::Input(
                "the recording is empty (0 seconds of audio)".into(),
            ));
        }
        let text = windows
            .iter()
            .map(|w| w.text.as_str())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            text,
            audio_seconds: consumed as f64 / SAMPLE_RATE as f64,
            windows,
            cancelled,
        })
    }
}

/// Whisper's configuration: from a CTranslate2 file's own shapes (with its `config.json`'s
/// `suppress_ids` / `suppress_ids_begin`), or from an HF `config.json`.
pub fn whisper_config(
    source: &dyn TensorSource,
    config: Option<&serde_json::Value>,
) -> Result<whisper::Config> {
    let ids = |key: &str| -> Option<Vec<u32>> {
        config?.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
    };
    match source.ct2() {
        Some(ct2) => {
            let mut cfg = ct2.whisper_config()?;
            cfg.suppress_tokens = ids("suppress_ids")
                .or_else(|| ids("suppress_tokens"))
                .unwrap_or_default();
            cfg.begin_suppress_tokens = ids("suppress_ids_begin")
                .or_else(|| ids("begin_suppress_tokens"))
                .unwrap_or_default();
            Ok(cfg)
        }
        None => whisper::Config::from_hf_value(
            "speech config.json",
            config.ok_or_else(|| {
                Error::file(source.file_name(), "Whisper weights need their config.json")
            })?,
        ),
    }
}

/// A transcriber from Whisper weights (HF safetensors, GGUF with HF names, or a CTranslate2
/// `model.bin`), its config and its `tokenizer.json`.
pub fn load(
    source: Arc<dyn TensorSource>,
    config: Option<&serde_json::Value>,
    tokenizer_json: &[u8],
    device: &Device,
    quantized_matmul: QuantizedMatmul,
) -> Result<Transcriber> {
    load_with(
        source,
        config,
        tokenizer_json,
        device,
        quantized_matmul,
        None,
    )
}

/// [`load`], or with `layers` [`Whisper::new_streaming`]: the layers go to it as they are read.
pub fn load_with(
    source: Arc<dyn TensorSource>,
    config: Option<&serde_json::Value>,
    tokenizer_json: &[u8],
    device: &Device,
    quantized_matmul: QuantizedMatmul,
    layers: Option<&mut TakeWhisperLayer<'_>>,
) -> Result<Transcriber> {
    let cfg = whisper_config(source.as_ref(), config)?;
    let vb = Weights::new(source, device).with_quantized_matmul(quantized_matmul);
    let model = match layers {
        None => Whisper::new(&cfg, &vb)?,
        Some(take) => Whisper::new_streaming(&cfg, &vb, take)?,
    };
    let tokenizer = Tokenizer::from_bytes("speech tokenizer.json", tokenizer_json)?;
    Transcriber::new(model, tokenizer)
}

/// A Whisper model folder (a converted one: `model.safetensors` or a `.gguf`, `config.json`,
/// `tokenizer.json`; or a CTranslate2 / faster-whisper one: `model.bin`, `config.json`,
/// `tokenizer.json`).
pub fn load_dir(dir: &std::path::Path, device: &Device) -> Result<Transcriber> {
    let name = |n: &str| dir.join(n);
    let weights = ["model.safetensors", "model.bin"]
        .into_iter()
        .map(name)
        .chain(
            std::fs::read_dir(dir)
                .map_err(|e| Error::file(dir.display().to_string(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "gguf")),
        )
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::file(
                dir.display().to_string(),
                "holds no Whisper weights (model.safetensors, model.bin or a .gguf)",
            )
        })?;
    let config = match std::fs::read_to_string(name("config.json")) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| Error::file(name("config.json").display().to_string(), e))?,
        ),
        Err(_) => None,
    };
    let tokenizer = std::fs::read(name("tokenizer.json"))
        .map_err(|e| Error::file(name("tokenizer.json").display().to_string(), e))?;
    let source = crate::conformance::open_path(&weights)?;
    load(
        source,
        config.as_ref(),
        &tokenizer,
        device,
        QuantizedMatmul::default(),
    )
}

/// Level of the loudest 25 ms frame, in dBFS (-inf for digital silence).
pub fn loudest_frame_dbfs(samples: &[f32]) -> f32 {
    let frame = (SAMPLE_RATE / 40) as usize;
    let loudest = samples
        .chunks(frame)
        .map(|f| (f.iter().map(|s| s * s).sum::<f32>() / f.len() as f32).sqrt())
        .fold(0f32, f32::max);
    20.0 * loudest.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_looping_tail_is_cut_to_one_copy() {
        let mut t: Vec<u32> = (0..10).collect();
        for _ in 0..4 {
            t.extend([7, 8, 9, 10, 11, 12, 13, 14]);
        }
        let keep = repeated_tail(&t).unwrap();
        assert_eq!(
            &t[..keep],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8, 9, 10, 11, 12, 13, 14]
        );
        // Ordinary repetition ("no, no, no") is left alone.
        assert_eq!(repeated_tail(&[1, 2, 3, 5, 5, 5, 9]), None);
        assert_eq!(repeated_tail(&[]), None);
    }

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(loudest_frame_dbfs(&[0.0; 1600]), f32::NEG_INFINITY);
        let tone: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.1).sin()).collect();
        assert!((loudest_frame_dbfs(&tone) + 3.0).abs() < 0.2);
    }
}
