//! Pieces the transformer models share: multi-head attention projections, the two-layer MLP
//! and the pre-norm encoder layer (CLIP's vision tower and Whisper's encoder).

use super::{activation, GpuLinear, Norm};
use crate::ops::{self, Activation};
use crate::{Gpu, GpuTensor, Result};
use jnana::models::attention::{Mlp as CpuMlp, MultiHeadAttention};

pub(crate) struct Attention {
    pub q: GpuLinear,
    pub k: GpuLinear,
    pub v: GpuLinear,
    pub out: GpuLinear,
    pub heads: usize,
}

impl Attention {
    pub fn upload(gpu: &Gpu, mha: &MultiHeadAttention) -> Result<Self> {
        let [q, k, v, out] = mha.projections();
        Ok(Self {
            q: GpuLinear::upload(gpu, q)?,
            k: GpuLinear::upload(gpu, k)?,
            v: GpuLinear::upload(gpu, v)?,
            out: GpuLinear::upload(gpu, out)?,
            heads: mha.heads(),
        })
    }

    /// Every row of `x` attends to every row (encoders).
    pub fn forward_full(&self, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
        let k = self.k.forward(gpu, x)?;
        let v = self.v.forward(gpu, x)?;
        self.attend(gpu, x, &k, &v, k.shape()[0], false)
    }

    /// Rows of `x` attend to the first `len` rows of `k`/`v`, then the output projection.
    pub fn attend(
        &self,
        gpu: &Gpu,
        x: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        len: usize,
        causal: bool,
    ) -> Result<GpuTensor> {
        let q = self.q.forward(gpu, x)?;
        let attn = ops::attention(gpu, &q, k, v, len, self.heads, self.heads, causal)?;
        self.out.forward(gpu, &attn)
    }
}

pub(crate) struct Mlp {
    fc1: GpuLinear,
    fc2: GpuLinear,
    act: Activation,
}

impl Mlp {
    pub fn upload(gpu: &Gpu, mlp: &CpuMlp) -> Result<Self> {
        Ok(Self {
            fc1: GpuLinear::upload(gpu, &mlp.fc1)?,
            fc2: GpuLinear::upload(gpu, &mlp.fc2)?,
            act: activation(mlp.activation()),
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
        let inner = ops::activation(gpu, &self.fc1.forward(gpu, x)?, self.act)?;
        self.fc2.forward(gpu, &inner)
    }
}

/// `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, attention over all rows.
pub(crate) struct EncoderLayer {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl EncoderLayer {
    pub fn upload(
        gpu: &Gpu,
        norm1: &candle_nn::LayerNorm,
        attn: &MultiHeadAttention,
        norm2: &candle_nn::LayerNorm,
        mlp: &CpuMlp,
    ) -> Result<Self> {
        Ok(Self {
            norm1: Norm::upload(gpu, norm1)?,
            attn: Attention::upload(gpu, attn)?,
            norm2: Norm::upload(gpu, norm2)?,
            mlp: Mlp::upload(gpu, mlp)?,
        })
    }

    pub fn forward(&self, gpu: &Gpu, xs: &GpuTensor) -> Result<GpuTensor> {
        let normed = self.norm1.forward(gpu, xs)?;
        let xs = ops::add(gpu, xs, &self.attn.forward_full(gpu, &normed)?)?;
        let mlp = self.mlp.forward(gpu, &self.norm2.forward(gpu, &xs)?)?;
        ops::add(gpu, &xs, &mlp)
    }
}
