//! Block-quantized matmuls on x86-64 CPUs with AVX-512 VNNI, for decode above all.
//!
//! Decode reads every weight once per token, so its speed is the bytes read. Each format here
//! lays a `[n, k]` weight out once, at load, in tiles of 16 rows × one 256-value block, the
//! values interleaved so that one `vpdpbusd` multiplies 4 values of each of the 16 rows and the
//! scales kept no wider than in the file. Activations are quantized to 8 bits, as llama.cpp and
//! candle do. The formats differ only in their tile and its inner loop ([`TileFormat`]); the
//! packing and the spread of tiles over the threads are shared.

mod q4k;
mod q8_0;

use crate::parallel::{fill_parts, SendPtr};
use candle_core::quantized::{GgmlDType, QTensor};

/// Weight rows in one tile: one AVX-512 register of 32-bit lanes.
const ROWS: usize = 16;
/// Values of one row in one tile.
const QK: usize = 256;
/// Activation rows that share one pass over a weight tile (prefill).
const ROWS_PER_PASS: usize = 4;

/// Whether this CPU runs the kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// One block format's tile of 16 rows × 256 values, and the kernel that reads it.
trait TileFormat {
    /// Plain integers, for which all-zero bytes are a valid value.
    type Tile;
    const DTYPE: GgmlDType;
    /// The block type's name in ggml's spelling.
    const NAME: &'static str;
    /// Bytes of 256 values of one row in the file.
    const FILE_BYTES: usize;
    /// Activation values that share one scale: 256, or 32 where the weight's own scales are
    /// per 32 anyway, which keeps the activations as exact as candle's own kernel does.
    const ACT_GROUP: usize;

    /// Puts 256 values of row `r` (as in the file) into `tile`.
    fn pack(file: &[u8], r: usize, tile: &mut Self::Tile);

    /// Adds up `M` activation rows against one 16-row group: `dst[r * stride + c]`.
    ///
    /// # Safety
    /// The CPU is [`supported`]; `dst` holds `M` rows of `stride` values from 16 columns on.
    unsafe fn group_rows<const M: usize>(
        tiles: &[Self::Tile],
        acts: &[ActBlock],
        dst: *mut f32,
        stride: usize,
    );
}

/// 256 activations quantized to 8 bits: `x ≈ d[j] · q` over each 32 values `j`, with the sum of
/// `q` over each 32.
#[repr(C, align(64))]
struct ActBlock {
    qs: [i8; QK],
    sums: [i32; 8],
    /// The sums again, two per 32-bit word as 16-bit halves (`vpdpwssd`'s operand; each is
    /// at most 32 · 127 in size).
    sum_pairs: [i32; 4],
    d: [f32; 8],
}

fn quantize_activations(x: &[f32], group: usize) -> Vec<ActBlock> {
    let mut blocks: Vec<ActBlock> = (0..x.len() / QK).map(|_| ActBlock::default()).collect();
    // A prompt's rows are many blocks: spread over the pool like the matmul itself.
    fill_parts(&mut blocks, |range, part| {
        for (block, values) in part.iter_mut().zip(x[range.start * QK..].chunks_exact(QK)) {
            // SAFETY: only packed weights quantize activations, and weights are packed only
            // where `supported()` holds.
            unsafe { block.quantize(values, group) };
        }
    });
    blocks
}

