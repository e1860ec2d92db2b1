use crate::{Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("argmax.wgsl");

/// The index of the largest of the first `within` values of the last row of `x` (a vocabulary
/// padded past the tokenizer's is cut there); only that `u32` is read back.
pub async fn argmax_last_row(gpu: &Gpu, x: &GpuTensor, within: usize) -> Result<u32> {
    let (rows, cols) = x.rows_cols();
    let out = gpu.zeros(&[1])?;
    let params = gpu.uniform(&[
        cols.min(within) as u32,
        (rows.saturating_sub(1) * cols) as u32,
    ]);
    let pipeline = gpu.pipeline("argmax", SHADER, "main");
    gpu.dispatch(&pipeline, &[&x.buffer, &out.buffer, &params], [1, 1, 1]);
    let bits = gpu.read(&out).await?;
    Ok(bits[0].to_bits())
}
