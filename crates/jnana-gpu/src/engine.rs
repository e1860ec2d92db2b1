//! The GPU engine behind a `jnana` conversation: Phi-2, the vision stack and Whisper of a bundle
//! uploaded once and shared; each conversation gets its own KV cache on the GPU. Answer tokens are
//! chosen on the GPU as `jnana::sampling` defines (one id read back); Whisper's logits come back
//! to the CPU, which decodes exactly as on the CPU path.

use crate::models::clip_vision::GpuClipVision;
use crate::models::phi2::{GpuCache, GpuPhi2};
use crate::models::projector::GpuProjector;
use crate::models::whisper::{GpuDecoderState, GpuWhisper};
use crate::{host_values, Gpu, GpuTensor, Result};
use candle_core::{Device, Tensor};
use jnana::bundle::{self, FileProvider, LoadOptions, LoadProgress, Manifest, TakeLayers};
use jnana::engine::{LanguageEngine, LocalFuture};
use jnana::models::clip_vision::{ClipLayerParams, ClipVision};
use jnana::models::phi2::LayerParams;
use jnana::models::whisper::{Whisper, WhisperLayer};
use jnana::sampling::Choice;
use jnana::speech::{WhisperEngine, WhisperWindow};
use jnana::Jnana;
use std::cell::RefCell;
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
    /// their GPU memory until the caches turned over. Only the last handle trims (each engine
    /// holds one; the others still use the caches).
    fn drop(&mut self) {
        if Rc::strong_count(&self.phi) == 1 {
            self.gpu.trim();
        }
    }
}

impl GpuModels {
    /// Uploads Phi-2 and, when the bundle has them, the vision stack and Whisper; `progress(what)`
    /// is told what goes up next.
    pub fn upload(gpu: Rc<Gpu>, model: &Jnana, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        progress("language model");
        let phi = Rc::new(GpuPhi2::upload(&gpu, &model.phi)?);
        Self::assemble(
            gpu,
            phi,
            model,
            GpuClipVision::upload,
            GpuWhisper::upload,
            progress,
        )
    }

    /// Loads a bundle straight onto the GPU: the layers of Phi-2, CLIP and Whisper are uploaded
    /// one by one as they are read from storage (never all in CPU memory). The returned model
    /// keeps what the pipeline uses on the CPU (token embeddings, tokenizers, preprocessing,
    /// configs). `progress` hears the load's steps and each layer.
    pub fn load(
        gpu: Rc<Gpu>,
        manifest: &Manifest,
        provider: &mut dyn FileProvider,
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> jnana::Result<(Jnana, Self)> {
        let heard = Heard {
            progress: RefCell::new(progress),
            last: RefCell::new(LoadProgress {
                step: 0,
                steps: 0,
                what: String::new(),
            }),
        };
        let mut up = Streamed {
            gpu: &gpu,
            heard: &heard,
            phi: Vec::new(),
            clip: Vec::new(),
            whisper: Default::default(),
        };
        let mut model =
            bundle::load_streaming(manifest, provider, options, &mut |p| heard.tell(p), &mut up)?;
        let (phi_layers, clip_layers, whisper_layers) = (up.phi, up.clip, up.whisper);
        let phi = Rc::new(GpuPhi2::with_layers(&gpu, &model.phi, phi_layers)?);
        let models = Self::assemble(
            gpu,
            phi,
            &model,
            |gpu, clip| GpuClipVision::with_layers(gpu, clip, clip_layers),
            |gpu, whisper| GpuWhisper::with_layers(gpu, whisper, whisper_layers),
            &mut |what| heard.step(format!("uploading the {what} to the GPU")),
        )?;
        model.release_layers();
        Ok((model, models))
    }

    /// The models beside an uploaded Phi-2: CLIP and Whisper as `clip` and `whisper` make them,
    /// the projector uploaded from `model`.
    fn assemble(
        gpu: Rc<Gpu>,
        phi: Rc<GpuPhi2>,
        model: &Jnana,
        clip: impl FnOnce(&Gpu, &ClipVision) -> Result<GpuClipVision>,
        whisper: impl FnOnce(&Gpu, &Whisper) -> Result<GpuWhisper>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let vision = match &model.vision {
            Some(v) => {
                progress("vision model");
                Some(Rc::new(GpuVision {
                    clip: clip(&gpu, &v.clip)?,
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
                Some(GpuSpeech::new(gpu.clone(), whisper(&gpu, &t.model)?))
            }
            None => None,
        };
        gpu.flush_uploads()?;
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

/// The load's progress, shared by the loader and the layer uploads (which report under the
/// loader's current step).
struct Heard<'a> {
    progress: RefCell<&'a mut dyn FnMut(LoadProgress)>,
    last: RefCell<LoadProgress>,
}

impl Heard<'_> {
    fn tell(&self, p: LoadProgress) {
        *self.last.borrow_mut() = p.clone();
        (self.progress.borrow_mut())(p)
    }

    fn step(&self, what: String) {
        let at = self.last.borrow().clone();
        (self.progress.borrow_mut())(LoadProgress { what, ..at })
    }
}

/// Layers uploaded as the loader reads them.
struct Streamed<'a, 'p> {
    gpu: &'a Gpu,
    heard: &'a Heard<'p>,
    phi: Vec<crate::models::phi2::Layer>,
    clip: Vec<crate::models::blocks::EncoderLayer>,
    whisper: crate::models::whisper::Layers,
}

impl Streamed<'_, '_> {
    fn layer(&self, i: usize, of: usize) {
        let what = self.heard.last.borrow().what.clone();
        self.heard
            .step(format!("{what}: layer {} of {of} to the GPU", i + 1));
    }
}

impl TakeLayers for Streamed<'_, '_> {
    fn whisper_layer(
        &mut self,
        config: &jnana::models::whisper::Config,
        layer: WhisperLayer<'_>,
    ) -> jnana::Result<()> {
        let i = match layer {
            WhisperLayer::Encoder(i, _) => i,
            WhisperLayer::Decoder(i, _) => config.encoder_layers + i,
        };
        self.layer(i, config.encoder_layers + config.decoder_layers);
        self.whisper.add(self.gpu, layer)?;
        Ok(self.gpu.flush_uploads()?)
    }

    fn phi_layer(
        &mut self,
        config: &jnana::models::phi2::Config,
        index: usize,
        p: LayerParams<'_>,
    ) -> jnana::Result<()> {
        self.layer(index, config.num_hidden_layers);
        self.phi.push(GpuPhi2::upload_layer(self.gpu, config, p)?);
        Ok(self.gpu.flush_uploads()?)
    }

    fn clip_layer(
        &mut self,
        config: &jnana::models::clip_vision::Config,
        index: usize,
        p: ClipLayerParams<'_>,
    ) -> jnana::Result<()> {
        self.layer(index, config.num_hidden_layers);
        self.clip.push(GpuClipVision::upload_layer(self.gpu, p)?);
        Ok(self.gpu.flush_uploads()?)
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
        let model = GpuWhisper::upload(&gpu, whisper)?;
        Ok(Self::new(gpu, model))
    }

    fn new(gpu: Rc<Gpu>, model: GpuWhisper) -> Self {
        Self {
            model: Rc::new(model),
            gpu,
        }
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
