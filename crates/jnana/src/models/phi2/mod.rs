//! Phi-2 (`PhiForCausalLM`): parallel attention + MLP on one pre-LayerNorm per block, partial
//! rotary embedding, tanh GELU, biases everywhere, untied lm_head. Fed with input embeddings so
//! image rows can sit beside token rows, with a KV cache owned by the caller.
//!
//! Weights come from HF safetensors, llama.cpp `phi2` GGUF or candle's MixFormer GGUF; see
//! [`layout`]. Block-quantized weights stay quantized.

mod config;
pub mod layout;

pub use config::Config;

use crate::error::{Error, Result};
use crate::models::attention::{attend_causal, attend_one, causal_mask, split_heads, Mlp};
use crate::weights::{Embedding, Linear, LowRank, Weights};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::kv_cache::KvCache;
use candle_nn::LayerNorm;
use std::collections::HashMap;

/// The KV cache grows in steps of this many positions, so a short chat does not reserve the
/// whole context up front.
const CACHE_STEP: usize = 256;

#[derive(Debug, Clone)]
struct RotaryEmbedding {
    dim: usize,
    sin: Tensor,
    cos: Tensor,
}

impl RotaryEmbedding {
    fn new(cfg: &Config, dev: &Device) -> Result<Self> {
        let dim = cfg.rotary_dim;
        // Computed in float32 as transformers does, so positions round the same way.
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1f32 / cfg.rope_theta.powf(i as f32 / dim as f32))
            .collect();
        let n = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, n), dev)?;
        let positions = Tensor::arange(0u32, cfg.max_position_embeddings as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_position_embeddings, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self {
            dim,
            sin: freqs.sin()?,
            cos: freqs.cos()?,
        })
    }

    fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        if self.dim == 0 {
            return Ok(xs.clone());
        }
        let (_b, _h, seq_len, head_dim) = xs.dims4()?;
        let cos = self.cos.narrow(0, offset, seq_len)?;
        let sin = self.sin.narrow(0, offset, seq_len)?;
        let rot = xs.narrow(D::Minus1, 0, self.dim)?.contiguous()?;
        let rot = candle_nn::rotary_emb::rope(&rot, &cos, &sin)?;
        if self.dim == head_dim {
            return Ok(rot);
        }
        let pass = xs.narrow(D::Minus1, self.dim, head_dim - self.dim)?;
        // A cat along the last dim can come back as a transposed view (one position), which
        // CUDA's matmul refuses; the CPU's accepts it.
        Ok(Tensor::cat(&[&rot, &pass], D::Minus1)?.contiguous()?)
    }
}

/// q, k and v projections: fused into one matmul where the file allows it.
#[derive(Debug, Clone)]
enum QkvProj {
    Fused(Linear),
    Split(Linear, Linear, Linear),
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: QkvProj,
    dense: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    softmax_scale: f64,
}

