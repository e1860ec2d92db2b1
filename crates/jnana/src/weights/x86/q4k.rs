//! Q4_K tiles. candle's own x86 repack widens Q4_K's 6-bit scales to f32 (6 bits per weight
//! instead of 4.5), which made our decode read a third more than llama.cpp's on the same file;
//! here the scales stay bytes (4.6 bits per weight).
//!
//! On a CPU with two vector ports, decode of these tiles is bound by port 0, which alone runs
//! `vpdpbusd`, shifts and 32-bit multiplies: the kernel keeps the latter two out of the inner
//! loop. High nibbles are multiplied in place (16× too large, undone by one shift per subblock)
//! and the mins meet the activation sums in one `vpdpwssd` per two subblocks.

use super::{ActBlock, TileFormat, QK, ROWS};
use candle_core::quantized::GgmlDType;
use std::arch::x86_64::*;

/// One superblock of 16 weight rows.
#[repr(C, align(64))]
pub(super) struct Tile {
    /// `[subblock 8][quad 4][row 16][4 bytes]`: byte `b` of a row's quad `q` in subblock `s`
    /// holds value `32 s + 4 q + b` in its low nibble and value `32 s + 16 + 4 q + b` in its
    /// high nibble.
    qs: [u8; QK / 2 * ROWS],
    /// `[subblock][row]`, 6-bit.
    scales: [u8; 8 * ROWS],
    /// `[subblock pair 4][row 16][2]`, 6-bit: widened to 16 bits, one pair per 32-bit lane.
    mins: [u8; 8 * ROWS],
    d: [u16; ROWS],
    dmin: [u16; ROWS],
}

pub(super) struct Q4k;

impl TileFormat for Q4k {
    type Tile = Tile;
    const DTYPE: GgmlDType = GgmlDType::Q4K;
    const NAME: &'static str = "Q4_K";
    /// f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.
    const FILE_BYTES: usize = 144;
    /// One scale per 256 activations: the weight's 6-bit subblock scales multiply integer dots.
    const ACT_GROUP: usize = QK;

    fn pack(block: &[u8], r: usize, tile: &mut Tile) {
        tile.d[r] = u16::from_le_bytes([block[0], block[1]]);
        tile.dmin[r] = u16::from_le_bytes([block[2], block[3]]);
        let (scales, qs) = (&block[4..16], &block[16..]);
        for j in 0..8 {
            let (sc, mn) = super::super::q4k_scale_min(j, scales);
            tile.scales[j * ROWS + r] = sc;
            tile.mins[(j / 2 * ROWS + r) * 2 + j % 2] = mn;
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

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group_rows<const M: usize>(
        tiles: &[Tile],
        acts: &[ActBlock],
        dst: *mut f32,
        stride: usize,
    ) {
        let blocks = tiles.len();
        let (low, high) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0xf0u8 as i8));
        let mut acc = [_mm512_setzero_ps(); M];
        for (b, tile) in tiles.iter().enumerate() {
            let act: [&ActBlock; M] = std::array::from_fn(|r| &acts[r * blocks + b]);
            // Σ_j scale_j · (q · a)_j and Σ_j min_j · Σa_j, exact in 32-bit integers.
            let mut dots = [_mm512_setzero_si512(); M];
            for j in 0..8 {
                let mut lo = [_mm512_setzero_si512(); M];
                let mut hi = [_mm512_setzero_si512(); M];
                for quad in 0..4 {
                    let w = _mm512_load_si512(tile.qs.as_ptr().add((j * 4 + quad) * 64).cast());
                    let (w_lo, w_hi) = (_mm512_and_si512(w, low), _mm512_and_si512(w, high));
                    for r in 0..M {
                        let a = act[r].qs.as_ptr().add(32 * j + 4 * quad);
                        let a_lo = _mm512_set1_epi32(a.cast::<i32>().read_unaligned());
                        let a_hi = _mm512_set1_epi32(a.add(16).cast::<i32>().read_unaligned());
                        lo[r] = _mm512_dpbusd_epi32(lo[r], w_lo, a_lo);
                        hi[r] = _mm512_dpbusd_epi32(hi[r], w_hi, a_hi);
                    }
                }
                let scale =
                    _mm512_cvtepu8_epi32(_mm_load_si128(tile.scales.as_ptr().add(j * ROWS).cast()));
                for r in 0..M {
                    // `hi` is exactly 16 times the high nibbles' dot.
                    let dot = _mm512_add_epi32(lo[r], _mm512_srai_epi32::<4>(hi[r]));
                    dots[r] = _mm512_add_epi32(dots[r], _mm512_mullo_epi32(dot, scale));
                }
            }
            let mut offsets = [_mm512_setzero_si512(); M];
            for pair in 0..4 {
                let mins = _mm512_cvtepu8_epi16(_mm256_loadu_si256(
                    tile.mins.as_ptr().add(pair * 2 * ROWS).cast(),
                ));
                for r in 0..M {
                    let sums = _mm512_set1_epi32(act[r].sum_pairs[pair]);
                    offsets[r] = _mm512_dpwssd_epi32(offsets[r], mins, sums);
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(tile.d.as_ptr().cast()));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(tile.dmin.as_ptr().cast()));
            for r in 0..M {
                let ad = _mm512_set1_ps(act[r].d[0]);
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
}
