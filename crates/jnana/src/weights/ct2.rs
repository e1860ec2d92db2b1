//! CTranslate2 `model.bin` files (faster-whisper / WhisperX checkpoints), read lazily and
//! presented under Hugging Face Whisper names: the fused self-attention `linear_0` (q, k, v) and
//! cross-attention `linear_1` (k, v) are split back into `q_proj` / `k_proj` / `v_proj`, `gamma`
//! / `beta` become `weight` / `bias`, and int8 weights are dequantized with their scales.
//!
//! Layout (binary versions 3-6): `u32 version`, `string spec`, `u32 revision`, `u32 count`,
//! then per variable `string name`, `u8 rank`, `u32 dims[rank]`, `u8 dtype`, `u32 bytes`, data;
//! then `u32 aliases` × (`string alias`, `string target`). Strings are a `u16` length (including
//! a trailing NUL) and the bytes.

use super::{ReadSeek, StoredType, TensorMeta, TensorSource};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Variable {
    dims: Vec<usize>,
    dtype: u8,
    offset: u64,
    bytes: usize,
}

pub struct Ct2Source {
    file: String,
    reader: Mutex<Box<dyn ReadSeek>>,
    variables: HashMap<String, Variable>,
    /// HF name → (variable, rows taken from it).
    hf: BTreeMap<String, (String, Option<Range<usize>>)>,
    spec: String,
}

