//! Block-quantized matmuls on our own CPU kernels: x86-64 with AVX-512 VNNI, and wasm32 with
//! SIMD128 (the browser's CPU path), for decode above all.
//!
//! Decode reads every weight once per token, so its speed is the bytes read. Each format here
//! lays a `[n, k]` weight out once, at load, in tiles of 16 rows × one 256-value block, the
//! values interleaved so that 4 values of each row sit side by side (one `vpdpbusd` lane on
//! x86, one 32-bit lane of a SIMD128 register in wasm) and the scales kept no wider than in the
//! file. The tiles hold the file's blocks exactly ([`PackedWeight::to_qtensor`] gives them
//! back), so they replace the weight rather than copy it. Activations are quantized to 8 bits,
//! as llama.cpp and candle do. The formats differ only in their tile and its inner loop
//! ([`TileFormat`], one per architecture); the packing and the spread of tiles over the threads
//! are shared.

mod partner;
mod q4k;
mod q8_0;
#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "wasm32")]
use wasm as arch;
#[cfg(target_arch = "x86_64")]
use x86 as arch;

pub use partner::{set_partner, Partner, PartnerHost, TileShape};

use crate::parallel::{fill_parts, SendPtr};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::ops::Range;

/// Weight rows in one tile: one AVX-512 register of 32-bit lanes.
const ROWS: usize = 16;
/// Values of one row in one tile.
const QK: usize = 256;
/// Activation rows that share one pass over a weight tile (prefill).
const ROWS_PER_PASS: usize = 4;

/// Whether this CPU runs the kernels: AVX-512 VNNI on x86-64, SIMD128 in wasm (the app and its
/// tests are built with it), and nowhere else.
pub fn supported() -> bool {
    arch::supported()
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

    /// The inverse of [`Self::pack`]: row `r`'s 256 values as the file has them.
    fn unpack(tile: &Self::Tile, r: usize, file: &mut [u8]);

    /// Adds up `M` activation rows against one 16-row group: `dst[r * stride + c]`. Each
    /// architecture's kernel (`x86.rs`, `wasm.rs`).
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
            unsafe { arch::quantize(block, values, group) };
        }
    });
    blocks
}

