//! The GPU engine behind a `jnana` conversation: Phi-2 and the vision stack of a loaded bundle
//! uploaded once and shared; each conversation gets its own KV cache on the GPU. Logits of the
//! last position come back to the CPU, where the conversation samples exactly as on the CPU path.

use crate::models::clip_vision::GpuClipVision;
use crate::models::phi2::{GpuCache, GpuPhi2};
use crate::models::projector::GpuProjector;
use crate::{Gpu, Result};
use candle_core::{Device, Tensor};
use jnana::engine::{LanguageEngine, LocalFuture};
use jnana::Jnana;
use std::rc::Rc;

struct GpuVision {
    clip: GpuClipVision,
    projector: GpuProjector,
    /// Which CLIP hidden state feeds the projector.
    index: usize,
}

/// A bundle's models on the GPU.
#[derive(Clone)]
pub struct GpuModels {
    gpu: Rc<Gpu>,
    phi: Rc<GpuPhi2>,
    vision: Option<Rc<GpuVision>>,
}

impl GpuModels {
    /// Uploads Phi-2 and, when the bundle has one, the vision stack; `progress(what)` is told
    /// what goes up next.
    pub fn upload(gpu: Rc<Gpu>, model: &Jnana, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        progress("language model");
        let phi = Rc::new(GpuPhi2::upload(&gpu, &model.phi)?);
        let vision = match &model.vision {
            Some(v) => {
                progress("vision model");
                Some(Rc::new(GpuVision {
                    clip: GpuClipVision::upload(&gpu, &v.clip)?,
                    projector: GpuProjector::upload(&gpu, &v.projector)?,
                    index: v
                        .clip
                        .hidden_state_index(model.format.vision_feature_layer)?,
                }))
            }
            None => None,
        };
        Ok(Self { gpu, phi, vision })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// An engine with a fresh cache, for one conversation.
    pub fn engine(&self) -> Result<GpuLanguageEngine> {
        Ok(GpuLanguageEngine {
            cache: self.phi.new_cache(&self.gpu)?,
            models: self.clone(),
        })
    }
}

pub struct GpuLanguageEngine {
    models: GpuModels,
    cache: GpuCache,
}

fn values(t: &Tensor) -> jnana::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl LanguageEngine for GpuLanguageEngine {
    fn name(&self) -> String {
        format!("GPU: {}", self.models.gpu.summary.name)
    }

    fn positions(&self) -> usize {
        self.cache.len()
    }

    fn clear(&mut self) {
        self.cache.clear();
    }

    fn forward<'a>(&'a mut self, embeds: &'a Tensor) -> LocalFuture<'a, jnana::Result<Tensor>> {
        Box::pin(async move {
            let m = &self.models;
            let logits = m.phi.forward(&m.gpu, &values(embeds)?, &mut self.cache)?;
            let logits = m.gpu.read(&logits).await?;
            let n = logits.len();
            Ok(Tensor::from_vec(logits, n, &Device::Cpu)?)
        })
    }

    fn encode_pixels<'a>(
        &'a self,
        pixel_values: &'a Tensor,
    ) -> Option<LocalFuture<'a, jnana::Result<Tensor>>> {
        let vision = self.models.vision.as_ref()?;
        let gpu = &self.models.gpu;
        Some(Box::pin(async move {
            let features = vision
                .clip
                .image_features(gpu, &values(pixel_values)?, vision.index)?;
            let projected = vision.projector.forward(gpu, &features)?;
            let shape = projected.shape().to_vec();
            Ok(Tensor::from_vec(
                gpu.read(&projected).await?,
                shape,
                &Device::Cpu,
            )?)
        }))
    }
}