fn read_u<const N: usize>(r: &mut dyn ReadSeek) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_string(r: &mut dyn ReadSeek) -> std::io::Result<String> {
    let len = u16::from_le_bytes(read_u::<2>(r)?) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    while b.last() == Some(&0) {
        b.pop();
    }
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Bytes per element of CTranslate2's dtype ids.
fn dtype_size(dtype: u8) -> Option<usize> {
    match dtype {
        0 | 3 => Some(4),     // float32, int32
        1 => Some(1),         // int8
        2 | 4 | 5 => Some(2), // int16, float16, bfloat16
        _ => None,
    }
}

impl Ct2Source {
    pub fn new(file: &str, mut reader: Box<dyn ReadSeek>) -> Result<Self> {
        let len = reader.seek(SeekFrom::End(0))?;
        reader.rewind()?;
        let bad = |m: String| Error::file(file, m);
        let io = |e: std::io::Error| {
            Error::file(
                file,
                format!("not a readable CTranslate2 model (truncated?): {e}"),
            )
        };
        let version = u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?);
        if !(3..=6).contains(&version) {
            return Err(bad(format!(
                "not a CTranslate2 model: binary version {version} (3 to 6 are read)"
            )));
        }
        let spec = read_string(&mut *reader).map_err(io)?;
        let _revision = u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?);
        let count = u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?) as u64;
        if count > len / 8 {
            return Err(bad(format!(
                "header claims {count} variables in {len} bytes"
            )));
        }
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = read_string(&mut *reader).map_err(io)?;
            let rank = read_u::<1>(&mut *reader).map_err(io)?[0] as usize;
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?) as usize);
            }
            let (dtype, bytes) = if version >= 4 {
                let dtype = read_u::<1>(&mut *reader).map_err(io)?[0];
                (
                    dtype,
                    u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?) as usize,
                )
            } else {
                let item = read_u::<1>(&mut *reader).map_err(io)?[0];
                let n = u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?) as usize;
                let dtype = match item {
                    4 => 0,
                    2 => 4,
                    1 => 1,
                    other => return Err(bad(format!("`{name}`: item size {other}"))),
                };
                (dtype, n * item as usize)
            };
            let offset = reader.stream_position()?;
            if offset + bytes as u64 > len {
                return Err(Error::tensor(
                    file,
                    &name,
                    format!(
                        "data ends at byte {} but the file has {len} (truncated download?)",
                        offset + bytes as u64
                    ),
                ));
            }
            reader.seek(SeekFrom::Current(bytes as i64))?;
            variables.insert(
                name,
                Variable {
                    dims,
                    dtype,
                    offset,
                    bytes,
                },
            );
        }
        let aliases = u32::from_le_bytes(read_u::<4>(&mut *reader).map_err(io)?);
        for _ in 0..aliases {
            let alias = read_string(&mut *reader).map_err(io)?;
            let target = read_string(&mut *reader).map_err(io)?;
            if let Some(v) = variables.get(&target).cloned() {
                variables.insert(alias, v);
            }
        }
        let mut source = Self {
            file: file.to_string(),
            reader: Mutex::new(reader),
            variables,
            hf: BTreeMap::new(),
            spec,
        };
        if source.spec == "WhisperSpec" {
            source.map_whisper()?;
        }
        Ok(source)
    }

    /// The model spec the file declares (`WhisperSpec`, …).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// An integer scalar variable (`encoder/num_heads`, …).
    pub fn scalar(&self, name: &str) -> Result<Option<i64>> {
        let Some(v) = self.variables.get(name) else {
            return Ok(None);
        };
        let raw = self.read_bytes(name, v)?;
        Ok(Some(match (v.dtype, raw.len()) {
            (1, 1) => raw[0] as i8 as i64,
            (2, 2) => i16::from_le_bytes([raw[0], raw[1]]) as i64,
            (3, 4) => i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
            _ => return Err(Error::tensor(&self.file, name, "is not an integer scalar")),
        }))
    }

    fn read_bytes(&self, name: &str, v: &Variable) -> Result<Vec<u8>> {
        let mut reader = self.reader.lock().expect("weight reader poisoned");
        reader.seek(SeekFrom::Start(v.offset))?;
        let mut raw = vec![0u8; v.bytes];
        reader
            .read_exact(&mut raw)
            .map_err(|e| Error::tensor(&self.file, name, e))?;
        Ok(raw)
    }

    fn variable_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| Error::tensor(&self.file, name, "missing from the file"))?;
        let size = dtype_size(v.dtype).ok_or_else(|| {
            Error::tensor(&self.file, name, format!("unknown dtype id {}", v.dtype))
        })?;
        let elems: usize = v.dims.iter().product();
        if elems * size != v.bytes {
            return Err(Error::tensor(
                &self.file,
                name,
                format!("{} bytes for {elems} elements of {size} bytes", v.bytes),
            ));
        }
        let raw = self.read_bytes(name, v)?;
        let dtype = match v.dtype {
            0 => DType::F32,
            4 => DType::F16,
            5 => DType::BF16,
            1 => {
                // int8 weights with a per-row scale: w = q / scale.
                let q: Vec<f32> = raw.iter().map(|&b| b as i8 as f32).collect();
                let q = Tensor::from_vec(q, v.dims.as_slice(), device)?;
                let scale_name = format!("{}_scale", name);
                let scale = self.variable_f32(&scale_name, device)?;
                let rows = v.dims[0];
                return Ok(q.broadcast_div(&scale.reshape((rows, 1))?)?);
            }
            other => {
                return Err(Error::tensor(
                    &self.file,
                    name,
                    format!("dtype id {other} is not a float"),
                ))
            }
        };
        Ok(Tensor::from_raw_buffer(&raw, dtype, &v.dims, device)?.to_dtype(DType::F32)?)
    }

    fn map_whisper(&mut self) -> Result<()> {
        let d = self
            .variables
            .get("encoder/conv1/weight")
            .map(|v| v.dims[0])
            .ok_or_else(|| {
                Error::tensor(&self.file, "encoder/conv1/weight", "missing from the file")
            })?;
        let mut add = |hf: String, ct2: String, rows: Option<Range<usize>>| {
            self.hf.insert(hf, (ct2, rows));
        };
        let ln =
            |add: &mut dyn FnMut(String, String, Option<Range<usize>>), hf: &str, ct2: &str| {
                add(format!("{hf}.weight"), format!("{ct2}/gamma"), None);
                add(format!("{hf}.bias"), format!("{ct2}/beta"), None);
            };
        let lin = |add: &mut dyn FnMut(String, String, Option<Range<usize>>),
                   hf: &str,
                   ct2: &str,
                   rows: Option<Range<usize>>,
                   bias: bool| {
            add(
                format!("{hf}.weight"),
                format!("{ct2}/weight"),
                rows.clone(),
            );
            if bias {
                add(format!("{hf}.bias"), format!("{ct2}/bias"), rows);
            }
        };
        for side in ["encoder", "decoder"] {
            let hf = format!("model.{side}");
            ln(
                &mut add,
                &format!("{hf}.layer_norm"),
                &format!("{side}/layer_norm"),
            );
            add(
                format!("{hf}.embed_positions.weight"),
                format!("{side}/position_encodings/encodings"),
                None,
            );
            let layers = (0..)
                .take_while(|i| {
                    self.variables
                        .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
                })
                .count();
            for i in 0..layers {
                let (h, c) = (format!("{hf}.layers.{i}"), format!("{side}/layer_{i}"));
                ln(
                    &mut add,
                    &format!("{h}.self_attn_layer_norm"),
                    &format!("{c}/self_attention/layer_norm"),
                );
                let fused = format!("{c}/self_attention/linear_0");
                lin(
                    &mut add,
                    &format!("{h}.self_attn.q_proj"),
                    &fused,
                    Some(0..d),
                    true,
                );
                lin(
                    &mut add,
                    &format!("{h}.self_attn.k_proj"),
                    &fused,
                    Some(d..2 * d),
                    false,
                );
                lin(
                    &mut add,
                    &format!("{h}.self_attn.v_proj"),
                    &fused,
                    Some(2 * d..3 * d),
                    true,
                );
                lin(
                    &mut add,
                    &format!("{h}.self_attn.out_proj"),
                    &format!("{c}/self_attention/linear_1"),
                    None,
                    true,
                );
                if side == "decoder" {
                    ln(
                        &mut add,
                        &format!("{h}.encoder_attn_layer_norm"),
                        &format!("{c}/attention/layer_norm"),
                    );
                    lin(
                        &mut add,
                        &format!("{h}.encoder_attn.q_proj"),
                        &format!("{c}/attention/linear_0"),
                        None,
                        true,
                    );
                    let kv = format!("{c}/attention/linear_1");
                    lin(
                        &mut add,
                        &format!("{h}.encoder_attn.k_proj"),
                        &kv,
                        Some(0..d),
                        false,
                    );
                    lin(
                        &mut add,
                        &format!("{h}.encoder_attn.v_proj"),
                        &kv,
                        Some(d..2 * d),
                        true,
                    );
                    lin(
                        &mut add,
                        &format!("{h}.encoder_attn.out_proj"),
                        &format!("{c}/attention/linear_2"),
                        None,
                        true,
                    );
                }
                ln(
                    &mut add,
                    &format!("{h}.final_layer_norm"),
                    &format!("{c}/ffn/layer_norm"),
                );
                lin(
                    &mut add,
                    &format!("{h}.fc1"),
                    &format!("{c}/ffn/linear_0"),
                    None,
                    true,
                );
                lin(
                    &mut add,
                    &format!("{h}.fc2"),
                    &format!("{c}/ffn/linear_1"),
                    None,
                    true,
                );
            }
        }
        for conv in ["conv1", "conv2"] {
            lin(
                &mut add,
                &format!("model.encoder.{conv}"),
                &format!("encoder/{conv}"),
                None,
                true,
            );
        }
        add(
            "model.decoder.embed_tokens.weight".into(),
            "decoder/embeddings/weight".into(),
            None,
        );
        Ok(())
    }

    /// Whisper's configuration read off the shapes and the head-count scalars.
    pub fn whisper_config(&self) -> Result<crate::models::whisper::Config> {
        let shape = |n: &str| -> Result<Vec<usize>> {
            self.meta(n)
                .map(|m| m.shape)
                .ok_or_else(|| Error::tensor(&self.file, n, "missing from the file"))
        };
        let heads = |side: &str| -> Result<usize> {
            self.scalar(&format!("{side}/num_heads"))?
                .map(|h| h as usize)
                .ok_or_else(|| {
                    Error::tensor(
                        &self.file,
                        format!("{side}/num_heads"),
                        "missing from the file",
                    )
                })
        };
        let count = |side: &str| {
            (0..)
                .take_while(|i| {
                    self.variables
                        .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
                })
                .count()
        };
        let conv1 = shape("model.encoder.conv1.weight")?;
        let embed = shape("model.decoder.embed_tokens.weight")?;
        Ok(crate::models::whisper::Config {
            num_mel_bins: conv1[1],
            d_model: conv1[0],
            encoder_layers: count("encoder"),
            encoder_attention_heads: heads("encoder")?,
            encoder_ffn_dim: shape("model.encoder.layers.0.fc1.weight")?[0],
            decoder_layers: count("decoder"),
            decoder_attention_heads: heads("decoder")?,
            decoder_ffn_dim: shape("model.decoder.layers.0.fc1.weight")?[0],
            vocab_size: embed[0],
            max_source_positions: shape("model.encoder.embed_positions.weight")?[0],
            max_target_positions: shape("model.decoder.embed_positions.weight")?[0],
            scale_embedding: self.scalar("decoder/scale_embeddings")?.unwrap_or(0) != 0,
            activation_function: crate::models::activation::Activation::GeluErf,
            suppress_tokens: Vec::new(),
            begin_suppress_tokens: Vec::new(),
        })
    }
}

impl TensorSource for Ct2Source {
    fn file_name(&self) -> &str {
        &self.file
    }

    fn ct2(&self) -> Option<&Ct2Source> {
        Some(self)
    }

    fn names(&self) -> Vec<String> {
        self.hf.keys().cloned().collect()
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let (ct2, rows) = self.hf.get(name)?;
        let v = self.variables.get(ct2)?;
        let mut shape = v.dims.clone();
        if let Some(r) = rows {
            shape[0] = r.len();
        }
        let stored = match v.dtype {
            4 => StoredType::F16,
            5 => StoredType::BF16,
            _ => StoredType::F32,
        };
        Some(TensorMeta { shape, stored })
    }

    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (ct2, rows) = self
            .hf
            .get(name)
            .ok_or_else(|| super::missing(self, name))?;
        let t = self.variable_f32(ct2, device)?;
        Ok(match rows {
            Some(r) => t.narrow(0, r.start, r.len())?,
            None => t,
        })
    }
}