impl Attention {
    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let q_out = cfg.num_attention_heads * hd;
        let kv_out = cfg.num_key_value_heads() * hd;
        let qkv = if vb.contains("qkv_proj.weight") {
            QkvProj::Fused(vb.linear(h, q_out + 2 * kv_out, "qkv_proj")?)
        } else {
            fuse_qkv(
                vb.linear(h, q_out, "q_proj")?,
                vb.linear(h, kv_out, "k_proj")?,
                vb.linear(h, kv_out, "v_proj")?,
            )?
        };
        Ok(Self {
            qkv,
            dense: vb.linear(q_out, h, "dense")?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads(),
            head_dim: hd,
            softmax_scale: 1.0 / (hd as f64).sqrt(),
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        rotary: &RotaryEmbedding,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (q_out, kv_out) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let (q, k, v) = match &self.qkv {
            QkvProj::Fused(l) => {
                let qkv = l.forward(xs)?;
                (
                    qkv.narrow(D::Minus1, 0, q_out)?,
                    qkv.narrow(D::Minus1, q_out, kv_out)?,
                    qkv.narrow(D::Minus1, q_out + kv_out, kv_out)?,
                )
            }
            QkvProj::Split(q, k, v) => (q.forward(xs)?, k.forward(xs)?, v.forward(xs)?),
        };
        let offset = cache.current_seq_len();
        let q = rotary.apply(&split_heads(&q, self.num_heads, self.head_dim)?, offset)?;
        let k = rotary.apply(&split_heads(&k, self.num_kv_heads, self.head_dim)?, offset)?;
        let v = split_heads(&v, self.num_kv_heads, self.head_dim)?;
        let (k, v) = cache.append(&k.contiguous()?, &v)?;
        let repeat = self.num_heads / self.num_kv_heads;
        // Without grouped heads the cache's views go to the matmuls as they are: each head's
        // keys are one contiguous run of the cache, and copying the whole cache out for every
        // token cost as much as the layer's weights at a few hundred positions.
        let (k, v) = if repeat == 1 {
            (k, v)
        } else {
            (
                candle_transformers::utils::repeat_kv(k, repeat)?.contiguous()?,
                candle_transformers::utils::repeat_kv(v, repeat)?.contiguous()?,
            )
        };

        let out = match mask {
            Some(mask) => attend_causal(&q, &k, &v, self.softmax_scale, mask)?,
            None => attend_one(&q, &k, &v, self.softmax_scale)?,
        };
        Ok(self.dense.forward(&out)?)
    }
}

/// One matmul instead of three when the weights share a storage type.
fn fuse_qkv(q: Linear, k: Linear, v: Linear) -> Result<QkvProj> {
    let bias = match (q.bias(), k.bias(), v.bias()) {
        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
        _ => return Ok(QkvProj::Split(q, k, v)),
    };
    let out = q.out_features() + k.out_features() + v.out_features();
    let in_features = q.in_features();
    let weight = match (q.weight()?, k.weight()?, v.weight()?) {
        (QMatMul::Tensor(a), QMatMul::Tensor(b), QMatMul::Tensor(c)) => {
            QMatMul::Tensor(Tensor::cat(&[a, b, c], 0)?)
        }
        (QMatMul::QTensor(a), QMatMul::QTensor(b), QMatMul::QTensor(c))
            if a.dtype() == b.dtype() && b.dtype() == c.dtype() =>
        {
            // Quantized rows are independent runs of blocks: concatenating the bytes stacks them.
            let mut bytes = Vec::new();
            for t in [&a, &b, &c] {
                bytes.extend_from_slice(&t.data()?);
            }
            let fused = candle_core::quantized::ggml_file::qtensor_from_ggml(
                a.dtype(),
                &bytes,
                vec![out, in_features],
                &a.device(),
            )?;
            QMatMul::from_qtensor(fused)?
        }
        _ => return Ok(QkvProj::Split(q, k, v)),
    };
    Ok(QkvProj::Fused(Linear::new(weight, bias, in_features, out)))
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: LayerNorm,
    self_attn: Attention,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        Ok(Self {
            input_layernorm: vb.layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                "input_layernorm",
            )?,
            self_attn: Attention::new(cfg, &vb.pp("self_attn"))?,
            mlp: Mlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.hidden_act,
                &vb.pp("mlp"),
            )?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        rotary: &RotaryEmbedding,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let normed = self.input_layernorm.forward(xs)?;
        let attn = self.self_attn.forward(&normed, rotary, cache, mask)?;
        let mlp = self.mlp.forward(&normed)?;
        Ok(((attn + mlp)? + xs)?)
    }
}

/// The attention state of one conversation: keys and values of every position fed so far.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    pub fn new(cfg: &Config) -> Self {
        let step = CACHE_STEP.min(cfg.max_position_embeddings.max(1));
        Self {
            layers: (0..cfg.num_hidden_layers)
                .map(|_| KvCache::new(2, step))
                .collect(),
        }
    }

    /// Positions already fed.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.current_seq_len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|c| c.reset());
    }
}

/// Everything a forward pass can report, for reference checks.
/// One decoder layer's parameters (see [`Phi2::layer_params`]).
pub struct LayerParams<'a> {
    pub input_layernorm: &'a LayerNorm,
    /// The fused q/k/v projection (rows q, then k, then v), or q, k and v.
    pub qkv: Vec<&'a Linear>,
    pub dense: &'a Linear,
    pub fc1: &'a Linear,
    pub fc2: &'a Linear,
}

pub struct Trace {
    /// `hidden_states[0]` = the input embeddings, `[i]` = output of layer `i - 1`, the last one
    /// after `final_layernorm` (as transformers reports it).
    pub hidden_states: Vec<Tensor>,
    /// `[batch, seq, vocab]`
    pub logits: Tensor,
}

#[derive(Debug, Clone)]
pub struct Phi2 {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    final_layernorm: LayerNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    config: Config,
}

/// Prompt positions fed through the layers at once (see [`Phi2::forward`]).
const PROMPT_CHUNK: usize = 512;

