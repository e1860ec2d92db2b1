//! CLIP's vision tower (`CLIPVisionModel`, ViT-B/32 layout): patch convolution, class token,
//! learned positions, `pre_layrnorm`, pre-LN encoder layers with quick-GELU MLPs. LLaVA-style
//! users take a hidden state (the last layer by default, before `post_layernorm`).

use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::models::attention::{Mlp, MultiHeadAttention};
use crate::weights::Weights;
use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Config {
    /// openai/clip-vit-base-patch32's vision tower.
    pub fn vit_base_patch32() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Parses a `CLIPVisionConfig` or a full `CLIPConfig` (its `vision_config`).
    pub fn from_hf_value(file: &str, v: &Value) -> Result<Self> {
        let v = v.get("vision_config").unwrap_or(v);
        let base = Self::vit_base_patch32();
        let num = |key: &str, default: usize| -> usize {
            v.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |x| x as usize)
        };
        let act_name = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu");
        let cfg = Self {
            hidden_size: num("hidden_size", base.hidden_size),
            intermediate_size: num("intermediate_size", base.intermediate_size),
            num_hidden_layers: num("num_hidden_layers", base.num_hidden_layers),
            num_attention_heads: num("num_attention_heads", base.num_attention_heads),
            num_channels: num("num_channels", base.num_channels),
            image_size: num("image_size", base.image_size),
            patch_size: num("patch_size", base.patch_size),
            hidden_act: Activation::from_hf(act_name)
                .ok_or_else(|| Error::file(file, format!("unsupported hidden_act `{act_name}`")))?,
            layer_norm_eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(base.layer_norm_eps),
        };
        if cfg.patch_size == 0
            || !cfg.image_size.is_multiple_of(cfg.patch_size)
            || cfg.num_attention_heads == 0
            || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::file(file, "inconsistent CLIP vision dimensions"));
        }
        Ok(cfg)
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "model_type": "clip_vision_model",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_channels": self.num_channels,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_act": self.hidden_act.hf_name(),
            "layer_norm_eps": self.layer_norm_eps,
        })
    }
}

#[derive(Debug, Clone)]
struct Embeddings {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
}

impl Embeddings {
    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let (h, p) = (cfg.hidden_size, cfg.patch_size);
        Ok(Self {
            patch_embedding: vb.get(&[h, cfg.num_channels, p, p], "patch_embedding.weight")?,
            class_embedding: vb.get(&[h], "class_embedding")?,
            position_embedding: vb.get(&[cfg.num_patches() + 1, h], "position_embedding.weight")?,
            patch_size: p,
        })
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let patches = pixel_values.conv2d(&self.patch_embedding, 0, self.patch_size, 1, 1)?;
        let (b, h, _, _) = patches.dims4()?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.class_embedding.reshape((1, 1, h))?.repeat((b, 1, 1))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?;
        Ok(tokens.broadcast_add(&self.position_embedding)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: MultiHeadAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn params(&self) -> ClipLayerParams<'_> {
        ClipLayerParams {
            layer_norm1: &self.layer_norm1,
            self_attn: &self.self_attn,
            layer_norm2: &self.layer_norm2,
            mlp: &self.mlp,
        }
    }

    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: vb.layer_norm(h, eps, "layer_norm1")?,
            self_attn: MultiHeadAttention::new(
                h,
                cfg.num_attention_heads,
                true,
                &vb.pp("self_attn"),
            )?,
            layer_norm2: vb.layer_norm(h, eps, "layer_norm2")?,
            mlp: Mlp::new(h, cfg.intermediate_size, cfg.hidden_act, &vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

/// See [`ClipVision::params`].
pub struct ClipParams<'a> {
    /// `[hidden, channels, patch, patch]`
    pub patch_embedding: &'a Tensor,
    pub class_embedding: &'a Tensor,
    /// `[1 + patches, hidden]`
    pub position_embedding: &'a Tensor,
    pub pre_layrnorm: &'a LayerNorm,
    pub layers: Vec<ClipLayerParams<'a>>,
}

pub struct ClipLayerParams<'a> {
    pub layer_norm1: &'a LayerNorm,
    pub self_attn: &'a MultiHeadAttention,
    pub layer_norm2: &'a LayerNorm,
    pub mlp: &'a Mlp,
}

/// What a vision forward reports: the selected hidden state, and optionally everything.
pub struct VisionOutput {
    /// `[batch, 1 + patches, hidden]`: hidden_states[0] is `pre_layrnorm(embeddings)`.
    pub hidden_states: Vec<Tensor>,
    pub embeddings: Tensor,
}

