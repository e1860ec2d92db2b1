//! Jñāna's GPU engine: a compact tensor runtime on `wgpu` (WebGPU in the browser; Vulkan, Metal
//! or DX12 natively) with one WGSL kernel per op, each next to the Rust that dispatches it
//! (`ops/<op>.rs` + `ops/<op>.wgsl`). The candle CPU path of `jnana` is its reference.
//!
//! Work is recorded into one command encoder and submitted when a result is read back, so a
//! forward step is one submission.

#[cfg(not(target_arch = "wasm32"))]
pub mod conformance;
mod device;
pub mod engine;
mod error;
pub mod models;
pub mod ops;
mod pool;
mod tensor;

pub use device::{AdapterSummary, Gpu, Timing, Tuning};
pub use error::{Error, Result};
pub use pool::PoolStats;
pub use tensor::{host_values, GpuTensor};