impl Phi2 {
    /// Frees the decoder layers once another engine holds them (the GPU engine uploads them):
    /// token embeddings, which the pipeline keeps using, stay; computing here is refused after.
    pub fn release_layers(&mut self) {
        self.layers = Vec::new();
    }

    /// Loads from weights named as in `PhiForCausalLM` (use [`layout::hf_view`] for GGUF files).
    pub fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let mut phi = Self::without_layers(cfg, vb)?;
        phi.layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, &layer_weights(vb, i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(phi)
    }

    /// [`Self::new`] without keeping the decoder layers: each is read, adapted (`lora`: the
    /// updates, and whether to merge them — `None`: unless the weights are quantized) and handed
    /// to `take` (another engine uploads it), then dropped, so the layers are never all in memory
    /// at once. The model comes back released (see [`Self::release_layers`]), with how many
    /// adapter updates found a layer.
    pub fn new_streaming(
        cfg: &Config,
        vb: &Weights,
        lora: Option<(&HashMap<String, LowRank>, Option<bool>)>,
        take: &mut dyn FnMut(&Config, usize, LayerParams<'_>) -> Result<()>,
    ) -> Result<(Self, usize)> {
        Self::each_layer(cfg, vb, lora, &mut |phi, i, layer| {
            take(&phi.config, i, layer.params())
        })
    }

    /// [`Self::new`] adapted as [`Self::new_streaming`] is, each layer's quantized weights handed
    /// to our CPU kernels as soon as it is read (see [`Linear::prepare_cpu_kernel`]), so beside
    /// the packed layers at most one layer is in memory as the file has it.
    pub fn new_packed(
        cfg: &Config,
        vb: &Weights,
        lora: Option<(&HashMap<String, LowRank>, Option<bool>)>,
    ) -> Result<(Self, usize)> {
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        // `prepare_cpu_kernel` itself leaves weights off the CPU to candle.
        let (mut phi, applied) = Self::each_layer(cfg, vb, lora, &mut |_, _, mut layer| {
            layer.linears_mut().for_each(Linear::prepare_cpu_kernel);
            layers.push(layer);
            Ok(())
        })?;
        phi.layers = layers;
        phi.lm_head.prepare_cpu_kernel();
        Ok((phi, applied))
    }

    /// Reads the layers one by one, adapting each (`lora`: the updates, and whether to merge
    /// them — `None`: unless the weights are quantized), and hands each to `take`.
    fn each_layer(
        cfg: &Config,
        vb: &Weights,
        lora: Option<(&HashMap<String, LowRank>, Option<bool>)>,
        take: &mut dyn FnMut(&Self, usize, DecoderLayer) -> Result<()>,
    ) -> Result<(Self, usize)> {
        let phi = Self::without_layers(cfg, vb)?;
        let mut applied = 0;
        for i in 0..cfg.num_hidden_layers {
            let mut layer = DecoderLayer::new(cfg, &layer_weights(vb, i))?;
            if let Some((updates, merge)) = lora {
                let quantized = phi.is_quantized() || layer.mlp.fc1.quantized_type().is_some();
                applied += layer.apply_lora(i, updates, merge.unwrap_or(!quantized))?;
            }
            take(&phi, i, layer)?;
        }
        Ok((phi, applied))
    }

    fn without_layers(cfg: &Config, vb: &Weights) -> Result<Self> {
        let m = vb.pp("model");
        Ok(Self {
            embed_tokens: m.embedding(cfg.vocab_size, cfg.hidden_size, "embed_tokens.weight")?,
            layers: Vec::new(),
            final_layernorm: m.layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                "final_layernorm",
            )?,
            lm_head: vb.linear(cfg.hidden_size, cfg.vocab_size, "lm_head")?,
            rotary: RotaryEmbedding::new(cfg, vb.device())?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the matmul weights are block-quantized.
    pub fn is_quantized(&self) -> bool {
        self.lm_head.quantized_type().is_some()
            || self
                .layers
                .iter()
                .any(|l| l.mlp.fc1.quantized_type().is_some())
    }

    pub fn device(&self) -> Device {
        self.rotary.cos.device().clone()
    }

    pub fn new_cache(&self) -> Cache {
        Cache::new(&self.config)
    }

    /// `[n, hidden]` embeddings of token ids.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::Input(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                self.config.vocab_size
            )));
        }
        self.embed_tokens.lookup(&Tensor::new(ids, &self.device())?)
    }

    /// Feeds `[1, n, hidden]` embeddings after what `cache` holds; returns the logits of the
    /// last position, `[vocab]`.
    pub fn forward(&self, embeds: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let seq_len = embeds.dim(1)?;
        // Before the first chunk: a prompt that cannot fit leaves the cache as it was.
        self.check_room(cache.len(), seq_len)?;
        // A long prompt goes in chunks, as llama.cpp's micro-batches: every layer's activations
        // (the MLP's are 4 × hidden wide) stay a chunk long instead of the prompt's length.
        // (An empty prompt reaches `run` as the first chunk, which says so.)
        let first_chunk = embeds.narrow(1, 0, PROMPT_CHUNK.min(seq_len))?;
        let mut hidden = self.run(&first_chunk, cache, None)?;
        for first in (PROMPT_CHUNK..seq_len).step_by(PROMPT_CHUNK) {
            let rows = PROMPT_CHUNK.min(seq_len - first);
            hidden = self.run(&embeds.narrow(1, first, rows)?, cache, None)?;
        }
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
        let normed = self.final_layernorm.forward(&last)?;
        Ok(self.lm_head.forward(&normed)?.flatten_all()?)
    }

    /// As [`Self::forward`], but keeps every position's logits and every hidden state.
    pub fn forward_trace(&self, embeds: &Tensor, cache: &mut Cache) -> Result<Trace> {
        let mut hidden_states = vec![embeds.clone()];
        let hidden = self.run(embeds, cache, Some(&mut hidden_states))?;
        let normed = self.final_layernorm.forward(&hidden)?;
        *hidden_states.last_mut().expect("at least the input") = normed.clone();
        Ok(Trace {
            logits: self.lm_head.forward(&normed)?,
            hidden_states,
        })
    }

    fn check_room(&self, cached: usize, new: usize) -> Result<()> {
        let limit = self.config.max_position_embeddings;
        if cached + new > limit {
            return Err(Error::ContextOverflow {
                needed: cached + new,
                limit,
            });
        }
        Ok(())
    }

    fn run(
        &self,
        embeds: &Tensor,
        cache: &mut Cache,
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let (_b, seq_len, width) = embeds.dims3()?;
        if width != self.config.hidden_size {
            return Err(Error::Input(format!(
                "embeddings are {width} wide, the model expects {}",
                self.config.hidden_size
            )));
        }
        if self.layers.len() != self.config.num_hidden_layers {
            return Err(Error::released("Phi-2"));
        }
        let offset = cache.len();
        if seq_len == 0 {
            return Err(Error::Input("nothing to feed the language model".into()));
        }
        self.check_room(offset, seq_len)?;
        let mask = causal_mask(seq_len, offset, &self.device())?;
        let mut xs = embeds.to_dtype(DType::F32)?;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            xs = layer.forward(&xs, &self.rotary, kv, mask.as_ref())?;
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(xs.clone());
            }
        }
        Ok(xs)
    }

    /// Every decoder layer's parameters, for another engine (the GPU one) to upload.
    pub fn layer_params(&self) -> Vec<LayerParams<'_>> {
        self.layers.iter().map(DecoderLayer::params).collect()
    }

    pub fn final_layernorm(&self) -> &LayerNorm {
        &self.final_layernorm
    }

    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Hands the quantized weights to our own CPU kernels where they apply (see
    /// [`Linear::prepare_cpu_kernel`]; a no-op off the CPU); the bytes they hold.
    pub fn prepare_cpu_kernels(&mut self) -> usize {
        if !self.device().is_cpu() {
            return 0;
        }
        self.layers
            .iter_mut()
            .flat_map(DecoderLayer::linears_mut)
            .chain([&mut self.lm_head])
            .map(|l| {
                l.prepare_cpu_kernel();
                l.kernel_bytes()
            })
            .sum()
    }

    /// The float32 weights of every linear a LoRA adapter can touch, under HF names
    /// (`model.layers.N.self_attn.q_proj.weight`, …; a fused q/k/v is split back).
    pub fn adaptable_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let attn = &layer.self_attn;
            let p = format!("model.layers.{i}");
            let (q_out, kv_out) = (
                attn.num_heads * attn.head_dim,
                attn.num_kv_heads * attn.head_dim,
            );
            let qkv = match &attn.qkv {
                QkvProj::Fused(l) => {
                    let w = l.weight_f32()?;
                    vec![
                        w.narrow(0, 0, q_out)?,
                        w.narrow(0, q_out, kv_out)?,
                        w.narrow(0, q_out + kv_out, kv_out)?,
                    ]
                }
                QkvProj::Split(q, k, v) => vec![q.weight_f32()?, k.weight_f32()?, v.weight_f32()?],
            };
            for (name, w) in ["q_proj", "k_proj", "v_proj"].iter().zip(qkv) {
                out.push((format!("{p}.self_attn.{name}.weight"), w));
            }
            out.push((
                format!("{p}.self_attn.dense.weight"),
                attn.dense.weight_f32()?,
            ));
            out.push((format!("{p}.mlp.fc1.weight"), layer.mlp.fc1.weight_f32()?));
            out.push((format!("{p}.mlp.fc2.weight"), layer.mlp.fc2.weight_f32()?));
        }
        Ok(out)
    }

    /// Every parameter as float32 under HF names, q/k/v fused as `self_attn.qkv_proj` (what the
    /// GGUF writer takes). Attached (unmerged) adapters are not included: merge them first.
    pub fn export_f32(&self) -> Result<Vec<(String, Tensor)>> {
        let ln = |name: String, l: &LayerNorm| -> Vec<(String, Tensor)> {
            let mut v = vec![(format!("{name}.weight"), l.weight().clone())];
            if let Some(b) = l.bias() {
                v.push((format!("{name}.bias"), b.clone()));
            }
            v
        };
        let lin = |name: String, l: &Linear| -> Result<Vec<(String, Tensor)>> {
            let mut v = vec![(format!("{name}.weight"), l.weight_f32()?)];
            if let Some(b) = l.bias() {
                v.push((format!("{name}.bias"), b.clone()));
            }
            Ok(v)
        };
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.to_f32()?,
        )];
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.extend(ln(format!("{p}.input_layernorm"), &layer.input_layernorm));
            let qkv = match &layer.self_attn.qkv {
                QkvProj::Fused(l) => l.clone(),
                QkvProj::Split(q, k, v) => {
                    let w = Tensor::cat(&[q.weight_f32()?, k.weight_f32()?, v.weight_f32()?], 0)?;
                    let b = match (q.bias(), k.bias(), v.bias()) {
                        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
                        _ => None,
                    };
                    let (inp, out) = (q.in_features(), w.dim(0)?);
                    Linear::new(QMatMul::Tensor(w), b, inp, out)
                }
            };
            out.extend(lin(format!("{p}.self_attn.qkv_proj"), &qkv)?);
            out.extend(lin(format!("{p}.self_attn.dense"), &layer.self_attn.dense)?);
            out.extend(lin(format!("{p}.mlp.fc1"), &layer.mlp.fc1)?);
            out.extend(lin(format!("{p}.mlp.fc2"), &layer.mlp.fc2)?);
        }
        out.extend(ln("model.final_layernorm".into(), &self.final_layernorm));
        out.extend(lin("lm_head".into(), &self.lm_head)?);
        Ok(out)
    }

    /// Applies a LoRA update to one of the adapted linears, merged into the weight or kept beside
    /// it. `target` is `layers.N.<module>` with module one of `q_proj`, `k_proj`, `v_proj`,
    /// `qkv_proj`, `dense`, `fc1`, `fc2`.
    pub fn apply_lora(&mut self, updates: &HashMap<String, LowRank>, merge: bool) -> Result<usize> {
        let mut applied = 0;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            applied += layer.apply_lora(i, updates, merge)?;
        }
        Ok(applied)
    }
}

