use super::grid;
use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("rotary.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seq: u32,
    heads: u32,
    head_dim: u32,
    rot: u32,
    offset: u32,
}

/// The cos/sin tables of a model's rotary embedding, on the GPU.
pub struct RotaryTables {
    cos: GpuTensor,
    sin: GpuTensor,
    rot: usize,
    positions: usize,
}

impl RotaryTables {
    /// Angles `position · θ^(−2i/rot)` computed in f32 as the CPU model does.
    pub fn new(gpu: &Gpu, rot: usize, theta: f32, positions: usize) -> Result<Self> {
        let half = rot / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / rot as f32))
            .collect();
        let angles: Vec<f32> = (0..positions)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        Ok(Self {
            cos: gpu.upload(&cos, &[positions, half])?,
            sin: gpu.upload(&sin, &[positions, half])?,
            rot,
            positions,
        })
    }
}

/// Rotates `x` (`[seq, heads · head_dim]`) for positions `offset..offset + seq`.
pub fn rotary(
    gpu: &Gpu,
    x: &GpuTensor,
    tables: &RotaryTables,
    heads: usize,
    offset: usize,
) -> Result<GpuTensor> {
    let (seq, width) = x.rows_cols();
    let head_dim = width / heads.max(1);
    if heads == 0 || width % heads != 0 || tables.rot > head_dim || offset + seq > tables.positions
    {
        return Err(Error::Shape {
            op: "rotary",
            detail: format!(
                "x {:?}, {heads} heads, rot {}, positions {offset}+{seq} of {}",
                x.shape(),
                tables.rot,
                tables.positions
            ),
        });
    }
    let y = gpu.output(x.shape())?;
    let params = gpu.uniform(&Params {
        seq: seq as u32,
        heads: heads as u32,
        head_dim: head_dim as u32,
        rot: tables.rot as u32,
        offset: offset as u32,
    });
    let pipeline = gpu.pipeline("rotary", SHADER, "main");
    gpu.dispatch(
        &pipeline,
        &[
            &x.buffer,
            &tables.cos.buffer,
            &tables.sin.buffer,
            &y.buffer,
            &params,
        ],
        grid(x.elem_count(), 256),
    );
    Ok(y)
}
