//! Whisper speech recognition on the shared runtime: every released size
//! (tiny … large-v3, large-v3-turbo; 80 or 128 mels; English-only or
//! multilingual) from a Hugging Face model directory.
//!
//! - [`config`]: `config.json`, `generation_config.json`, `preprocessor_config.json`
//! - [`model`]: encoder and decoder; [`kv_cache`]: preallocated decoder caches
//!   (the encoder and its CPU float32 kernels: `encoder`, `encoder_cpu`)
//! - [`tokenizer`]: `tokenizer.json` with Whisper's special tokens
//! - [`decoding`]: greedy / beam search, suppression and timestamp rules,
//!   temperature fallback, no-speech detection (one 30 s window)
//! - [`longform`]: sequential 30 s windows with seek by the last timestamp
//! - [`timing`]: word-level timestamps (cross-attention + DTW, openai's `timing.py`)
//! - [`streaming`]: re-decoding a growing buffer, LocalAgreement-2 confirmation

pub mod config;
mod ct2;
pub mod decoding;
mod encoder;
mod encoder_cpu;
pub(crate) mod fastmath;
pub mod kv_cache;
pub mod languages;
pub mod longform;
pub mod model;
pub mod streaming;
pub mod timing;
pub mod tokenizer;

pub use config::{GenerationConfig, PreprocessorConfig, WhisperConfig};
pub use decoding::{DecodeOptions, Decoder as WindowDecoder, DecodingResult};
pub use longform::{Segment, TranscribeOptions, Transcript};
pub use model::WhisperModel;
pub use tokenizer::{Task, WhisperTokenizer};

use crate::runtime::{ModelDir, RuntimeError};
use candle_core::{DType, Device};
use std::path::PathBuf;

/// Errors from loading and running Whisper.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{dir}: weights do not match config.json: {msg}")]
    Weights { dir: PathBuf, msg: String },
    #[error("bad decoding options: {0}")]
    Options(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = WhisperError> = std::result::Result<T, E>;

/// A loaded checkpoint: network, tokenizer and configs.
#[derive(Debug, Clone)]
pub struct Whisper {
    pub model: WhisperModel,
    pub tokenizer: WhisperTokenizer,
    pub generation: GenerationConfig,
    pub preprocessor: PreprocessorConfig,
    /// Directory name, reported in outputs.
    pub name: String,
}

impl Whisper {
    /// Loads a Hugging Face-layout Whisper directory onto `device` as `dtype`.
    /// Missing files, mismatched shapes and unsupported configs are errors
    /// naming the directory or file.
    pub fn load(dir: &ModelDir, device: &Device, dtype: DType) -> Result<Self> {
        if crate::runtime::ctranslate2::is_ct2_dir(dir.root()) {
            return Self::load_ct2(dir, device, dtype);
        }
        let config = WhisperConfig::load(dir)?;
        let generation = GenerationConfig::load(dir)?;
        let preprocessor = PreprocessorConfig::load(dir, config.num_mel_bins)?;
        let tok_path = dir.require("tokenizer.json")?;
        let tokenizer = WhisperTokenizer::load(&tok_path, &generation, config.vocab_size)?;
        let vb = dir.var_builder(dtype, device)?;
        let model = WhisperModel::load(&config, vb).map_err(|e| WhisperError::Weights {
            dir: dir.root().to_path_buf(),
            msg: e.to_string(),
        })?;
        let name = dir
            .root()
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.root().display().to_string());
        Ok(Self {
            model,
            tokenizer,
            generation,
            preprocessor,
            name,
        })
    }

    /// Mel bins the model takes (80 or 128).
    pub fn n_mels(&self) -> usize {
        self.model.config.num_mel_bins
    }
}

#[cfg(test)]
mod parity_tests;
#[cfg(test)]
pub(crate) mod testutil;
