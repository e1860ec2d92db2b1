//! The reference-fixture checks of `jnana::conformance` run on the GPU engine: the same CPU
//! models are loaded by the same code, uploaded, and their outputs read back and compared
//! (`jnana conformance --backend wgpu <dir>`, and the GPU tests).

use crate::engine::GpuWindow;
use crate::models::clip_vision::GpuClipVision;
use crate::models::phi2::GpuPhi2;
use crate::models::projector::GpuProjector;
use crate::models::whisper::GpuWhisper;
use crate::{host_values, Gpu, GpuTensor};
use candle_core::{Device, Tensor};
use jnana::conformance::Engine;
use jnana::models::clip_vision::{ClipVision, VisionOutput};
use jnana::models::phi2::{Phi2, Trace};
use jnana::models::projector::Projector;
use jnana::models::whisper::{EncoderOutput, Whisper};
use jnana::sampling::Choice;
use jnana::speech::WhisperWindow;
use jnana::Result;

pub struct GpuEngine<'a> {
    pub gpu: &'a Gpu,
}

impl GpuEngine<'_> {
    /// `t` read back with a leading batch dimension of 1 (as the CPU models report).
    fn batched(&self, t: &GpuTensor) -> Result<Tensor> {
        let mut shape = vec![1];
        shape.extend_from_slice(t.shape());
        Ok(Tensor::from_vec(
            self.gpu.read_blocking(t)?,
            shape,
            &Device::Cpu,
        )?)
    }

    fn unbatched(&self, t: &GpuTensor) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.gpu.read_blocking(t)?,
            t.shape(),
            &Device::Cpu,
        )?)
    }
}

impl Engine for GpuEngine<'_> {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn phi_trace(&self, phi: &Phi2, embeds: &Tensor) -> Result<Trace> {
        let model = GpuPhi2::upload(self.gpu, phi)?;
        let mut cache = model.new_cache(self.gpu)?;
        let (states, logits) = model.forward_trace(self.gpu, &host_values(embeds)?, &mut cache)?;
        Ok(Trace {
            hidden_states: states
                .iter()
                .map(|s| self.batched(s))
                .collect::<Result<_>>()?,
            logits: self.batched(&logits)?,
        })
    }

    fn phi_greedy(
        &self,
        phi: &Phi2,
        embeds: &Tensor,
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        let model = GpuPhi2::upload(self.gpu, phi)?;
        let mut cache = model.new_cache(self.gpu)?;
        let mut feed = host_values(embeds)?;
        let mut ids = Vec::new();
        while ids.len() < max_new {
            let id = pollster::block_on(model.next_token(
                self.gpu,
                &feed,
                &mut cache,
                &Choice::greedy(phi.config().vocab_size),
            ))?;
            ids.push(id);
            if Some(id) == eos {
                break;
            }
            feed = host_values(&phi.embed(&[id])?)?;
        }
        Ok(ids)
    }

    fn clip_trace(&self, clip: &ClipVision, pixels: &Tensor, index: usize) -> Result<VisionOutput> {
        let model = GpuClipVision::upload(self.gpu, clip)?;
        let (embeddings, states) = model.forward_trace(self.gpu, &host_values(pixels)?, index)?;
        Ok(VisionOutput {
            hidden_states: states
                .iter()
                .map(|s| self.batched(s))
                .collect::<Result<_>>()?,
            embeddings: self.batched(&embeddings)?,
        })
    }

    fn projector_trace(
        &self,
        projector: &Projector,
        features: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let model = GpuProjector::upload(self.gpu, projector)?;
        let x = self.upload_rows(features)?;
        let (linear, normed, out) = model.forward_trace(self.gpu, &x)?;
        let shaped = |t: &GpuTensor| -> Result<Tensor> {
            let mut dims = features.dims().to_vec();
            *dims.last_mut().expect("features have a last dimension") = t.shape()[1];
            Ok(self.unbatched(t)?.reshape(dims)?)
        };
        Ok((shaped(&linear)?, shaped(&normed)?, shaped(&out)?))
    }

    fn whisper_encode(&self, model: &Whisper, mel: &Tensor) -> Result<EncoderOutput> {
        let gpu_model = GpuWhisper::upload(self.gpu, model)?;
        let out = gpu_model.encode(self.gpu, &host_values(mel)?)?;
        Ok(EncoderOutput {
            embeddings: self.batched(&out.embeddings)?,
            hidden: self.batched(&out.hidden)?,
        })
    }

    fn whisper_decode(
        &self,
        model: &Whisper,
        encoder_hidden: &Tensor,
        ids: &[u32],
    ) -> Result<(Tensor, Tensor)> {
        let gpu_model = GpuWhisper::upload(self.gpu, model)?;
        let encoded = self.upload_rows(encoder_hidden)?;
        let mut state = gpu_model.new_state(self.gpu, &encoded)?;
        let hidden = gpu_model.decode_hidden(self.gpu, ids, &mut state)?;
        let mut state = gpu_model.new_state(self.gpu, &encoded)?;
        let logits = gpu_model.decode(self.gpu, ids, &mut state)?;
        Ok((self.batched(&hidden)?, self.unbatched(&logits)?))
    }

    fn whisper_window<'a>(
        &'a self,
        model: &'a Whisper,
        encoder_hidden: &Tensor,
    ) -> Result<Box<dyn WhisperWindow + 'a>> {
        Ok(Box::new(GpuWindow::new(
            self.gpu,
            std::rc::Rc::new(GpuWhisper::upload(self.gpu, model)?),
            self.upload_rows(encoder_hidden)?,
        )?))
    }
}

impl GpuEngine<'_> {
    /// A `[1, rows, cols]` (or `[rows, cols]`) CPU tensor as a GPU matrix.
    fn upload_rows(&self, t: &Tensor) -> Result<GpuTensor> {
        let cols = t.dim(candle_core::D::Minus1)?;
        Ok(self.gpu.upload_tensor(t, &[t.elem_count() / cols, cols])?)
    }
}
