//! The activation functions the checkpoints name in their configs.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation (Phi-2).
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `gelu`: the exact erf form (the projector, Whisper).
    #[serde(alias = "gelu")]
    GeluErf,
    /// `quick_gelu`: x * sigmoid(1.702 x) (CLIP).
    QuickGelu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    pub fn hf_name(self) -> &'static str {
        match self {
            Self::GeluTanh => "gelu_new",
            Self::GeluErf => "gelu",
            Self::QuickGelu => "quick_gelu",
        }
    }
}

impl candle_core::Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluTanh => match gelu_tanh_cpu(xs)? {
                Some(ys) => Ok(ys),
                None => xs.gelu(),
            },
            Self::GeluErf => xs.gelu_erf(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
        }
    }
}

/// `gelu_new` on the CPU as `x · sigmoid(2u)`, which equals `x · (1 + tanh u) / 2`, with one
/// `exp` per value on every thread of the pool. candle's takes libm's `tanh` one thread at a time;
/// over a prompt's MLP activations (10240 per token per layer in Phi-2) that was a sixth of
/// the prefill.
fn gelu_tanh_cpu(xs: &Tensor) -> Result<Option<Tensor>> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let ys = crate::cpu_tensor::with_values(xs, |x: &[f32]| {
        let mut y = vec![0f32; x.len()];
        crate::parallel::fill_parts(&mut y, |range, y| {
            for (y, &x) in y.iter_mut().zip(&x[range]) {
                let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                *y = x / (1.0 + (-2.0 * u).exp());
            }
        });
        y
    })?;
    ys.map(|y| Tensor::from_vec(y, xs.shape(), xs.device()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    /// The sigmoid form against candle's tanh form, over the range activations take and
    /// beyond it, where `exp` overflows to infinity and underflows to zero.
    #[test]
    fn gelu_tanh_matches_candles() {
        let x: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 100.0).collect();
        let xs = Tensor::from_vec(x, (3, 2667), &Device::Cpu).unwrap();
        let ours = Activation::GeluTanh.forward(&xs).unwrap();
        let candles = xs.gelu().unwrap();
        let diff = (ours - candles)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "differs by {diff}");
    }
}