impl ActBlock {
    /// With the kernels' features on, so that rounding and the sums are vector instructions
    /// rather than a libm call per value.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn quantize(&mut self, v: &[f32], group: usize) {
        for (g, values) in v.chunks_exact(group).enumerate() {
            let amax = values.iter().fold(0f32, |a, &b| a.max(b.abs()));
            let per = group / 32;
            self.d[g * per..(g + 1) * per].fill(amax / 127.0);
            if amax > 0.0 {
                let inv = 127.0 / amax;
                let qs = &mut self.qs[g * group..(g + 1) * group];
                for (q, &f) in qs.iter_mut().zip(values) {
                    *q = (f * inv).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        for (j, s) in self.sums.iter_mut().enumerate() {
            *s = self.qs[32 * j..32 * j + 32].iter().map(|&q| q as i32).sum();
        }
        for (p, pair) in self.sum_pairs.iter_mut().enumerate() {
            let half = |s: i32| s as i16 as u16 as u32;
            *pair = (half(self.sums[2 * p]) | half(self.sums[2 * p + 1]) << 16) as i32;
        }
    }
}

impl Default for ActBlock {
    fn default() -> Self {
        Self {
            qs: [0; QK],
            sums: [0; 8],
            sum_pairs: [0; 4],
            d: [0.0; 8],
        }
    }
}

/// A `[n, k]` weight in one format's tiles: `tiles[group * k / 256 + block]`.
struct Packed<F: TileFormat> {
    n: usize,
    k: usize,
    tiles: Vec<F::Tile>,
}

impl<F: TileFormat> Packed<F>
where
    F::Tile: Send + Sync,
{
    fn new(q: &QTensor) -> Option<Self> {
        let (n, k) = q.shape().dims2().ok()?;
        if q.dtype() != F::DTYPE || n % ROWS != 0 || k % QK != 0 || !supported() {
            return None;
        }
        let data = q.data().ok()?;
        let blocks_per_row = k / QK;
        if data.len() != n * blocks_per_row * F::FILE_BYTES {
            return None;
        }
        let count = n / ROWS * blocks_per_row;
        let mut tiles: Vec<F::Tile> = Vec::with_capacity(count);
        // SAFETY: a tile is plain integers, for which all-zero bytes are a valid value.
        unsafe {
            tiles.as_mut_ptr().write_bytes(0, count);
            tiles.set_len(count);
        }
        fill_parts(&mut tiles, |range, out| {
            for (i, tile) in range.zip(out) {
                let (group, block) = (i / blocks_per_row, i % blocks_per_row);
                for r in 0..ROWS {
                    let at = ((group * ROWS + r) * blocks_per_row + block) * F::FILE_BYTES;
                    F::pack(&data[at..at + F::FILE_BYTES], r, tile);
                }
            }
        });
        Some(Self { n, k, tiles })
    }
}

/// What [`PackedWeight`] needs of a packed weight, whatever its format.
trait Kernel: Send + Sync {
    fn name(&self) -> &'static str;
    fn shape(&self) -> (usize, usize);
    fn bytes(&self) -> usize;
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32>;
}

impl<F: TileFormat> Kernel for Packed<F>
where
    F::Tile: Send + Sync,
{
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn bytes(&self) -> usize {
        self.tiles.len() * std::mem::size_of::<F::Tile>()
    }

    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "activations do not match the weight");
        let acts = quantize_activations(x, F::ACT_GROUP);
        let mut y = vec![0f32; m * n];
        let blocks_per_row = k / QK;
        let out = SendPtr(y.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(n / ROWS, |groups| {
            for group in groups {
                let tiles = &self.tiles[group * blocks_per_row..(group + 1) * blocks_per_row];
                let mut row = 0;
                while row < m {
                    let take = (m - row).min(ROWS_PER_PASS);
                    let acts = &acts[row * blocks_per_row..(row + take) * blocks_per_row];
                    // SAFETY: `supported()` held when the tiles were made; each group writes
                    // its own 16 columns of `y`.
                    unsafe {
                        let dst = out.get().add(row * n + group * ROWS);
                        match take {
                            1 => F::group_rows::<1>(tiles, acts, dst, n),
                            2 => F::group_rows::<2>(tiles, acts, dst, n),
                            3 => F::group_rows::<3>(tiles, acts, dst, n),
                            _ => F::group_rows::<4>(tiles, acts, dst, n),
                        }
                    }
                    row += take;
                }
            }
        });
        y
    }
}

/// A Q4_K or Q8_0 weight laid out for the kernels.
pub struct PackedWeight(Box<dyn Kernel>);

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, n) = self.shape();
        write!(f, "PackedWeight[{}; {n}, {k}]", self.0.name())
    }
}

impl PackedWeight {
    /// The tiles of a CPU Q4_K or Q8_0 tensor, or `None` where no kernel applies (another block
    /// type, rows not a multiple of 16, or a CPU without AVX-512 VNNI).
    pub fn new(q: &QTensor) -> Option<Self> {
        let kernel: Box<dyn Kernel> = match q.dtype() {
            GgmlDType::Q4K => Box::new(Packed::<q4k::Q4k>::new(q)?),
            GgmlDType::Q8_0 => Box::new(Packed::<q8_0::Q8_0>::new(q)?),
            _ => return None,
        };
        Some(Self(kernel))
    }

    /// `(k, n)`: the input and output widths.
    pub fn shape(&self) -> (usize, usize) {
        self.0.shape()
    }

    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }

    /// `x W^T` for `x` of `m` rows of `k` values (row-major): `m × n` values.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.0.matmul(x, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Each kernel against candle's dequantized weight in f32, for decode (1 row) and prefill
    /// rows that do not fill a pass: the only differences are the 8-bit activations.
    fn matches_the_dequantized_matmul(dtype: GgmlDType) {
        let (n, k) = (48, 512);
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let Some(packed) = PackedWeight::new(&q) else {
            // Elsewhere candle's kernels compute: the only thing to check is that ours stays out.
            assert!(
                !supported(),
                "a {dtype:?} [48, 512] weight must pack on an AVX-512 VNNI CPU"
            );
            eprintln!("this CPU has no AVX-512 VNNI: candle's kernels are used, not ours");
            return;
        };
        assert_eq!(packed.shape(), (k, n));
        let reference_w = q.dequantize(&dev).unwrap();
        for m in [1, 3, 6] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| (i * 104_729 % 997) as f32 / 498.5 - 1.0)
                .collect();
            let xs = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
            let reference = xs
                .matmul(&reference_w.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap();
            let reference: Vec<f32> = reference.to_vec1().unwrap();
            let got = packed.matmul(&x, m);
            let scale = reference.iter().fold(0f32, |a, b| a.max(b.abs()));
            for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
                assert!(
                    (g - r).abs() <= 0.01 * scale,
                    "{dtype:?} m={m} [{i}]: {g} vs {r} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn q4k_matches_the_dequantized_matmul() {
        matches_the_dequantized_matmul(GgmlDType::Q4K);
    }

    #[test]
    fn q8_0_matches_the_dequantized_matmul() {
        matches_the_dequantized_matmul(GgmlDType::Q8_0);
    }

    /// Other block types, and shapes the tiles do not cover, stay with candle's kernels.
    #[test]
    fn leaves_other_weights_to_candle() {
        let dev = Device::Cpu;
        let w = Tensor::ones((48, 512), candle_core::DType::F32, &dev).unwrap();
        let q6 = QTensor::quantize(&w, GgmlDType::Q6K).unwrap();
        assert!(PackedWeight::new(&q6).is_none());
        let odd = Tensor::ones((40, 512), candle_core::DType::F32, &dev).unwrap();
        let q8 = QTensor::quantize(&odd, GgmlDType::Q8_0).unwrap();
        assert!(PackedWeight::new(&q8).is_none());
    }
}
