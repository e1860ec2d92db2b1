//! The seed's pipeline: `{image?, transcript?, text?}` → input embeddings → Phi-2 → answer.
//!
//! # Turn format
//!
//! A turn is fed exactly as the seed builds its single prompt:
//!
//! ```text
//! [image rows][caption image:]   only when the turn brings a picture
//! [transcript]                   the spoken question, as Whisper heard it (or as edited)
//! [text]                         the typed question
//! [end of question:]             always
//! [answer tokens][<|endoftext|>] generated
//! ```
//!
//! Follow-ups continue the same KV cache: turn 2's prompt comes right after turn 1's
//! `<|endoftext|>` (an answer cut short by the token limit or Stop gets one appended). A picture
//! already in the conversation is not fed again; its CLIP features are computed once per
//! conversation. When a new turn would not fit in the context window (keeping room for
//! `max_new_tokens`), the oldest turns are dropped and the rest re-fed; if the dropped turns held
//! the conversation's picture, it is put back in front of the oldest kept turn. A single turn
//! longer than the window is refused with [`Error::ContextOverflow`].

use crate::audio::AudioStream;
use crate::engine::{self, CandleEngine, LanguageEngine};
use crate::error::{Error, Result};
use crate::generation::{CancelFlag, Fed, FinishReason, Generation, GenerationParams};
use crate::models::clip_vision::ClipVision;
use crate::models::phi2::Phi2;
use crate::models::projector::Projector;
use crate::preprocess::{self, PreprocessConfig};
use crate::speech::{CandleWhisper, Transcriber, Transcript, WhisperEngine, WindowProgress};
use crate::tokenizer::{TokenStream, Tokenizer};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// The seed's reply when a request has no image, audio or text.
pub const NO_INPUT_REPLY: &str =
    "Please give me an image, an audio question or some text, and I will answer.";

/// Markers and defaults of the seed's prompt format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptFormat {
    pub image_marker: String,
    pub question_marker: String,
    /// Which CLIP hidden state feeds the projector (-1 = last layer, the seed's choice).
    pub vision_feature_layer: i32,
}

impl Default for PromptFormat {
    fn default() -> Self {
        Self {
            image_marker: "caption image:".into(),
            question_marker: "end of question:".into(),
            vision_feature_layer: -1,
        }
    }
}

/// Recorded speech.
#[derive(Debug, Clone)]
pub enum AudioInput {
    /// An audio file's bytes (WAV, MP3, OGG/Vorbis, FLAC, M4A/AAC), decoded natively.
    Encoded(Vec<u8>),
    /// Decoded PCM, interleaved (what the browser's WebAudio hands over).
    Pcm {
        samples: Vec<f32>,
        sample_rate: u32,
        channels: usize,
    },
}

/// One user message. Any combination may be given; none at all gets [`NO_INPUT_REPLY`].
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// An encoded picture (PNG, JPEG, WebP, GIF, BMP).
    pub image: Option<Vec<u8>>,
    /// A spoken question, transcribed by Whisper unless `transcript` is given.
    pub audio: Option<AudioInput>,
    /// What the user said, as text: the transcript of `audio`, possibly edited (fed before the
    /// typed text, as the seed feeds it).
    pub transcript: Option<String>,
    pub text: Option<String>,
}

/// Part of a prompt, in the order fed.
#[derive(Debug, Clone)]
pub enum PromptPart {
    /// Projected image features, `[rows, hidden]` or `[1, rows, hidden]`.
    Image(Tensor),
    Tokens(Vec<u32>),
}

/// The vision side: CLIP → projector, with the preprocessing that feeds it.
#[derive(Debug, Clone)]
pub struct VisionStack {
    pub clip: ClipVision,
    pub projector: Projector,
    pub preprocess: PreprocessConfig,
}

impl VisionStack {
    /// `[1, 3, S, S]` pixel values → `[patches, text hidden]` projected features.
    pub fn encode_pixels(&self, pixel_values: &Tensor, feature_layer: i32) -> Result<Tensor> {
        let features = self.clip.image_features(pixel_values, feature_layer)?;
        let projected = self.projector.forward_trace(&features)?.2;
        Ok(projected.squeeze(0)?)
    }
}

