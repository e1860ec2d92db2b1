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
            Self::GeluTanh => xs.gelu(),
            Self::GeluErf => xs.gelu_erf(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
        }
    }
}
