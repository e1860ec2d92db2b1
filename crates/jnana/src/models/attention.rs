//! Attention and feed-forward pieces shared by the models.

use crate::error::Result;
use crate::matmul::{product_into, Strided};
use crate::models::activation::Activation;
use crate::weights::{Linear, Weights};
use candle_core::{DType, Device, Module, Storage, Tensor};

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

/// [`attend`] for one new position against a cache on the CPU — a decode step — computed
/// straight from the cache's memory, one head per task on candle's thread pool. Through candle
/// this step was two small matmuls per head, single-threaded, plus copies of the cache; at a
/// few hundred positions it cost as much as the layer's weights. Elsewhere (several positions,
/// another device, a cache laid out otherwise) it is [`attend`].
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    match one_position(q, k, v, scale)? {
        Some(out) => Ok(out),
        None => attend(q, k, v, scale, None),
    }
}

/// Where [`one_position`] and [`prompt_positions`] can read keys and values straight from the
/// cache's memory: one batch, CPU f32, as many key heads as query heads, and each head's rows
/// of `head_dim` values one after another (the cache's narrowed view). The distance between two
/// heads' first keys, and between their first values.
fn cache_heads(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<(usize, usize)>> {
    let (b, heads, _, head_dim) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if b != 1 || kv_heads != heads || k.dims() != v.dims() || ![q, k, v].into_iter().all(cpu_f32) {
        return Ok(None);
    }
    let rows = |t: &Tensor| {
        let stride = t.stride();
        (stride[3] == 1 && stride[2] == head_dim).then_some(stride[1])
    };
    Ok(rows(k).zip(rows(v)))
}

/// Runs `per_head(h, keys, values)` for every head on candle's thread pool, with `keys` and
/// `values` the cache's memory from head `h`'s first row on.
fn each_head(
    k: &Tensor,
    v: &Tensor,
    (k_head, v_head): (usize, usize),
    per_head: impl Fn(usize, &[f32], &[f32]) + Sync,
) -> Result<()> {
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
        unreachable!("cache_heads admits CPU tensors only");
    };
    let keys = &k_cpu.as_slice::<f32>()?[k_layout.start_offset()..];
    let values = &v_cpu.as_slice::<f32>()?[v_layout.start_offset()..];
    candle_core::utils::barrier_pool().execute_chunked(k.dim(1)?, |range| {
        for h in range {
            per_head(h, &keys[h * k_head..], &values[h * v_head..]);
        }
    });
    Ok(())
}

/// [`attend`] with [`causal_mask`]'s mask for new positions at the end of a cache, as a
/// prompt is fed. On the CPU it is computed per head on candle's thread pool, a block of rows at
/// a time against only the keys the block can see: through candle it was one single-threaded
/// matmul over every key and four full `[heads, rows, keys]` tensors per layer (scores, scaled,
/// masked, softmaxed) — at 1500 prompt tokens more time than the layer's weights.
pub fn attend_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &Tensor,
) -> Result<Tensor> {
    match prompt_positions(q, k, v, scale)? {
        Some(out) => Ok(out),
        None => attend(q, k, v, scale, Some(mask)),
    }
}

/// Query rows per block: the block's scores (rows × keys) stay in a core's cache.
const PROMPT_BLOCK: usize = 64;

fn prompt_positions(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    let (_, heads, seq, head_dim) = q.dims4()?;
    let positions = k.dim(2)?;
    let Some(strides) = cache_heads(q, k, v)?.filter(|_| positions >= seq) else {
        return Ok(None);
    };
    let offset = positions - seq;
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let out = std::sync::Mutex::new(vec![0f32; seq * heads * head_dim]);
    each_head(k, v, strides, |h, keys, values| {
        let q = &q[h * seq * head_dim..(h + 1) * seq * head_dim];
        // Sliced here so the bounds the products below rely on are checked.
        let keys = &keys[..positions * head_dim];
        let values = &values[..positions * head_dim];
        let mut scores = vec![0f32; PROMPT_BLOCK * positions];
        let mut mixed = vec![0f32; seq * head_dim];
        for first in (0..seq).step_by(PROMPT_BLOCK) {
            let rows = PROMPT_BLOCK.min(seq - first);
            // The block's last row sees this many keys; earlier rows see fewer.
            let seen = offset + first + rows;
            let scores = &mut scores[..rows * seen];
            // SAFETY: every matrix lies inside its slice: q's block is `rows × head_dim` from
            // row `first`, keys and values `seen ≤ positions` rows of `head_dim`, scores
            // `rows × seen`, and the output block `rows × head_dim` from row `first`.
            unsafe {
                product_into(
                    (rows, seen, head_dim),
                    scores.as_mut_ptr(),
                    seen,
                    Strided::rows(q[first * head_dim..].as_ptr(), head_dim),
                    Strided::transposed(keys.as_ptr(), head_dim),
                    scale as f32,
                );
            }
            for (i, row) in scores.chunks_exact_mut(seen).enumerate() {
                let (visible, hidden) = row.split_at_mut(offset + first + i + 1);
                let max = visible.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0f32;
                for s in visible.iter_mut() {
                    *s = (*s - max).exp();
                    total += *s;
                }
                visible.iter_mut().for_each(|s| *s /= total);
                hidden.fill(0.0);
            }
            // SAFETY: as above; the scores are read back, `rows × seen`.
            unsafe {
                product_into(
                    (rows, head_dim, seen),
                    mixed[first * head_dim..].as_mut_ptr(),
                    head_dim,
                    Strided::rows(scores.as_ptr(), seen),
                    Strided::rows(values.as_ptr(), head_dim),
                    1.0,
                );
            }
        }
        let mut out = out.lock().expect("attention output");
        for (row, mixed) in out
            .chunks_exact_mut(heads * head_dim)
            .zip(mixed.chunks_exact(head_dim))
        {
            row[h * head_dim..(h + 1) * head_dim].copy_from_slice(mixed);
        }
    })?;
    let out = out.into_inner().expect("attention output");
    Ok(Some(Tensor::from_vec(
        out,
        (1, seq, heads * head_dim),
        &Device::Cpu,
    )?))
}