/// All models of a bundle, loaded and ready. Shared by any number of conversations.
#[derive(Debug, Clone)]
pub struct Jnana {
    pub phi: Phi2,
    pub tokenizer: Tokenizer,
    pub vision: Option<VisionStack>,
    pub speech: Option<Transcriber>,
    pub format: PromptFormat,
    pub eos_token_id: Option<u32>,
    image_marker_ids: Vec<u32>,
    question_marker_ids: Vec<u32>,
}

impl Jnana {
    pub fn new(
        phi: Phi2,
        tokenizer: Tokenizer,
        vision: Option<VisionStack>,
        format: PromptFormat,
        eos_token_id: Option<u32>,
    ) -> Result<Self> {
        if let Some(v) = &vision {
            let width = phi.config().hidden_size;
            if v.projector.out_features() != width {
                return Err(Error::Manifest(format!(
                    "the projector outputs {} values per row but the language model is {width} wide",
                    v.projector.out_features()
                )));
            }
            if v.projector.in_features() != v.clip.config().hidden_size {
                return Err(Error::Manifest(format!(
                    "the projector takes {} values per row but CLIP produces {}",
                    v.projector.in_features(),
                    v.clip.config().hidden_size
                )));
            }
        }
        let image_marker_ids = tokenizer.encode(&format.image_marker)?;
        let question_marker_ids = tokenizer.encode(&format.question_marker)?;
        Ok(Self {
            phi,
            tokenizer,
            vision,
            speech: None,
            format,
            eos_token_id,
            image_marker_ids,
            question_marker_ids,
        })
    }

    /// Frees the layers of every model once another engine holds them (after a GPU upload the
    /// pipeline still needs the token embeddings, the tokenizers, the preprocessing and the
    /// configs, nothing else). Computing on the CPU models is refused after, with a message.
    pub fn release_layers(&mut self) {
        self.phi.release_layers();
        if let Some(v) = self.vision.as_mut() {
            v.clip.release_layers();
        }
        if let Some(s) = self.speech.as_mut() {
            s.model.release_layers();
        }
    }

    pub fn with_speech(mut self, speech: Option<Transcriber>) -> Self {
        self.speech = speech;
        self
    }

    pub fn device(&self) -> Device {
        self.phi.device()
    }

    /// Speech to text, window by window (`progress` may stop it); the UI shows the transcript
    /// for editing before the question is sent.
    pub fn transcribe(
        &self,
        audio: &AudioInput,
        progress: impl FnMut(&WindowProgress) -> ControlFlow<()>,
    ) -> Result<Transcript> {
        engine::now(self.transcribe_on(None, audio, progress))?
    }

    /// [`Self::transcribe`] on `engine` (the bundle's candle Whisper when `None`).
    pub async fn transcribe_on(
        &self,
        engine: Option<&dyn WhisperEngine>,
        audio: &AudioInput,
        progress: impl FnMut(&WindowProgress) -> ControlFlow<()>,
    ) -> Result<Transcript> {
        let speech = self.speech.as_ref().ok_or_else(|| {
            Error::Input("this model bundle has no speech model, so it cannot listen".into())
        })?;
        let candle = CandleWhisper(&speech.model);
        let engine = engine.unwrap_or(&candle);
        match audio {
            AudioInput::Encoded(bytes) => {
                let stream = AudioStream::from_bytes(bytes.clone())?;
                let windows = stream
                    .duration_seconds()
                    .map(|s| (s / 30.0).ceil().max(1.0) as usize);
                speech
                    .transcribe_chunks_on(engine, stream, windows, progress)
                    .await
            }
            AudioInput::Pcm {
                samples,
                sample_rate,
                channels,
            } => {
                let samples = crate::audio::pcm_to_16k_mono(samples, *channels, *sample_rate)?;
                let windows = samples.len().div_ceil(speech.window_samples());
                speech
                    .transcribe_chunks_on(
                        engine,
                        std::iter::once(Ok(samples)),
                        Some(windows),
                        progress,
                    )
                    .await
            }
        }
    }

    /// Sampling never leaves the tokenizer's vocabulary (the seed resized Phi-2's embeddings to
    /// it; the padded rows beyond are untrained).
    pub fn vocab_limit(&self) -> usize {
        self.tokenizer
            .vocab_size()
            .min(self.phi.config().vocab_size)
    }

