//! A small variable builder over a [`TensorSource`]: prefixes, shape checks that name the file
//! and tensor, and linear layers that keep block-quantized weights quantized.

use super::{StoredType, TensorSource};
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::LayerNorm;
use std::sync::Arc;

/// How block-quantized weights are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantizedMatmul {
    /// ggml-style integer dot products (activations rounded to 8 bits per block): fast and
    /// memory-light, the default.
    #[default]
    IntegerDot,
    /// Dequantize to float32 at load and multiply in float: exact reference semantics, 4-8x the
    /// memory.
    Dequantize,
}

#[derive(Clone)]
pub struct Weights {
    source: Arc<dyn TensorSource>,
    prefix: String,
    device: Device,
    quantized_matmul: QuantizedMatmul,
    keep_f16: bool,
}

impl Weights {
    pub fn new(source: Arc<dyn TensorSource>, device: &Device) -> Self {
        Self {
            source,
            prefix: String::new(),
            device: device.clone(),
            quantized_matmul: QuantizedMatmul::default(),
            keep_f16: false,
        }
    }

    /// Matrices stored in f16 stay f16 in memory on the CPU and are widened to f32 a block at a
    /// time as they multiply: for models that run once per input (a picture, a recording), where
    /// that costs little next to the memory it saves. Elsewhere they are f32 from load on.
    pub fn with_f16_kept(mut self) -> Self {
        self.keep_f16 = true;
        self
    }

    pub fn with_quantized_matmul(mut self, mode: QuantizedMatmul) -> Self {
        self.quantized_matmul = mode;
        self
    }

    pub fn quantized_matmul(&self) -> QuantizedMatmul {
        self.quantized_matmul
    }

    /// The same weights, one level down (`vb.pp("layers").pp(3)`).
    pub fn pp(&self, segment: impl ToString) -> Self {
        let mut next = self.clone();
        next.prefix = self.path(&segment.to_string());
        next
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn source(&self) -> &Arc<dyn TensorSource> {
        &self.source
    }

    pub fn file_name(&self) -> &str {
        self.source.file_name()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.source.meta(&self.path(name)).is_some()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.source.meta(&self.path(name)).map(|m| m.shape)
    }

    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let path = self.path(name);
        match self.source.meta(&path) {
            None => Err(super::missing(self.source.as_ref(), &path)),
            Some(meta) if meta.shape != expected => Err(Error::tensor(
                self.source.file_name(),
                path,
                format!("has shape {:?}, expected {:?}", meta.shape, expected),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A float32 tensor of exactly `shape`.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        self.source.read_f32(&self.path(name), &self.device)
    }

    /// A float32 tensor of whatever shape the file has (for shapes the caller derives from it).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        self.source.read_f32(&self.path(name), &self.device)
    }

    /// A `[rows, cols]` matrix, kept block-quantized when it is stored that way.
    pub fn matrix(&self, rows: usize, cols: usize, name: &str) -> Result<QMatMul> {
        self.check_shape(name, &[rows, cols])?;
        let path = self.path(name);
        if let Some(q) = self.source.read_quantized(&path, &self.device)? {
            return quantized_matmul(q, self.quantized_matmul);
        }
        let weight = self.source.read_f32(&path, &self.device)?;
        let keep_f16 = self.keep_f16
            && self.device.is_cpu()
            && self.stored_type(name) == Some(StoredType::F16);
        Ok(if keep_f16 {
            // Back to the stored values exactly (f16 → f32 → f16 is lossless).
            QMatMul::TensorF16(weight.to_dtype(DType::F16)?)
        } else {
            QMatMul::Tensor(weight)
        })
    }

    /// `nn.Linear(in_features, out_features)` at `name` (`name.weight`, `name.bias`).
    pub fn linear(&self, in_features: usize, out_features: usize, name: &str) -> Result<Linear> {
        let vb = self.pp(name);
        let weight = vb.matrix(out_features, in_features, "weight")?;
        let bias = vb.get(&[out_features], "bias")?;
        Ok(Linear::new(weight, Some(bias), in_features, out_features))
    }

    pub fn linear_no_bias(
        &self,
        in_features: usize,
        out_features: usize,
        name: &str,
    ) -> Result<Linear> {
        let weight = self.pp(name).matrix(out_features, in_features, "weight")?;
        Ok(Linear::new(weight, None, in_features, out_features))
    }

    pub fn layer_norm(&self, size: usize, eps: f64, name: &str) -> Result<LayerNorm> {
        let vb = self.pp(name);
        Ok(LayerNorm::new(
            vb.get(&[size], "weight")?,
            vb.get(&[size], "bias")?,
            eps,
        ))
    }

    /// An embedding table `[rows, cols]`, kept block-quantized when stored that way and the
    /// matmul mode is integer-dot (rows are dequantized as they are looked up).
    pub fn embedding(&self, rows: usize, cols: usize, name: &str) -> Result<Embedding> {
        Ok(match self.matrix(rows, cols, name)? {
            QMatMul::QTensor(q) => Embedding::Quantized(q),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Embedding::Float(t),
        })
    }

    /// How the tensor at `name` is stored, if present.
    pub fn stored_type(&self, name: &str) -> Option<StoredType> {
        self.source.meta(&self.path(name)).map(|m| m.stored)
    }
}

/// `QTensor::quantize` that is safe for views: candle's reads the whole underlying storage,
/// ignoring a view's layout, so the values are first copied into a storage of their own.
pub fn quantize(t: &Tensor, ty: GgmlDType) -> Result<QTensor> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let owned = Tensor::from_vec(values, t.dims(), t.device())?;
    Ok(QTensor::quantize(&owned, ty)?)
}

pub(crate) fn quantized_matmul(q: QTensor, mode: QuantizedMatmul) -> Result<QMatMul> {
    Ok(match mode {
        QuantizedMatmul::IntegerDot => QMatMul::from_qtensor(q)?,
        QuantizedMatmul::Dequantize => QMatMul::Tensor(q.dequantize(&q.device())?),
    })
}

/// A token embedding table, float or block-quantized.
#[derive(Debug, Clone)]
pub enum Embedding {
    Float(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn rows(&self) -> usize {
        match self {
            Self::Float(t) => t.dims()[0],
            Self::Quantized(q) => q.shape().dims()[0],
        }
    }

    /// Rows for `ids` (a 1-D u32 tensor): `[n, cols]`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Float(w) => w.index_select(ids, 0)?,
            Self::Quantized(q) => q.embedding(ids)?,
        })
    }

    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Float(w) => w.clone(),
            Self::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// The same table as an output head (`x Eᵀ`), for models that tie the two.
    pub fn as_output_head(&self) -> QMatMul {
        match self {
            Self::Float(w) => QMatMul::Tensor(w.clone()),
            Self::Quantized(q) => QMatMul::QTensor(q.clone()),
        }
    }
}

