//! Pieces of multi-head attention shared by the models.

use crate::error::Result;
use candle_core::{Device, Tensor};

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