fn one_position(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    let (_, heads, seq, head_dim) = q.dims4()?;
    let positions = k.dim(2)?;
    let Some(strides) = cache_heads(q, k, v)?.filter(|_| seq == 1) else {
        return Ok(None);
    };
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let out = std::sync::Mutex::new(vec![0f32; heads * head_dim]);
    each_head(k, v, strides, |h, keys, values| {
        let q = &q[h * head_dim..(h + 1) * head_dim];
        let keys = &keys[..positions * head_dim];
        let values = &values[..positions * head_dim];
        let mut scores = vec![0f32; positions];
        // Eight keys at a time, each summed over the head in order.
        for (block, keys) in scores.chunks_mut(8).zip(keys.chunks(8 * head_dim)) {
            let mut sums = [0f32; 8];
            for (d, &qd) in q.iter().enumerate() {
                for (sum, key) in sums.iter_mut().zip(keys.chunks_exact(head_dim)) {
                    *sum += qd * key[d];
                }
            }
            for (s, sum) in block.iter_mut().zip(sums) {
                *s = sum * scale as f32;
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut partial = [0f32; GPU_LANES];
        for (j, s) in scores.iter_mut().enumerate() {
            *s = (*s - max).exp();
            partial[j % GPU_LANES] += *s;
        }
        let total = crate::sampling::pairwise_sum(&mut partial);
        let mut mixed = vec![0f32; head_dim];
        for (e, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
            mixed.iter_mut().zip(value).for_each(|(m, v)| *m += e * v);
        }
        mixed.iter_mut().for_each(|m| *m /= total);
        out.lock().expect("attention output")[h * head_dim..(h + 1) * head_dim]
            .copy_from_slice(&mixed);
    })?;
    let out = out.into_inner().expect("attention output");
    Ok(Some(Tensor::from_vec(
        out,
        (1, 1, heads * head_dim),
        &Device::Cpu,
    )?))
}

/// The GPU engine's attention kernel sums a head's exponentials in this many strided partial
/// sums, then halves them pairwise; `one_position` adds in the same order (and the same order
/// over the head and over the keys), so the two engines' answers differ only by `exp` and
/// fused multiply-adds, not by summation order.
const GPU_LANES: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADS: usize = 3;
    const HEAD_DIM: usize = 20;

    /// `[1, HEADS, rows, HEAD_DIM]` of deterministic values in [-1, 1).
    fn tensor(seed: usize, rows: usize) -> Tensor {
        let values = (0..HEADS * rows * HEAD_DIM)
            .map(|i| ((i * 7919 + seed) % 1013) as f32 / 506.5 - 1.0)
            .collect();
        Tensor::from_vec(values, (1, HEADS, rows, HEAD_DIM), &Device::Cpu).unwrap()
    }

    /// Against [`attend`] on contiguous copies of the cache view.
    fn max_difference(
        got: Tensor,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> f32 {
        let (k, v) = (k.contiguous().unwrap(), v.contiguous().unwrap());
        let want = attend(q, &k, &v, 0.2, mask).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap();
        diff.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// One new position against a cache view (the narrowed front of a larger buffer, as the KV
    /// cache hands it out): computed from the cache's memory, as through candle's matmuls.
    #[test]
    fn one_position_matches_attend_on_a_cache_view() {
        let (k_all, v_all) = (tensor(1, 64), tensor(2, 64));
        let q = tensor(3, 1);
        for positions in [1, 17, 64] {
            let k = k_all.narrow(2, 0, positions).unwrap();
            let v = v_all.narrow(2, 0, positions).unwrap();
            let got = one_position(&q, &k, &v, 0.2)
                .unwrap()
                .expect("a cache view is computed directly");
            let diff = max_difference(got, &q, &k, &v, None);
            assert!(diff < 1e-5, "{positions} positions: differs by {diff}");
        }
        // Several new positions are not a decode step.
        let two = Tensor::cat(&[&q, &q], 2).unwrap();
        assert!(one_position(&two, &k_all, &v_all, 0.2).unwrap().is_none());
    }

    /// A prompt's rows after some cached positions, in several blocks, against a cache view:
    /// as through candle's matmuls with the causal mask.
    #[test]
    fn prompt_positions_match_attend_with_the_causal_mask() {
        let (k_all, v_all) = (tensor(1, 160), tensor(2, 160));
        for (offset, seq) in [(0, 2), (0, 130), (17, 64), (5, 150)] {
            let q = tensor(3, seq);
            let k = k_all.narrow(2, 0, offset + seq).unwrap();
            let v = v_all.narrow(2, 0, offset + seq).unwrap();
            let mask = causal_mask(seq, offset, &Device::Cpu).unwrap().unwrap();
            let got = prompt_positions(&q, &k, &v, 0.2)
                .unwrap()
                .expect("a cache view is computed directly");
            let diff = max_difference(got, &q, &k, &v, Some(&mask));
            assert!(diff < 1e-5, "{seq} rows after {offset}: differs by {diff}");
        }
    }
}
