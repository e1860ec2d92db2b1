//! CLIP's vision tower on the GPU: patch embedding as one matrix product over patches unfolded
//! on the CPU (a 224×224 picture is 49 rows of 3 072), then the pre-norm encoder layers with full
//! attention.

use super::blocks::EncoderLayer;
use super::Norm;
use crate::ops;
use crate::{Error, Gpu, GpuTensor, Result};
use jnana::models::clip_vision::{ClipLayerParams, ClipVision};

pub struct GpuClipVision {
    patch: GpuTensor,
    class: GpuTensor,
    position: GpuTensor,
    pre_layrnorm: Norm,
    layers: Vec<EncoderLayer>,
    hidden: usize,
    channels: usize,
    image: usize,
    patch_size: usize,
}

impl GpuClipVision {
    pub fn upload(gpu: &Gpu, clip: &ClipVision) -> Result<Self> {
        let layers = clip
            .params()
            .layers
            .into_iter()
            .map(|l| Self::upload_layer(gpu, l))
            .collect::<Result<_>>()?;
        Self::with_layers(gpu, clip, layers)
    }

    /// One encoder layer on the GPU (layers may come one by one as they are read).
    pub(crate) fn upload_layer(gpu: &Gpu, l: ClipLayerParams<'_>) -> Result<EncoderLayer> {
        EncoderLayer::upload(gpu, l.layer_norm1, l.self_attn, l.layer_norm2, l.mlp)
    }

    /// The tower from uploaded `layers` and the rest of `clip` (which may be released).
    pub(crate) fn with_layers(
        gpu: &Gpu,
        clip: &ClipVision,
        layers: Vec<EncoderLayer>,
    ) -> Result<Self> {
        let cfg = clip.config();
        if layers.len() != cfg.num_hidden_layers {
            return Err(Error::Weights(format!(
                "{} of CLIP's {} layers are on the GPU",
                layers.len(),
                cfg.num_hidden_layers
            )));
        }
        let p = clip.params();
        let (h, c, ps) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        Ok(Self {
            patch: gpu.upload_tensor(p.patch_embedding, &[h, c * ps * ps])?,
            class: gpu.upload_tensor(p.class_embedding, &[1, h])?,
            position: gpu.upload_tensor(p.position_embedding, &[cfg.num_patches() + 1, h])?,
            pre_layrnorm: Norm::upload(gpu, p.pre_layrnorm)?,
            layers,
            hidden: h,
            channels: c,
            image: cfg.image_size,
            patch_size: ps,
        })
    }

    /// `[channels, image, image]` pixels → `[patches, channels · patch · patch]`, each row in the
    /// conv weight's (channel, y, x) order.
    fn unfold(&self, pixels: &[f32]) -> Vec<f32> {
        let (c, n, p) = (self.channels, self.image, self.patch_size);
        let grid = n / p;
        let mut out = Vec::with_capacity(c * n * n);
        for gy in 0..grid {
            for gx in 0..grid {
                for ch in 0..c {
                    for y in 0..p {
                        let row = ch * n * n + (gy * p + y) * n + gx * p;
                        out.extend_from_slice(&pixels[row..row + p]);
                    }
                }
            }
        }
        out
    }

    /// Hidden state `index` (0 = `pre_layrnorm(embeddings)`, `layers` = the last layer's output)
    /// of one picture's pixel values (`[channels, image, image]`), `[1 + patches, hidden]`.
    pub fn hidden_state(&self, gpu: &Gpu, pixels: &[f32], index: usize) -> Result<GpuTensor> {
        let (_, mut states) = self.forward_trace(gpu, pixels, index)?;
        Ok(states.pop().expect("hidden state 0 is always computed"))
    }

    /// The embeddings (before `pre_layrnorm`) and hidden states `0..=index`.
    pub fn forward_trace(
        &self,
        gpu: &Gpu,
        pixels: &[f32],
        index: usize,
    ) -> Result<(GpuTensor, Vec<GpuTensor>)> {
        let (c, n) = (self.channels, self.image);
        if pixels.len() != c * n * n || index > self.layers.len() {
            return Err(Error::Shape {
                op: "clip_vision",
                detail: format!(
                    "{} pixel values (want {c}×{n}×{n}), hidden state {index}",
                    pixels.len()
                ),
            });
        }
        let patches = self.unfold(pixels);
        let count = patches.len() / (c * self.patch_size * self.patch_size);
        let rows = gpu.upload(&patches, &[count, c * self.patch_size * self.patch_size])?;
        let embedded = ops::linear(gpu, &rows, &self.patch, None)?;
        let tokens = gpu.stack_rows(&[&self.class, &embedded])?;
        let embeddings = ops::add(gpu, &tokens, &self.position)?;
        let mut states = vec![self.pre_layrnorm.forward(gpu, &embeddings)?];
        for layer in self.layers.iter().take(index) {
            let next = layer.forward(gpu, states.last().expect("one state"))?;
            states.push(next);
        }
        debug_assert_eq!(states[index].shape(), &[count + 1, self.hidden]);
        Ok((embeddings, states))
    }

    /// Patch features of hidden state `index`, class row dropped: `[patches, hidden]`.
    pub fn image_features(&self, gpu: &Gpu, pixels: &[f32], index: usize) -> Result<GpuTensor> {
        let state = self.hidden_state(gpu, pixels, index)?;
        let rows = state.shape()[0];
        gpu.rows(&state, 1, rows - 1)
    }
}
