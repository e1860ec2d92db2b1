//! Linear layers whose weights stay block-quantized on the GPU. GGUF blocks are rearranged once,
//! at upload, into groups of 32 values with an f32 scale and min and word-aligned quants (GGUF's
//! 18- and 34-byte blocks are not 4-byte aligned, and q4_K's 6-bit packed scales would cost
//! every thread the unpacking on every token).

use crate::{Error, Gpu, GpuTensor, Result};
use half::f16;

const SHADER: &str = include_str!("linear_q.wgsl");

/// A GGUF block type this op reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlBlocks {
    Q4_0,
    Q8_0,
    Q4K,
}

impl GgmlBlocks {
    fn block(self) -> (usize, usize) {
        // (values, bytes) per block
        match self {
            Self::Q4_0 => (32, 18),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
        }
    }

    fn bits(self) -> u32 {
        match self {
            Self::Q8_0 => 8,
            _ => 4,
        }
    }
}

/// Consecutive output rows of a matrix, in buffers one binding can hold.
struct Part {
    qs: wgpu::Buffer,
    scale_min: wgpu::Buffer,
    rows: std::ops::Range<usize>,
}

/// A `[n, k]` weight matrix on the GPU, rearranged from GGUF blocks; split by output rows into
/// parts when it is larger than one storage binding may be (an output head on a GPU with a
/// 128 MiB binding limit).
pub struct QMatrix {
    parts: Vec<Part>,
    bits: u32,
    n: usize,
    k: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    /// Columns of this part.
    n: u32,
    k: u32,
    has_bias: u32,
    /// Columns of the whole output row.
    stride: u32,
    /// This part's first column.
    col0: u32,
    _pad: [u32; 2],
}

impl QMatrix {
    pub fn shape(&self) -> [usize; 2] {
        [self.n, self.k]
    }

    /// Uploads `[n, k]` weights given as GGUF `blocks` (row-major, as in the file).
    pub fn upload(gpu: &Gpu, blocks: GgmlBlocks, data: &[u8], n: usize, k: usize) -> Result<Self> {
        let limit = gpu
            .summary
            .max_storage_buffer_binding_size
            .min(gpu.summary.max_buffer_size);
        Self::upload_in_parts(gpu, blocks, data, n, k, limit)
    }

