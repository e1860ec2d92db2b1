//! CLIP's vision tower on the GPU: patch embedding as one matrix product over patches unfolded
//! on the CPU (a 224×224 picture is 49 rows of 3 072), then the pre-norm encoder layers with full
//! attention.

use super::{activation, GpuLinear, Norm};
use crate::ops::{self, Activation};
use crate::{Error, Gpu, GpuTensor, Result};
use jnana::models::clip_vision::ClipVision;

struct Layer {
    layer_norm1: Norm,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    out: GpuLinear,
    layer_norm2: Norm,
    fc1: GpuLinear,
    fc2: GpuLinear,
    act: Activation,
}

pub struct GpuClipVision {
    patch: GpuTensor,
    class: GpuTensor,
    position: GpuTensor,
    pre_layrnorm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    channels: usize,
    image: usize,
    patch_size: usize,
}

fn values(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl GpuClipVision {
    pub fn upload(gpu: &Gpu, clip: &ClipVision) -> Result<Self> {
        let cfg = clip.config();
        let p = clip.params();
        let (h, c, ps) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let layers = p
            .layers
            .iter()
            .map(|l| {
                let [q, k, v, out] = l.self_attn.projections();
                Ok(Layer {
                    layer_norm1: Norm::upload(gpu, l.layer_norm1)?,
                    q: GpuLinear::upload(gpu, q)?,
                    k: GpuLinear::upload(gpu, k)?,
                    v: GpuLinear::upload(gpu, v)?,
                    out: GpuLinear::upload(gpu, out)?,
                    layer_norm2: Norm::upload(gpu, l.layer_norm2)?,
                    fc1: GpuLinear::upload(gpu, &l.mlp.fc1)?,
                    fc2: GpuLinear::upload(gpu, &l.mlp.fc2)?,
                    act: activation(l.mlp.activation()),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patch: gpu.upload(&values(p.patch_embedding)?, &[h, c * ps * ps])?,
            class: gpu.upload(&values(p.class_embedding)?, &[1, h])?,
            position: gpu.upload(&values(p.position_embedding)?, &[cfg.num_patches() + 1, h])?,
            pre_layrnorm: Norm::upload(gpu, p.pre_layrnorm)?,
            layers,
            heads: p
                .layers
                .first()
                .map_or(cfg.num_attention_heads, |l| l.self_attn.heads()),
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
        let mut xs = self
            .pre_layrnorm
            .forward(gpu, &ops::add(gpu, &tokens, &self.position)?)?;
        for layer in self.layers.iter().take(index) {
            let normed = layer.layer_norm1.forward(gpu, &xs)?;
            let (q, k, v) = (
                layer.q.forward(gpu, &normed)?,
                layer.k.forward(gpu, &normed)?,
                layer.v.forward(gpu, &normed)?,
            );
            let attn = ops::attention(gpu, &q, &k, &v, count + 1, self.heads, self.heads, false)?;
            xs = ops::add(gpu, &xs, &layer.out.forward(gpu, &attn)?)?;
            let normed = layer.layer_norm2.forward(gpu, &xs)?;
            let mlp = layer.fc2.forward(
                gpu,
                &ops::activation(gpu, &layer.fc1.forward(gpu, &normed)?, layer.act)?,
            )?;
            xs = ops::add(gpu, &xs, &mlp)?;
        }
        debug_assert_eq!(xs.shape(), &[count + 1, self.hidden]);
        Ok(xs)
    }

    /// Patch features of hidden state `index`, class row dropped: `[patches, hidden]`.
    pub fn image_features(&self, gpu: &Gpu, pixels: &[f32], index: usize) -> Result<GpuTensor> {
        let state = self.hidden_state(gpu, pixels, index)?;
        let rows = state.shape()[0];
        gpu.rows(&state, 1, rows - 1)
    }
}
