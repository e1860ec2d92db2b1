//! Where a conversation's language model (and, optionally, its vision stack) computes: the
//! candle CPU model of the bundle, or another engine — the GPU one — that keeps its own KV cache
//! and answers asynchronously (in a browser a GPU result arrives through the event loop).
//!
//! The conversation logic (turns, context window, sampling) is the same for every engine; only
//! the forward passes go through [`LanguageEngine`].

use crate::error::{Error, Result};
use crate::models::phi2::{Cache, Phi2};
use crate::sampling::Choice;
use candle_core::Tensor;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A boxed future that need not be `Send` (browser objects are not).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

pub trait LanguageEngine {
    /// What the UI shows: "CPU", or the GPU adapter's name.
    fn name(&self) -> String;
    /// Positions the engine's cache holds.
    fn positions(&self) -> usize;
    /// Forgets the cache.
    fn clear(&mut self);
    /// Feeds `embeds` (`[1, n, hidden]`) after what the cache holds; the logits of the last
    /// position, `[vocab]`, on the CPU.
    fn forward<'a>(&'a mut self, embeds: &'a Tensor) -> LocalFuture<'a, Result<Tensor>>;
    /// Projected picture features (`[patches, hidden]`) of `[1, 3, S, S]` pixel values when this
    /// engine runs the vision stack; `None` leaves them to the CPU models.
    fn encode_pixels<'a>(
        &'a self,
        _pixel_values: &'a Tensor,
    ) -> Option<LocalFuture<'a, Result<Tensor>>> {
        None
    }
    /// The next token chosen as `choice` says after feeding `embeds`, when the engine can choose
    /// it itself (the GPU reads back one id instead of the logits); `None` means: use
    /// [`Self::forward`] and let the CPU choose.
    fn forward_choose<'a>(
        &'a mut self,
        _embeds: &'a Tensor,
        _choice: &'a Choice,
    ) -> Option<LocalFuture<'a, Result<u32>>> {
        None
    }
    /// This engine's Whisper, when it runs one; `None` leaves speech to the CPU models.
    fn speech(&self) -> Option<&dyn crate::speech::WhisperEngine> {
        None
    }
}

/// Phi-2 on candle (CPU, or CUDA when built so).
pub struct CandleEngine {
    phi: Phi2,
    cache: Cache,
}

impl CandleEngine {
    pub fn new(mut phi: Phi2) -> Self {
        phi.prepare_cpu_kernels();
        Self {
            cache: phi.new_cache(),
            phi,
        }
    }
}

impl LanguageEngine for CandleEngine {
    fn name(&self) -> String {
        match self.phi.device() {
            candle_core::Device::Cpu => "CPU".into(),
            other => format!("{other:?}"),
        }
    }

    fn positions(&self) -> usize {
        self.cache.len()
    }

    fn clear(&mut self) {
        self.cache.clear();
    }

    fn forward<'a>(&'a mut self, embeds: &'a Tensor) -> LocalFuture<'a, Result<Tensor>> {
        Box::pin(std::future::ready(
            self.phi.forward(embeds, &mut self.cache),
        ))
    }
}

/// The value of a future that is ready at once — every engine when it runs natively (the GPU
/// engine waits for the device inside its first poll). A future that would have to wait for an
/// event loop is refused with a clear error instead of blocking.
pub fn now<T>(fut: impl Future<Output = T>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(Error::Engine(
            "this engine answers asynchronously: use the async methods (begin_async / next_async)"
                .into(),
        )),
    }
}
