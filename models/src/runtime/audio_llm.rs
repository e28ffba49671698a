//! Interface for audio language models that take audio directly
//! (Qwen2-Audio / SALMONN style): an audio encoder (usually a Whisper
//! encoder) turns 16 kHz audio into frames, a projector maps them into the
//! LLM's embedding space, and the LLM decodes text from a prompt in which the
//! projected frames stand in for an audio placeholder token.
//!
//! No architecture implements it yet. What an implementation needs: the
//! encoder (reuse `whisper::model`'s encoder + log-mel front-end), the
//! projector weights (Qwen2-Audio: average-pool ×2 then one linear layer),
//! a way to feed input *embeddings* instead of ids to [`crate::llm::Decoder`]
//! for the prefill (its forward takes ids today), and the model's chat
//! template with its audio placeholder (`<|AUDIO|>` between
//! `<|audio_bos|>`/`<|audio_eos|>` in Qwen2-Audio).

use super::Tensor;

/// An audio → text model: audio encoder → projector → LLM decoder.
pub trait AudioLlm {
    /// The error of this model's stages.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sample rate the encoder expects (16 kHz for Whisper-style encoders).
    fn sample_rate(&self) -> u32;

    /// Encodes mono audio at [`AudioLlm::sample_rate`] and projects it into
    /// the LLM's embedding space: `[frames, hidden]`.
    fn encode_audio(&self, samples: &[f32]) -> Result<Tensor, Self::Error>;

    /// Renders `instruction` with the model's chat template around one audio
    /// placeholder and returns the prompt ids plus the placeholder's position.
    fn prompt(&self, instruction: &str) -> Result<(Vec<u32>, usize), Self::Error>;

    /// Greedy (or sampled) text for `samples` following `instruction`: the
    /// prompt's embeddings with the encoded audio spliced in at the
    /// placeholder are prefilled, then the LLM decodes up to `max_new_tokens`.
    fn generate(
        &self,
        samples: &[f32],
        instruction: &str,
        max_new_tokens: usize,
    ) -> Result<String, Self::Error>;
}
