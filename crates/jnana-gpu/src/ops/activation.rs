use super::grid;
use crate::{Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("activation.wgsl");

/// The activations of the four models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new` (tanh approximation): Phi-2.
    GeluTanh,
    /// Exact `gelu` (erf): Whisper and the projector.
    GeluErf,
    /// `quick_gelu`: CLIP ViT-B/32.
    QuickGelu,
}

impl Activation {
    fn entry(self) -> (&'static str, &'static str) {
        match self {
            Self::GeluTanh => ("activation/gelu_tanh", "gelu_tanh"),
            Self::GeluErf => ("activation/gelu_erf", "gelu_erf"),
            Self::QuickGelu => ("activation/quick_gelu", "quick_gelu"),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

pub fn activation(gpu: &Gpu, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
    let n = x.elem_count();
    let y = gpu.output(x.shape())?;
    let params = gpu.uniform(&Params { n: n as u32 });
    let (key, entry) = act.entry();
    let pipeline = gpu.pipeline(key, SHADER, entry);
    gpu.dispatch(&pipeline, &[&x.buffer, &y.buffer, &params], grid(n, 256));
    Ok(y)
}