    /// [`Self::upload`] with buffers of at most `part_bytes` (for tests of the split).
    pub fn upload_in_parts(
        gpu: &Gpu,
        blocks: GgmlBlocks,
        data: &[u8],
        n: usize,
        k: usize,
        part_bytes: u64,
    ) -> Result<Self> {
        let (per_block, block_bytes) = blocks.block();
        if !k.is_multiple_of(per_block) || data.len() != n * k / per_block * block_bytes {
            return Err(Error::Shape {
                op: "linear_q",
                detail: format!("{} bytes of {blocks:?} for [{n}, {k}]", data.len()),
            });
        }
        let groups = n * k / 32;
        let words_per_group = blocks.bits() as usize;
        let mut qs = vec![0u32; groups * words_per_group];
        let mut scale_min = vec![[0f32; 2]; groups];
        let half_at = |b: &[u8], o: usize| f16::from_le_bytes([b[o], b[o + 1]]).to_f32();
        for (bi, block) in data.chunks_exact(block_bytes).enumerate() {
            match blocks {
                GgmlBlocks::Q8_0 => {
                    scale_min[bi] = [half_at(block, 0), 0.0];
                    for (j, w) in block[2..].chunks_exact(4).enumerate() {
                        qs[bi * 8 + j] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    }
                }
                GgmlBlocks::Q4_0 => {
                    let d = half_at(block, 0);
                    scale_min[bi] = [d, 8.0 * d];
                    let q = &block[2..18];
                    let nibbles = q.iter().map(|b| b & 0xF).chain(q.iter().map(|b| b >> 4));
                    pack_nibbles(nibbles, &mut qs[bi * 4..bi * 4 + 4]);
                }
                GgmlBlocks::Q4K => {
                    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
                    let scales = &block[4..16];
                    let q = &block[16..144];
                    for chunk in 0..4 {
                        let bytes = &q[chunk * 32..chunk * 32 + 32];
                        for (half, take) in [(0usize, 0u8), (1, 4)] {
                            let sub = chunk * 2 + half;
                            let (sc, m) = jnana::weights::q4k_scale_min(sub, scales);
                            let g = bi * 8 + sub;
                            scale_min[g] = [d * sc as f32, dmin * m as f32];
                            let nibbles = bytes.iter().map(|b| (b >> take) & 0xF);
                            pack_nibbles(nibbles, &mut qs[g * 4..g * 4 + 4]);
                        }
                    }
                }
            }
        }
        gpu.check()?;
        let buffer = |what: &str, bytes: &[u8]| -> Result<wgpu::Buffer> {
            gpu.check_size(what, bytes.len() as u64)?;
            Ok(gpu.buffer_from(what, bytes, wgpu::BufferUsages::STORAGE))
        };
        let row_groups = k / 32;
        let row_bytes = (row_groups * words_per_group * 4).max(row_groups * 8) as u64;
        let rows_per_part = (part_bytes / row_bytes.max(1)) as usize;
        if rows_per_part == 0 {
            return Err(Error::TooLarge {
                what: "one row of quantized weights".into(),
                bytes: row_bytes,
                limit: part_bytes,
            });
        }
        let parts = (0..n)
            .step_by(rows_per_part)
            .map(|start| {
                let rows = start..(start + rows_per_part).min(n);
                let groups = rows.start * row_groups..rows.end * row_groups;
                Ok(Part {
                    qs: buffer(
                        "quantized weights",
                        bytemuck::cast_slice(
                            &qs[groups.start * words_per_group..groups.end * words_per_group],
                        ),
                    )?,
                    scale_min: buffer("weight scales", bytemuck::cast_slice(&scale_min[groups]))?,
                    rows,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            parts,
            bits: blocks.bits(),
            n,
            k,
        })
    }

    /// Buffers it is split into.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

/// 32 nibbles, value i at bits 4·(i mod 8) of word i / 8.
fn pack_nibbles(nibbles: impl Iterator<Item = u8>, words: &mut [u32]) {
    for (i, v) in nibbles.enumerate() {
        words[i / 8] |= u32::from(v) << (4 * (i % 8));
    }
}

const KEYS_Q4: [&str; 6] = [
    "linear_q4/1",
    "linear_q4/2",
    "linear_q4/4",
    "linear_q4/8",
    "linear_q4/16",
    "linear_q4/32",
];
const KEYS_Q8: [&str; 6] = [
    "linear_q8/1",
    "linear_q8/2",
    "linear_q8/4",
    "linear_q8/8",
    "linear_q8/16",
    "linear_q8/32",
];

/// `x · Wᵀ + b` with `W` quantized; activations stay f32 (no activation rounding, unlike the
/// CPU's integer-dot kernels, so this matches the dequantized reference).
pub fn linear_q(gpu: &Gpu, x: &GpuTensor, w: &QMatrix, b: Option<&GpuTensor>) -> Result<GpuTensor> {
    let (m, k) = x.rows_cols();
    if k != w.k || b.is_some_and(|b| b.elem_count() != w.n) {
        return Err(Error::Shape {
            op: "linear_q",
            detail: format!("x {:?} with weight {:?}", x.shape(), w.shape()),
        });
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("x has a last dimension") = w.n;
    let y = gpu.output(&shape)?;
    // Enough lanes to cover k's groups of 32 once.
    let lanes = (w.k / 32)
        .next_power_of_two()
        .clamp(1, gpu.tuning.max_lanes);
    let variant = super::lane_split(lanes);
    let (key, bits) = if w.bits == 4 {
        (KEYS_Q4[variant], 4)
    } else {
        (KEYS_Q8[variant], 8)
    };
    let source = super::with_lanes(&format!("const BITS: u32 = {bits}u;\n"), lanes, SHADER);
    let pipeline = gpu.pipeline(key, &source, "main");
    let bias = b.map_or(&x.buffer, |b| &b.buffer);
    for part in &w.parts {
        let n = part.rows.len();
        let params = gpu.uniform(&Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            has_bias: b.is_some() as u32,
            stride: w.n as u32,
            col0: part.rows.start as u32,
            _pad: [0; 2],
        });
        let [x_groups, z_groups, _] = super::grid(n.div_ceil(64 / lanes), 1);
        gpu.dispatch(
            &pipeline,
            &[
                &x.buffer,
                &part.qs,
                &part.scale_min,
                bias,
                &y.buffer,
                &params,
            ],
            [x_groups, m.div_ceil(8) as u32, z_groups],
        );
    }
    Ok(y)
}
