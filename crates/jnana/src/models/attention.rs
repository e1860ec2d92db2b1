//! Attention and feed-forward pieces shared by the models.

use crate::error::Result;
use crate::models::activation::Activation;
use crate::weights::{Linear, Weights};
use candle_core::{Device, Module, Tensor};

/// `[batch, seq, heads * head_dim]` → `[batch, heads, seq, head_dim]`, contiguous.
pub fn split_heads(xs: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, seq, _) = xs.dims3()?;
    Ok(xs
        .reshape((b, seq, heads, head_dim))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `softmax(q kᵀ · scale + mask) v`, back to `[batch, seq, heads * head_dim]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, seq, head_dim) = q.dims4()?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((b, seq, heads * head_dim))?)
}

/// Additive mask: new row `i` (absolute position `offset + i`) sees keys `0..=offset + i`.
/// `None` for a single row, which sees everything.
pub fn causal_mask(seq_len: usize, offset: usize, device: &Device) -> Result<Option<Tensor>> {
    if seq_len <= 1 {
        return Ok(None);
    }
    let total = offset + seq_len;
    let mask: Vec<f32> = (0..seq_len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (seq_len, total), device)?))
}

/// Multi-head attention with separate q/k/v/out projections (CLIP, Whisper): keys and values
/// can be computed once and attended to many times (Whisper's cross-attention).
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    /// `vb` holds `q_proj`, `k_proj` (with a bias only when `k_bias`), `v_proj`, `out_proj`.
    pub fn new(width: usize, heads: usize, k_bias: bool, vb: &Weights) -> Result<Self> {
        Ok(Self {
            q_proj: vb.linear(width, width, "q_proj")?,
            k_proj: if k_bias {
                vb.linear(width, width, "k_proj")?
            } else {
                vb.linear_no_bias(width, width, "k_proj")?
            },
            v_proj: vb.linear(width, width, "v_proj")?,
            out_proj: vb.linear(width, width, "out_proj")?,
            heads,
            head_dim: width / heads,
        })
    }

    /// q, k, v and out projections, for another engine to upload.
    pub fn projections(&self) -> [&Linear; 4] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.out_proj]
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Keys and values of `xs`, `[batch, heads, seq, head_dim]`.
    pub fn keys_values(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.k_proj.forward(xs)?, self.heads, self.head_dim)?,
            split_heads(&self.v_proj.forward(xs)?, self.heads, self.head_dim)?,
        ))
    }

    /// `xs` attending to `k`, `v` (scale `head_dim^-0.5`).
    pub fn attend_to(
        &self,
        xs: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = split_heads(&self.q_proj.forward(xs)?, self.heads, self.head_dim)?;
        let out = attend(&q, k, v, (self.head_dim as f64).powf(-0.5), mask)?;
        Ok(self.out_proj.forward(&out)?)
    }

    /// Self-attention without a mask.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (k, v) = self.keys_values(xs)?;
        self.attend_to(xs, &k, &v, None)
    }
}

/// The transformer feed-forward block: `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    act: Activation,
}

impl Mlp {
    /// `vb` holds `fc1` and `fc2`.
    pub fn new(width: usize, inner: usize, act: Activation, vb: &Weights) -> Result<Self> {
        Ok(Self {
            fc1: vb.linear(width, inner, "fc1")?,
            fc2: vb.linear(inner, width, "fc2")?,
            act,
        })
    }

    pub fn activation(&self) -> Activation {
        self.act
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(xs)?)?)?)
    }
}
