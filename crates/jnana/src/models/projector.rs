//! The seed's image projector: `Linear(vision → text width)` then LLaVA-1.5's residual block
//! (`pre_norm = LayerNorm`, `x + proj(x)` on the *normalised* x, `proj = Linear, GELU(erf),
//! Linear`). Names follow the bundle layout: `linear.*`, `res.pre_norm.*`, `res.proj.{0,2}.*`.

use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::weights::{Linear, Weights};
use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;

#[derive(Debug, Clone)]
pub struct Projector {
    linear: Linear,
    pre_norm: LayerNorm,
    proj_0: Linear,
    proj_2: Linear,
}

impl Projector {
    /// Dimensions come from the weights themselves: `linear.weight` is `[out, in]`.
    pub fn new(vb: &Weights, layer_norm_eps: f64) -> Result<Self> {
        let shape = vb.shape("linear.weight").ok_or_else(|| {
            Error::tensor(
                vb.file_name(),
                vb.path("linear.weight"),
                "missing from the file",
            )
        })?;
        let [out, inp] = shape[..] else {
            return Err(Error::tensor(
                vb.file_name(),
                vb.path("linear.weight"),
                format!("has shape {shape:?}, expected [out, in]"),
            ));
        };
        let res = vb.pp("res");
        Ok(Self {
            linear: vb.linear(inp, out, "linear")?,
            pre_norm: res.layer_norm(out, layer_norm_eps, "pre_norm")?,
            proj_0: res.linear(out, out, "proj.0")?,
            proj_2: res.linear(out, out, "proj.2")?,
        })
    }

    pub fn in_features(&self) -> usize {
        self.linear.in_features()
    }

    pub fn out_features(&self) -> usize {
        self.linear.out_features()
    }

    /// `linear`, `res.pre_norm`, `res.proj.0`, `res.proj.2`, for another engine to upload.
    pub fn params(&self) -> (&Linear, &LayerNorm, &Linear, &Linear) {
        (&self.linear, &self.pre_norm, &self.proj_0, &self.proj_2)
    }

    /// Every intermediate, for reference checks: (after_linear, after_pre_norm, projected).
    pub fn forward_trace(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let y = self.linear.forward(xs)?;
        let normed = self.pre_norm.forward(&y)?;
        let inner = Activation::GeluErf.forward(&self.proj_0.forward(&normed)?)?;
        let out = (&normed + self.proj_2.forward(&inner)?)?;
        Ok((y, normed, out))
    }
}

impl Module for Projector {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_trace(xs)
            .map(|(_, _, out)| out)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
