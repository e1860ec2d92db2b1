//! The kernels in wasm32 with SIMD128: the browser's CPU path.
//!
//! One 16-byte load holds 4 values of 4 weight rows (the tiles' interleave), so each 32-bit
//! lane is one row and products of 8-bit integers (`extmul`) add up per row without a shuffle
//! until a block ends. Sums stay in 16 bits while they fit (Q4_K: 8 products of a nibble and an
//! activation per lane per subblock), which halves the widening work. One activation row at a
//! time: a 16-row group's tiles (40 KiB for Phi-2's widest input) stay in cache while the rows
//! of a prompt pass over them.

use super::{q4k, q8_0, ActBlock, ROWS};
use std::arch::wasm32::*;

/// Rows that share one 128-bit register of 32-bit lanes.
const LANES: usize = 4;

pub(super) fn supported() -> bool {
    cfg!(target_feature = "simd128")
}

/// # Safety
/// None beyond [`supported`]; `unsafe` to match the x86 kernels'.
pub(super) unsafe fn quantize(block: &mut ActBlock, v: &[f32], group: usize) {
    block.quantize_values(v, group)
}

/// Four f16 as f32: the magnitude's bits moved into f32's place, then scaled by 2^112 (the
/// bias difference), which is exact for normal and subnormal halves alike. Weights hold no
/// infinities or NaNs.
#[inline(always)]
unsafe fn f16x4(p: *const u16) -> v128 {
    let h = u32x4_load_extend_u16x4(p);
    let magnitude = i32x4_shl(v128_and(h, i32x4_splat(0x7fff)), 13);
    let sign = i32x4_shl(v128_and(h, i32x4_splat(0x8000)), 16);
    v128_or(
        f32x4_mul(magnitude, f32x4_splat(f32::from_bits(0x7780_0000))),
        sign,
    )
}

/// `[r0, r0, r1, r1]` and `[r2, r2, r3, r3]` (two partial sums per row) as `[r0, r1, r2, r3]`.
#[inline(always)]
fn fold_rows(front: v128, back: v128) -> v128 {
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(front, back),
        i32x4_shuffle::<1, 3, 5, 7>(front, back),
    )
}

