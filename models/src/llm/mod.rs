//! Decoder-only LLMs (Qwen2 / Qwen2.5, Llama, SmolLM, TinyLlama) on the
//! shared runtime: per-sequence preallocated KV caches, ragged batched
//! forward (prefill and decode), sampling and continuous batching.

mod attention;
mod config;
mod engine;
mod kv_cache;
mod model;
mod rope;
mod sampling;

#[cfg(test)]
mod parity_tests;

pub use attention::cached_attention;
pub use config::{Arch, LlmConfig, RopeScaling};
pub use engine::{Engine, EngineStats, FinishReason, GenerateRequest, Generation};
pub use kv_cache::KvCache;
pub use model::{Decoder, SeqInput};
pub use rope::{inv_freq, Rope};
pub use sampling::{argmax, Rng, Sampler, SamplingParams};

use crate::runtime::ModelDir;
use crate::text::{ChatTemplate, TextTokenizer};
use candle_core::{DType, Device};
use std::path::PathBuf;

/// Errors of the LLM stage.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: unsupported model: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    #[error("cannot load weights: {0}")]
    Weights(String),
    #[error("prompt of {tokens} tokens does not fit the context of {context} tokens")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("context full: {needed} positions needed, cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("token id {id} is out of the vocabulary (size {vocab})")]
    IdOutOfVocab { id: u32, vocab: usize },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Text(#[from] crate::text::TextError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = LlmError> = std::result::Result<T, E>;

/// A model directory loaded for generation: decoder, tokenizer (if the
/// directory has one), chat template (if any) and end-of-sequence ids.
pub struct Llm {
    pub model: Decoder,
    pub tokenizer: Option<TextTokenizer>,
    pub chat: Option<ChatTemplate>,
    /// From `generation_config.json` and `config.json`, deduplicated.
    pub eos_ids: Vec<u32>,
    pub dir: ModelDir,
}

impl Llm {
    /// Loads everything from a Hugging Face-layout directory.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self> {
        let model = Decoder::load(dir, dtype, device)?;
        let tokenizer = match dir.file("tokenizer.json") {
            Some(p) => Some(TextTokenizer::from_file(&p)?),
            None => None,
        };
        let chat = ChatTemplate::from_dir(dir.root()).ok();
        let mut eos_ids = Vec::new();
        if let Some(p) = dir.file("generation_config.json") {
            let v: serde_json::Value = crate::runtime::read_json(&p)?;
            eos_ids = config::id_list(v.get("eos_token_id"));
        }
        eos_ids.extend(model.config().eos_token_ids.iter().copied());
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Self {
            model,
            tokenizer,
            chat,
            eos_ids,
            dir: dir.clone(),
        })
    }

    /// The tokenizer, or an error naming the directory when it has none.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            crate::text::TextError::MissingTokenizer(self.dir.root().to_path_buf()).into()
        })
    }

    /// A continuous-batching engine over this model.
    pub fn engine(&self, max_batch: usize, capacity: usize) -> Engine<'_> {
        Engine::new(
            &self.model,
            self.tokenizer.as_ref(),
            self.eos_ids.clone(),
            max_batch,
            capacity,
        )
    }
}
