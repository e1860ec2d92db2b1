//! The three ways Phi-2 weights are named in the wild, all presented under HF `PhiForCausalLM`
//! names (with `self_attn.qkv_proj` for a fused q/k/v):
//!
//! | HF                                   | llama.cpp `phi2` GGUF    | MixFormer (candle GGUF, old remote code) |
//! |--------------------------------------|--------------------------|------------------------------------------|
//! | `model.embed_tokens`                 | `token_embd`             | `transformer.embd.wte`                   |
//! | `model.layers.N.input_layernorm`     | `blk.N.attn_norm`        | `transformer.h.N.ln`                     |
//! | `model.layers.N.self_attn.qkv_proj`  | `blk.N.attn_qkv`         | `transformer.h.N.mixer.Wqkv`             |
//! | `model.layers.N.self_attn.q_proj` …  | `blk.N.attn_q` …         | —                                        |
//! | `model.layers.N.self_attn.dense`     | `blk.N.attn_output`      | `transformer.h.N.mixer.out_proj`         |
//! | `model.layers.N.mlp.fc1` / `fc2`     | `blk.N.ffn_up` / `_down` | `transformer.h.N.mlp.fc1` / `fc2`        |
//! | `model.final_layernorm`              | `output_norm`            | `lm_head.ln`                             |
//! | `lm_head`                            | `output`                 | `lm_head.linear`                         |

use super::Config;
use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::weights::{GgufSource, Renamed, TensorSource};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    HuggingFace,
    LlamaCpp,
    MixFormer,
}

/// (HF name, stored name) pairs; `{}` is the layer index.
const LLAMA_CPP: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.final_layernorm", "output_norm"),
    ("lm_head", "output"),
    ("model.layers.{}.input_layernorm", "blk.{}.attn_norm"),
    ("model.layers.{}.self_attn.qkv_proj", "blk.{}.attn_qkv"),
    ("model.layers.{}.self_attn.q_proj", "blk.{}.attn_q"),
    ("model.layers.{}.self_attn.k_proj", "blk.{}.attn_k"),
    ("model.layers.{}.self_attn.v_proj", "blk.{}.attn_v"),
    ("model.layers.{}.self_attn.dense", "blk.{}.attn_output"),
    ("model.layers.{}.mlp.fc1", "blk.{}.ffn_up"),
    ("model.layers.{}.mlp.fc2", "blk.{}.ffn_down"),
];

const MIXFORMER: &[(&str, &str)] = &[
    ("model.embed_tokens", "transformer.embd.wte"),
    ("model.final_layernorm", "lm_head.ln"),
    ("lm_head", "lm_head.linear"),
    ("model.layers.{}.input_layernorm", "transformer.h.{}.ln"),
    (
        "model.layers.{}.self_attn.qkv_proj",
        "transformer.h.{}.mixer.Wqkv",
    ),
    (
        "model.layers.{}.self_attn.dense",
        "transformer.h.{}.mixer.out_proj",
    ),
    ("model.layers.{}.mlp.fc1", "transformer.h.{}.mlp.fc1"),
    ("model.layers.{}.mlp.fc2", "transformer.h.{}.mlp.fc2"),
];

pub fn detect(source: &dyn TensorSource) -> Option<Layout> {
    let has = |n: &str| source.meta(n).is_some();
    if has("model.embed_tokens.weight") {
        Some(Layout::HuggingFace)
    } else if has("token_embd.weight") {
        Some(Layout::LlamaCpp)
    } else if has("transformer.embd.wte.weight") {
        Some(Layout::MixFormer)
    } else {
        None
    }
}

/// Maps `name` through a table from the `from` column to the `to` column.
fn translate(table: &[(&str, &str)], name: &str, forward: bool) -> Option<String> {
    let (module, param) = name.rsplit_once('.')?;
    for (hf, stored) in table {
        let (from, to) = if forward { (hf, stored) } else { (stored, hf) };
        if let Some(layer) = match_pattern(from, module) {
            return Some(format!("{}.{param}", to.replace("{}", &layer)));
        }
    }
    None
}

