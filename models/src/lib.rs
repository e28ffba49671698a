//! voxtok-models: the tensor runtime and every model voxtok runs (Whisper
//! ASR, discrete audio tokenizers, text tokenizers, LLMs, speech-to-LaTeX).

pub mod codec;
pub mod latex;
pub mod llm;
pub mod runtime;
pub mod text;
pub mod vad;
pub mod whisper;
