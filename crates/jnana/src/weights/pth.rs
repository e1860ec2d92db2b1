//! PyTorch `torch.save` zips (the seed's projector `.pth` files, PEFT's older `adapter_model.bin`).
//! The pickle is interpreted by candle's restricted unpickler (no code runs); the raw storages are
//! read straight from the zip entries.

use super::{ReadSeek, StoredType, TensorMeta, TensorSource};
use crate::error::{Error, InFile, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::Mutex;

pub struct PthSource {
    file: String,
    zip: Mutex<zip::ZipArchive<Box<dyn ReadSeek>>>,
    tensors: HashMap<String, TensorInfo>,
}

impl PthSource {
    pub fn new(file: &str, reader: Box<dyn ReadSeek>) -> Result<Self> {
        let mut zip = zip::ZipArchive::new(reader)
            .map_err(|e| Error::file(file, format!("not a PyTorch zip checkpoint: {e}")))?;
        let pickles: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .filter(|n| n.ends_with("data.pkl"))
            .collect();
        if pickles.is_empty() {
            return Err(Error::file(
                file,
                "zip holds no `data.pkl`: not a torch.save checkpoint",
            ));
        }
        let mut tensors = HashMap::new();
        for pickle in pickles {
            let dir = std::path::PathBuf::from(pickle.trim_end_matches(".pkl"));
            let entry = zip.by_name(&pickle).in_file(file)?;
            let mut stack = Stack::empty();
            stack
                .read_loop(&mut BufReader::new(entry))
                .map_err(|e| Error::file(file, format!("unreadable pickle `{pickle}`: {e}")))?;
            let object = stack
                .finalize()
                .map_err(|e| Error::file(file, format!("unreadable pickle `{pickle}`: {e}")))?;
            let Object::Dict(entries) = unwrap_module(object) else {
                return Err(Error::file(
                    file,
                    format!("`{pickle}` is not a state dict (a mapping of names to tensors)"),
                ));
            };
            for (key, value) in entries {
                let info = value
                    .into_tensor_info(key, &dir)
                    .map_err(|e| Error::file(file, format!("bad tensor record: {e}")))?;
                if let Some(info) = info {
                    tensors.insert(info.name.clone(), info);
                }
            }
        }
        Ok(Self {
            file: file.to_string(),
            zip: Mutex::new(zip),
            tensors,
        })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| super::missing(self, name))
    }
}

/// `torch.save(module)` pickles a module whose state is the dict; `torch.save(state_dict)` the
/// dict itself.
fn unwrap_module(object: Object) -> Object {
    match object {
        Object::Build { callable, args } => match *callable {
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                *args
            }
            other => Object::Build {
                callable: Box::new(other),
                args,
            },
        },
        other => other,
    }
}

impl TensorSource for PthSource {
    fn file_name(&self) -> &str {
        &self.file
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let info = self.tensors.get(name)?;
        let stored = match info.dtype {
            DType::F32 | DType::F64 => StoredType::F32,
            DType::F16 => StoredType::F16,
            DType::BF16 => StoredType::BF16,
            _ => StoredType::Int,
        };
        Some(TensorMeta {
            shape: info.layout.dims().to_vec(),
            stored,
        })
    }

    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let info = self.info(name)?;
        if !info.layout.is_contiguous() {
            return Err(Error::tensor(
                &self.file,
                name,
                "stored with non-contiguous strides; re-save it with .contiguous()",
            ));
        }
        let elem_bytes = info.dtype.size_in_bytes();
        let start = info.layout.start_offset();
        let len = info.layout.shape().elem_count() * elem_bytes;
        let mut zip = self.zip.lock().expect("weight reader poisoned");
        let mut entry = zip.by_name(&info.path).map_err(|e| {
            Error::tensor(&self.file, name, format!("storage `{}`: {e}", info.path))
        })?;
        let available = entry.size() as usize;
        if start + len > available {
            return Err(Error::tensor(
                &self.file,
                name,
                format!(
                    "storage `{}` holds {available} bytes, the tensor needs {}",
                    info.path,
                    start + len
                ),
            ));
        }
        std::io::copy(&mut (&mut entry).take(start as u64), &mut std::io::sink())?;
        let mut bytes = vec![0u8; len];
        entry
            .read_exact(&mut bytes)
            .map_err(|e| Error::tensor(&self.file, name, e))?;
        Tensor::from_raw_buffer(&bytes, info.dtype, info.layout.dims(), device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::tensor(&self.file, name, e))
    }
}