    /// Decodes and encodes a picture: `[patches, hidden]` features in the language model's space.
    pub fn encode_image(&self, bytes: &[u8]) -> Result<Tensor> {
        self.encode_pixels(&self.pixel_values(bytes)?)
    }

    fn vision(&self) -> Result<&VisionStack> {
        self.vision.as_ref().ok_or_else(|| {
            Error::Input(
                "this model bundle has no vision model, so it cannot look at pictures".into(),
            )
        })
    }

    /// A picture's bytes decoded and preprocessed for CLIP: `[1, 3, S, S]`.
    pub fn pixel_values(&self, bytes: &[u8]) -> Result<Tensor> {
        preprocess::image_to_pixel_values(bytes, &self.vision()?.preprocess, &self.device())
    }

    /// `[1, 3, S, S]` pixel values → `[patches, hidden]` features, on the CPU models.
    pub fn encode_pixels(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision()?
            .encode_pixels(pixel_values, self.format.vision_feature_layer)
    }

    /// `[1, n, hidden]` input embeddings of a prompt.
    pub fn embed_prompt(&self, parts: &[PromptPart]) -> Result<Tensor> {
        let rows = parts
            .iter()
            .filter(|p| !matches!(p, PromptPart::Tokens(ids) if ids.is_empty()))
            .map(|p| match p {
                PromptPart::Image(t) => Ok(match t.rank() {
                    3 => t.squeeze(0)?,
                    _ => t.clone(),
                }),
                PromptPart::Tokens(ids) => self.phi.embed(ids),
            })
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Err(Error::Input("the prompt is empty".into()));
        }
        Ok(Tensor::cat(&rows, 0)?.unsqueeze(0)?)
    }

    pub fn new_conversation(&self) -> Conversation {
        Conversation::new(self)
    }
}

/// One streamed piece of an answer.
#[derive(Debug, Clone)]
pub struct TokenEvent {
    /// The token; `None` for the last event when it only flushes text held back.
    pub id: Option<u32>,
    /// Text completed by this token (never half a UTF-8 character).
    pub text: Option<String>,
    /// 0-based index of the token in the answer.
    pub index: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub tokens: Vec<u32>,
    /// `None` for the fixed reply to an empty request.
    pub finish: Option<FinishReason>,
    /// Positions fed before the first answer token.
    pub prompt_positions: usize,
    /// Turns dropped from the front to make room.
    pub dropped_turns: usize,
    /// What was heard, when the request brought audio (empty when it was silence).
    pub transcript: Option<String>,
}

type ImageKey = [u8; 32];

#[derive(Debug, Clone)]
enum Segment {
    Image(ImageKey),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone)]
struct Turn {
    prompt: Vec<Segment>,
    /// Answer tokens followed by `<|endoftext|>`, once the turn is closed.
    answer: Vec<u32>,
}

/// A multi-turn chat: the engine holding its KV cache, its turns and its pictures' features.
pub struct Conversation {
    engine: Box<dyn LanguageEngine>,
    turns: Vec<Turn>,
    images: HashMap<ImageKey, Tensor>,
    /// Whether the last turn's answer still needs closing with `<|endoftext|>`.
    open_turn: bool,
    image_rows: usize,
    cancel: CancelFlag,
}

impl Conversation {
    /// A conversation on the bundle's own (candle) language model.
    pub fn new(model: &Jnana) -> Self {
        Self::with_engine(model, Box::new(CandleEngine::new(model.phi.clone())))
    }

    /// A conversation whose forward passes run on `engine` (the GPU one); embeddings, sampling
    /// and the turn logic stay here.
    pub fn with_engine(model: &Jnana, engine: Box<dyn LanguageEngine>) -> Self {
        Self {
            engine,
            turns: Vec::new(),
            images: HashMap::new(),
            open_turn: false,
            image_rows: model
                .vision
                .as_ref()
                .map_or(0, |v| v.clip.config().num_patches()),
            cancel: CancelFlag::new(),
        }
    }

    /// A flag that stops the current answer when raised (from another thread or between
    /// tokens).
    pub fn cancel_flag(&self) -> CancelFlag {
        self.cancel.clone()
    }

    /// Positions the conversation occupies in the context window.
    pub fn positions(&self) -> usize {
        self.engine.positions()
    }

