//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors` or `.bin`) for Phi-2.
//!
//! Module names may follow transformers' `PhiForCausalLM` (`model.layers.N.self_attn.q_proj`,
//! `k_proj`, `v_proj`, `dense`, `mlp.fc1`, `mlp.fc2`) or the older remote-code layout the seed
//! was trained on (`transformer.h.N.mixer.Wqkv`, `mixer.out_proj`, `mlp.fc1`, `mlp.fc2`). Both map
//! onto [`Phi2::apply_lora`](crate::models::phi2::Phi2::apply_lora) targets `layers.N.<module>`.

use crate::error::{Error, Result};
use crate::weights::{LowRank, TensorSource};
use candle_core::Device;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub alpha_pattern: BTreeMap<String, f64>,
    pub target_modules: Vec<String>,
}

impl LoraConfig {
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| Error::file(file, format!("not valid JSON: {e}")))?;
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(Error::file(
                file,
                format!("a {peft_type} adapter; only LoRA adapters are supported"),
            ));
        }
        for (flag, what) in [
            ("use_dora", "DoRA"),
            ("fan_in_fan_out", "fan_in_fan_out (Conv1D) weights"),
        ] {
            if v.get(flag).and_then(Value::as_bool).unwrap_or(false) {
                return Err(Error::file(file, format!("{what} are not supported")));
            }
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| Error::file(file, "config lacks a positive `r`"))?
            as usize;
        let lora_alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::file(file, "config lacks `lora_alpha`"))?;
        let alpha_pattern = v
            .get("alpha_pattern")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|a| (k.clone(), a)))
                    .collect()
            })
            .unwrap_or_default();
        let target_modules = match v.get("target_modules") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Self {
            r,
            lora_alpha,
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            alpha_pattern,
            target_modules,
        })
    }

    /// PEFT's scaling for a module of rank `r`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    fn scaling(&self, module_path: &str, r: usize) -> f64 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(pattern, _)| module_path.ends_with(pattern.as_str()))
            .map_or(self.lora_alpha, |(_, a)| *a);
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

/// An adapter read into per-module low-rank updates, keyed `layers.N.<module>`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub updates: HashMap<String, LowRank>,
}

impl LoraAdapter {
    pub fn load(
        config_file: &str,
        config_json: &str,
        weights: &dyn TensorSource,
        device: &Device,
    ) -> Result<Self> {
        let config = LoraConfig::from_json(config_file, config_json)?;
        let file = weights.file_name().to_string();
        let mut halves: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        let mut unknown = Vec::new();
        for name in weights.names() {
            let Some((module, half)) = split_lora_name(&name) else {
                // Full tensors (PEFT `modules_to_save`) would replace base weights wholesale.
                return Err(Error::tensor(
                    &file,
                    name,
                    "is not a lora_A/lora_B factor; adapters with full replacement tensors (modules_to_save) are not supported",
                ));
            };
            match phi_target(module) {
                Some(target) => {
                    let entry = halves.entry(target).or_default();
                    let slot = if half == 'A' {
                        &mut entry.0
                    } else {
                        &mut entry.1
                    };
                    *slot = Some(name.clone());
                }
                None => unknown.push(module.to_string()),
            }
        }
        if halves.is_empty() {
            let seen = if unknown.is_empty() {
                "no lora_A/lora_B tensors at all".to_string()
            } else {
                format!("modules {}", summarize(&unknown))
            };
            return Err(Error::file(
                file,
                format!(
                    "the adapter's modules match nothing in Phi-2 ({seen}); expected q_proj/k_proj/v_proj/dense/fc1/fc2 or Wqkv/out_proj/fc1/fc2"
                ),
            ));
        }
        if !unknown.is_empty() {
            return Err(Error::file(
                file,
                format!(
                    "adapter modules with no Phi-2 counterpart: {}",
                    summarize(&unknown)
                ),
            ));
        }
        let mut updates = HashMap::new();
        for (target, (a_name, b_name)) in halves {
            let (Some(a_name), Some(b_name)) = (a_name, b_name) else {
                return Err(Error::file(
                    &file,
                    format!("module `{target}` has only one of lora_A / lora_B"),
                ));
            };
            let a = weights.read_f32(&a_name, device)?;
            let b = weights.read_f32(&b_name, device)?;
            let (r_a, _) = a.dims2().map_err(|e| Error::tensor(&file, &a_name, e))?;
            let (_, r_b) = b.dims2().map_err(|e| Error::tensor(&file, &b_name, e))?;
            if r_a != r_b {
                return Err(Error::tensor(
                    &file,
                    &b_name,
                    format!("rank {r_b} does not match lora_A's rank {r_a}"),
                ));
            }
            let scale = config.scaling(&a_name, r_a);
            updates.insert(target, LowRank { a, b: (b * scale)? });
        }
        Ok(Self { config, updates })
    }
}

