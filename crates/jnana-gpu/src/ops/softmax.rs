use super::grid;
use crate::{Gpu, GpuTensor, Result};

const SHADER: &str = concat!(
    include_str!("row_reduce.wgsl"),
    include_str!("softmax.wgsl")
);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
}

/// Softmax over the last dimension, shifted by the row's maximum (no overflow on large logits).
pub fn softmax_last_dim(gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    let (rows, cols) = x.rows_cols();
    let y = gpu.output(x.shape())?;
    let params = gpu.uniform(&Params {
        rows: rows as u32,
        cols: cols as u32,
    });
    let pipeline = gpu.pipeline("softmax", SHADER, "main");
    gpu.dispatch(&pipeline, &[&x.buffer, &y.buffer, &params], grid(rows, 1));
    Ok(y)
}
