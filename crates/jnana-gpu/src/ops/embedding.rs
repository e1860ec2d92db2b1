use super::grid;
use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("embedding.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
}

/// Rows of `table` (`[vocab, dim]`) for `ids`; an id outside the table is refused here, before
/// the GPU could read out of bounds.
pub fn embedding(gpu: &Gpu, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
    let [vocab, dim] = *table.shape() else {
        return Err(Error::Shape {
            op: "embedding",
            detail: format!("table {:?} is not a matrix", table.shape()),
        });
    };
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::Shape {
            op: "embedding",
            detail: format!("token id {bad} is outside the {vocab}-row table"),
        });
    }
    let y = gpu.output(&[ids.len(), dim])?;
    let ids_buffer = gpu.buffer_from(
        "ids",
        bytemuck::cast_slice(ids),
        wgpu::BufferUsages::STORAGE,
    );
    let params = gpu.uniform(&Params {
        rows: ids.len() as u32,
        cols: dim as u32,
    });
    let pipeline = gpu.pipeline("embedding", SHADER, "main");
    gpu.dispatch(
        &pipeline,
        &[&table.buffer, &ids_buffer, &y.buffer, &params],
        grid(ids.len() * dim, 256),
    );
    Ok(y)
}