fn summarize(names: &[String]) -> String {
    let mut unique: Vec<&String> = names.iter().collect();
    unique.sort();
    unique.dedup();
    let shown: Vec<_> = unique.iter().take(4).map(|s| format!("`{s}`")).collect();
    let more = unique.len().saturating_sub(4);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// `base_model.model.<path>.lora_A.weight` (or `.lora_A.<adapter>.weight`) → (`<path>`, 'A').
fn split_lora_name(name: &str) -> Option<(&str, char)> {
    let path = name.strip_prefix("base_model.model.").unwrap_or(name);
    for half in ['A', 'B'] {
        let marker = format!(".lora_{half}.");
        if let Some(pos) = path.find(&marker) {
            return Some((&path[..pos], half));
        }
    }
    None
}

/// `model.layers.3.self_attn.q_proj` → `layers.3.q_proj`; `transformer.h.3.mixer.Wqkv` →
/// `layers.3.qkv_proj`.
fn phi_target(module: &str) -> Option<String> {
    let parts: Vec<&str> = module.split('.').collect();
    let pos = parts.iter().position(|p| *p == "layers" || *p == "h")?;
    let layer: usize = parts.get(pos + 1)?.parse().ok()?;
    let tail = parts.get(pos + 2..)?.join(".");
    let module = match tail.as_str() {
        "self_attn.q_proj" => "q_proj",
        "self_attn.k_proj" => "k_proj",
        "self_attn.v_proj" => "v_proj",
        "self_attn.dense" | "mixer.out_proj" => "dense",
        "mixer.Wqkv" => "qkv_proj",
        "mlp.fc1" => "fc1",
        "mlp.fc2" => "fc2",
        _ => return None,
    };
    Some(format!("layers.{layer}.{module}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_module_layouts() {
        let hf = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight";
        let (module, half) = split_lora_name(hf).unwrap();
        assert_eq!(
            (phi_target(module).unwrap().as_str(), half),
            ("layers.7.q_proj", 'A')
        );
        let old = "base_model.model.transformer.h.12.mixer.Wqkv.lora_B.default.weight";
        let (module, half) = split_lora_name(old).unwrap();
        assert_eq!(
            (phi_target(module).unwrap().as_str(), half),
            ("layers.12.qkv_proj", 'B')
        );
        assert_eq!(
            phi_target("transformer.h.0.mixer.out_proj").as_deref(),
            Some("layers.0.dense")
        );
        assert_eq!(phi_target("model.layers.0.self_attn.rotary"), None);
        assert_eq!(phi_target("lm_head"), None);
    }

    #[test]
    fn rslora_and_alpha_pattern_change_the_scale() {
        let cfg = LoraConfig::from_json(
            "c",
            r#"{"r": 16, "lora_alpha": 32, "use_rslora": true, "alpha_pattern": {"fc2": 8}}"#,
        )
        .unwrap();
        assert_eq!(cfg.scaling("x.fc1", 16), 8.0);
        assert_eq!(cfg.scaling("x.fc2", 16), 2.0);
        assert!(
            LoraConfig::from_json("c", r#"{"r": 8, "lora_alpha": 16, "use_dora": true}"#).is_err()
        );
    }
}