/// # Safety
/// `acts` holds `M` rows of `tiles.len()` blocks; `dst` holds `M` rows of `stride` values from
/// 16 columns on.
pub(super) unsafe fn q4k_rows<const M: usize>(
    tiles: &[q4k::Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
) {
    #[cfg(feature = "relaxed-simd")]
    return q4k_rows_relaxed::<M>(tiles, acts, dst, stride);
    #[cfg(not(feature = "relaxed-simd"))]
    return q4k_rows_simd128::<M>(tiles, acts, dst, stride);
}

/// The Q4_K kernels' shared frame: `scaled_dots(tile, activations, row)` gives
/// Σ_j scale_j · (q · a)_j for rows `row..row + 4` of a tile, exact in 32-bit integers; the
/// mins, the f16 scales and the sums over blocks are the same whichever instructions made it.
#[inline(always)]
unsafe fn q4k_rows_by<const M: usize>(
    tiles: &[q4k::Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
    scaled_dots: impl Fn(&q4k::Tile, *const i8, usize) -> v128,
) {
    let blocks = tiles.len();
    for r in 0..M {
        let mut acc = [f32x4_splat(0.0); ROWS / LANES];
        for (b, tile) in tiles.iter().enumerate() {
            let act = &acts[r * blocks + b];
            let ad = f32x4_splat(act.d[0]);
            for (g, acc) in acc.iter_mut().enumerate() {
                let row = LANES * g;
                let dots = scaled_dots(tile, act.qs.as_ptr(), row);
                // Σ_j min_j · Σa_j: each pair of subblocks' mins against the pair of sums.
                let mut offsets = i32x4_splat(0);
                for pair in 0..4 {
                    let mins =
                        v128_load64_zero(tile.mins.as_ptr().add((pair * ROWS + row) * 2).cast());
                    let sums = i32x4_splat(act.sum_pairs[pair]);
                    offsets =
                        i32x4_add(offsets, i32x4_dot_i16x8(u16x8_extend_low_u8x16(mins), sums));
                }
                let d = f32x4_mul(f16x4(tile.d.as_ptr().add(row)), ad);
                let dmin = f32x4_mul(f16x4(tile.dmin.as_ptr().add(row)), ad);
                *acc = f32x4_add(*acc, f32x4_mul(d, f32x4_convert_i32x4(dots)));
                *acc = f32x4_sub(*acc, f32x4_mul(dmin, f32x4_convert_i32x4(offsets)));
            }
        }
        for (g, a) in acc.iter().enumerate() {
            v128_store(dst.add(r * stride + LANES * g).cast(), *a);
        }
    }
}

/// The 16 bytes holding values `4 quad..4 quad + 4` (low nibbles) and `16 + 4 quad..` (high
/// nibbles) of subblock `j` for rows `row..row + 4`.
#[inline(always)]
unsafe fn q4k_quad(tile: &q4k::Tile, j: usize, quad: usize, row: usize) -> v128 {
    v128_load(
        tile.qs
            .as_ptr()
            .add(((j * 4 + quad) * ROWS + row) * 4)
            .cast(),
    )
}

/// Q4_K on relaxed SIMD's 8-bit dot product (`vpdpbusd`, or `pmaddubsw` and `pmaddwd`, on x86;
/// `sdot` on Arm): the nibbles are its 7-bit operand, so every product is exact and the result
/// does not depend on the machine.
///
/// # Safety
/// As [`q4k_rows`], in a build for browsers with relaxed SIMD.
#[cfg(feature = "relaxed-simd")]
#[target_feature(enable = "simd128,relaxed-simd")]
unsafe fn q4k_rows_relaxed<const M: usize>(
    tiles: &[q4k::Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
) {
    let low = u8x16_splat(0x0f);
    // A group's 4 scale bytes as 16-bit lanes, one row's scale over that row's two lanes
    // (index 16 reads as zero, the high bytes).
    let spread = i8x16(0, 16, 0, 16, 1, 16, 1, 16, 2, 16, 2, 16, 3, 16, 3, 16);
    q4k_rows_by::<M>(tiles, acts, dst, stride, |tile, a, row| {
        let mut dots = i32x4_splat(0);
        for j in 0..8 {
            // Two 16-bit lanes per row, each the sum of 8 pairs of products: at most
            // 8 · 2 · 15 · 127, so neither the pairs saturate nor the sums wrap.
            let mut pairs = i16x8_splat(0);
            for quad in 0..4 {
                let w = q4k_quad(tile, j, quad, row);
                let a_lo = v128_load32_splat(a.add(32 * j + 4 * quad).cast());
                let a_hi = v128_load32_splat(a.add(32 * j + 16 + 4 * quad).cast());
                let lo = i16x8_relaxed_dot_i8x16_i7x16(a_lo, v128_and(w, low));
                let hi = i16x8_relaxed_dot_i8x16_i7x16(a_hi, u8x16_shr(w, 4));
                pairs = i16x8_add(pairs, i16x8_add(lo, hi));
            }
            // The scale multiplies and the row's two lanes add in one step.
            let scales = v128_load32_zero(tile.scales.as_ptr().add(j * ROWS + row).cast());
            dots = i32x4_add(dots, i32x4_dot_i16x8(pairs, i8x16_swizzle(scales, spread)));
        }
        dots
    })
}

/// Q4_K on plain SIMD128 (`extmul`), for browsers without relaxed SIMD.
///
/// # Safety
/// As [`q4k_rows`].
#[cfg_attr(feature = "relaxed-simd", allow(dead_code))]
#[target_feature(enable = "simd128")]
unsafe fn q4k_rows_simd128<const M: usize>(
    tiles: &[q4k::Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
) {
    let low = u8x16_splat(0x0f);
    // A group's 4 scale bytes as 16-bit lanes: each row's scale over that row's 4 lanes
    // (index 16 reads as zero, the high bytes).
    let front_scales = i8x16(0, 16, 0, 16, 0, 16, 0, 16, 1, 16, 1, 16, 1, 16, 1, 16);
    let back_scales = i8x16(2, 16, 2, 16, 2, 16, 2, 16, 3, 16, 3, 16, 3, 16, 3, 16);
    q4k_rows_by::<M>(tiles, acts, dst, stride, |tile, a, row| {
        // Two lanes per row: rows 0–1 in front, 2–3 in back.
        let (mut front, mut back) = (i32x4_splat(0), i32x4_splat(0));
        for j in 0..8 {
            // At most 8 · 15 · 127 per 16-bit lane.
            let (mut p_front, mut p_back) = (i16x8_splat(0), i16x8_splat(0));
            for quad in 0..4 {
                let w = q4k_quad(tile, j, quad, row);
                let (w_lo, w_hi) = (v128_and(w, low), u8x16_shr(w, 4));
                let a_lo = v128_load32_splat(a.add(32 * j + 4 * quad).cast());
                let a_hi = v128_load32_splat(a.add(32 * j + 16 + 4 * quad).cast());
                let front_products = i16x8_add(
                    i16x8_extmul_low_i8x16(w_lo, a_lo),
                    i16x8_extmul_low_i8x16(w_hi, a_hi),
                );
                let back_products = i16x8_add(
                    i16x8_extmul_high_i8x16(w_lo, a_lo),
                    i16x8_extmul_high_i8x16(w_hi, a_hi),
                );
                p_front = i16x8_add(p_front, front_products);
                p_back = i16x8_add(p_back, back_products);
            }
            let scales = v128_load32_zero(tile.scales.as_ptr().add(j * ROWS + row).cast());
            let front_scaled = i32x4_dot_i16x8(p_front, i8x16_swizzle(scales, front_scales));
            let back_scaled = i32x4_dot_i16x8(p_back, i8x16_swizzle(scales, back_scales));
            front = i32x4_add(front, front_scaled);
            back = i32x4_add(back, back_scaled);
        }
        fold_rows(front, back)
    })
}

/// # Safety
/// As [`q4k_rows`].
#[target_feature(enable = "simd128")]
pub(super) unsafe fn q8_0_rows<const M: usize>(
    tiles: &[q8_0::Tile],
    acts: &[ActBlock],
    dst: *mut f32,
    stride: usize,
) {
    let blocks = tiles.len();
    for r in 0..M {
        let mut acc = [f32x4_splat(0.0); ROWS / LANES];
        for (b, tile) in tiles.iter().enumerate() {
            let act = &acts[r * blocks + b];
            for j in 0..8 {
                // Each quad's 4 activations as 16-bit lanes, twice over: shared by all 16 rows.
                let a: [v128; 8] = std::array::from_fn(|quad| {
                    i16x8_extend_low_i8x16(v128_load32_splat(
                        act.qs.as_ptr().add(32 * j + 4 * quad).cast(),
                    ))
                });
                // The weights are stored plus 128: Σ (w + 128) a, less 128 Σ a, is the signed dot.
                let bias = i32x4_splat(-128 * act.sums[j]);
                let scale = f32x4_splat(act.d[j]);
                for (g, acc) in acc.iter_mut().enumerate() {
                    let row = LANES * g;
                    let (mut front, mut back) = (i32x4_splat(0), i32x4_splat(0));
                    for (quad, a) in a.iter().enumerate() {
                        let w = v128_load(
                            tile.qs
                                .as_ptr()
                                .add(((j * 8 + quad) * ROWS + row) * 4)
                                .cast(),
                        );
                        front = i32x4_add(front, i32x4_dot_i16x8(u16x8_extend_low_u8x16(w), *a));
                        back = i32x4_add(back, i32x4_dot_i16x8(u16x8_extend_high_u8x16(w), *a));
                    }
                    let dot = i32x4_add(fold_rows(front, back), bias);
                    let d = f32x4_mul(f16x4(tile.d.as_ptr().add(j * ROWS + row)), scale);
                    *acc = f32x4_add(*acc, f32x4_mul(d, f32x4_convert_i32x4(dot)));
                }
            }
        }
        for (g, a) in acc.iter().enumerate() {
            v128_store(dst.add(r * stride + LANES * g).cast(), *a);
        }
    }
}
