//! The models on the GPU engine, built from the CPU models of `jnana` (same bundle, same
//! loaders): quantized matrices are uploaded as they are, the rest as f32.

mod linear;
pub mod phi2;

pub use linear::GpuLinear;