/// A low-rank update kept beside its base weight: `y += (x A^T) B^T`, the LoRA scaling folded
/// into `b`.
#[derive(Debug, Clone)]
pub struct LowRank {
    /// `[rank, in_features]`
    pub a: Tensor,
    /// `[out_features, rank]`, already multiplied by `lora_alpha / r`.
    pub b: Tensor,
}

impl LowRank {
    /// The dense `[out, in]` update `B A`.
    pub fn dense(&self) -> Result<Tensor> {
        Ok(self.b.matmul(&self.a)?)
    }
}

/// `nn.Linear` whose weight may be float or block-quantized, with an optional low-rank adapter.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Stored,
    bias: Option<Tensor>,
    adapter: Option<LowRank>,
    in_features: usize,
    out_features: usize,
}

/// Where a weight lives: candle's tensor, or our own CPU kernels' tiles (a Q4_K or Q8_0 weight
/// on x86-64 with AVX-512 VNNI or in wasm with SIMD128), which hold the same blocks and replace
/// the tensor, so the weight is in memory once. The tiles are shared by a [`Linear`]'s clones.
#[derive(Debug, Clone)]
enum Stored {
    Candle(QMatMul),
    #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
    Packed(Arc<super::packed::PackedWeight>),
}

impl Stored {
    /// `x W^T` through our kernel, where the weight is packed and `x` is float32 on the CPU.
    fn packed_forward(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
        if let Stored::Packed(packed) = self {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                let (k, n) = packed.shape();
                let mut dims = x.dims().to_vec();
                if dims.last() == Some(&k) {
                    let m = x.elem_count() / k;
                    let y = packed.matmul(&x.flatten_all()?.to_vec1::<f32>()?, m)?;
                    *dims.last_mut().expect("one dim") = n;
                    return Ok(Some(Tensor::from_vec(y, dims, x.device())?));
                }
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "wasm32")))]
        let _ = x;
        Ok(None)
    }
}

