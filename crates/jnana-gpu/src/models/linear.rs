//! A linear layer on the GPU from a `jnana` one: q4_0 / q8_0 / q4_K weights stay quantized, other
//! types go up as f32; a LoRA update kept beside the weight comes along.

use crate::ops::{self, GgmlBlocks, QMatrix};
use crate::{Gpu, GpuTensor, Result};
use candle_core::quantized::{GgmlDType, QMatMul};
use std::ops::Range;

enum Weight {
    F32(GpuTensor),
    Quantized(QMatrix),
}

pub struct GpuLinear {
    weight: Weight,
    bias: Option<GpuTensor>,
    /// `A` (`[r, in]`) and `B` (`[out, r]`, already scaled).
    adapter: Option<(GpuTensor, GpuTensor)>,
}

fn blocks(dtype: GgmlDType) -> Option<(GgmlBlocks, usize, usize)> {
    // (kind, values per block, bytes per block)
    match dtype {
        GgmlDType::Q4_0 => Some((GgmlBlocks::Q4_0, 32, 18)),
        GgmlDType::Q8_0 => Some((GgmlBlocks::Q8_0, 32, 34)),
        GgmlDType::Q4K => Some((GgmlBlocks::Q4K, 256, 144)),
        _ => None,
    }
}

impl GpuLinear {
    pub fn upload(gpu: &Gpu, l: &jnana::weights::Linear) -> Result<Self> {
        Self::upload_rows(gpu, l, 0..l.out_features())
    }

    /// Output rows `rows` of `l` only (a fused q/k/v split into three).
    pub fn upload_rows(gpu: &Gpu, l: &jnana::weights::Linear, rows: Range<usize>) -> Result<Self> {
        let k = l.in_features();
        let n = rows.len();
        let weight = l.weight()?;
        let quantized = match &weight {
            QMatMul::QTensor(q) => blocks(q.dtype()).map(|b| (q, b)),
            _ => None,
        };
        let weight = match quantized {
            Some((q, (kind, per_block, block_bytes))) => {
                let row_bytes = k / per_block * block_bytes;
                let data = q.data()?;
                Weight::Quantized(QMatrix::upload(
                    gpu,
                    kind,
                    &data[rows.start * row_bytes..rows.end * row_bytes],
                    n,
                    k,
                )?)
            }
            None => {
                let w = l
                    .weight_f32()?
                    .narrow(0, rows.start, n)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Weight::F32(gpu.upload(&w, &[n, k])?)
            }
        };
        let bias = match l.bias() {
            Some(b) => Some(gpu.upload(&b.narrow(0, rows.start, n)?.to_vec1::<f32>()?, &[n])?),
            None => None,
        };
        let adapter = match l.adapter() {
            Some(lr) => {
                let (r, _) = lr.a.dims2()?;
                let a = gpu.upload_tensor(&lr.a, &[r, k])?;
                let b = gpu.upload(
                    &lr.b
                        .narrow(0, rows.start, n)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                    &[n, r],
                )?;
                Some((a, b))
            }
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            adapter,
        })
    }

    pub fn forward(&self, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
        let y = match &self.weight {
            Weight::F32(w) => ops::linear(gpu, x, w, self.bias.as_ref())?,
            Weight::Quantized(w) => ops::linear_q(gpu, x, w, self.bias.as_ref())?,
        };
        match &self.adapter {
            Some((a, b)) => ops::add(
                gpu,
                &y,
                &ops::linear(gpu, &ops::linear(gpu, x, a, None)?, b, None)?,
            ),
            None => Ok(y),
        }
    }
}
