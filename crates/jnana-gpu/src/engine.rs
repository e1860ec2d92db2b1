//! The GPU engine behind a `jnana` conversation: Phi-2, the vision stack and Whisper of a loaded
//! bundle uploaded once and shared; each conversation gets its own KV cache on the GPU. Logits
//! come back to the CPU, where the conversation samples (and Whisper decodes) exactly as on the
//! CPU path.

use crate::models::clip_vision::GpuClipVision;
use crate::models::phi2::{GpuCache, GpuPhi2};
use crate::models::projector::GpuProjector;
use crate::models::whisper::{GpuDecoderState, GpuWhisper};
use crate::{host_values, Gpu, GpuTensor, Result};
use candle_core::{Device, Tensor};
use jnana::engine::{LanguageEngine, LocalFuture};
use jnana::sampling::Choice;
use jnana::speech::{WhisperEngine, WhisperWindow};
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
    speech: Option<GpuSpeech>,
}

impl Drop for GpuModels {
    /// Cached bind groups hold the weights they bind: without this, dropped models would keep
    /// their GPU memory until the caches turned over.
    fn drop(&mut self) {
        self.gpu.trim();
    }
}

impl GpuModels {
    /// Uploads Phi-2 and, when the bundle has them, the vision stack and Whisper; `progress(what)`
    /// is told what goes up next.
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
        let speech = match &model.speech {
            Some(t) => {
                progress("speech model");
                Some(GpuSpeech::upload(gpu.clone(), &t.model)?)
            }
            None => None,
        };
        Ok(Self {
            gpu,
            phi,
            vision,
            speech,
        })
    }

    /// Whisper on the GPU, when the bundle has one.
    pub fn speech(&self) -> Option<&GpuSpeech> {
        self.speech.as_ref()
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
            let logits = m
                .phi
                .forward(&m.gpu, &host_values(embeds)?, &mut self.cache)?;
            let logits = m.gpu.read(&logits).await?;
            let n = logits.len();
            Ok(Tensor::from_vec(logits, n, &Device::Cpu)?)
        })
    }

    fn forward_choose<'a>(
        &'a mut self,
        embeds: &'a Tensor,
        choice: &'a Choice,
    ) -> Option<LocalFuture<'a, jnana::Result<u32>>> {
        Some(Box::pin(async move {
            let m = &self.models;
            let embeds = host_values(embeds)?;
            Ok(m.phi
                .next_token(&m.gpu, &embeds, &mut self.cache, choice)
                .await?)
        }))
    }

    fn speech(&self) -> Option<&dyn WhisperEngine> {
        self.models.speech.as_ref().map(|s| s as &dyn WhisperEngine)
    }

    fn encode_pixels<'a>(
        &'a self,
        pixel_values: &'a Tensor,
    ) -> Option<LocalFuture<'a, jnana::Result<Tensor>>> {
        let vision = self.models.vision.as_ref()?;
        let gpu = &self.models.gpu;
        Some(Box::pin(async move {
            let features =
                vision
                    .clip
                    .image_features(gpu, &host_values(pixel_values)?, vision.index)?;
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

/// A bundle's Whisper on the GPU.
#[derive(Clone)]
pub struct GpuSpeech {
    gpu: Rc<Gpu>,
    model: Rc<GpuWhisper>,
}

/// One encoded window on the GPU: the encoder output and the decoder state stay there.
pub struct GpuWindow<'a> {
    gpu: &'a Gpu,
    model: Rc<GpuWhisper>,
    hidden: GpuTensor,
    state: GpuDecoderState,
}

impl<'a> GpuWindow<'a> {
    /// A window on an encoder output already on the GPU (`[positions, d_model]`).
    pub fn new(gpu: &'a Gpu, model: Rc<GpuWhisper>, hidden: GpuTensor) -> Result<Self> {
        Ok(Self {
            state: model.new_state(gpu, &hidden)?,
            gpu,
            model,
            hidden,
        })
    }
}

impl WhisperWindow for GpuWindow<'_> {
    fn decode<'b>(&'b mut self, ids: &'b [u32]) -> LocalFuture<'b, jnana::Result<Vec<f32>>> {
        Box::pin(async move {
            let logits = self.model.decode(self.gpu, ids, &mut self.state)?;
            Ok(self.gpu.read(&logits).await?)
        })
    }

    fn restart(&mut self) -> jnana::Result<()> {
        self.state = self.model.new_state(self.gpu, &self.hidden)?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.state.len()
    }
}

impl GpuSpeech {
    pub fn upload(gpu: Rc<Gpu>, whisper: &jnana::models::whisper::Whisper) -> Result<Self> {
        Ok(Self {
            model: Rc::new(GpuWhisper::upload(&gpu, whisper)?),
            gpu,
        })
    }
}

impl WhisperEngine for GpuSpeech {
    fn name(&self) -> String {
        format!("GPU: {}", self.gpu.summary.name)
    }

    fn window<'a>(
        &'a self,
        mel: &'a Tensor,
    ) -> LocalFuture<'a, jnana::Result<Box<dyn WhisperWindow + 'a>>> {
        Box::pin(async move {
            let encoded = self.model.encode(&self.gpu, &host_values(mel)?)?;
            let window = GpuWindow::new(&self.gpu, self.model.clone(), encoded.hidden)?;
            Ok(Box::new(window) as Box<dyn WhisperWindow + 'a>)
        })
    }
}