impl Linear {
    pub fn new(
        weight: QMatMul,
        bias: Option<Tensor>,
        in_features: usize,
        out_features: usize,
    ) -> Self {
        Self {
            weight: Stored::Candle(weight),
            bias,
            adapter: None,
            in_features,
            out_features,
        }
    }

    /// Hands the weight to our own CPU kernels where they apply (a Q4_K or Q8_0 weight on the
    /// CPU of an x86-64 machine with AVX-512 VNNI, or in wasm with SIMD128): their tiles replace
    /// candle's tensor. Part of loading, so the first forward pass does not pay for it.
    pub fn prepare_cpu_kernel(&mut self) {
        #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
        if let Stored::Candle(QMatMul::QTensor(q)) = &self.weight {
            if q.device().is_cpu() {
                if let Some(packed) = super::packed::PackedWeight::new(q) {
                    self.weight = Stored::Packed(Arc::new(packed));
                }
            }
        }
    }

    /// Bytes of the weight in our CPU kernels' tiles (0 when candle holds it).
    pub fn kernel_bytes(&self) -> usize {
        match &self.weight {
            #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
            Stored::Packed(packed) => packed.bytes(),
            Stored::Candle(_) => 0,
        }
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The block type of a quantized weight (`None` for float weights).
    pub fn quantized_type(&self) -> Option<GgmlDType> {
        match &self.weight {
            Stored::Candle(QMatMul::QTensor(q)) => Some(q.dtype()),
            Stored::Candle(_) => None,
            #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
            Stored::Packed(packed) => Some(packed.dtype()),
        }
    }

    /// The weight as candle's tensor (rebuilt from our kernels' tiles where they hold it).
    pub fn weight(&self) -> candle_core::Result<QMatMul> {
        match &self.weight {
            Stored::Candle(w) => Ok(w.clone()),
            #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
            Stored::Packed(packed) => QMatMul::from_qtensor(packed.to_qtensor()?),
        }
    }

    pub fn device(&self) -> Device {
        match &self.weight {
            Stored::Candle(QMatMul::QTensor(q)) => q.device(),
            Stored::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.device().clone(),
            #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
            Stored::Packed(_) => Device::Cpu,
        }
    }

    /// The weight as a float32 `[out, in]` matrix.
    pub fn weight_f32(&self) -> Result<Tensor> {
        Ok(match self.weight()? {
            QMatMul::QTensor(q) => q.dequantize(&q.device())?,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
        })
    }

    /// Folds a low-rank update into the weight. Block-quantized weights are dequantized, updated
    /// and quantized again to their own block type.
    pub fn merge(&mut self, update: &LowRank) -> Result<()> {
        let merged = (self.weight_f32()? + update.dense()?)?;
        self.weight = Stored::Candle(match self.weight()? {
            QMatMul::QTensor(q) => QMatMul::from_qtensor(quantize(&merged, q.dtype())?)?,
            QMatMul::Tensor(_) => QMatMul::Tensor(merged),
            QMatMul::TensorF16(_) => QMatMul::TensorF16(merged.to_dtype(DType::F16)?),
        });
        Ok(())
    }

    /// Keeps a low-rank update beside the weight, applied at every forward.
    pub fn attach(&mut self, update: LowRank) {
        self.adapter = Some(update);
    }

    /// The LoRA update kept beside the weight, if any.
    pub fn adapter(&self) -> Option<&LowRank> {
        self.adapter.as_ref()
    }

    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = match (self.weight.packed_forward(x)?, &self.weight) {
            (Some(y), _) => y,
            // Not candle's f16 matmul, which rounds the activations to f16 too.
            (None, Stored::Candle(QMatMul::TensorF16(w))) => super::f16_matmul::matmul(x, w)?,
            (None, Stored::Candle(weight)) => weight.forward(x)?,
            // Packed, but `x` is not float32 on the CPU.
            #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
            (None, Stored::Packed(_)) => self.weight()?.forward(x)?,
        };
        if let Some(lora) = &self.adapter {
            let low = x.broadcast_matmul(&lora.a.t()?)?;
            y = (y + low.broadcast_matmul(&lora.b.t()?)?)?;
        }
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
