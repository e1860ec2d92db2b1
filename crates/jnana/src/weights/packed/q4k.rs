//! Q4_K tiles. candle's own x86 repack widens Q4_K's 6-bit scales to f32 (6 bits per weight
//! instead of 4.5), which made our decode read a third more than llama.cpp's on the same file;
//! here the scales stay bytes (4.6 bits per weight).

use super::{arch, ActBlock, TileFormat, QK, ROWS};
use candle_core::quantized::GgmlDType;

/// One superblock of 16 weight rows.
#[repr(C, align(64))]
pub(super) struct Tile {
    /// `[subblock 8][quad 4][row 16][4 bytes]`: byte `b` of a row's quad `q` in subblock `s`
    /// holds value `32 s + 4 q + b` in its low nibble and value `32 s + 16 + 4 q + b` in its
    /// high nibble.
    pub(super) qs: [u8; QK / 2 * ROWS],
    /// `[subblock][row]`, 6-bit.
    pub(super) scales: [u8; 8 * ROWS],
    /// `[subblock pair 4][row 16][2]`, 6-bit: widened to 16 bits, one pair per 32-bit lane.
    pub(super) mins: [u8; 8 * ROWS],
    pub(super) d: [u16; ROWS],
    pub(super) dmin: [u16; ROWS],
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

    fn unpack(tile: &Tile, r: usize, block: &mut [u8]) {
        block[0..2].copy_from_slice(&tile.d[r].to_le_bytes());
        block[2..4].copy_from_slice(&tile.dmin[r].to_le_bytes());
        let sc = |j: usize| tile.scales[j * ROWS + r];
        let mn = |j: usize| tile.mins[(j / 2 * ROWS + r) * 2 + j % 2];
        // ggml's 12 bytes: the inverse of `q4k_scale_min`.
        for j in 0..4 {
            block[4 + j] = sc(j) | (sc(j + 4) >> 4) << 6;
            block[8 + j] = mn(j) | (mn(j + 4) >> 4) << 6;
            block[12 + j] = (sc(j + 4) & 0x0f) | (mn(j + 4) & 0x0f) << 4;
        }
        let qs = &mut block[16..];
        for j in 0..8 {
            for quad in 0..4 {
                for b in 0..4 {
                    let byte = tile.qs[((j * 4 + quad) * ROWS + r) * 4 + b];
                    for (v, nibble) in [
                        (32 * j + 4 * quad + b, byte & 0x0f),
                        (32 * j + 16 + 4 * quad + b, byte >> 4),
                    ] {
                        let at = (v / 64) * 32 + v % 32;
                        if (v / 32).is_multiple_of(2) {
                            qs[at] = (qs[at] & 0xf0) | nibble;
                        } else {
                            qs[at] = (qs[at] & 0x0f) | nibble << 4;
                        }
                    }
                }
            }
        }
    }

    unsafe fn group_rows<const M: usize>(
        tiles: &[Tile],
        acts: &[ActBlock],
        dst: *mut f32,
        stride: usize,
    ) {
        arch::q4k_rows::<M>(tiles, acts, dst, stride)
    }
}
