//! Token-by-token generation on Phi-2: sampling settings, a step-wise generator that a browser
//! worker can drive one token at a time, and the reasons a generation ends.

use crate::error::Result;
use crate::models::phi2::{Cache, Phi2};
use crate::sampling::{self, Choice, Draws, Pick};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    /// 0 picks the most likely token every time (the seed's greedy decoding).
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// 1.0 disables it.
    pub repeat_penalty: f32,
    /// How many of the latest answer tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 200,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299_792_458,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced `<|endoftext|>`.
    EndOfText,
    /// `max_new_tokens` were produced.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The caller stopped it.
    Cancelled,
}

/// A flag another thread (or the UI's Stop button, through a worker) can raise.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed)
    }
}

/// What an engine gives back after being fed the previous token.
pub enum Fed {
    /// The logits of the fed position, `[vocab]`: sampled here.
    Logits(Tensor),
    /// The token it chose itself, following the [`Choice`] it was given.
    Token(u32),
}

/// A generation in progress. The prompt is fed by [`Generation::start`]; each
/// [`Generation::next_token`] feeds the previous token and samples the next one. It holds no
/// borrows, so a caller can keep it across awaits (a browser worker yields between tokens).
pub struct Generation {
    draws: Draws,
    params: GenerationParams,
    eos: Option<u32>,
    vocab_limit: usize,
    logits: Option<Tensor>,
    produced: Vec<u32>,
    /// Sampled but not yet fed to the model.
    pending: Option<u32>,
    finish: Option<FinishReason>,
    cancel: CancelFlag,
}

impl Generation {
    /// Feeds `prompt` (`[1, n, hidden]` embeddings) after what `cache` holds.
    /// `vocab_limit` keeps sampling inside the tokenizer's vocabulary when the embedding matrix
    /// is padded beyond it (Phi-2: 51 200 rows, 50 295 tokens).
    pub fn start(
        model: &Phi2,
        cache: &mut Cache,
        prompt: &Tensor,
        params: &GenerationParams,
        eos: Option<u32>,
        vocab_limit: usize,
    ) -> Result<Self> {
        let logits = model.forward(prompt, cache)?;
        Ok(Self::from_prompt_logits(
            logits,
            params,
            eos,
            vocab_limit.min(model.config().vocab_size),
        ))
    }

    /// A generation whose prompt another engine has fed: `logits` are its last position's.
    pub fn from_prompt_logits(
        logits: Tensor,
        params: &GenerationParams,
        eos: Option<u32>,
        vocab_limit: usize,
    ) -> Self {
        let finish = (params.max_new_tokens == 0).then_some(FinishReason::MaxTokens);
        Self {
            draws: Draws::new(params.seed),
            params: params.clone(),
            eos,
            vocab_limit,
            logits: Some(logits),
            produced: Vec::new(),
            pending: None,
            finish,
            cancel: CancelFlag::new(),
        }
    }

    pub fn with_cancel(mut self, cancel: CancelFlag) -> Self {
        self.cancel = cancel;
        self
    }

    /// The next answer token, or `None` once the generation has finished (see [`Self::finish`]).
    pub fn next_token(&mut self, model: &Phi2, cache: &mut Cache) -> Result<Option<u32>> {
        let positions = cache.len();
        crate::engine::now(self.next_token_with(
            positions,
            model.config().max_position_embeddings,
            |prev, _| {
                let logits = model
                    .embed(&[prev])
                    .and_then(|e| model.forward(&e.unsqueeze(0)?, cache));
                std::future::ready(logits.map(Fed::Logits))
            },
        ))?
    }

    /// Ids sampling may choose from.
    pub fn vocab_limit(&self) -> usize {
        self.vocab_limit
    }

    /// How the next token is to be chosen, its random number drawn now (one per token whichever
    /// engine chooses, so a seed answers the same everywhere).
    fn next_choice(&mut self) -> Choice {
        let p = &self.params;
        let pick = if p.temperature <= 0.0 {
            Pick::Greedy
        } else {
            Pick::Draw {
                temperature: p.temperature as f32,
                top_k: p.top_k,
                top_p: p.top_p.map_or(1.0, |v| v as f32),
                u: self.draws.uniform(),
            }
        };
        let mut penalized = Vec::new();
        if p.repeat_penalty != 1.0 {
            let start = self.produced.len().saturating_sub(p.repeat_last_n);
            for &id in &self.produced[start..] {
                if !penalized.contains(&id) {
                    penalized.push(id);
                }
            }
        }
        Choice {
            pick,
            within: self.vocab_limit,
            penalty: p.repeat_penalty,
            penalized,
        }
    }

    /// The next answer token from any engine: `feed` gives the model the previous token and
    /// returns the logits after it, or the token it chose itself following the [`Choice`];
    /// `positions` is what the model's cache holds now and `max_positions` its window.
    pub async fn next_token_with<F, Fut>(
        &mut self,
        positions: usize,
        max_positions: usize,
        feed: F,
    ) -> Result<Option<u32>>
    where
        F: FnOnce(u32, Choice) -> Fut,
        Fut: std::future::Future<Output = Result<Fed>>,
    {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.cancel.is_cancelled() {
            self.finish = Some(FinishReason::Cancelled);
            return Ok(None);
        }
        let (fed, choice) = match (self.logits.take(), self.pending) {
            (Some(logits), _) => (Fed::Logits(logits), self.next_choice()),
            (None, Some(_)) if positions >= max_positions => {
                self.finish = Some(FinishReason::ContextFull);
                return Ok(None);
            }
            (None, Some(prev)) => {
                let choice = self.next_choice();
                (feed(prev, choice.clone()).await?, choice)
            }
            (None, None) => unreachable!("a generation always has logits or a pending token"),
        };
        let token = match fed {
            Fed::Logits(logits) => {
                sampling::choose(&logits.flatten_all()?.to_vec1::<f32>()?, &choice)
            }
            Fed::Token(token) => token,
        };
        self.pending = Some(token);
        if Some(token) == self.eos {
            self.finish = Some(FinishReason::EndOfText);
            return Ok(None);
        }
        self.produced.push(token);
        if self.produced.len() >= self.params.max_new_tokens {
            self.finish = Some(FinishReason::MaxTokens);
        }
        Ok(Some(token))
    }

    /// Stops the generation as if the caller had pressed Stop.
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    pub fn finish(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Answer tokens so far (without the end-of-text token).
    pub fn tokens(&self) -> &[u32] {
        &self.produced
    }

    /// The last sampled token, not yet fed to the model (the end-of-text token when the answer
    /// ended on its own).
    pub fn pending(&self) -> Option<u32> {
        self.pending
    }

    /// Runs to the end; returns the answer tokens.
    pub fn run_to_end(
        mut self,
        model: &Phi2,
        cache: &mut Cache,
    ) -> Result<(Vec<u32>, FinishReason)> {
        while self.next_token(model, cache)?.is_some() {}
        let finish = self.finish.expect("finished after the loop");
        Ok((self.produced, finish))
    }
}
