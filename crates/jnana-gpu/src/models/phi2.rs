//! Phi-2 on the GPU: prefill and decode over a KV cache kept on the GPU; greedy decoding reads
//! back one token id per step. Fed with input embeddings, as the CPU model (the pipeline builds
//! them: picture rows, prompt pieces, and each generated token's embedding).

use super::{activation, GpuLinear, Norm};
use crate::ops::{self, Activation, KvCache, RotaryTables};
use crate::{Error, Gpu, GpuTensor, Result};
use jnana::models::phi2::{Config, LayerParams, Phi2};
use jnana::sampling::Choice;

/// One decoder layer on the GPU.
pub struct Layer {
    input_layernorm: Norm,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    dense: GpuLinear,
    fc1: GpuLinear,
    fc2: GpuLinear,
}

pub struct GpuPhi2 {
    config: Config,
    layers: Vec<Layer>,
    final_layernorm: Norm,
    lm_head: GpuLinear,
    rotary: RotaryTables,
    act: Activation,
}

/// One conversation's keys and values, on the GPU.
pub struct GpuCache {
    layers: Vec<KvCache>,
}

impl GpuCache {
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(KvCache::clear);
    }
}

impl GpuPhi2 {
    /// Uploads a loaded CPU model's parameters, layer by layer.
    pub fn upload(gpu: &Gpu, phi: &Phi2) -> Result<Self> {
        let layers = phi
            .layer_params()
            .into_iter()
            .map(|p| Self::upload_layer(gpu, phi.config(), p))
            .collect::<Result<Vec<_>>>()?;
        Self::with_layers(gpu, phi, layers)
    }

    /// One decoder layer's parameters on the GPU (layers may come one by one as they are read,
    /// see `jnana::bundle::load_streaming_phi`).
    pub fn upload_layer(gpu: &Gpu, config: &Config, p: LayerParams<'_>) -> Result<Layer> {
        let hd = config.head_dim();
        let q_out = config.num_attention_heads * hd;
        let kv_out = config.num_key_value_heads() * hd;
        let (q, k, v) = match p.qkv.as_slice() {
            [fused] => (
                GpuLinear::upload_rows(gpu, fused, 0..q_out)?,
                GpuLinear::upload_rows(gpu, fused, q_out..q_out + kv_out)?,
                GpuLinear::upload_rows(gpu, fused, q_out + kv_out..q_out + 2 * kv_out)?,
            ),
            [q, k, v] => (
                GpuLinear::upload(gpu, q)?,
                GpuLinear::upload(gpu, k)?,
                GpuLinear::upload(gpu, v)?,
            ),
            other => return Err(Error::Weights(format!("{} q/k/v projections", other.len()))),
        };
        Ok(Layer {
            input_layernorm: Norm::upload(gpu, p.input_layernorm)?,
            q,
            k,
            v,
            dense: GpuLinear::upload(gpu, p.dense)?,
            fc1: GpuLinear::upload(gpu, p.fc1)?,
            fc2: GpuLinear::upload(gpu, p.fc2)?,
        })
    }

