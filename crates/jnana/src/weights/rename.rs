//! Views that present a weight file under other names: a GGUF's `blk.N.*` under the Hugging
//! Face names the models use, two `.pth` files as one projector, and so on.

use super::{TensorMeta, TensorSource};
use crate::error::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use std::sync::Arc;

type NameMap = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Presents `inner` under the names a model asks for: `to_stored` maps a model name to the name
/// in the file, `to_model` maps back.
pub struct Renamed {
    inner: Arc<dyn TensorSource>,
    to_stored: NameMap,
    to_model: NameMap,
}

impl Renamed {
    pub fn new(
        inner: Arc<dyn TensorSource>,
        to_stored: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        to_model: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            to_stored: Box::new(to_stored),
            to_model: Box::new(to_model),
        }
    }

    fn stored(&self, name: &str) -> Result<String> {
        match (self.to_stored)(name) {
            Some(stored) if self.inner.meta(&stored).is_some() => Ok(stored),
            Some(stored) => Err(Error::tensor(
                self.inner.file_name(),
                stored,
                format!("missing from the file (the model needs it as `{name}`)"),
            )),
            None => Err(Error::tensor(
                self.inner.file_name(),
                name,
                "has no counterpart in this file's layout",
            )),
        }
    }
}

impl TensorSource for Renamed {
    fn file_name(&self) -> &str {
        self.inner.file_name()
    }
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .iter()
            .filter_map(|n| (self.to_model)(n))
            .collect()
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.inner.meta(&(self.to_stored)(name)?)
    }
    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.inner.read_f32(&self.stored(name)?, device)
    }
    fn read_quantized(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        self.inner.read_quantized(&self.stored(name)?, device)
    }
}

/// Presents `inner`'s tensors with `prefix` prepended to every name.
pub struct Prefixed {
    prefix: String,
    inner: Arc<dyn TensorSource>,
}

impl Prefixed {
    pub fn new(prefix: &str, inner: Arc<dyn TensorSource>) -> Self {
        Self {
            prefix: prefix.to_string(),
            inner,
        }
    }
    fn inner_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str())
    }
}

impl TensorSource for Prefixed {
    fn file_name(&self) -> &str {
        self.inner.file_name()
    }
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .map(|n| format!("{}{n}", self.prefix))
            .collect()
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.inner.meta(self.inner_name(name)?)
    }
    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        match self.inner_name(name) {
            Some(n) => self.inner.read_f32(n, device),
            None => Err(super::missing(self, name)),
        }
    }
    fn read_quantized(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        match self.inner_name(name) {
            Some(n) => self.inner.read_quantized(n, device),
            None => Err(super::missing(self, name)),
        }
    }
}

/// Several files seen as one; a name is looked up in each in turn.
pub struct Union {
    label: String,
    parts: Vec<Arc<dyn TensorSource>>,
}

impl Union {
    pub fn new(parts: Vec<Arc<dyn TensorSource>>) -> Self {
        let label = parts
            .iter()
            .map(|p| p.file_name().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        Self { label, parts }
    }
    fn part(&self, name: &str) -> Result<&Arc<dyn TensorSource>> {
        self.parts
            .iter()
            .find(|p| p.meta(name).is_some())
            .ok_or_else(|| super::missing(self, name))
    }
}

impl TensorSource for Union {
    fn file_name(&self) -> &str {
        &self.label
    }
    fn names(&self) -> Vec<String> {
        self.parts.iter().flat_map(|p| p.names()).collect()
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.parts.iter().find_map(|p| p.meta(name))
    }
    fn read_f32(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.part(name)?.read_f32(name, device)
    }
    fn read_quantized(&self, name: &str, device: &Device) -> Result<Option<QTensor>> {
        self.part(name)?.read_quantized(name, device)
    }
}
