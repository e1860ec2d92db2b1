//! safetensors read from a seekable stream: the header is parsed by the `safetensors` crate's
//! `Metadata`, and each tensor's bytes are read only when asked for.

use super::{ReadSeek, StoredType, TensorMeta, TensorSource};
use crate::error::{Error, InFile, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, Metadata};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

/// Largest header we accept; the format's own limit is 100 MB.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A tensor's dtype, shape and byte range within the data section.
type Entry = (Dtype, Vec<usize>, (usize, usize));

pub struct SafetensorsSource {
    file: String,
    reader: Mutex<Box<dyn ReadSeek>>,
    data_start: u64,
    tensors: HashMap<String, Entry>,
}

impl SafetensorsSource {
    pub fn new(file: &str, mut reader: Box<dyn ReadSeek>) -> Result<Self> {
        let file_len = reader.seek(SeekFrom::End(0))?;
        reader.rewind()?;
        if file_len < 8 {
            return Err(Error::file(
                file,
                format!("not a safetensors file: only {file_len} bytes"),
            ));
        }
        let mut len_bytes = [0u8; 8];
        reader.read_exact(&mut len_bytes)?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len + 8 > file_len {
            return Err(Error::file(
                file,
                format!(
                    "not a safetensors file (or truncated): header claims {header_len} bytes, file has {file_len}"
                ),
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        reader.read_exact(&mut header)?;
        let metadata: Metadata = serde_json::from_slice(&header)
            .map_err(|e| Error::file(file, format!("not a safetensors file: bad header ({e})")))?;
        let data_start = 8 + header_len;
        let data_len = metadata.data_len() as u64;
        if data_start + data_len != file_len {
            return Err(Error::file(
                file,
                format!(
                    "truncated or padded safetensors file: header describes {} bytes of tensor data, file holds {}",
                    data_len,
                    file_len - data_start
                ),
            ));
        }
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, (info.dtype, info.shape.clone(), info.data_offsets)))
            .collect();
        Ok(Self {
            file: file.to_string(),
            reader: Mutex::new(reader),
            data_start,
            tensors,
        })
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.tensors
            .get(name)
            .ok_or_else(|| super::missing(self, name))
    }

    fn raw(&self, name: &str) -> Result<(DType, Vec<usize>, Vec<u8>)> {
        let (dtype, shape, (start, end)) = self.entry(name)?;
        let dtype = candle_dtype(*dtype).ok_or_else(|| {
            Error::tensor(&self.file, name, format!("unsupported dtype {dtype:?}"))
        })?;
        let mut bytes = vec![0u8; end - start];
        let mut reader = self.reader.lock().expect("weight reader poisoned");
        reader.seek(SeekFrom::Start(self.data_start + *start as u64))?;
        reader
            .read_exact(&mut bytes)
            .map_err(|e| Error::tensor(&self.file, name, e))?;
        Ok((dtype, shape.clone(), bytes))
    }

    /// Every tensor in its stored dtype.
    pub fn read_all(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        self.tensors
            .keys()
            .map(|n| Ok((n.clone(), self.read_raw(n, device)?)))
            .collect()
    }

    /// The tensor in its stored dtype (int64 token ids in fixture files, for instance).
    pub fn read_raw(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (dtype, shape, bytes) = self.raw(name)?;
        Tensor::from_raw_buffer(&bytes, dtype, &shape, device)
            .map_err(|e| Error::tensor(&self.file, name, e))
    }
}

fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

impl TensorSource for SafetensorsSource {
    fn file_name(&self) -> &str {
        &self.file
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let (dtype, shape, _) = self.tensors.get(name)?;
        let stored = match dtype {
            Dtype::F32 | Dtype::F64 => StoredType::F32,
            Dtype::F16 => StoredType::F16,
            Dtype::BF16 => StoredType::BF16,
            _ => StoredType::Int,
        };
        Some(TensorMeta {
            shape: shape.clone(),
            stored,
        })
    }

    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let t = self.read_raw(name, device)?;
        t.to_dtype(DType::F32).in_file(&self.file)
    }
}

/// Writes named tensors as a safetensors file (used by `synth` and `convert`).
pub fn write_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), TensorBytes::new(t)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, None).map_err(|e| Error::file("<safetensors writer>", e))
}

struct TensorBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl TensorBytes {
    fn new(t: &Tensor) -> Result<Self> {
        let t = t.contiguous()?;
        let (dtype, bytes) = match t.dtype() {
            DType::F32 => (
                Dtype::F32,
                bytemuck_f32(&t.flatten_all()?.to_vec1::<f32>()?),
            ),
            DType::F16 => (
                Dtype::F16,
                t.flatten_all()?
                    .to_vec1::<half::f16>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DType::I64 => (
                Dtype::I64,
                t.flatten_all()?
                    .to_vec1::<i64>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            other => {
                return Err(Error::Input(format!(
                    "cannot write a {other:?} tensor to safetensors"
                )))
            }
        };
        Ok(Self {
            dtype,
            shape: t.dims().to_vec(),
            bytes,
        })
    }
}

fn bytemuck_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl safetensors::View for TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
