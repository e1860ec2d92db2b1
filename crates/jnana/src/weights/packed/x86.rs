//! The kernels on x86-64 with AVX-512 VNNI.
//!
//! On a CPU with two vector ports, Q4_K decode is bound by port 0, which alone runs `vpdpbusd`,
//! shifts and 32-bit multiplies: the kernel keeps the latter two out of the inner loop. High
//! nibbles are multiplied in place (16× too large, undone by one shift per subblock) and the
//! mins meet the activation sums in one `vpdpwssd` per two subblocks.

use super::{q4k, q8_0, ActBlock, ROWS};
use std::arch::x86_64::*;

pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// With the kernels' features on, so that rounding and the sums are vector instructions rather
/// than a libm call per value.
///
/// # Safety
/// The CPU is [`supported`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn quantize(block: &mut ActBlock, v: &[f32], group: usize) {
    block.quantize_values(v, group)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn q4k_rows<const M: usize>(
    tiles: &[q4k::Tile],
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

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn q8_0_rows<const M: usize>(
    tiles: &[q8_0::Tile],
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
