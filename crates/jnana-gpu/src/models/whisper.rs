//! Whisper on the GPU: the convolutional stem as two unfold-and-multiply convolutions, the
//! pre-norm encoder layers, and the decoder with a self-attention cache and cross-attention keys
//! and values computed once per window, all kept on the GPU. Token embeddings are looked up on
//! the CPU (a handful of rows per step) with the CPU model's own function.

use super::blocks::{Attention, EncoderLayer, Mlp};
use super::{activation, GpuLinear, Norm};
use crate::ops::{self, Activation, KvCache};
use crate::{Error, Gpu, GpuTensor, Result};
use candle_core::Tensor;
use jnana::models::whisper::{decoder_embeddings, Config, Whisper, WhisperLayer};
use jnana::weights::{Embedding, Linear};

struct DecoderLayer {
    self_attn_layer_norm: Norm,
    self_attn: Attention,
    encoder_attn_layer_norm: Norm,
    encoder_attn: Attention,
    final_layer_norm: Norm,
    mlp: Mlp,
}

/// Encoder and decoder layers uploaded one by one (as a streaming load reads them).
#[derive(Default)]
pub(crate) struct Layers {
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
}

impl Layers {
    pub(crate) fn add(&mut self, gpu: &Gpu, layer: WhisperLayer<'_>) -> Result<()> {
        match layer {
            WhisperLayer::Encoder(_, l) => self.encoder.push(EncoderLayer::upload(
                gpu,
                &l.self_attn_layer_norm,
                &l.self_attn,
                &l.final_layer_norm,
                &l.mlp,
            )?),
            WhisperLayer::Decoder(_, l) => self.decoder.push(DecoderLayer {
                self_attn_layer_norm: Norm::upload(gpu, &l.self_attn_layer_norm)?,
                self_attn: Attention::upload(gpu, &l.self_attn)?,
                encoder_attn_layer_norm: Norm::upload(gpu, &l.encoder_attn_layer_norm)?,
                encoder_attn: Attention::upload(gpu, &l.encoder_attn)?,
                final_layer_norm: Norm::upload(gpu, &l.final_layer_norm)?,
                mlp: Mlp::upload(gpu, &l.mlp)?,
            }),
        }
        Ok(())
    }
}

/// What the encoder reports (the embeddings too, for reference checks).
pub struct GpuEncoderOutput {
    /// After the stem and positions: `[positions, d_model]`.
    pub embeddings: GpuTensor,
    /// After `encoder.layer_norm`: `[positions, d_model]`.
    pub hidden: GpuTensor,
}

/// One window's decoder state on the GPU.
pub struct GpuDecoderState {
    self_kv: Vec<KvCache>,
    cross_kv: Vec<(GpuTensor, GpuTensor)>,
}

