//! The models on the GPU engine, built from the CPU models of `jnana` (same bundle, same
//! loaders): quantized matrices are uploaded as they are, the rest as f32.

pub(crate) mod blocks;
pub mod clip_vision;
mod linear;
pub mod phi2;
pub mod projector;
pub mod whisper;

pub use linear::GpuLinear;

use crate::ops::{self, Activation};
use crate::{Gpu, GpuTensor, Result};

/// The GPU kernel of a `jnana` activation.
fn activation(a: jnana::models::activation::Activation) -> Activation {
    use jnana::models::activation::Activation as Cpu;
    match a {
        Cpu::GeluTanh => Activation::GeluTanh,
        Cpu::GeluErf => Activation::GeluErf,
        Cpu::QuickGelu => Activation::QuickGelu,
    }
}

pub(crate) struct Norm {
    weight: GpuTensor,
    bias: Option<GpuTensor>,
    eps: f32,
}

impl Norm {
    fn upload(gpu: &Gpu, ln: &candle_nn::LayerNorm) -> Result<Self> {
        let weight = ln.weight().to_vec1::<f32>()?;
        let bias = match ln.bias() {
            Some(b) => Some(gpu.upload(&b.to_vec1::<f32>()?, &[weight.len()])?),
            None => None,
        };
        Ok(Self {
            weight: gpu.upload(&weight, &[weight.len()])?,
            bias,
            eps: ln.eps() as f32,
        })
    }

    fn forward(&self, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
        ops::layer_norm(gpu, x, &self.weight, self.bias.as_ref(), self.eps)
    }
}
