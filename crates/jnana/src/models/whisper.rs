//! Whisper (`WhisperForConditionalGeneration`): a convolutional stem and pre-LN transformer
//! encoder over 30 s of log-mel features, and a pre-LN decoder with self-attention (causal,
//! cached), cross-attention on the encoder output (keys and values computed once) and an output
//! head tied to the token embeddings. Exact erf GELU; `k_proj` has no bias. Float or
//! block-quantized weights with HF names (`model.encoder.*`, `model.decoder.*`).

use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::models::attention::{causal_mask, Mlp, MultiHeadAttention};
use crate::weights::{Embedding, Weights};
use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::LayerNorm;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub num_mel_bins: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_layers: usize,
    pub decoder_attention_heads: usize,
    pub decoder_ffn_dim: usize,
    pub vocab_size: usize,
    pub max_source_positions: usize,
    pub max_target_positions: usize,
    pub scale_embedding: bool,
    pub activation_function: Activation,
    /// Tokens never generated.
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    /// Tokens not generated first (a blank and end-of-text).
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
}

impl Config {
    /// Parses a transformers `WhisperConfig` (config.json).
    pub fn from_hf_value(file: &str, v: &Value) -> Result<Self> {
        let need = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| Error::file(file, format!("config lacks an integer `{key}`")))
        };
        let ids = |key: &str| -> Vec<u32> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|x| x as u32)
                        .collect()
                })
                .unwrap_or_default()
        };
        let act = v
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let cfg = Self {
            num_mel_bins: need("num_mel_bins")?,
            d_model: need("d_model")?,
            encoder_layers: need("encoder_layers")?,
            encoder_attention_heads: need("encoder_attention_heads")?,
            encoder_ffn_dim: need("encoder_ffn_dim")?,
            decoder_layers: need("decoder_layers")?,
            decoder_attention_heads: need("decoder_attention_heads")?,
            decoder_ffn_dim: need("decoder_ffn_dim")?,
            vocab_size: need("vocab_size")?,
            max_source_positions: need("max_source_positions")?,
            max_target_positions: need("max_target_positions")?,
            scale_embedding: v
                .get("scale_embedding")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            activation_function: Activation::from_hf(act)
                .ok_or_else(|| Error::file(file, format!("unsupported activation `{act}`")))?,
            suppress_tokens: ids("suppress_tokens"),
            begin_suppress_tokens: ids("begin_suppress_tokens"),
        };
        for (what, heads) in [
            ("encoder", cfg.encoder_attention_heads),
            ("decoder", cfg.decoder_attention_heads),
        ] {
            if heads == 0 || !cfg.d_model.is_multiple_of(heads) {
                return Err(Error::file(
                    file,
                    format!(
                        "d_model {} is not divisible by {heads} {what} heads",
                        cfg.d_model
                    ),
                ));
            }
        }
        Ok(cfg)
    }

    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper",
            "num_mel_bins": self.num_mel_bins,
            "d_model": self.d_model,
            "encoder_layers": self.encoder_layers,
            "encoder_attention_heads": self.encoder_attention_heads,
            "encoder_ffn_dim": self.encoder_ffn_dim,
            "decoder_layers": self.decoder_layers,
            "decoder_attention_heads": self.decoder_attention_heads,
            "decoder_ffn_dim": self.decoder_ffn_dim,
            "vocab_size": self.vocab_size,
            "max_source_positions": self.max_source_positions,
            "max_target_positions": self.max_target_positions,
            "scale_embedding": self.scale_embedding,
            "activation_function": self.activation_function.hf_name(),
            "suppress_tokens": self.suppress_tokens,
            "begin_suppress_tokens": self.begin_suppress_tokens,
            "tie_word_embeddings": true,
        })
    }

    /// Mel frames the encoder takes (two per output position: the stem has stride 2).
    pub fn n_frames(&self) -> usize {
        2 * self.max_source_positions
    }
}

const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub self_attn_layer_norm: LayerNorm,
    pub self_attn: MultiHeadAttention,
    pub final_layer_norm: LayerNorm,
    pub mlp: Mlp,
}