impl GpuDecoderState {
    /// Tokens fed so far.
    pub fn len(&self) -> usize {
        self.self_kv.first().map_or(0, KvCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct GpuWhisper {
    /// `([d_model, in · 3], [d_model])` per stem convolution.
    conv1: (GpuTensor, GpuTensor),
    conv2: (GpuTensor, GpuTensor),
    act: Activation,
    encoder_positions: GpuTensor,
    encoder_layers: Vec<EncoderLayer>,
    encoder_layer_norm: Norm,
    embed_tokens: Embedding,
    decoder_positions: Tensor,
    decoder_layers: Vec<DecoderLayer>,
    decoder_layer_norm: Norm,
    output_head: GpuLinear,
    config: Config,
}

impl GpuWhisper {
    pub fn upload(gpu: &Gpu, model: &Whisper) -> Result<Self> {
        let p = model.params();
        let mut layers = Layers::default();
        for (i, l) in p.encoder_layers.iter().enumerate() {
            layers.add(gpu, WhisperLayer::Encoder(i, l))?;
        }
        for (i, l) in p.decoder_layers.iter().enumerate() {
            layers.add(gpu, WhisperLayer::Decoder(i, l))?;
        }
        Self::with_layers(gpu, model, layers)
    }

    /// The model from uploaded `layers` and the rest of `model` (which may be released).
    pub(crate) fn with_layers(gpu: &Gpu, model: &Whisper, layers: Layers) -> Result<Self> {
        let config = model.config().clone();
        if layers.encoder.len() != config.encoder_layers
            || layers.decoder.len() != config.decoder_layers
        {
            return Err(Error::Weights(format!(
                "{} + {} of Whisper's {} + {} layers are on the GPU",
                layers.encoder.len(),
                layers.decoder.len(),
                config.encoder_layers,
                config.decoder_layers
            )));
        }
        let p = model.params();
        let d = config.d_model;
        let conv = |(w, b): (&Tensor, &Tensor)| -> Result<(GpuTensor, GpuTensor)> {
            let width = w.elem_count() / d;
            Ok((
                gpu.upload_tensor(w, &[d, width])?,
                gpu.upload_tensor(b, &[d])?,
            ))
        };
        let head = Linear::new(model.output_head().clone(), None, d, config.vocab_size);
        Ok(Self {
            conv1: conv(p.conv1)?,
            conv2: conv(p.conv2)?,
            act: activation(config.activation_function),
            encoder_positions: gpu
                .upload_tensor(p.encoder_positions, &[config.max_source_positions, d])?,
            encoder_layers: layers.encoder,
            encoder_layer_norm: Norm::upload(gpu, p.encoder_layer_norm)?,
            embed_tokens: p.embed_tokens.clone(),
            decoder_positions: p.decoder_positions.clone(),
            decoder_layers: layers.decoder,
            decoder_layer_norm: Norm::upload(gpu, p.decoder_layer_norm)?,
            output_head: GpuLinear::upload(gpu, &head)?,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Encodes log-mel features laid out as the CPU model takes them (`[n_mels, frames]`,
    /// row-major).
    pub fn encode(&self, gpu: &Gpu, mel: &[f32]) -> Result<GpuEncoderOutput> {
        let (mels, frames) = (self.config.num_mel_bins, self.config.n_frames());
        if mel.len() != mels * frames {
            return Err(Error::Shape {
                op: "whisper encoder",
                detail: format!(
                    "{} mel values; the encoder takes {mels} bins × {frames} frames",
                    mel.len()
                ),
            });
        }
        // Time-major rows, as every kernel here reads them.
        let mut rows = vec![0f32; mel.len()];
        for (bin, values) in mel.chunks_exact(frames).enumerate() {
            for (t, &v) in values.iter().enumerate() {
                rows[t * mels + bin] = v;
            }
        }
        let x = gpu.upload(&rows, &[frames, mels])?;
        let stem = |x: &GpuTensor, (w, b): &(GpuTensor, GpuTensor), stride| {
            ops::activation(
                gpu,
                &ops::conv1d(gpu, x, w, Some(b), 3, stride, 1)?,
                self.act,
            )
        };
        let x = stem(&stem(&x, &self.conv1, 1)?, &self.conv2, 2)?;
        let embeddings = ops::add(gpu, &x, &self.encoder_positions)?;
        let mut hidden = embeddings.clone();
        for layer in &self.encoder_layers {
            hidden = layer.forward(gpu, &hidden)?;
        }
        Ok(GpuEncoderOutput {
            embeddings,
            hidden: self.encoder_layer_norm.forward(gpu, &hidden)?,
        })
    }

    /// A fresh decoder state attending to `encoder_hidden` (`[positions, d_model]`).
    pub fn new_state(&self, gpu: &Gpu, encoder_hidden: &GpuTensor) -> Result<GpuDecoderState> {
        let d = self.config.d_model;
        Ok(GpuDecoderState {
            self_kv: (0..self.decoder_layers.len())
                .map(|_| KvCache::new(gpu, self.config.max_target_positions, d))
                .collect::<Result<_>>()?,
            cross_kv: self
                .decoder_layers
                .iter()
                .map(|l| {
                    Ok((
                        l.encoder_attn.k.forward(gpu, encoder_hidden)?,
                        l.encoder_attn.v.forward(gpu, encoder_hidden)?,
                    ))
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Feeds `ids` after what `state` holds; the hidden states after `decoder.layer_norm`,
    /// `[ids, d_model]`.
    pub fn decode_hidden(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        state: &mut GpuDecoderState,
    ) -> Result<GpuTensor> {
        let embeds = decoder_embeddings(
            &self.config,
            &self.embed_tokens,
            &self.decoder_positions,
            ids,
            state.len(),
        )?;
        let mut xs = gpu.upload_tensor(&embeds, &[ids.len(), self.config.d_model])?;
        for ((layer, kv), (cross_k, cross_v)) in self
            .decoder_layers
            .iter()
            .zip(state.self_kv.iter_mut())
            .zip(&state.cross_kv)
        {
            let h = layer.self_attn_layer_norm.forward(gpu, &xs)?;
            let (k, v) = (
                layer.self_attn.k.forward(gpu, &h)?,
                layer.self_attn.v.forward(gpu, &h)?,
            );
            kv.append(gpu, &k, &v)?;
            let attn = layer
                .self_attn
                .attend(gpu, &h, &kv.k, &kv.v, kv.len(), true)?;
            xs = ops::add(gpu, &xs, &attn)?;
            let h = layer.encoder_attn_layer_norm.forward(gpu, &xs)?;
            let cross =
                layer
                    .encoder_attn
                    .attend(gpu, &h, cross_k, cross_v, cross_k.shape()[0], false)?;
            xs = ops::add(gpu, &xs, &cross)?;
            let mlp = layer
                .mlp
                .forward(gpu, &layer.final_layer_norm.forward(gpu, &xs)?)?;
            xs = ops::add(gpu, &xs, &mlp)?;
        }
        self.decoder_layer_norm.forward(gpu, &xs)
    }

    /// Logits `[ids, vocab]` of every fed position.
    pub fn decode(&self, gpu: &Gpu, ids: &[u32], state: &mut GpuDecoderState) -> Result<GpuTensor> {
        let hidden = self.decode_hidden(gpu, ids, state)?;
        self.output_head.forward(gpu, &hidden)
    }

    /// Logits of the last fed position, `[1, vocab]`.
    pub fn decode_last(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        state: &mut GpuDecoderState,
    ) -> Result<GpuTensor> {
        let hidden = self.decode_hidden(gpu, ids, state)?;
        let last = gpu.rows(&hidden, ids.len() - 1, 1)?;
        self.output_head.forward(gpu, &last)
    }
}
