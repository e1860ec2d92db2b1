use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("attention.wgsl");
/// Keys one query can see (the scores live in workgroup memory): Phi-2's context is 2 048,
/// Whisper's encoder 1 500, CLIP 50.
pub const MAX_KEYS: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seq: u32,
    len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    causal: u32,
    scale: f32,
    _pad: u32,
}

/// A key/value cache kept on the GPU: rows are appended, never copied back.
pub struct KvCache {
    pub k: GpuTensor,
    pub v: GpuTensor,
    len: usize,
}

impl KvCache {
    pub fn new(gpu: &Gpu, max_len: usize, width: usize) -> Result<Self> {
        Ok(Self {
            k: gpu.zeros(&[max_len, width])?,
            v: gpu.zeros(&[max_len, width])?,
            len: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `k`, `v` (`[seq, width]`) after the rows held.
    pub fn append(&mut self, gpu: &Gpu, k: &GpuTensor, v: &GpuTensor) -> Result<()> {
        let (seq, width) = k.rows_cols();
        let [max_len, cache_width] = *self.k.shape() else {
            unreachable!("caches are matrices")
        };
        if v.shape() != k.shape() || width != cache_width || self.len + seq > max_len {
            return Err(Error::Shape {
                op: "kv cache",
                detail: format!(
                    "{seq} rows of {width} after {} of {max_len}×{cache_width}",
                    self.len
                ),
            });
        }
        let at = (self.len * width * 4) as u64;
        let bytes = (seq * width * 4) as u64;
        gpu.copy_at(&k.buffer, 0, &self.k.buffer, at, bytes);
        gpu.copy_at(&v.buffer, 0, &self.v.buffer, at, bytes);
        self.len += seq;
        Ok(())
    }
}

/// Attention of `q` (`[seq, heads · head_dim]`) over the first `len` rows of `k`/`v`
/// (`[≥ len, kv_heads · head_dim]`), scaled by `1/√head_dim`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    len: usize,
    heads: usize,
    kv_heads: usize,
    causal: bool,
) -> Result<GpuTensor> {
    let (seq, width) = q.rows_cols();
    let head_dim = width / heads.max(1);
    let (k_rows, k_width) = k.rows_cols();
    let bad = heads == 0
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || width % heads != 0
        || k_width != kv_heads * head_dim
        || v.shape() != k.shape()
        || len > k_rows
        || (causal && seq > len);
    if bad {
        return Err(Error::Shape {
            op: "attention",
            detail: format!(
                "q {:?}, k {:?}, len {len}, {heads}/{kv_heads} heads",
                q.shape(),
                k.shape()
            ),
        });
    }
    if len > MAX_KEYS {
        return Err(Error::Shape {
            op: "attention",
            detail: format!("{len} keys; this kernel sees at most {MAX_KEYS}"),
        });
    }
    let y = gpu.output(q.shape())?;
    let params = gpu.uniform(&Params {
        seq: seq as u32,
        len: len as u32,
        heads: heads as u32,
        kv_heads: kv_heads as u32,
        head_dim: head_dim as u32,
        causal: causal as u32,
        scale: 1.0 / (head_dim as f32).sqrt(),
        _pad: 0,
    });
    let pipeline = gpu.pipeline("attention", SHADER, "main");
    gpu.dispatch(
        &pipeline,
        &[&q.buffer, &k.buffer, &v.buffer, &y.buffer, &params],
        [seq as u32, heads as u32, 1],
    );
    Ok(y)
}
