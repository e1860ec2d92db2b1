//! Jñāna's model crate: the seed's multimodal assistant (CLIP ViT-B/32 → LLaVA-1.5 projector →
//! Phi-2) on candle, loadable from bytes or readers so the same code runs natively and in the
//! browser (wasm32).
//!
//! Start at [`bundle::load`] (a manifest and its files → [`Jnana`]) and
//! [`Conversation::ask`](pipeline::Conversation::ask).

pub mod audio;
pub mod bundle;
pub mod conformance;
pub mod convert;
mod cpu_tensor;
pub mod engine;
pub mod error;
pub mod generation;
pub mod lora;
mod matmul;
pub mod models;
mod parallel;
pub mod pipeline;
pub mod preprocess;
pub mod sampling;
pub mod speech;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use generation::{CancelFlag, FinishReason, Generation, GenerationParams};
pub use pipeline::{Answer, Conversation, Jnana, PromptPart, Request, TokenEvent};
