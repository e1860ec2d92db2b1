//! Q4_K matmuls on x86-64 CPUs with AVX-512 VNNI, for decode above all.
//!
//! Decode reads every weight once per token, so its speed is the bytes read. candle's own x86
//! repack widens Q4_K's 6-bit scales to f32 (6 bits per weight instead of 4.5), which made our
//! decode read a third more than llama.cpp's on the same file. Here the weights are laid out
//! once in tiles of 16 rows × one 256-value superblock: the nibbles interleaved so that one
//! `vpdpbusd` multiplies 4 values of each of the 16 rows, and the scales kept as bytes
//! (4.6 bits per weight). Activations are quantized to 8 bits per 256-value block, as llama.cpp
//! and candle do.

use candle_core::quantized::{GgmlDType, QTensor};
use std::arch::x86_64::*;

const ROWS: usize = 16;
const QK: usize = 256;
/// Bytes of one Q4_K block in the file: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins,
/// 128 bytes of nibbles.
const BLOCK_BYTES: usize = 144;
/// Activation rows that share one pass over a weight tile (prefill).
const ROWS_PER_PASS: usize = 4;

/// One superblock of 16 weight rows.
#[repr(C, align(64))]
struct Tile {
    /// `[subblock 8][quad 4][row 16][4 bytes]`: byte `b` of a row's quad `q` in subblock `s`
    /// holds value `32 s + 4 q + b` in its low nibble and value `32 s + 16 + 4 q + b` in its
    /// high nibble.
    qs: [u8; QK / 2 * ROWS],
    /// `[subblock][row]`, 6-bit.
    scales: [u8; 8 * ROWS],
    mins: [u8; 8 * ROWS],
    d: [u16; ROWS],
    dmin: [u16; ROWS],
}

/// A Q4_K `[n, k]` weight in tiles: `tiles[group * k / 256 + superblock]`.
pub struct PackedQ4k {
    n: usize,
    k: usize,
    tiles: Vec<Tile>,
}

impl std::fmt::Debug for PackedQ4k {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4k[{}, {}]", self.n, self.k)
    }
}

/// Whether this CPU runs the kernel.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

impl PackedQ4k {
    /// The tiles of a CPU Q4_K tensor, or `None` where the kernel does not apply (another block
    /// type, rows not a multiple of 16, or a CPU without AVX-512 VNNI).
    pub fn new(q: &QTensor) -> Option<Self> {
        let (n, k) = q.shape().dims2().ok()?;
        if q.dtype() != GgmlDType::Q4K || n % ROWS != 0 || k % QK != 0 || !supported() {
            return None;
        }
        let data = q.data().ok()?;
        let blocks_per_row = k / QK;
        if data.len() != n * blocks_per_row * BLOCK_BYTES {
            return None;
        }
        let groups = n / ROWS;
        let mut tiles: Vec<Tile> = Vec::with_capacity(groups * blocks_per_row);
        // SAFETY: `Tile` is plain integers, for which all-zero bytes are a valid value.
        unsafe {
            tiles.as_mut_ptr().write_bytes(0, groups * blocks_per_row);
            tiles.set_len(groups * blocks_per_row);
        }
        let base = SendPtr(tiles.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(tiles.len(), |range| {
            // SAFETY: the pool hands out disjoint ranges of `tiles`.
            let out =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(range.start), range.len()) };
            for (i, tile) in range.zip(out) {
                let (group, block) = (i / blocks_per_row, i % blocks_per_row);
                for r in 0..ROWS {
                    let at = ((group * ROWS + r) * blocks_per_row + block) * BLOCK_BYTES;
                    pack_block(&data[at..at + BLOCK_BYTES], r, tile);
                }
            }
        });
        Some(Self { n, k, tiles })
    }

    /// `(k, n)`: the input and output widths.
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    pub fn bytes(&self) -> usize {
        self.tiles.len() * std::mem::size_of::<Tile>()
    }

    /// `x W^T` for `x` of `m` rows of `k` values (row-major): `m × n` values.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "activations do not match the weight");
        let acts = quantize_activations(x, m, k);
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
                            1 => group_rows::<1>(tiles, acts, dst, n),
                            2 => group_rows::<2>(tiles, acts, dst, n),
                            3 => group_rows::<3>(tiles, acts, dst, n),
                            _ => group_rows::<4>(tiles, acts, dst, n),
                        }
                    }
                    row += take;
                }
            }
        });
        y
    }
}

