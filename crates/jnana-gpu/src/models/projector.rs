//! The seed's projector on the GPU: `linear`, then `n + proj_2(GELU_erf(proj_0(n)))` with
//! `n = pre_norm(linear(x))`.

use super::{GpuLinear, Norm};
use crate::ops::{self, Activation};
use crate::{Gpu, GpuTensor, Result};
use jnana::models::projector::Projector;

pub struct GpuProjector {
    linear: GpuLinear,
    pre_norm: Norm,
    proj_0: GpuLinear,
    proj_2: GpuLinear,
}

impl GpuProjector {
    pub fn upload(gpu: &Gpu, p: &Projector) -> Result<Self> {
        let (linear, pre_norm, proj_0, proj_2) = p.params();
        Ok(Self {
            linear: GpuLinear::upload(gpu, linear)?,
            pre_norm: Norm::upload(gpu, pre_norm)?,
            proj_0: GpuLinear::upload(gpu, proj_0)?,
            proj_2: GpuLinear::upload(gpu, proj_2)?,
        })
    }

    /// `[patches, vision width]` → `[patches, text width]`.
    pub fn forward(&self, gpu: &Gpu, features: &GpuTensor) -> Result<GpuTensor> {
        Ok(self.forward_trace(gpu, features)?.2)
    }

    /// `(after linear, after pre-norm, projected)`.
    pub fn forward_trace(
        &self,
        gpu: &Gpu,
        features: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        let linear = self.linear.forward(gpu, features)?;
        let normed = self.pre_norm.forward(gpu, &linear)?;
        let inner = ops::activation(
            gpu,
            &self.proj_0.forward(gpu, &normed)?,
            Activation::GeluErf,
        )?;
        let out = ops::add(gpu, &normed, &self.proj_2.forward(gpu, &inner)?)?;
        Ok((linear, normed, out))
    }
}
