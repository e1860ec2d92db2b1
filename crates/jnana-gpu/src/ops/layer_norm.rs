use super::grid;
use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = concat!(
    include_str!("row_reduce.wgsl"),
    include_str!("layer_norm.wgsl")
);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    has_bias: u32,
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance, as
/// `torch.nn.LayerNorm`).
pub fn layer_norm(
    gpu: &Gpu,
    x: &GpuTensor,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
    eps: f32,
) -> Result<GpuTensor> {
    let (rows, cols) = x.rows_cols();
    for (name, t) in [("weight", Some(weight)), ("bias", bias)] {
        if let Some(t) = t.filter(|t| t.elem_count() != cols) {
            return Err(Error::Shape {
                op: "layer_norm",
                detail: format!("{name} {:?} for rows of {cols}", t.shape()),
            });
        }
    }
    let y = gpu.output(x.shape())?;
    let params = gpu.uniform(&Params {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        has_bias: bias.is_some() as u32,
    });
    let pipeline = gpu.pipeline("layer_norm", SHADER, "main");
    let bias = bias.unwrap_or(weight);
    gpu.dispatch(
        &pipeline,
        &[&x.buffer, &weight.buffer, &bias.buffer, &y.buffer, &params],
        grid(rows, 1),
    );
    Ok(y)
}