fn layer_weights(vb: &Weights, i: usize) -> Weights {
    vb.pp("model").pp("layers").pp(i)
}

impl DecoderLayer {
    /// The layer's linears: q/k/v (fused or not), dense, fc1, fc2.
    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        let qkv: Vec<&mut Linear> = match &mut self.self_attn.qkv {
            QkvProj::Fused(f) => vec![f],
            QkvProj::Split(q, k, v) => vec![q, k, v],
        };
        qkv.into_iter().chain([
            &mut self.self_attn.dense,
            &mut self.mlp.fc1,
            &mut self.mlp.fc2,
        ])
    }

    fn params(&self) -> LayerParams<'_> {
        LayerParams {
            input_layernorm: &self.input_layernorm,
            qkv: match &self.self_attn.qkv {
                QkvProj::Fused(f) => vec![f],
                QkvProj::Split(q, k, v) => vec![q, k, v],
            },
            dense: &self.self_attn.dense,
            fc1: &self.mlp.fc1,
            fc2: &self.mlp.fc2,
        }
    }

    /// The updates of layer `i` (`layers.i.<module>`); how many it took.
    fn apply_lora(
        &mut self,
        i: usize,
        updates: &HashMap<String, LowRank>,
        merge: bool,
    ) -> Result<usize> {
        let mut applied = 0;
        let get = |m: &str| updates.get(&format!("layers.{i}.{m}"));
        let attn = &mut self.self_attn;
        let (q_out, kv_out) = (
            attn.num_heads * attn.head_dim,
            attn.num_kv_heads * attn.head_dim,
        );
        let split = [get("q_proj"), get("k_proj"), get("v_proj")];
        let fused = get("qkv_proj");
        if split.iter().any(Option::is_some) || fused.is_some() {
            let sizes = [q_out, kv_out, kv_out];
            let per_part: Vec<Option<LowRank>> = match fused {
                Some(f) => split_rows(f, &sizes)?.into_iter().map(Some).collect(),
                None => split.iter().map(|u| u.cloned()).collect(),
            };
            attn.qkv = apply_qkv(attn.qkv.clone(), &per_part, &sizes, merge)?;
            applied += split.iter().flatten().count() + usize::from(fused.is_some());
        }
        for (name, linear) in [
            ("dense", &mut attn.dense),
            ("fc1", &mut self.mlp.fc1),
            ("fc2", &mut self.mlp.fc2),
        ] {
            if let Some(u) = get(name) {
                apply_one(linear, u.clone(), merge)?;
                applied += 1;
            }
        }
        Ok(applied)
    }
}

