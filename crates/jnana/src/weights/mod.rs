//! Weight files in the formats people actually have: safetensors, GGUF and PyTorch `.pth` zips.
//!
//! Every source reads from a `Read + Seek` (a file natively, an in-memory buffer in the browser)
//! and loads one tensor at a time, so a multi-gigabyte checkpoint never needs a second copy.

mod builder;
mod ct2;
mod f16_matmul;
mod gguf;
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
mod packed;
mod pth;
mod rename;
mod safetensors;

pub use builder::{quantize, Embedding, Linear, LowRank, QuantizedMatmul, Weights};
pub use ct2::Ct2Source;
pub use gguf::GgufSource;
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
pub use packed::{set_partner, Partner, PartnerHost, TileShape};
pub use pth::PthSource;
pub use rename::{Prefixed, Renamed, Union};
pub use safetensors::{write_safetensors, SafetensorsSource};

use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::io::{Read, Seek};
use std::sync::Arc;

/// Q4_K's 6-bit scale and min of subblock `j` from a block's 12 packed bytes (ggml's layout:
/// the first four in the low 6 bits of bytes 0–3 and 4–7, the last four split between bytes
/// 8–11 and the top 2 bits of bytes 0–7).
pub fn q4k_scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// Anything a weight file can be read from.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// How a tensor is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    F32,
    F16,
    BF16,
    Quantized(GgmlDType),
    Int,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Row-major shape in PyTorch order (`[out, in]` for a linear weight), whatever the format.
    pub shape: Vec<usize>,
    pub stored: StoredType,
}

/// A weight file with named tensors.
pub trait TensorSource: Send + Sync {
    /// The file's name, for error messages.
    fn file_name(&self) -> &str;
    fn names(&self) -> Vec<String>;
    fn meta(&self, name: &str) -> Option<TensorMeta>;
    /// The tensor as float32, dequantized or upcast as needed.
    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor>;
    /// The tensor in its stored block-quantized form, or `None` when it is stored as plain floats.
    fn read_quantized(&self, _name: &str, _device: &Device) -> Result<Option<QTensor>> {
        Ok(None)
    }
    /// The GGUF file behind this source, for its metadata.
    fn gguf(&self) -> Option<&GgufSource> {
        None
    }
    /// The CTranslate2 file behind this source, for its scalars.
    fn ct2(&self) -> Option<&Ct2Source> {
        None
    }
}

pub(crate) fn missing(source: &dyn TensorSource, name: &str) -> Error {
    Error::tensor(source.file_name(), name, "missing from the file")
}

/// Opens a weight file, choosing the parser from its first bytes rather than its name, so a
/// mislabelled download gets an error about its content.
pub fn open_source(
    file_name: &str,
    mut reader: Box<dyn ReadSeek>,
) -> Result<Arc<dyn TensorSource>> {
    let mut head = [0u8; 64];
    let n = read_up_to(&mut reader, &mut head)?;
    reader.rewind()?;
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        Ok(Arc::new(GgufSource::new(file_name, reader)?))
    } else if head.starts_with(b"PK\x03\x04") {
        Ok(Arc::new(PthSource::new(file_name, reader)?))
    } else if is_ctranslate2(head) {
        Ok(Arc::new(Ct2Source::new(file_name, reader)?))
    } else {
        Ok(Arc::new(SafetensorsSource::new(file_name, reader)?))
    }
}

/// CTranslate2: a small binary version, then a length-prefixed spec name like `WhisperSpec`.
fn is_ctranslate2(head: &[u8]) -> bool {
    if head.len() < 8 {
        return false;
    }
    let version = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = u16::from_le_bytes([head[4], head[5]]) as usize;
    (3..=6).contains(&version)
        && head.get(6..6 + len).is_some_and(|name| {
            name.trim_ascii_end()
                .strip_suffix(b"\0")
                .unwrap_or(name)
                .ends_with(b"Spec")
        })
}

fn read_up_to(reader: &mut dyn ReadSeek, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