    /// Where the language model computes ("CPU", or the GPU adapter).
    pub fn engine_name(&self) -> String {
        self.engine.name()
    }

    /// The engine's Whisper, when it runs one (else the bundle's candle Whisper listens).
    pub fn speech_engine(&self) -> Option<&dyn WhisperEngine> {
        self.engine.speech()
    }

    pub fn turns(&self) -> usize {
        self.turns.len()
    }

    /// Pictures whose features this conversation has computed.
    pub fn encoded_images(&self) -> usize {
        self.images.len()
    }

    /// Forgets everything (the UI's "new conversation").
    pub fn reset(&mut self) {
        self.engine.clear();
        self.turns.clear();
        self.images.clear();
        self.open_turn = false;
    }

    /// Answers `request`, streaming tokens to `on_token`; return `ControlFlow::Break` from it to
    /// stop early.
    pub fn ask(
        &mut self,
        model: &Jnana,
        request: &Request,
        params: &GenerationParams,
        mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Answer> {
        let mut answering = self.begin(model, request, params)?;
        while let Some(event) = answering.next(model, self)? {
            if on_token(&event).is_break() {
                answering.cancel();
            }
        }
        Ok(answering.finish(self))
    }

    /// Starts answering `request`: transcribes its audio, feeds the prompt, and returns a handle
    /// that yields the answer one token at a time ([`Answering::next`]) — for callers that must
    /// return to an event loop between tokens, as a browser worker does to hear Stop.
    pub fn begin(
        &mut self,
        model: &Jnana,
        request: &Request,
        params: &GenerationParams,
    ) -> Result<Answering> {
        engine::now(self.begin_async(model, request, params))?
    }

    /// [`Self::begin`] for engines that answer asynchronously (the GPU engine in a browser).
    pub async fn begin_async(
        &mut self,
        model: &Jnana,
        request: &Request,
        params: &GenerationParams,
    ) -> Result<Answering> {
        // Speech becomes text first; silence counts as no audio at all.
        let heard = match (&request.audio, &request.transcript) {
            (Some(audio), None) => Some(
                model
                    .transcribe_on(self.engine.speech(), audio, |_| ControlFlow::Continue(()))
                    .await?
                    .text,
            ),
            _ => None,
        };
        let request = Request {
            transcript: request.transcript.clone().or_else(|| heard.clone()),
            ..request.clone()
        };
        let prompt = self.build_prompt(model, &request).await?;
        if prompt.is_empty() {
            return Ok(Answering {
                generation: None,
                stream: TokenStream::new(),
                text: NO_INPUT_REPLY.to_string(),
                index: 0,
                prompt_positions: 0,
                dropped_turns: 0,
                transcript: heard,
            });
        }
        self.close_open_turn(model);
        let dropped_turns = self.make_room(model, &prompt, params.max_new_tokens)?;
        self.turns.push(Turn {
            prompt,
            answer: Vec::new(),
        });
        let started = async {
            let all = self.embed_history(model)?;
            let fed = self.engine.positions();
            let total = all.dim(1)?;
            let fresh = all.narrow(1, fed, total - fed)?;
            self.cancel.reset();
            let logits = self.engine.forward(&fresh).await?;
            let generation = Generation::from_prompt_logits(
                logits,
                params,
                model.eos_token_id,
                model.vocab_limit(),
            )
            .with_cancel(self.cancel.clone());
            Ok::<_, Error>((generation, total))
        }
        .await;
        let (generation, prompt_positions) = match started {
            Ok(started) => started,
            Err(e) => {
                self.forget_failed_turn();
                return Err(e);
            }
        };
        Ok(Answering {
            generation: Some(generation),
            stream: TokenStream::new(),
            text: String::new(),
            index: 0,
            prompt_positions,
            dropped_turns,
            transcript: heard,
        })
    }

    /// Whatever was fed of a turn that failed is unknown: forget it, re-feed the history next
    /// time.
    fn forget_failed_turn(&mut self) {
        self.turns.pop();
        self.engine.clear();
    }

    /// Completes the previous answer with `<|endoftext|>` in the turn record; the cache catches
    /// up when the next prompt is fed.
    fn close_open_turn(&mut self, model: &Jnana) {
        if std::mem::take(&mut self.open_turn) {
            if let (Some(turn), Some(eos)) = (self.turns.last_mut(), model.eos_token_id) {
                turn.answer.push(eos);
            }
        }
    }

    async fn build_prompt(&mut self, model: &Jnana, request: &Request) -> Result<Vec<Segment>> {
        let transcript = non_empty(request.transcript.as_deref());
        let text = non_empty(request.text.as_deref());
        let mut prompt = Vec::new();
        if let Some(bytes) = &request.image {
            let key: ImageKey = Sha256::digest(bytes).into();
            if !self.images.contains_key(&key) {
                let pixels = model.pixel_values(bytes)?;
                let features = match self.engine.encode_pixels(&pixels) {
                    Some(on_engine) => on_engine.await?,
                    None => model.encode_pixels(&pixels)?,
                };
                self.images.insert(key, features);
            }
            let already_in_context = self.latest_image() == Some(key);
            if !already_in_context || (transcript.is_none() && text.is_none()) {
                prompt.push(Segment::Image(key));
                prompt.push(Segment::Tokens(model.image_marker_ids.clone()));
            }
        }
        for part in [transcript, text].into_iter().flatten() {
            prompt.push(Segment::Tokens(model.tokenizer.encode(part)?));
        }
        if prompt.is_empty() {
            return Ok(prompt);
        }
        prompt.push(Segment::Tokens(model.question_marker_ids.clone()));
        Ok(prompt)
    }

    fn latest_image(&self) -> Option<ImageKey> {
        self.turns.iter().rev().find_map(|t| {
            t.prompt.iter().rev().find_map(|s| match s {
                Segment::Image(k) => Some(*k),
                Segment::Tokens(_) => None,
            })
        })
    }

    fn segment_len(&self, s: &Segment) -> usize {
        match s {
            Segment::Image(_) => self.image_rows,
            Segment::Tokens(ids) => ids.len(),
        }
    }

    fn turn_len(&self, t: &Turn) -> usize {
        t.prompt.iter().map(|s| self.segment_len(s)).sum::<usize>() + t.answer.len()
    }

    /// Drops the oldest turns until the history, the new prompt and room for the answer fit.
    fn make_room(
        &mut self,
        model: &Jnana,
        prompt: &[Segment],
        max_new_tokens: usize,
    ) -> Result<usize> {
        let limit = model.phi.config().max_position_embeddings;
        let prompt_len: usize = prompt.iter().map(|s| self.segment_len(s)).sum();
        if prompt_len >= limit {
            return Err(Error::ContextOverflow {
                needed: prompt_len,
                limit,
            });
        }
        // Keep at least one position for the answer even when max_new_tokens asks for more.
        let reserve = max_new_tokens.clamp(1, limit - prompt_len);
        let history: usize = self.turns.iter().map(|t| self.turn_len(t)).sum();
        if history + prompt_len + reserve <= limit {
            return Ok(0);
        }
        let picture = self.latest_image();
        let mut dropped = 0;
        let mut kept: usize = history;
        while !self.turns.is_empty() && kept + prompt_len + reserve > limit {
            let first = self.turns.remove(0);
            kept -= self.turn_len(&first);
            dropped += 1;
        }
        // Keep the conversation's picture in view if its turn went and the new prompt has none.
        let has_image =
            |segments: &[Segment]| segments.iter().any(|s| matches!(s, Segment::Image(_)));
        let still_seen = self.turns.iter().any(|t| has_image(&t.prompt)) || has_image(prompt);
        if let (Some(key), false) = (picture, still_seen) {
            let extra = self.image_rows + model.image_marker_ids.len();
            while !self.turns.is_empty() && kept + extra + prompt_len + reserve > limit {
                let first = self.turns.remove(0);
                kept -= self.turn_len(&first);
                dropped += 1;
            }
            if kept + extra + prompt_len < limit {
                let restored = [
                    Segment::Image(key),
                    Segment::Tokens(model.image_marker_ids.clone()),
                ];
                match self.turns.first_mut() {
                    Some(t) => {
                        t.prompt.splice(0..0, restored);
                    }
                    None => self.turns.push(Turn {
                        prompt: restored.to_vec(),
                        answer: Vec::new(),
                    }),
                }
            }
        }
        self.engine.clear();
        Ok(dropped)
    }

    fn embed_history(&self, model: &Jnana) -> Result<Tensor> {
        let mut parts = Vec::new();
        for turn in &self.turns {
            for s in &turn.prompt {
                parts.push(match s {
                    Segment::Image(k) => PromptPart::Image(self.images[k].clone()),
                    Segment::Tokens(ids) => PromptPart::Tokens(ids.clone()),
                });
            }
            parts.push(PromptPart::Tokens(turn.answer.clone()));
        }
        model.embed_prompt(&parts)
    }
}

/// An answer being generated; see [`Conversation::begin`].
pub struct Answering {
    /// `None` for the fixed reply to an empty request.
    generation: Option<Generation>,
    stream: TokenStream,
    text: String,
    index: usize,
    prompt_positions: usize,
    dropped_turns: usize,
    transcript: Option<String>,
}

impl Answering {
    /// The next piece of the answer, or `None` when it is complete. `conversation` must be the
    /// one that began it.
    pub fn next(
        &mut self,
        model: &Jnana,
        conversation: &mut Conversation,
    ) -> Result<Option<TokenEvent>> {
        engine::now(self.next_async(model, conversation))?
    }

