//! Q8_0 tiles. candle's Q8_0 kernel takes one row at a time, so prefill reads every weight once
//! per token; here up to four tokens share one read of a tile, at the file's 8.5 bits per weight.

use super::{ActBlock, TileFormat, QK, ROWS};
use candle_core::quantized::GgmlDType;
use std::arch::x86_64::*;

/// Bytes of one Q8_0 block in the file: f16 d, then 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// 256 values of 16 weight rows.
#[repr(C, align(64))]
pub(super) struct Tile {
    /// `[block 8][quad 8][row 16][4 bytes]`: byte `b` of a row's quad `q` in block `j` is value
    /// `32 j + 4 q + b` plus 128, as `vpdpbusd` takes its first operand unsigned.
    qs: [u8; QK * ROWS],
    /// `[block][row]`, f16.
    d: [u16; 8 * ROWS],
}

pub(super) struct Q8_0;

impl TileFormat for Q8_0 {
    type Tile = Tile;
    const DTYPE: GgmlDType = GgmlDType::Q8_0;
    const NAME: &'static str = "Q8_0";
    const FILE_BYTES: usize = 8 * BLOCK_BYTES;
    const ACT_GROUP: usize = 32;

    fn pack(file: &[u8], r: usize, tile: &mut Tile) {
        for (j, block) in file.chunks_exact(BLOCK_BYTES).enumerate() {
            tile.d[j * ROWS + r] = u16::from_le_bytes([block[0], block[1]]);
            for (v, &q) in block[2..].iter().enumerate() {
                let (quad, b) = (v / 4, v % 4);
                tile.qs[((j * 8 + quad) * ROWS + r) * 4 + b] = q ^ 0x80;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group_rows<const M: usize>(
        tiles: &[Tile],
        acts: &[ActBlock],
        dst: *mut f32,
        stride: usize,
    ) {
        let blocks = tiles.len();
        let mut acc = [_mm512_setzero_ps(); M];
        for (b, tile) in tiles.iter().enumerate() {
            let act: [&ActBlock; M] = std::array::from_fn(|r| &acts[r * blocks + b]);
            for j in 0..8 {
                // Σ (w + 128) a, less 128 Σ a, is the signed dot, exact in 32-bit integers.
                let mut dot: [__m512i; M] =
                    std::array::from_fn(|r| _mm512_set1_epi32(-128 * act[r].sums[j]));
                for quad in 0..8 {
                    let w = _mm512_load_si512(tile.qs.as_ptr().add((j * 8 + quad) * 64).cast());
                    for r in 0..M {
                        let a = act[r].qs.as_ptr().add(32 * j + 4 * quad);
                        let a = _mm512_set1_epi32(a.cast::<i32>().read_unaligned());
                        dot[r] = _mm512_dpbusd_epi32(dot[r], w, a);
                    }
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(tile.d.as_ptr().add(j * ROWS).cast()));
                for r in 0..M {
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(act[r].d[j]));
                    acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot[r]), acc[r]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.add(r * stride), *a);
        }
    }
}