#[derive(Debug, Clone)]
pub struct ClipVision {
    embeddings: Embeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    config: Config,
}

impl ClipVision {
    /// Frees the encoder layers once another engine holds them; computing here is refused after.
    pub fn release_layers(&mut self) {
        self.layers = Vec::new();
    }

    /// `vb` points at `vision_model` (so names are `embeddings.*`, `encoder.layers.N.*`).
    pub fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let mut clip = Self::without_layers(cfg, vb)?;
        clip.layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, &vb.pp("encoder.layers").pp(i)))
            .collect::<Result<_>>()?;
        Ok(clip)
    }

    /// [`Self::new`] handing each encoder layer to `take` as it is read (another engine uploads
    /// it) instead of keeping it: the tower comes back released (see [`Self::release_layers`]).
    pub fn new_streaming(
        cfg: &Config,
        vb: &Weights,
        take: &mut dyn FnMut(usize, ClipLayerParams<'_>) -> Result<()>,
    ) -> Result<Self> {
        let clip = Self::without_layers(cfg, vb)?;
        for i in 0..cfg.num_hidden_layers {
            take(
                i,
                EncoderLayer::new(cfg, &vb.pp("encoder.layers").pp(i))?.params(),
            )?;
        }
        Ok(clip)
    }

    fn without_layers(cfg: &Config, vb: &Weights) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            embeddings: Embeddings::new(cfg, &vb.pp("embeddings"))?,
            pre_layrnorm: vb.layer_norm(cfg.hidden_size, eps, "pre_layrnorm")?,
            layers: Vec::new(),
            post_layernorm: vb.layer_norm(cfg.hidden_size, eps, "post_layernorm")?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Resolves a Python-style layer index (`-1` = last, `-2` = LLaVA's choice) into an index
    /// of `hidden_states` (which has `layers + 1` entries).
    pub fn hidden_state_index(&self, layer: i32) -> Result<usize> {
        let count = self.config.num_hidden_layers as i32 + 1;
        let index = if layer < 0 { count + layer } else { layer };
        if !(0..count).contains(&index) {
            return Err(Error::Input(format!(
                "vision feature layer {layer} is outside the {count} hidden states"
            )));
        }
        Ok(index as usize)
    }

    /// Runs the tower up to hidden state `upto` (inclusive) and reports every state on the way.
    pub fn forward_trace(&self, pixel_values: &Tensor, upto: usize) -> Result<VisionOutput> {
        let expected = [
            self.config.num_channels,
            self.config.image_size,
            self.config.image_size,
        ];
        let dims = pixel_values.dims();
        if dims.len() != 4 || dims[1..] != expected {
            return Err(Error::Input(format!(
                "pixel values have shape {dims:?}, expected [batch, {}, {}, {}]",
                expected[0], expected[1], expected[2]
            )));
        }
        if self.layers.len() != self.config.num_hidden_layers {
            return Err(Error::released("CLIP"));
        }
        let embeddings = self.embeddings.forward(pixel_values)?;
        let mut xs = self.pre_layrnorm.forward(&embeddings)?;
        let mut hidden_states = vec![xs.clone()];
        for layer in self.layers.iter().take(upto) {
            xs = layer.forward(&xs)?;
            hidden_states.push(xs.clone());
        }
        Ok(VisionOutput {
            hidden_states,
            embeddings,
        })
    }

    /// Patch features from hidden state `layer` (Python-style index), class row dropped:
    /// `[batch, patches, hidden]`.
    pub fn image_features(&self, pixel_values: &Tensor, layer: i32) -> Result<Tensor> {
        let index = self.hidden_state_index(layer)?;
        let out = self.forward_trace(pixel_values, index)?;
        let state = &out.hidden_states[index];
        let n = state.dim(1)?;
        Ok(state.narrow(1, 1, n - 1)?)
    }

    /// `post_layernorm` of the class row of the last layer (CLIP's `pooler_output`).
    pub fn pooled(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        let cls = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.post_layernorm.forward(&cls)?)
    }

    /// The parameters, for another engine (the GPU one) to upload.
    pub fn params(&self) -> ClipParams<'_> {
        ClipParams {
            patch_embedding: &self.embeddings.patch_embedding,
            class_embedding: &self.embeddings.class_embedding,
            position_embedding: &self.embeddings.position_embedding,
            pre_layrnorm: &self.pre_layrnorm,
            layers: self.layers.iter().map(EncoderLayer::params).collect(),
        }
    }

    pub fn last_layer_index(&self) -> usize {
        self.config.num_hidden_layers
    }
}