    /// [`Self::next`] for engines that answer asynchronously.
    pub async fn next_async(
        &mut self,
        model: &Jnana,
        conversation: &mut Conversation,
    ) -> Result<Option<TokenEvent>> {
        let Some(generation) = self.generation.as_mut() else {
            return Ok(None);
        };
        if generation.finish().is_some() {
            return Ok(None);
        }
        let engine = &mut conversation.engine;
        let positions = engine.positions();
        let step = generation
            .next_token_with(
                positions,
                model.phi.config().max_position_embeddings,
                |prev, choice| async move {
                    let embeds = model.phi.embed(&[prev])?.unsqueeze(0)?;
                    // An engine that can choose the token itself sends one number back instead
                    // of the logits.
                    if let Some(id) = engine.forward_choose(&embeds, &choice) {
                        return Ok(Fed::Token(id.await?));
                    }
                    Ok(Fed::Logits(engine.forward(&embeds).await?))
                },
            )
            .await
            .and_then(|id| match id {
                Some(id) => Ok(Some((id, self.stream.push(&model.tokenizer, id)?))),
                None => Ok(None),
            });
        match step {
            Ok(Some((id, piece))) => {
                if let Some(p) = &piece {
                    self.text.push_str(p);
                }
                let event = TokenEvent {
                    id: Some(id),
                    text: piece,
                    index: self.index,
                };
                self.index += 1;
                Ok(Some(event))
            }
            Ok(None) => {
                // Only an answer that stops mid-character leaves text behind.
                let rest = self.stream.finish(&model.tokenizer)?;
                Ok(rest.map(|rest| {
                    self.text.push_str(&rest);
                    TokenEvent {
                        id: None,
                        text: Some(rest),
                        index: self.index,
                    }
                }))
            }
            Err(e) => {
                generation.cancel();
                conversation.forget_failed_turn();
                self.generation = None;
                Err(e)
            }
        }
    }