fn pack_block(block: &[u8], r: usize, tile: &mut Tile) {
    tile.d[r] = u16::from_le_bytes([block[0], block[1]]);
    tile.dmin[r] = u16::from_le_bytes([block[2], block[3]]);
    let (scales, qs) = (&block[4..16], &block[16..]);
    for j in 0..8 {
        let (sc, mn) = super::q4k_scale_min(j, scales);
        tile.scales[j * ROWS + r] = sc;
        tile.mins[j * ROWS + r] = mn;
    }
    // In the file, 32 bytes hold two subblocks: 2c in the low nibbles, 2c + 1 in the high ones.
    let value = |v: usize| {
        let byte = qs[(v / 64) * 32 + v % 32];
        if (v / 32).is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        }
    };
    for j in 0..8 {
        for quad in 0..4 {
            for b in 0..4 {
                let lo = value(32 * j + 4 * quad + b);
                let hi = value(32 * j + 16 + 4 * quad + b);
                tile.qs[((j * 4 + quad) * ROWS + r) * 4 + b] = lo | (hi << 4);
            }
        }
    }
}

/// 256 activations quantized to 8 bits: `x ≈ d · q`, with the sum of `q` over each 32.
#[repr(C, align(64))]
struct ActBlock {
    qs: [i8; QK],
    sums: [i32; 8],
    d: f32,
}

fn quantize_activations(x: &[f32], m: usize, k: usize) -> Vec<ActBlock> {
    x.chunks_exact(QK)
        .take(m * k / QK)
        .map(|v| {
            let amax = v.iter().fold(0f32, |a, &b| a.max(b.abs()));
            let mut block = ActBlock {
                qs: [0; QK],
                sums: [0; 8],
                d: amax / 127.0,
            };
            if amax > 0.0 {
                let inv = 127.0 / amax;
                for (q, &f) in block.qs.iter_mut().zip(v) {
                    *q = (f * inv).round().clamp(-127.0, 127.0) as i8;
                }
            }
            for (j, s) in block.sums.iter_mut().enumerate() {
                *s = block.qs[32 * j..32 * j + 32]
                    .iter()
                    .map(|&q| q as i32)
                    .sum();
            }
            block
        })
        .collect()
}

/// One 16-column group of `M` output rows: `dst[r * stride + c]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_rows<const M: usize>(
    tiles: &[Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
) {
    let blocks = tiles.len();
    let nibble = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); M];
    for (b, tile) in tiles.iter().enumerate() {
        let act: [&ActBlock; M] = std::array::from_fn(|r| &acts[r * blocks + b]);
        // Σ_j scale_j · (q · a)_j and Σ_j min_j · Σa_j, exact in 32-bit integers.
        let mut dots = [_mm512_setzero_si512(); M];
        let mut offsets = [_mm512_setzero_si512(); M];
        for j in 0..8 {
            let mut dot = [_mm512_setzero_si512(); M];
            for quad in 0..4 {
                let w = _mm512_load_si512(tile.qs.as_ptr().add((j * 4 + quad) * 64).cast());
                let lo = _mm512_and_si512(w, nibble);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nibble);
                for r in 0..M {
                    let a = act[r].qs.as_ptr().add(32 * j + 4 * quad);
                    let a_lo = _mm512_set1_epi32(a.cast::<i32>().read_unaligned());
                    let a_hi = _mm512_set1_epi32(a.add(16).cast::<i32>().read_unaligned());
                    dot[r] = _mm512_dpbusd_epi32(dot[r], lo, a_lo);
                    dot[r] = _mm512_dpbusd_epi32(dot[r], hi, a_hi);
                }
            }
            let scale =
                _mm512_cvtepu8_epi32(_mm_load_si128(tile.scales.as_ptr().add(j * ROWS).cast()));
            let min = _mm512_cvtepu8_epi32(_mm_load_si128(tile.mins.as_ptr().add(j * ROWS).cast()));
            for r in 0..M {
                dots[r] = _mm512_add_epi32(dots[r], _mm512_mullo_epi32(dot[r], scale));
                let sum = _mm512_set1_epi32(act[r].sums[j]);
                offsets[r] = _mm512_add_epi32(offsets[r], _mm512_mullo_epi32(min, sum));
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(tile.d.as_ptr().cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(tile.dmin.as_ptr().cast()));
        for r in 0..M {
            let ad = _mm512_set1_ps(act[r].d);
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, ad), _mm512_cvtepi32_ps(dots[r]), acc[r]);
            acc[r] = _mm512_fnmadd_ps(
                _mm512_mul_ps(dmin, ad),
                _mm512_cvtepi32_ps(offsets[r]),
                acc[r],
            );
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(dst.add(r * stride), *a);
    }
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand disjoint parts of one buffer to the pool's threads.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The kernel against candle's dequantized weight in f32, for decode (1 row) and prefill
    /// rows that do not fill a pass: the only differences are the 8-bit activations.
    #[test]
    fn matches_the_dequantized_matmul() {
        let (n, k) = (48, 512);
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let Some(packed) = PackedQ4k::new(&q) else {
            // Elsewhere candle's kernels compute: the only thing to check is that ours stays out.
            assert!(
                !supported(),
                "a Q4_K [48, 512] weight must pack on an AVX-512 VNNI CPU"
            );
            eprintln!("this CPU has no AVX-512 VNNI: candle's kernels are used, not ours");
            return;
        };
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
                    "m={m} [{i}]: {g} vs {r} (scale {scale})"
                );
            }
        }
    }
}
