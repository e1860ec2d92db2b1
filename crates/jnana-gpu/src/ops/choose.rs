use crate::{Gpu, GpuTensor, Result};
use jnana::sampling::{Choice, Pick};

const SHADER: &str = concat!(include_str!("row_reduce.wgsl"), include_str!("choose.wgsl"));

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    greedy: u32,
    n_penalized: u32,
    temperature: f32,
    top_p: f32,
    top_k: u32,
    u: f32,
    penalty: f32,
    pad: [u32; 3],
}

/// The next token from the last row of `x` (`[rows, vocab]`), chosen as `choice` says (see
/// `jnana::sampling`, whose CPU `choose` this matches); only that `u32` is read back.
pub async fn choose_last_row(gpu: &Gpu, x: &GpuTensor, choice: &Choice) -> Result<u32> {
    let (rows, cols) = x.rows_cols();
    let n = cols.min(choice.within);
    let (greedy, temperature, top_k, top_p, u) = match choice.pick {
        Pick::Greedy => (1, 1.0, 0, 1.0, 0.0),
        Pick::Draw {
            temperature,
            top_k,
            top_p,
            u,
        } => (0, temperature, top_k.unwrap_or(0), top_p, u),
    };
    let params = gpu.uniform(&Params {
        n: n as u32,
        offset: (rows.saturating_sub(1) * cols) as u32,
        greedy,
        n_penalized: if choice.penalty == 1.0 {
            0
        } else {
            choice.penalized.len() as u32
        },
        temperature,
        top_p,
        top_k: top_k.min(u32::MAX as usize) as u32,
        u,
        penalty: choice.penalty,
        pad: [0; 3],
    });
    let penalized = gpu.buffer_from(
        "penalized ids",
        bytemuck::cast_slice(&choice.penalized),
        wgpu::BufferUsages::STORAGE,
    );
    let scratch = gpu.output(&[n])?;
    let out = gpu.output(&[1])?;
    let pipeline = gpu.pipeline("choose", SHADER, "main");
    gpu.dispatch(
        &pipeline,
        &[&x.buffer, &penalized, &scratch.buffer, &out.buffer, &params],
        [1, 1, 1],
    );
    let bits = gpu.read(&out).await?;
    Ok(bits[0].to_bits())
}