    /// Stops at the next step, as the Stop button does.
    pub fn cancel(&mut self) {
        if let Some(g) = self.generation.as_mut() {
            g.cancel();
        }
    }

    /// Records the turn in `conversation` and returns the answer.
    pub fn finish(self, conversation: &mut Conversation) -> Answer {
        let Some(generation) = self.generation else {
            let is_reply = self.prompt_positions == 0;
            return Answer {
                text: self.text,
                tokens: Vec::new(),
                finish: (!is_reply).then_some(FinishReason::Cancelled),
                prompt_positions: self.prompt_positions,
                dropped_turns: self.dropped_turns,
                transcript: self.transcript,
            };
        };
        let tokens = generation.tokens().to_vec();
        // The cache now holds the prompt and the answer up to its last sampled token; the turn
        // record lists the whole answer, and closing it adds `<|endoftext|>`. The next prompt
        // feeds whatever of that the cache lacks.
        if let Some(turn) = conversation.turns.last_mut() {
            turn.answer = tokens.clone();
        }
        conversation.open_turn = true;
        Answer {
            text: self.text,
            tokens,
            finish: Some(generation.finish().unwrap_or(FinishReason::Cancelled)),
            prompt_positions: self.prompt_positions,
            dropped_turns: self.dropped_turns,
            transcript: self.transcript,
        }
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}