fn apply_one(linear: &mut Linear, update: LowRank, merge: bool) -> Result<()> {
    if merge {
        linear.merge(&update)
    } else {
        linear.attach(update);
        Ok(())
    }
}

/// Splits a low-rank update of a fused projection into per-part updates (rows of `B`).
fn split_rows(update: &LowRank, sizes: &[usize]) -> Result<Vec<LowRank>> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let part = LowRank {
                a: update.a.clone(),
                b: update.b.narrow(0, start, n)?,
            };
            start += n;
            Ok(part)
        })
        .collect()
}

fn apply_qkv(
    qkv: QkvProj,
    parts: &[Option<LowRank>],
    sizes: &[usize; 3],
    merge: bool,
) -> Result<QkvProj> {
    match qkv {
        QkvProj::Split(mut q, mut k, mut v) => {
            for (linear, update) in [&mut q, &mut k, &mut v].into_iter().zip(parts) {
                if let Some(u) = update {
                    apply_one(linear, u.clone(), merge)?;
                }
            }
            Ok(QkvProj::Split(q, k, v))
        }
        QkvProj::Fused(mut fused) => {
            let update = stack_block_diagonal(parts, sizes, fused.in_features(), &fused.device())?;
            apply_one(&mut fused, update, merge)?;
            Ok(QkvProj::Fused(fused))
        }
    }
}