impl ActBlock {
    /// Rounds to nearest, ties to even: one instruction on both architectures (`round` is a
    /// libm call in wasm).
    #[inline(always)]
    fn quantize_values(&mut self, v: &[f32], group: usize) {
        for (g, values) in v.chunks_exact(group).enumerate() {
            let amax = values.iter().fold(0f32, |a, &b| a.max(b.abs()));
            let per = group / 32;
            self.d[g * per..(g + 1) * per].fill(amax / 127.0);
            if amax > 0.0 {
                let inv = 127.0 / amax;
                let qs = &mut self.qs[g * group..(g + 1) * group];
                for (q, &f) in qs.iter_mut().zip(values) {
                    *q = (f * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
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
    /// `count` all-zero tiles.
    fn zeroed(count: usize) -> Vec<F::Tile> {
        let mut tiles: Vec<F::Tile> = Vec::with_capacity(count);
        // SAFETY: a tile is plain integers, for which all-zero bytes are a valid value.
        unsafe {
            tiles.as_mut_ptr().write_bytes(0, count);
            tiles.set_len(count);
        }
        tiles
    }

    /// 16-row groups `groups` of `q` (all of them, or this worker's share).
    fn new(q: &QTensor, groups: Range<usize>) -> Option<Self> {
        let (n, k) = q.shape().dims2().ok()?;
        if q.dtype() != F::DTYPE || !n.is_multiple_of(ROWS) || !k.is_multiple_of(QK) || !supported()
        {
            return None;
        }
        let data = q.data().ok()?;
        let blocks_per_row = k / QK;
        if data.len() != n * blocks_per_row * F::FILE_BYTES || groups.end > n / ROWS {
            return None;
        }
        let first = groups.start;
        let mut tiles = Self::zeroed(groups.len() * blocks_per_row);
        fill_parts(&mut tiles, |range, out| {
            for (i, tile) in range.zip(out) {
                let (group, block) = (first + i / blocks_per_row, i % blocks_per_row);
                for r in 0..ROWS {
                    let at = ((group * ROWS + r) * blocks_per_row + block) * F::FILE_BYTES;
                    F::pack(&data[at..at + F::FILE_BYTES], r, tile);
                }
            }
        });
        Some(Self {
            n: groups.len() * ROWS,
            k,
            tiles,
        })
    }

    /// All-zero tiles for a `[n, k]` weight, to be filled with another worker's
    /// ([`Kernel::tile_bytes_mut`]).
    fn zeroed_weight(n: usize, k: usize) -> Option<Self> {
        if !n.is_multiple_of(ROWS) || !k.is_multiple_of(QK) {
            return None;
        }
        Some(Self {
            n,
            k,
            tiles: Self::zeroed(n / ROWS * (k / QK)),
        })
    }

    /// The weight's bytes as the file has them.
    fn file_bytes(&self) -> Vec<u8> {
        let blocks_per_row = self.k / QK;
        let mut data = vec![0u8; self.n * blocks_per_row * F::FILE_BYTES];
        for (i, tile) in self.tiles.iter().enumerate() {
            let (group, block) = (i / blocks_per_row, i % blocks_per_row);
            for r in 0..ROWS {
                let at = ((group * ROWS + r) * blocks_per_row + block) * F::FILE_BYTES;
                F::unpack(tile, r, &mut data[at..at + F::FILE_BYTES]);
            }
        }
        data
    }
}

/// What [`PackedWeight`] needs of a packed weight, whatever its format.
trait Kernel: Send + Sync {
    fn name(&self) -> &'static str;
    fn dtype(&self) -> GgmlDType;
    fn shape(&self) -> (usize, usize);
    fn bytes(&self) -> usize;
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32>;
    fn to_qtensor(&self) -> candle_core::Result<QTensor>;
    /// The tiles as bytes (to send to another worker).
    fn tile_bytes(&self) -> &[u8];
    /// The tiles as bytes, to be written (as another worker sent them).
    fn tile_bytes_mut(&mut self) -> &mut [u8];
}

impl<F: TileFormat> Kernel for Packed<F>
where
    F::Tile: Send + Sync,
{
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn dtype(&self) -> GgmlDType {
        F::DTYPE
    }

    fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn bytes(&self) -> usize {
        self.tiles.len() * size_of::<F::Tile>()
    }

    fn tile_bytes(&self) -> &[u8] {
        // SAFETY: tiles are plain integers, without padding (64-byte multiples).
        unsafe { std::slice::from_raw_parts(self.tiles.as_ptr().cast(), self.bytes()) }
    }

    fn tile_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.bytes();
        // SAFETY: as above, and any bytes are a valid tile.
        unsafe { std::slice::from_raw_parts_mut(self.tiles.as_mut_ptr().cast(), len) }
    }

    fn to_qtensor(&self) -> candle_core::Result<QTensor> {
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            F::DTYPE,
            &self.file_bytes(),
            vec![self.n, self.k],
            &Device::Cpu,
        )
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

/// A Q4_K or Q8_0 weight laid out for the kernels. Where a [`Partner`] is set (the browser's
/// second CPU worker), it holds the second half of the rows and multiplies them while this
/// worker does the first half.
pub struct PackedWeight {
    kernel: Box<dyn Kernel>,
    remote: Option<Remote>,
}

/// The rows a partner holds: the last `n` of the weight, under `id`.
struct Remote {
    id: u64,
    n: usize,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, n) = self.shape();
        let shared = self.remote.as_ref().map_or(0, |r| r.n);
        write!(
            f,
            "PackedWeight[{}; {n}, {k}; {shared} rows with a partner]",
            self.kernel.name()
        )
    }
}

/// The kernel for `q`'s 16-row groups `groups`, where one applies.
fn pack(q: &QTensor, groups: Range<usize>) -> Option<Box<dyn Kernel>> {
    Some(match q.dtype() {
        GgmlDType::Q4K => Box::new(Packed::<q4k::Q4k>::new(q, groups)?),
        GgmlDType::Q8_0 => Box::new(Packed::<q8_0::Q8_0>::new(q, groups)?),
        _ => return None,
    })
}

/// An all-zero `[n, k]` kernel of `dtype`, for another worker's tiles.
fn zeroed_kernel(dtype: GgmlDType, n: usize, k: usize) -> Option<Box<dyn Kernel>> {
    Some(match dtype {
        GgmlDType::Q4K => Box::new(Packed::<q4k::Q4k>::zeroed_weight(n, k)?),
        GgmlDType::Q8_0 => Box::new(Packed::<q8_0::Q8_0>::zeroed_weight(n, k)?),
        _ => return None,
    })
}

impl PackedWeight {
    /// The tiles of a CPU Q4_K or Q8_0 tensor, or `None` where no kernel applies (another block
    /// type, rows not a multiple of 16, or a CPU without the kernels' features). With a
    /// partner set, the partner takes the second half of the rows.
    pub fn new(q: &QTensor) -> Option<Self> {
        let (n, k) = q.shape().dims2().ok()?;
        let groups = n / ROWS;
        let keep = groups.div_ceil(2);
        if let Some(partner) = partner::current().filter(|_| keep < groups) {
            // Their share is packed and sent first, so that only one share is here at a time.
            let theirs = pack(q, keep..groups)?;
            let id = partner::next_id();
            let n_theirs = (groups - keep) * ROWS;
            // A partner that cannot take them (out of memory) leaves them all here.
            if partner
                .adopt(id, q.dtype(), n_theirs, k, theirs.tile_bytes())
                .is_ok()
            {
                drop(theirs);
                return Some(Self {
                    kernel: pack(q, 0..keep)?,
                    remote: Some(Remote { id, n: n_theirs }),
                });
            }
        }
        Some(Self {
            kernel: pack(q, 0..groups)?,
            remote: None,
        })
    }

    /// `(k, n)`: the input and output widths.
    pub fn shape(&self) -> (usize, usize) {
        let (k, n) = self.kernel.shape();
        (k, n + self.remote.as_ref().map_or(0, |r| r.n))
    }

    /// Bytes of the tiles this worker holds.
    pub fn bytes(&self) -> usize {
        self.kernel.bytes()
    }

    pub fn dtype(&self) -> GgmlDType {
        self.kernel.dtype()
    }

    /// `x W^T` for `x` of `m` rows of `k` values (row-major): `m × n` values.
    pub fn matmul(&self, x: &[f32], m: usize) -> candle_core::Result<Vec<f32>> {
        let Some(remote) = &self.remote else {
            return Ok(self.kernel.matmul(x, m));
        };
        let partner = partner::current().ok_or_else(|| {
            candle_core::Error::Msg("the CPU worker holding half of the weights has stopped".into())
        })?;
        let failed = |e: String| candle_core::Error::Msg(format!("the second CPU worker: {e}"));
        partner.start(remote.id, x, m).map_err(failed)?;
        let mine = self.kernel.matmul(x, m);
        let mut theirs = vec![0f32; m * remote.n];
        partner.finish(&mut theirs).map_err(failed)?;
        let (n_mine, n) = (self.kernel.shape().1, self.shape().1);
        let mut y = Vec::with_capacity(m * n);
        for (a, b) in mine.chunks_exact(n_mine).zip(theirs.chunks_exact(remote.n)) {
            y.extend_from_slice(a);
            y.extend_from_slice(b);
        }
        Ok(y)
    }

    /// The weight as candle's tensor again, its blocks byte for byte as they were packed (for
    /// the rare reader of the raw weight once it is packed: a LoRA merge, a conversion).
    pub fn to_qtensor(&self) -> candle_core::Result<QTensor> {
        if self.remote.is_some() {
            candle_core::bail!(
                "this weight is split with the second CPU worker: it cannot be read back whole"
            );
        }
        self.kernel.to_qtensor()
    }
}

impl Drop for PackedWeight {
    fn drop(&mut self) {
        if let (Some(remote), Some(partner)) = (&self.remote, partner::current()) {
            partner.release(remote.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::cpu_kernel_matches_dequantized;
    use candle_core::Tensor;

    fn takes_the_weight_exactly_where_supported(dtype: GgmlDType) {
        let took = cpu_kernel_matches_dequantized(dtype).unwrap();
        assert_eq!(
            took,
            supported(),
            "{dtype:?}: our kernel runs exactly where the CPU can"
        );
        if !took {
            eprintln!("this CPU has none of our kernels' features: candle's kernels are used");
        }
    }

    #[test]
    fn q4k_matches_the_dequantized_matmul() {
        takes_the_weight_exactly_where_supported(GgmlDType::Q4K);
    }

    #[test]
    fn q8_0_matches_the_dequantized_matmul() {
        takes_the_weight_exactly_where_supported(GgmlDType::Q8_0);
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
