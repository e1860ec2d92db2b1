use super::grid;
use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("add.wgsl");

pub fn add(gpu: &Gpu, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    if a.shape() != b.shape() {
        return Err(Error::Shape {
            op: "add",
            detail: format!("{:?} + {:?}", a.shape(), b.shape()),
        });
    }
    let n = a.elem_count();
    let y = gpu.output(a.shape())?;
    let params = gpu.uniform(&(n as u32));
    let pipeline = gpu.pipeline("add", SHADER, "main");
    gpu.dispatch(
        &pipeline,
        &[&a.buffer, &b.buffer, &y.buffer, &params],
        grid(n, 256),
    );
    Ok(y)
}