    /// The model from uploaded `layers` and the rest of `phi` (which may be released).
    pub fn with_layers(gpu: &Gpu, phi: &Phi2, layers: Vec<Layer>) -> Result<Self> {
        let config = phi.config().clone();
        if layers.len() != config.num_hidden_layers {
            return Err(Error::Weights(format!(
                "{} of Phi-2's {} layers are on the GPU",
                layers.len(),
                config.num_hidden_layers
            )));
        }
        Ok(Self {
            rotary: RotaryTables::new(
                gpu,
                config.rotary_dim,
                config.rope_theta,
                config.max_position_embeddings,
            )?,
            final_layernorm: Norm::upload(gpu, phi.final_layernorm())?,
            lm_head: GpuLinear::upload(gpu, phi.lm_head())?,
            layers,
            act: activation(config.hidden_act),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn new_cache(&self, gpu: &Gpu) -> Result<GpuCache> {
        let width = self.config.num_key_value_heads() * self.config.head_dim();
        let max = self.config.max_position_embeddings.min(ops::MAX_KEYS);
        Ok(GpuCache {
            layers: (0..self.config.num_hidden_layers)
                .map(|_| KvCache::new(gpu, max, width))
                .collect::<Result<_>>()?,
        })
    }

    /// The final hidden states (after the last layer, before the final norm) of `embeds`
    /// (`[seq, hidden]`, row-major), appended to `cache`.
    /// With `trace`, every layer's input is kept there too.
    fn run(
        &self,
        gpu: &Gpu,
        embeds: &[f32],
        cache: &mut GpuCache,
        mut trace: Option<&mut Vec<GpuTensor>>,
    ) -> Result<GpuTensor> {
        let h = self.config.hidden_size;
        if embeds.is_empty() || !embeds.len().is_multiple_of(h) {
            return Err(Error::Shape {
                op: "phi2",
                detail: format!("{} values are not rows of {h}", embeds.len()),
            });
        }
        let seq = embeds.len() / h;
        let offset = cache.len();
        let limit = self.config.max_position_embeddings.min(ops::MAX_KEYS);
        if offset + seq > limit {
            return Err(Error::ContextFull {
                needed: offset + seq,
                limit,
            });
        }
        let heads = self.config.num_attention_heads;
        let kv_heads = self.config.num_key_value_heads();
        let mut xs = gpu.upload(embeds, &[seq, h])?;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            if let Some(t) = trace.as_deref_mut() {
                t.push(xs.clone());
            }
            let normed = layer.input_layernorm.forward(gpu, &xs)?;
            let q = ops::rotary(
                gpu,
                &layer.q.forward(gpu, &normed)?,
                &self.rotary,
                heads,
                offset,
            )?;
            let k = ops::rotary(
                gpu,
                &layer.k.forward(gpu, &normed)?,
                &self.rotary,
                kv_heads,
                offset,
            )?;
            let v = layer.v.forward(gpu, &normed)?;
            kv.append(gpu, &k, &v)?;
            let attn = ops::attention(gpu, &q, &kv.k, &kv.v, kv.len(), heads, kv_heads, true)?;
            let attn = layer.dense.forward(gpu, &attn)?;
            let mlp = layer.fc2.forward(
                gpu,
                &ops::activation(gpu, &layer.fc1.forward(gpu, &normed)?, self.act)?,
            )?;
            xs = ops::add(gpu, &ops::add(gpu, &attn, &mlp)?, &xs)?;
            // Each layer goes to the GPU as soon as it is recorded, so the GPU computes while
            // the CPU records the next: a fast GPU otherwise idles through the whole recording.
            gpu.submit();
        }
        Ok(xs)
    }

    /// Logits of every position of `embeds` (`[seq, vocab]`; for tests and scoring).
    pub fn forward_all(
        &self,
        gpu: &Gpu,
        embeds: &[f32],
        cache: &mut GpuCache,
    ) -> Result<GpuTensor> {
        let hidden = self.run(gpu, embeds, cache, None)?;
        self.lm_head
            .forward(gpu, &self.final_layernorm.forward(gpu, &hidden)?)
    }

    /// Hidden states as transformers reports them (`[0]` = `embeds`, `[i]` = the output of
    /// layer `i - 1`, the last after `final_layernorm`) and the logits of every position.
    pub fn forward_trace(
        &self,
        gpu: &Gpu,
        embeds: &[f32],
        cache: &mut GpuCache,
    ) -> Result<(Vec<GpuTensor>, GpuTensor)> {
        let mut hidden_states = Vec::new();
        let hidden = self.run(gpu, embeds, cache, Some(&mut hidden_states))?;
        let normed = self.final_layernorm.forward(gpu, &hidden)?;
        let logits = self.lm_head.forward(gpu, &normed)?;
        hidden_states.push(normed);
        Ok((hidden_states, logits))
    }

    /// Logits of the last position (`[1, vocab]`), left on the GPU.
    pub fn forward(&self, gpu: &Gpu, embeds: &[f32], cache: &mut GpuCache) -> Result<GpuTensor> {
        let hidden = self.run(gpu, embeds, cache, None)?;
        let seq = hidden.shape()[0];
        let last = gpu.rows(&hidden, seq - 1, 1)?;
        self.lm_head
            .forward(gpu, &self.final_layernorm.forward(gpu, &last)?)
    }

    /// The next token after `embeds`, chosen on the GPU as `choice` says: one submission, one
    /// `u32` read back.
    pub async fn next_token(
        &self,
        gpu: &Gpu,
        embeds: &[f32],
        cache: &mut GpuCache,
        choice: &Choice,
    ) -> Result<u32> {
        let logits = self.forward(gpu, embeds, cache)?;
        ops::choose_last_row(gpu, &logits, choice).await
    }
}
