//! Text tokenization for the LLM stages: `tokenizer.json` (BPE, byte-level
//! BPE, Unigram, WordPiece through the `tokenizers` crate), chat templates
//! from `tokenizer_config.json` (minijinja), the digit-splitting pre-step and
//! token statistics.

mod chat;
mod digits;
mod stats;
mod tokenizer;

#[cfg(test)]
mod parity_tests;

pub use chat::{ChatMessage, ChatTemplate};
pub use digits::{digit_segments, DigitSplit};
pub use stats::{premiums, LanguagePremium, TextStats};
pub use tokenizer::{Encoded, TextTokenizer};

use std::path::PathBuf;

/// Errors from loading tokenizers, encoding, decoding and templating.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{path}: cannot load tokenizer: {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("{0}: missing `tokenizer.json` (this model directory has no fast tokenizer)")]
    MissingTokenizer(PathBuf),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("token id {id} is out of the vocabulary (size {vocab})")]
    IdOutOfVocab { id: u32, vocab: usize },
    #[error("unknown special token `{0}` (not in the tokenizer's vocabulary)")]
    UnknownSpecial(String),
    #[error("{path}: no chat template (neither `chat_template` in tokenizer_config.json nor chat_template.jinja)")]
    NoChatTemplate { path: PathBuf },
    #[error("chat template: {0}")]
    Template(String),
    #[error("unknown digit split `{0}` (expected none, r2l3 or single)")]
    BadDigitSplit(String),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

pub type Result<T, E = TextError> = std::result::Result<T, E>;