/// Matches `module` against a pattern with at most one `{}` (a layer index); returns the index.
fn match_pattern(pattern: &str, module: &str) -> Option<String> {
    match pattern.split_once("{}") {
        None => (pattern == module).then(String::new),
        Some((head, tail)) => {
            let index = module.strip_prefix(head)?.strip_suffix(tail)?;
            (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
                .then(|| index.to_string())
        }
    }
}

/// The source seen under HF names, whatever its layout.
pub fn hf_view(source: Arc<dyn TensorSource>) -> Result<(Layout, Arc<dyn TensorSource>)> {
    let layout = detect(source.as_ref()).ok_or_else(|| {
        Error::file(
            source.file_name(),
            "not a Phi-2 checkpoint: found none of `model.embed_tokens.weight` (Hugging Face), \
             `token_embd.weight` (llama.cpp) or `transformer.embd.wte.weight` (MixFormer)",
        )
    })?;
    let table = match layout {
        Layout::HuggingFace => return Ok((layout, source)),
        Layout::LlamaCpp => LLAMA_CPP,
        Layout::MixFormer => MIXFORMER,
    };
    let view = Renamed::new(
        source,
        move |hf| translate(table, hf, true),
        move |stored| translate(table, stored, false),
    );
    Ok((layout, Arc::new(view)))
}

/// Reads the configuration from a GGUF's metadata (llama.cpp's `phi2.*` keys), with shapes
/// filling what metadata does not say. A MixFormer file carries no metadata: it must be
/// microsoft/phi-2's shape, or come with a config.
pub fn config_from_gguf(gguf: &GgufSource, hf: &dyn TensorSource) -> Result<Config> {
    let file = gguf.file_name();
    let embed = hf
        .meta("model.embed_tokens.weight")
        .ok_or_else(|| Error::tensor(file, "token_embd.weight", "missing from the file"))?
        .shape;
    let [vocab_size, hidden_size] = embed[..] else {
        return Err(Error::tensor(
            file,
            "token_embd.weight",
            format!("has shape {embed:?}, expected 2 dims"),
        ));
    };
    let arch = gguf
        .metadata_str("general.architecture")
        .unwrap_or("")
        .to_string();
    if arch.is_empty() || !gguf.metadata().contains_key(&format!("{arch}.block_count")) {
        let known = Config::phi2();
        if hidden_size == known.hidden_size && vocab_size == known.vocab_size {
            return Ok(known);
        }
        return Err(Error::file(
            file,
            "GGUF without model metadata and not microsoft/phi-2's shape: give its config.json in the manifest",
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| -> Result<usize> {
        gguf.metadata_u32(&key(k))?
            .ok_or_else(|| Error::file(file, format!("metadata lacks `{}`", key(k))))
    };
    let heads = need("attention.head_count")?;
    let layers = need("block_count")?;
    let ff = match gguf.metadata_u32(&key("feed_forward_length"))? {
        Some(v) => v,
        None => hf
            .meta("model.layers.0.mlp.fc1.weight")
            .map(|m| m.shape[0])
            .ok_or_else(|| Error::file(file, "cannot tell the MLP width"))?,
    };
    let cfg = Config {
        vocab_size,
        hidden_size,
        intermediate_size: ff,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: gguf.metadata_u32(&key("attention.head_count_kv"))?,
        hidden_act: Activation::GeluTanh,
        max_position_embeddings: gguf.metadata_u32(&key("context_length"))?.unwrap_or(2048),
        layer_norm_eps: gguf
            .metadata_f32(&key("attention.layer_norm_epsilon"))?
            .unwrap_or(1e-5) as f64,
        rope_theta: gguf
            .metadata_f32(&key("rope.freq_base"))?
            .unwrap_or(10000.0),
        rotary_dim: need("rope.dimension_count")?,
        eos_token_id: gguf
            .metadata_u32("tokenizer.ggml.eos_token_id")?
            .map(|v| v as u32),
    };
    cfg.validate(file)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_between_layouts() {
        for (hf, stored) in [
            (
                "model.layers.12.self_attn.qkv_proj.bias",
                "blk.12.attn_qkv.bias",
            ),
            ("lm_head.weight", "output.weight"),
            ("model.layers.0.mlp.fc2.weight", "blk.0.ffn_down.weight"),
        ] {
            assert_eq!(translate(LLAMA_CPP, hf, true).as_deref(), Some(stored));
            assert_eq!(translate(LLAMA_CPP, stored, false).as_deref(), Some(hf));
        }
        assert_eq!(
            translate(MIXFORMER, "model.layers.3.self_attn.dense.weight", true).as_deref(),
            Some("transformer.h.3.mixer.out_proj.weight")
        );
        assert_eq!(
            translate(LLAMA_CPP, "model.layers.x.mlp.fc1.weight", true),
            None
        );
    }
}

/// What llama.cpp needs to know about the tokenizer, taken from a `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    pub tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 3 control, 4 user-defined, 5 unused (padding).
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub eos: u32,
}

impl GgufVocab {
    /// Reads a byte-level BPE `tokenizer.json` and pads the vocabulary with `[PAD<i>]` up to
    /// `rows` (the embedding matrix is usually larger than the tokenizer), as llama.cpp's
    /// converter does.
    pub fn from_tokenizer_json(json: &str, rows: usize) -> Result<Self> {
        let bad = |m: &str| Error::file("tokenizer.json", m);
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(&format!("not valid JSON: {e}")))?;
        let vocab = v["model"]["vocab"]
            .as_object()
            .ok_or_else(|| bad("no model.vocab"))?;
        let mut tokens: Vec<Option<String>> = Vec::new();
        let mut types = Vec::new();
        let mut put = |id: usize, tok: &str, ty: i32| {
            if tokens.len() <= id {
                tokens.resize(id + 1, None);
                types.resize(id + 1, 1);
            }
            tokens[id] = Some(tok.to_string());
            types[id] = ty;
        };
        for (tok, id) in vocab {
            put(
                id.as_u64()
                    .ok_or_else(|| bad("vocab ids must be integers"))? as usize,
                tok,
                1,
            );
        }
        let mut eos = None;
        for added in v["added_tokens"].as_array().into_iter().flatten() {
            let id = added["id"]
                .as_u64()
                .ok_or_else(|| bad("added token without id"))? as usize;
            let content = added["content"].as_str().unwrap_or_default();
            let special = added["special"].as_bool().unwrap_or(false);
            if content == "<|endoftext|>" {
                eos = Some(id as u32);
            }
            // Added text (Phi-2's runs of spaces and tabs) stays raw text, as llama.cpp's
            // converter stores user-defined tokens.
            put(id, content, if special { 3 } else { 4 });
        }
        if tokens.len() > rows {
            return Err(bad(&format!(
                "{} tokens do not fit the model's {rows} embedding rows",
                tokens.len()
            )));
        }
        tokens.resize(rows, None);
        types.resize(rows, 5);
        let (out_tokens, out_types): (Vec<String>, Vec<i32>) = tokens
            .into_iter()
            .zip(types)
            .enumerate()
            .map(|(i, (tok, ty))| match tok {
                Some(t) => (t, ty),
                None => (format!("[PAD{i}]"), 5),
            })
            .unzip();
        let merges = v["model"]["merges"]
            .as_array()
            .ok_or_else(|| bad("no model.merges"))?
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Array(pair) if pair.len() == 2 => Ok(format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )),
                _ => Err(bad("merges must be strings or pairs")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tokens: out_tokens,
            token_types: out_types,
            merges,
            eos: eos.ok_or_else(|| bad("no <|endoftext|> token"))?,
        })
    }
}

