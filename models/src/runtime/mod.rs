//! The tensor runtime shared by every model in voxtok: device and dtype
//! choice, and loading of Hugging Face-layout model directories.
//!
//! Whisper, the audio tokenizers and the LLMs all run on candle through this
//! module, so a `--device` flag means the same thing everywhere.

mod alloc;
pub mod audio_llm;
pub mod ctranslate2;
mod device;
pub mod int8;
mod linear;
mod model_dir;
#[cfg(test)]
pub(crate) mod testing;

pub use alloc::keep_freed_memory;
pub use device::{parse_device, parse_dtype, DeviceSpec};
pub(crate) use linear::SendPtr;
pub use linear::{dot, xwt, Linear, SMALL_M};
pub use model_dir::{
    default_model_candidates, find_asset_model, find_default_model, read_json, ModelDir,
};

pub use candle_core::{DType, Device, Tensor};
pub use candle_nn::VarBuilder;

use std::path::PathBuf;

/// Errors from the runtime: bad device names and unusable model directories.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown device `{0}` (expected cpu, cuda or cuda:N)")]
    BadDevice(String),
    #[error("device `{0}` is not available: {1}")]
    DeviceUnavailable(String, String),
    #[error("unknown dtype `{0}` (expected f32, f16 or bf16)")]
    BadDtype(String),
    #[error("model directory {0} does not exist or is not a directory")]
    NoModelDir(PathBuf),
    #[error("{dir}: missing file `{file}`")]
    MissingFile { dir: PathBuf, file: String },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{path}: unsupported config: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
