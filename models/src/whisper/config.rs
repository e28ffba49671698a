//! Whisper configuration files of a Hugging Face model directory:
//! `config.json` (architecture), `generation_config.json` (prompt and
//! suppression token ids) and `preprocessor_config.json` (log-mel front-end).

use super::{Result, WhisperError};
use crate::runtime::ModelDir;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Architecture of a Whisper checkpoint (`config.json`). Every released size
/// (tiny … large-v3, large-v3-turbo) is one of these; nothing is hard-coded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WhisperConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub num_mel_bins: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_layers: usize,
    pub decoder_attention_heads: usize,
    #[serde(default)]
    pub encoder_ffn_dim: Option<usize>,
    #[serde(default)]
    pub decoder_ffn_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_source_positions: usize,
    pub max_target_positions: usize,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn default_activation() -> String {
    "gelu".into()
}
fn yes() -> bool {
    true
}

impl WhisperConfig {
    /// Reads and validates `config.json`.
    pub fn load(dir: &ModelDir) -> Result<Self> {
        let cfg: Self = dir.config()?;
        cfg.validate().map_err(|msg| WhisperError::Config {
            path: dir.root().join("config.json"),
            msg,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "whisper" {
                return Err(format!("model_type is `{t}`, expected `whisper`"));
            }
        }
        for (what, d, h) in [
            ("encoder", self.d_model, self.encoder_attention_heads),
            ("decoder", self.d_model, self.decoder_attention_heads),
        ] {
            if h == 0 || d % h != 0 {
                return Err(format!("d_model {d} is not divisible by {what} heads {h}"));
            }
        }
        if self.activation_function != "gelu" {
            return Err(format!(
                "activation_function `{}` is not supported (only `gelu`)",
                self.activation_function
            ));
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 || self.vocab_size == 0 {
            return Err("zero layers or empty vocabulary".into());
        }
        Ok(())
    }

    pub fn encoder_ffn(&self) -> usize {
        self.encoder_ffn_dim.unwrap_or(4 * self.d_model)
    }
    pub fn decoder_ffn(&self) -> usize {
        self.decoder_ffn_dim.unwrap_or(4 * self.d_model)
    }
    /// Number of mel frames one window takes (2 × encoder positions, 3000).
    pub fn n_frames(&self) -> usize {
        2 * self.max_source_positions
    }
}

/// The Whisper fields of `generation_config.json`; all optional, the
/// tokenizer supplies what is missing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub no_timestamps_token_id: Option<u32>,
    #[serde(default)]
    pub suppress_tokens: Option<Vec<u32>>,
    #[serde(default)]
    pub begin_suppress_tokens: Option<Vec<u32>>,
    #[serde(default)]
    pub lang_to_id: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    pub task_to_id: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    pub is_multilingual: Option<bool>,
    #[serde(default)]
    pub max_initial_timestamp_index: Option<u32>,
    /// Cross-attention `[layer, head]` pairs that align tokens with audio
    /// (word timestamps); openai's default when absent: every head of the
    /// last half of the decoder layers.
    #[serde(default)]
    pub alignment_heads: Option<Vec<[usize; 2]>>,
}

impl GenerationConfig {
    /// Reads `generation_config.json`, or defaults when the file is absent.
    pub fn load(dir: &ModelDir) -> Result<Self> {
        match dir.file("generation_config.json") {
            Some(_) => Ok(dir.json("generation_config.json")?),
            None => Ok(Self::default()),
        }
    }
}

/// The log-mel front-end settings (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PreprocessorConfig {
    #[serde(default = "d_feature_size")]
    pub feature_size: usize,
    #[serde(default = "d_sampling_rate")]
    pub sampling_rate: u32,
    #[serde(default = "d_n_fft")]
    pub n_fft: usize,
    #[serde(default = "d_hop")]
    pub hop_length: usize,
    #[serde(default = "d_chunk")]
    pub chunk_length: usize,
}

fn d_feature_size() -> usize {
    80
}
fn d_sampling_rate() -> u32 {
    16000
}
fn d_n_fft() -> usize {
    400
}
fn d_hop() -> usize {
    160
}
fn d_chunk() -> usize {
    30
}

impl PreprocessorConfig {
    /// Reads `preprocessor_config.json`; when absent, Whisper's defaults
    /// with `n_mels` bins.
    pub fn load(dir: &ModelDir, n_mels: usize) -> Result<Self> {
        let cfg = match dir.file("preprocessor_config.json") {
            Some(_) => dir.json("preprocessor_config.json")?,
            None => Self {
                feature_size: n_mels,
                sampling_rate: d_sampling_rate(),
                n_fft: d_n_fft(),
                hop_length: d_hop(),
                chunk_length: d_chunk(),
            },
        };
        if cfg.feature_size != n_mels {
            return Err(WhisperError::Config {
                path: dir.root().join("preprocessor_config.json"),
                msg: format!(
                    "feature_size {} does not match the model's num_mel_bins {n_mels}",
                    cfg.feature_size
                ),
            });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_sizes_parse() {
        // large-v3-turbo: 128 mels, 32 encoder layers, 4 decoder layers.
        let turbo = r#"{"model_type":"whisper","num_mel_bins":128,"d_model":1280,
            "encoder_layers":32,"encoder_attention_heads":20,"decoder_layers":4,
            "decoder_attention_heads":20,"encoder_ffn_dim":5120,"decoder_ffn_dim":5120,
            "vocab_size":51866,"max_source_positions":1500,"max_target_positions":448}"#;
        let c: WhisperConfig = serde_json::from_str(turbo).unwrap();
        c.validate().unwrap();
        assert_eq!(
            (c.decoder_layers, c.encoder_layers, c.n_frames()),
            (4, 32, 3000)
        );
        let mut bad = c.clone();
        bad.encoder_attention_heads = 7;
        assert!(bad.validate().is_err());
    }
}