/// Writes Phi-2 as a llama.cpp `phi2` GGUF (TheBloke's layout: fused `attn_qkv`), from tensors
/// under HF names (`self_attn.qkv_proj` fused). Norms and biases should be F32.
pub fn write_llama_cpp_gguf(
    cfg: &Config,
    name: &str,
    tensors: &[(String, candle_core::quantized::QTensor)],
    vocab: &GgufVocab,
    file_type: u32,
) -> Result<Vec<u8>> {
    use candle_core::quantized::gguf_file::{self, Value};
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("phi2".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(file_type)),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "phi2.context_length".into(),
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        (
            "phi2.embedding_length".into(),
            Value::U32(cfg.hidden_size as u32),
        ),
        (
            "phi2.feed_forward_length".into(),
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "phi2.block_count".into(),
            Value::U32(cfg.num_hidden_layers as u32),
        ),
        (
            "phi2.attention.head_count".into(),
            Value::U32(cfg.num_attention_heads as u32),
        ),
        (
            "phi2.attention.head_count_kv".into(),
            Value::U32(cfg.num_key_value_heads() as u32),
        ),
        (
            "phi2.attention.layer_norm_epsilon".into(),
            Value::F32(cfg.layer_norm_eps as f32),
        ),
        (
            "phi2.rope.dimension_count".into(),
            Value::U32(cfg.rotary_dim as u32),
        ),
        ("phi2.rope.freq_base".into(), Value::F32(cfg.rope_theta)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("phi-2".into())),
        ("tokenizer.ggml.tokens".into(), strings(&vocab.tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.token_types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(&vocab.merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.eos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos)),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(vocab.eos),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    let renamed = tensors
        .iter()
        .map(|(hf, t)| {
            translate(LLAMA_CPP, hf, true)
                .map(|n| (n, t))
                .ok_or_else(|| Error::tensor("<gguf writer>", hf, "has no llama.cpp name"))
        })
        .collect::<Result<Vec<_>>>()?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
        renamed.iter().map(|(k, t)| (k.as_str(), *t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}