impl EncoderLayer {
    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn_layer_norm: vb.layer_norm(d, LN_EPS, "self_attn_layer_norm")?,
            self_attn: MultiHeadAttention::new(
                d,
                cfg.encoder_attention_heads,
                false,
                &vb.pp("self_attn"),
            )?,
            final_layer_norm: vb.layer_norm(d, LN_EPS, "final_layer_norm")?,
            mlp: Mlp::new(d, cfg.encoder_ffn_dim, cfg.activation_function, vb)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs
            + self
                .self_attn
                .forward(&self.self_attn_layer_norm.forward(xs)?)?)?;
        let mlp = self.mlp.forward(&self.final_layer_norm.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub self_attn_layer_norm: LayerNorm,
    pub self_attn: MultiHeadAttention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub encoder_attn: MultiHeadAttention,
    pub final_layer_norm: LayerNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let (d, heads) = (cfg.d_model, cfg.decoder_attention_heads);
        Ok(Self {
            self_attn_layer_norm: vb.layer_norm(d, LN_EPS, "self_attn_layer_norm")?,
            self_attn: MultiHeadAttention::new(d, heads, false, &vb.pp("self_attn"))?,
            encoder_attn_layer_norm: vb.layer_norm(d, LN_EPS, "encoder_attn_layer_norm")?,
            encoder_attn: MultiHeadAttention::new(d, heads, false, &vb.pp("encoder_attn"))?,
            final_layer_norm: vb.layer_norm(d, LN_EPS, "final_layer_norm")?,
            mlp: Mlp::new(d, cfg.decoder_ffn_dim, cfg.activation_function, vb)?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        cache: &mut KvCache,
        cross: &(Tensor, Tensor),
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.self_attn_layer_norm.forward(xs)?;
        let (k, v) = self.self_attn.keys_values(&h)?;
        let (k, v) = cache.append(&k, &v)?;
        let xs = (xs
            + self
                .self_attn
                .attend_to(&h, &k.contiguous()?, &v.contiguous()?, mask)?)?;
        let h = self.encoder_attn_layer_norm.forward(&xs)?;
        let xs = (&xs + self.encoder_attn.attend_to(&h, &cross.0, &cross.1, None)?)?;
        let mlp = self.mlp.forward(&self.final_layer_norm.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

/// What the encoder reports, for reference checks too.
pub struct EncoderOutput {
    /// After the stem and positions, before the first layer.
    pub embeddings: Tensor,
    /// After `encoder.layer_norm`: `[1, positions, d_model]`.
    pub hidden: Tensor,
}

/// One transcription's decoder state: the self-attention cache and the cross-attention keys and
/// values of its audio.
pub struct DecoderState {
    self_kv: Vec<KvCache>,
    cross_kv: Vec<(Tensor, Tensor)>,
}

impl DecoderState {
    /// Tokens fed so far.
    pub fn len(&self) -> usize {
        self.self_kv.first().map_or(0, |c| c.current_seq_len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decoder input embeddings of `ids` at positions `offset..`: token rows (scaled when the
/// checkpoint asks) plus learned positions, `[ids, d_model]`. Ids outside the vocabulary and
/// positions past the decoder's window are refused.
pub fn decoder_embeddings(
    config: &Config,
    embed_tokens: &Embedding,
    positions: &Tensor,
    ids: &[u32],
    offset: usize,
) -> Result<Tensor> {
    if ids.is_empty() || offset + ids.len() > config.max_target_positions {
        return Err(Error::Input(format!(
            "the decoder holds {} positions; {} + {} do not fit",
            config.max_target_positions,
            offset,
            ids.len()
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
        return Err(Error::Input(format!(
            "token id {bad} is outside Whisper's vocabulary"
        )));
    }
    let tokens = embed_tokens.lookup(&Tensor::new(ids, positions.device())?)?;
    let tokens = if config.scale_embedding {
        (tokens * (config.d_model as f64).sqrt())?
    } else {
        tokens
    };
    Ok((tokens + positions.narrow(0, offset, ids.len())?)?)
}

/// Borrowed parameters, for engines that run the same model elsewhere (the GPU engine).
/// Receives the layers [`Whisper::new_streaming`] reads.
pub type TakeWhisperLayer<'a> = dyn FnMut(&Config, WhisperLayer<'_>) -> Result<()> + 'a;

/// A layer handed out by [`Whisper::new_streaming`], with its index.
pub enum WhisperLayer<'a> {
    Encoder(usize, &'a EncoderLayer),
    Decoder(usize, &'a DecoderLayer),
}

pub struct WhisperParams<'a> {
    /// `([d_model, in, 3], [d_model])` weight and bias of each stem convolution.
    pub conv1: (&'a Tensor, &'a Tensor),
    pub conv2: (&'a Tensor, &'a Tensor),
    /// `[max_source_positions, d_model]`
    pub encoder_positions: &'a Tensor,
    pub encoder_layers: &'a [EncoderLayer],
    pub encoder_layer_norm: &'a LayerNorm,
    pub embed_tokens: &'a Embedding,
    /// `[max_target_positions, d_model]`
    pub decoder_positions: &'a Tensor,
    pub decoder_layers: &'a [DecoderLayer],
    pub decoder_layer_norm: &'a LayerNorm,
}

#[derive(Debug, Clone)]
pub struct Whisper {
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    encoder_positions: Tensor,
    encoder_layers: Vec<EncoderLayer>,
    encoder_layer_norm: LayerNorm,
    embed_tokens: Embedding,
    output_head: QMatMul,
    decoder_positions: Tensor,
    decoder_layers: Vec<DecoderLayer>,
    decoder_layer_norm: LayerNorm,
    config: Config,
}

impl Whisper {
    /// The encoder's layers and the decoder's. The encoder runs once per recording, so its
    /// f16 weights stay f16 between runs; the decoder runs once per token and keeps f32.
    fn layer_weights(vb: &Weights) -> (Weights, Weights) {
        (
            vb.pp("model.encoder.layers").with_f16_kept(),
            vb.pp("model.decoder.layers"),
        )
    }

    /// `vb` points at the checkpoint root (names `model.encoder.*`, `model.decoder.*`).
    pub fn new(cfg: &Config, vb: &Weights) -> Result<Self> {
        let mut whisper = Self::without_layers(cfg, vb)?;
        let (enc, dec) = Self::layer_weights(vb);
        whisper.encoder_layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(cfg, &enc.pp(i)))
            .collect::<Result<_>>()?;
        whisper.decoder_layers = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::new(cfg, &dec.pp(i)))
            .collect::<Result<_>>()?;
        Ok(whisper)
    }

    /// [`Self::new`] handing each layer to `take` as it is read (another engine uploads it)
    /// instead of keeping it: the model comes back released (see [`Self::release_layers`]).
    pub fn new_streaming(
        cfg: &Config,
        vb: &Weights,
        take: &mut TakeWhisperLayer<'_>,
    ) -> Result<Self> {
        let whisper = Self::without_layers(cfg, vb)?;
        let (enc, dec) = Self::layer_weights(vb);
        for i in 0..cfg.encoder_layers {
            take(
                cfg,
                WhisperLayer::Encoder(i, &EncoderLayer::new(cfg, &enc.pp(i))?),
            )?;
        }
        for i in 0..cfg.decoder_layers {
            take(
                cfg,
                WhisperLayer::Decoder(i, &DecoderLayer::new(cfg, &dec.pp(i))?),
            )?;
        }
        Ok(whisper)
    }

    fn without_layers(cfg: &Config, vb: &Weights) -> Result<Self> {
        let (d, mels) = (cfg.d_model, cfg.num_mel_bins);
        let enc = vb.pp("model.encoder");
        let dec = vb.pp("model.decoder");
        let conv = |name: &str, inp: usize| -> Result<(Tensor, Tensor)> {
            Ok((
                enc.get(&[d, inp, 3], &format!("{name}.weight"))?,
                enc.get(&[d], &format!("{name}.bias"))?,
            ))
        };
        let embed_tokens = dec.embedding(cfg.vocab_size, d, "embed_tokens.weight")?;
        Ok(Self {
            conv1: conv("conv1", mels)?,
            conv2: conv("conv2", d)?,
            encoder_positions: enc.get(&[cfg.max_source_positions, d], "embed_positions.weight")?,
            encoder_layers: Vec::new(),
            encoder_layer_norm: enc.layer_norm(d, LN_EPS, "layer_norm")?,
            output_head: embed_tokens.as_output_head(),
            embed_tokens,
            decoder_positions: dec.get(&[cfg.max_target_positions, d], "embed_positions.weight")?,
            decoder_layers: Vec::new(),
            decoder_layer_norm: dec.layer_norm(d, LN_EPS, "layer_norm")?,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Frees the encoder and decoder layers once another engine holds them; computing here is
    /// refused after.
    pub fn release_layers(&mut self) {
        self.encoder_layers = Vec::new();
        self.decoder_layers = Vec::new();
    }

    fn check_layers(&self) -> Result<()> {
        if self.encoder_layers.len() != self.config.encoder_layers
            || self.decoder_layers.len() != self.config.decoder_layers
        {
            return Err(Error::released("Whisper"));
        }
        Ok(())
    }

    pub fn params(&self) -> WhisperParams<'_> {
        WhisperParams {
            conv1: (&self.conv1.0, &self.conv1.1),
            conv2: (&self.conv2.0, &self.conv2.1),
            encoder_positions: &self.encoder_positions,
            encoder_layers: &self.encoder_layers,
            encoder_layer_norm: &self.encoder_layer_norm,
            embed_tokens: &self.embed_tokens,
            decoder_positions: &self.decoder_positions,
            decoder_layers: &self.decoder_layers,
            decoder_layer_norm: &self.decoder_layer_norm,
        }
    }

    /// Decoder input embeddings of `ids` at positions `offset..`, `[ids, d_model]`.
    pub fn decoder_embeddings(&self, ids: &[u32], offset: usize) -> Result<Tensor> {
        decoder_embeddings(
            &self.config,
            &self.embed_tokens,
            &self.decoder_positions,
            ids,
            offset,
        )
    }

    /// The tied output head (`x Eᵀ`).
    pub fn output_head(&self) -> &QMatMul {
        &self.output_head
    }

    pub fn device(&self) -> Device {
        self.encoder_positions.device().clone()
    }

    /// Encodes `[1, n_mels, 2 * max_source_positions]` log-mel features.
    pub fn encode(&self, mel: &Tensor) -> Result<EncoderOutput> {
        self.check_layers()?;
        let want = [1, self.config.num_mel_bins, self.config.n_frames()];
        if mel.dims() != want {
            return Err(Error::Input(format!(
                "mel features have shape {:?}, the encoder takes {want:?}",
                mel.dims()
            )));
        }
        let act = self.config.activation_function;
        let stem = |x: &Tensor, (w, b): &(Tensor, Tensor), stride: usize| -> Result<Tensor> {
            let y = x
                .conv1d(w, 1, stride, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1))?)?;
            Ok(act.forward(&y)?)
        };
        let x = stem(&stem(mel, &self.conv1, 1)?, &self.conv2, 2)?;
        let embeddings = x.transpose(1, 2)?.broadcast_add(&self.encoder_positions)?;
        let mut hidden = embeddings.clone();
        for layer in &self.encoder_layers {
            hidden = layer.forward(&hidden)?;
        }
        Ok(EncoderOutput {
            embeddings,
            hidden: self.encoder_layer_norm.forward(&hidden)?,
        })
    }

    /// A fresh decoder state attending to `encoder_hidden`.
    pub fn new_state(&self, encoder_hidden: &Tensor) -> Result<DecoderState> {
        let cross_kv = self
            .decoder_layers
            .iter()
            .map(|l| l.encoder_attn.keys_values(encoder_hidden))
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            self_kv: (0..self.decoder_layers.len())
                .map(|_| KvCache::new(2, self.config.max_target_positions))
                .collect(),
            cross_kv,
        })
    }

    /// Feeds `ids` after what `state` holds; returns the hidden states after
    /// `decoder.layer_norm`, `[1, ids, d_model]`.
    pub fn decode_hidden(&self, ids: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        self.check_layers()?;
        let offset = state.len();
        let device = self.device();
        let mut xs = self.decoder_embeddings(ids, offset)?.unsqueeze(0)?;
        let mask = causal_mask(ids.len(), offset, &device)?;
        for ((layer, cache), cross) in self
            .decoder_layers
            .iter()
            .zip(state.self_kv.iter_mut())
            .zip(&state.cross_kv)
        {
            xs = layer.forward(&xs, cache, cross, mask.as_ref())?;
        }
        Ok(self.decoder_layer_norm.forward(&xs)?)
    }

    /// Logits `[ids, vocab]` for every fed position.
    pub fn decode(&self, ids: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        let hidden = self.decode_hidden(ids, state)?;
        Ok(self.output_head.forward(&hidden)?.squeeze(0)?)
    }

    /// Logits of the last fed position only, `[vocab]`.
    pub fn decode_last(&self, ids: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        let hidden = self.decode_hidden(ids, state)?;
        let n = hidden.dim(1)?;
        let last = hidden.narrow(1, n - 1, 1)?;
        Ok(self.output_head.forward(&last)?.flatten_all()?)
    }
}
