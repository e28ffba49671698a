//! `config.json` of Qwen2 / Llama-family checkpoints.

use super::{LlmError, Result};
use serde::Deserialize;
use std::path::Path;

/// The decoder families voxtok runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5: bias on q, k, v.
    Qwen2,
    /// Llama / SmolLM / TinyLlama / Mistral-without-window: optional biases.
    Llama,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.x wavelength-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
}

/// Everything the decoder needs from `config.json`.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// End-of-sequence ids from config.json (generation_config.json may add more).
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<serde_json::Value>,
}

fn default_max_pos() -> usize {
    4096
}
fn default_eps() -> f64 {
    1e-6
}

/// An id or a list of ids (`eos_token_id` in configs).
pub(crate) fn id_list(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    }
}

impl LlmConfig {
    /// Parses and validates `config.json`; unsupported architectures and
    /// features are errors naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LlmError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|e| match e {
            LlmError::Config { msg, .. } => LlmError::Config {
                path: path.to_path_buf(),
                msg,
            },
            LlmError::Unsupported { msg, .. } => LlmError::Unsupported {
                path: path.to_path_buf(),
                msg,
            },
            e => e,
        })
    }

    /// Parses the text of a `config.json` (errors carry an empty path).
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg_err = |msg: String| LlmError::Config {
            path: Default::default(),
            msg,
        };
        let unsupported = |msg: String| LlmError::Unsupported {
            path: Default::default(),
            msg,
        };
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| cfg_err(format!("invalid config: {e}")))?;
        let arch_name = raw.architectures.first().cloned().unwrap_or_default();
        let arch = match (arch_name.as_str(), raw.model_type.as_deref()) {
            ("Qwen2ForCausalLM", _) | ("", Some("qwen2")) => Arch::Qwen2,
            ("LlamaForCausalLM", _) | ("", Some("llama")) => Arch::Llama,
            ("MistralForCausalLM", _) | ("", Some("mistral")) => Arch::Llama,
            (a, t) => {
                return Err(unsupported(format!(
                    "architecture `{}` (model_type `{}`); supported: Qwen2ForCausalLM, LlamaForCausalLM",
                    if a.is_empty() { "?" } else { a },
                    t.unwrap_or("?")
                )))
            }
        };
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(unsupported(format!("hidden_act `{act}` (only silu)")));
            }
        }
        if raw.use_sliding_window == Some(true) {
            return Err(unsupported("use_sliding_window = true".into()));
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads == 0
            || num_kv_heads == 0
            || !raw.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(cfg_err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {num_kv_heads}",
                raw.num_attention_heads
            )));
        }
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(cfg_err(format!("head_dim {head_dim} must be even and > 0")));
        }
        // transformers >= 5 writes `rope_parameters`; older configs `rope_theta` + `rope_scaling`.
        let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref()?.get("rope_theta")?.as_f64())
            .unwrap_or(10000.0);
        let rope_scaling = rope_scaling(params).map_err(unsupported)?;
        let qkv_bias = match arch {
            Arch::Qwen2 => true,
            Arch::Llama => raw.attention_bias.unwrap_or(false),
        };
        let o_bias = arch == Arch::Llama && raw.attention_bias.unwrap_or(false);
        Ok(Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(arch == Arch::Qwen2),
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            eos_token_ids: id_list(raw.eos_token_id.as_ref()),
        })
    }
}

fn rope_scaling(v: Option<&serde_json::Value>) -> std::result::Result<RopeScaling, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let need = |k: &str| f(k).ok_or_else(|| format!("rope scaling `{kind}` without `{k}`"));
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: need("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position: need("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "rope scaling type `{other}` (supported: default, linear, llama3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_old_and_new_rope_styles_and_rejects_unknown() {
        let base = r#""vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2"#;
        let c = LlmConfig::from_json(&format!(
            r#"{{"architectures":["Qwen2ForCausalLM"],{base},"rope_theta":1e6,"eos_token_id":[3,4]}}"#
        ))
        .unwrap();
        assert_eq!(
            (c.arch, c.rope_theta, c.num_kv_heads, c.head_dim),
            (Arch::Qwen2, 1e6, 2, 4)
        );
        assert!(c.qkv_bias && c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, [3, 4]);
        let c = LlmConfig::from_json(&format!(
            r#"{{"model_type":"llama",{base},"rope_parameters":{{"rope_theta":5e5,"rope_type":"linear","factor":2.0}}}}"#
        ))
        .unwrap();
        assert_eq!(c.rope_theta, 5e5);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        let e = LlmConfig::from_json(&format!(
            r#"{{"architectures":["GPT2LMHeadModel"],{base}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("GPT2LMHeadModel"), "{e}");
        let e = LlmConfig::from_json(&format!(
            r#"{{"model_type":"llama",{base},"rope_scaling":{{"rope_type":"yarn","factor":2.0}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("yarn"), "{e}");
    }
}
