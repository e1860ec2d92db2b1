use super::{grid, linear};
use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("conv1d.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    channels: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    out_len: u32,
    _pad: [u32; 2],
}

/// A 1-D convolution over time-major `x` (`[len, in]`) with `weight` flattened to
/// `[out, in · kernel]` (PyTorch's `[out, in, kernel]` row-major): `[out_len, out]`, time-major.
/// Windows are unfolded into rows, then one matrix product (Whisper's stem: 3-wide kernels).
pub fn conv1d(
    gpu: &Gpu,
    x: &GpuTensor,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<GpuTensor> {
    let (len, channels) = x.rows_cols();
    let (_, width) = weight.rows_cols();
    if kernel == 0 || stride == 0 || width != channels * kernel || len + 2 * pad < kernel {
        return Err(Error::Shape {
            op: "conv1d",
            detail: format!(
                "x {:?}, weight {:?}, kernel {kernel}, stride {stride}, pad {pad}",
                x.shape(),
                weight.shape()
            ),
        });
    }
    let out_len = (len + 2 * pad - kernel) / stride + 1;
    let rows = gpu.output(&[out_len, width])?;
    let params = gpu.uniform(&Params {
        len: len as u32,
        channels: channels as u32,
        kernel: kernel as u32,
        stride: stride as u32,
        pad: pad as u32,
        out_len: out_len as u32,
        _pad: [0; 2],
    });
    let pipeline = gpu.pipeline("conv1d/unfold", SHADER, "unfold");
    gpu.dispatch(
        &pipeline,
        &[&x.buffer, &rows.buffer, &params],
        grid(out_len * width, 256),
    );
    linear(gpu, &rows, weight, bias)
}
