//! Q8_0 tiles. candle's Q8_0 kernel takes one row at a time, so prefill reads every weight once
//! per token; here up to four tokens share one read of a tile, at the file's 8.5 bits per weight.

use super::{arch, ActBlock, TileFormat, QK, ROWS};
use candle_core::quantized::GgmlDType;

/// Bytes of one Q8_0 block in the file: f16 d, then 32 signed bytes.
pub(super) const BLOCK_BYTES: usize = 34;

/// 256 values of 16 weight rows.
#[repr(C, align(64))]
pub(super) struct Tile {
    /// `[block 8][quad 8][row 16][4 bytes]`: byte `b` of a row's quad `q` in block `j` is value
    /// `32 j + 4 q + b` plus 128, as `vpdpbusd` takes its first operand unsigned.
    pub(super) qs: [u8; QK * ROWS],
    /// `[block][row]`, f16.
    pub(super) d: [u16; 8 * ROWS],
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

    fn unpack(tile: &Tile, r: usize, file: &mut [u8]) {
        for (j, block) in file.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            block[0..2].copy_from_slice(&tile.d[j * ROWS + r].to_le_bytes());
            for (v, q) in block[2..].iter_mut().enumerate() {
                let (quad, b) = (v / 4, v % 4);
                *q = tile.qs[((j * 8 + quad) * ROWS + r) * 4 + b] ^ 0x80;
            }
        }
    }

    unsafe fn group_rows<const M: usize>(
        tiles: &[Tile],
        acts: &[ActBlock],
        dst: *mut f32,
        stride: usize,
    ) {
        arch::q8_0_rows::<M>(tiles, acts, dst, stride)
    }
}
