//! `x Wᵀ` for a float weight kept in the file's f16, computed in f32 on the CPU. The vision
//! tower, the projector and Whisper's encoder run once per picture or recording, so widening
//! their weights at every call costs little, while widening them once at load doubled their
//! share of the page's memory (350 MB of f16 in the `phi2` bundle became 700 MB of f32).

use crate::cpu_tensor::with_values;
use crate::matmul::{product_into, Strided};
use crate::parallel::SendPtr;
use candle_core::{DType, Result, Tensor};
use half::{f16, slice::HalfFloatSliceExt};

/// Weight rows widened at a time: the f32 block (rows × in) stays in a core's cache.
const ROWS: usize = 64;

/// `x Wᵀ` for `x` `[…, in]` and `w` an f16 `[out, in]`, accumulated in f32 (the weight's values
/// exactly as stored; unlike candle's f16 matmul, the activations are not rounded to f16).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    if let Some(y) = on_cpu(x, w, n, k)? {
        return Ok(y);
    }
    x.broadcast_matmul(&w.to_dtype(x.dtype())?.t()?)
}

fn on_cpu(x: &Tensor, w: &Tensor, n: usize, k: usize) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.dims().last() != Some(&k) {
        return Ok(None);
    }
    let m = x.elem_count() / k;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has the weight's width") = n;
    let x = x.flatten_all()?.to_vec1::<f32>()?;
    let y = with_values(w, |weight: &[f16]| {
        let mut y = vec![0f32; m * n];
        let out = SendPtr(y.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(ROWS), |blocks| {
            let mut wide = vec![0f32; ROWS * k];
            for block in blocks {
                let first = block * ROWS;
                let rows = ROWS.min(n - first);
                let wide = &mut wide[..rows * k];
                weight[first * k..(first + rows) * k].convert_to_f32_slice(wide);
                // SAFETY: x is m × k, `wide` rows × k (read transposed), and the destination
                // is columns first..first + rows of the m × n output, which only this block
                // writes.
                unsafe {
                    product_into(
                        (m, rows, k),
                        out.get().add(first),
                        n,
                        Strided::rows(x.as_ptr(), k),
                        Strided::transposed(wide.as_ptr(), k),
                        1.0,
                    );
                }
            }
        });
        y
    })?;
    y.map(|y| Tensor::from_vec(y, dims, &candle_core::Device::Cpu))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against candle's f32 matmul on the widened weight, for a decode row, a few rows and a
    /// batch of them, with the weight's rows not a multiple of a block.
    #[test]
    fn matches_the_widened_weight() {
        let (n, k) = (100, 48);
        let values = |seed: usize, len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1013) as f32 / 506.5 - 1.0)
                .collect()
        };
        let w = Tensor::from_vec(values(1, n * k), (n, k), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let wide = w.to_dtype(DType::F32).unwrap();
        for shape in [vec![1, k], vec![3, k], vec![2, 35, k]] {
            let len = shape.iter().product();
            let x = Tensor::from_vec(values(2, len), shape.clone(), &Device::Cpu).unwrap();
            let got = matmul(&x, &w).unwrap();
            let want = x.broadcast_matmul(&wide.t().unwrap()).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap();
            let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{shape:?}: differs by {diff}");
        }
    }
}
