//! GGUF (llama.cpp / candle) files. Tensors keep their block-quantized form until a model asks
//! for floats; shapes are reported in PyTorch order (candle's reader already reverses ggml's
//! innermost-first dims).

use super::{ReadSeek, StoredType, TensorMeta, TensorSource};
use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::sync::Mutex;

pub struct GgufSource {
    file: String,
    reader: Mutex<Box<dyn ReadSeek>>,
    content: gguf_file::Content,
}

impl GgufSource {
    pub fn new(file: &str, mut reader: Box<dyn ReadSeek>) -> Result<Self> {
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| Error::file(file, format!("not a readable GGUF file: {e}")))?;
        let file_len = reader.seek(std::io::SeekFrom::End(0))?;
        // A download cut short still parses (the header is at the front): check every tensor's
        // extent now, so the error names the file instead of surfacing mid-load.
        for (name, info) in &content.tensor_infos {
            let block = info.ggml_dtype.block_size();
            let elems = info.shape.elem_count();
            if elems % block != 0 {
                return Err(Error::tensor(
                    file,
                    name,
                    format!(
                        "{elems} elements is not a whole number of {:?} blocks",
                        info.ggml_dtype
                    ),
                ));
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + bytes;
            if end > file_len {
                return Err(Error::tensor(
                    file,
                    name,
                    format!("data ends at byte {end} but the file has only {file_len} bytes (truncated download?)"),
                ));
            }
        }
        Ok(Self {
            file: file.to_string(),
            reader: Mutex::new(reader),
            content,
        })
    }

    pub fn metadata(&self) -> &std::collections::HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    pub fn metadata_u32(&self, key: &str) -> Result<Option<usize>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_u32()
                .map(|v| Some(v as usize))
                .or_else(|_| v.to_u64().map(|v| Some(v as usize)))
                .map_err(|e| Error::file(&self.file, format!("metadata `{key}`: {e}"))),
        }
    }

    pub fn metadata_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_f32()
                .map(Some)
                .map_err(|e| Error::file(&self.file, format!("metadata `{key}`: {e}"))),
        }
    }

    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    pub fn tensor_type(&self, name: &str) -> Option<GgmlDType> {
        self.content.tensor_infos.get(name).map(|i| i.ggml_dtype)
    }

    fn read_qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(super::missing(self, name));
        }
        let mut reader = self.reader.lock().expect("weight reader poisoned");
        self.content
            .tensor(&mut *reader, name, device)
            .map_err(|e| Error::tensor(&self.file, name, e))
    }
}

impl TensorSource for GgufSource {
    fn file_name(&self) -> &str {
        &self.file
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let info = self.content.tensor_infos.get(name)?;
        let stored = match info.ggml_dtype {
            GgmlDType::F32 => StoredType::F32,
            GgmlDType::F16 => StoredType::F16,
            GgmlDType::BF16 => StoredType::BF16,
            q => StoredType::Quantized(q),
        };
        Some(TensorMeta {
            shape: info.shape.dims().to_vec(),
            stored,
        })
    }

    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.read_qtensor(name, device)?
            .dequantize(device)
            .map_err(|e| Error::tensor(&self.file, name, e))
    }

    fn gguf(&self) -> Option<&GgufSource> {
        Some(self)
    }

    fn read_quantized(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        match self.meta(name).map(|m| m.stored) {
            Some(StoredType::Quantized(_)) => Ok(Some(self.read_qtensor(name, device)?)),
            Some(_) => Ok(None),
            None => Err(super::missing(self, name)),
        }
    }
}