/// One update for a fused projection from updates of its parts: the `A`s stacked, the `B`s on
/// a block diagonal (parts without an update contribute zero blocks).
fn stack_block_diagonal(
    parts: &[Option<LowRank>],
    sizes: &[usize; 3],
    in_features: usize,
    device: &Device,
) -> Result<LowRank> {
    let ranks: Vec<usize> = parts
        .iter()
        .map(|p| p.as_ref().map_or(0, |u| u.a.dim(0).unwrap_or(0)))
        .collect();
    let total_rank: usize = ranks.iter().sum();
    let mut a_rows = Vec::new();
    let mut b_rows = Vec::new();
    let mut col = 0;
    for ((part, &rank), &rows) in parts.iter().zip(&ranks).zip(sizes) {
        match part {
            Some(u) => {
                a_rows.push(u.a.clone());
                let left = Tensor::zeros((rows, col), DType::F32, device)?;
                let right = Tensor::zeros((rows, total_rank - col - rank), DType::F32, device)?;
                b_rows.push(Tensor::cat(&[&left, &u.b, &right], 1)?);
            }
            None => b_rows.push(Tensor::zeros((rows, total_rank), DType::F32, device)?),
        }
        col += rank;
    }
    let a = if a_rows.is_empty() {
        Tensor::zeros((0, in_features), DType::F32, device)?
    } else {
        Tensor::cat(&a_rows, 0)?
    };
    Ok(LowRank {
        a,
        b: Tensor::cat(&b_rows, 0)?,
    })
}
