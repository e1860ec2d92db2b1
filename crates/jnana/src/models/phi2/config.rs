use crate::error::{Error, Result};
use crate::models::activation::Activation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Typed access to a config.json object, with errors naming the file.
struct Fields<'a> {
    file: &'a str,
    v: &'a Value,
}

impl Fields<'_> {
    fn uint(&self, key: &str) -> Option<usize> {
        self.v.get(key).and_then(Value::as_u64).map(|x| x as usize)
    }

    fn float(&self, key: &str) -> Option<f64> {
        self.v.get(key).and_then(Value::as_f64)
    }

    fn need(&self, key: &str) -> Result<usize> {
        self.uint(key)
            .ok_or_else(|| Error::file(self.file, format!("config lacks an integer `{key}`")))
    }
}

/// Phi-2's dimensions, from an HF `config.json` or a GGUF's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub rope_theta: f32,
    /// Rotated dims per head: `int(head_dim * partial_rotary_factor)`.
    pub rotary_dim: usize,
    pub eos_token_id: Option<u32>,
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// microsoft/phi-2's published configuration.
    pub fn phi2() -> Self {
        Self {
            vocab_size: 51200,
            hidden_size: 2560,
            intermediate_size: 10240,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            hidden_act: Activation::GeluTanh,
            max_position_embeddings: 2048,
            layer_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rotary_dim: 32,
            eos_token_id: Some(50256),
        }
    }

    /// Parses a transformers `PhiConfig` (4.x and 5.x layouts: `rope_theta` and
    /// `partial_rotary_factor` at the top level or under `rope_parameters`).
    pub fn from_hf_json(file: &str, json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| Error::file(file, format!("not valid JSON: {e}")))?;
        // A multimodal config keeps the language model under `text_config`.
        let v = v.get("text_config").unwrap_or(&v);
        Self::from_hf_value(file, v)
    }

    pub fn from_hf_value(file: &str, v: &Value) -> Result<Self> {
        let fields = Fields { file, v };
        // microsoft/phi-2 before January 2024 shipped a remote-code `phi-msft` config.
        if v.get("n_embd").is_some() {
            return Self::from_phi_msft(&fields);
        }
        let rope = v.get("rope_parameters");
        let float_of = |key: &str, default: f64| -> f64 {
            fields
                .float(key)
                .or_else(|| rope.and_then(|r| r.get(key)).and_then(Value::as_f64))
                .unwrap_or(default)
        };
        let hidden_size = fields.need("hidden_size")?;
        let num_attention_heads = fields.need("num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(Error::file(
                file,
                format!("hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = hidden_size / num_attention_heads;
        let act_name = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu_new");
        let hidden_act = Activation::from_hf(act_name)
            .ok_or_else(|| Error::file(file, format!("unsupported hidden_act `{act_name}`")))?;
        let cfg = Self {
            vocab_size: fields.need("vocab_size")?,
            hidden_size,
            intermediate_size: fields.need("intermediate_size")?,
            num_hidden_layers: fields.need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: fields.uint("num_key_value_heads"),
            hidden_act,
            max_position_embeddings: fields.need("max_position_embeddings")?,
            layer_norm_eps: float_of("layer_norm_eps", 1e-5),
            rope_theta: float_of("rope_theta", 10000.0) as f32,
            rotary_dim: (head_dim as f64 * float_of("partial_rotary_factor", 0.5)) as usize,
            eos_token_id: fields.uint("eos_token_id").map(|x| x as u32),
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn from_phi_msft(fields: &Fields) -> Result<Self> {
        let hidden_size = fields.need("n_embd")?;
        let cfg = Self {
            vocab_size: fields.need("vocab_size")?,
            hidden_size,
            intermediate_size: fields.uint("n_inner").unwrap_or(4 * hidden_size),
            num_hidden_layers: fields.need("n_layer")?,
            num_attention_heads: fields.need("n_head")?,
            num_key_value_heads: fields.uint("n_head_kv"),
            hidden_act: Activation::GeluTanh,
            max_position_embeddings: fields.need("n_positions")?,
            layer_norm_eps: fields.float("layer_norm_epsilon").unwrap_or(1e-5),
            rope_theta: 10000.0,
            rotary_dim: fields.need("rotary_dim")?,
            eos_token_id: fields.uint("eos_token_id").map(|x| x as u32),
        };
        cfg.validate(fields.file)?;
        Ok(cfg)
    }

    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |m: String| Err(Error::file(file, m));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden size {} is not divisible by {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let kv = self.num_key_value_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(format!(
                "{} attention heads cannot share {kv} key/value heads",
                self.num_attention_heads
            ));
        }
        if !self.rotary_dim.is_multiple_of(2) || self.rotary_dim > self.head_dim() {
            return bad(format!(
                "rotary width {} must be even and at most the head width {}",
                self.rotary_dim,
                self.head_dim()
            ));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.max_position_embeddings == 0
        {
            return bad("vocabulary, layer count and context length must be positive".into());
        }
        Ok(())
    }

    /// The HF `config.json` this configuration corresponds to.
    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "architectures": ["PhiForCausalLM"],
            "model_type": "phi",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads(),
            "hidden_act": self.hidden_act.hf_name(),
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps,
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.rotary_dim as f64 / self.head_dim() as f64,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.eos_token_id,
            "tie_word_embeddings": false,
        })
    }
}
