//! Discrete audio tokenizers (the DASB set): EnCodec, DAC, Mimi, SSL features + k-means,
//! behind one small interface mirroring DASB's `sig_to_tokens` /
//! `tokens_to_sig`: audio `[B, T]` → codes `[B, K, N]` (K codebooks, N frames)
//! and back.
//!
//! Models load from Hugging Face-layout directories (`EncodecModel`,
//! `HubertModel`, ...) through [`crate::runtime::ModelDir`].

mod conv_cpu;
pub mod dac;
pub mod encodec;
pub mod llm_mapping;
pub mod mimi;
mod nn;
pub mod npy;
mod seanet;
pub mod ssl;
#[cfg(test)]
mod test_util;
mod winograd;

use crate::runtime::{Device, ModelDir, RuntimeError, Tensor};
use candle_core::DType;
use std::path::PathBuf;

/// Errors of the audio tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: unsupported model config: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("invalid codes: {0}")]
    BadCodes(String),
    #[error("invalid audio: {0}")]
    BadAudio(String),
    #[error("{0}")]
    BadOption(String),
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error(
        "the {0} tokenizer has no decoder (SSL + k-means tokens cannot be turned back into audio)"
    )]
    NoDecoder(&'static str),
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;

/// Which tokenizer family a `--codec` name selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    Encodec,
    Dac,
    Mimi,
    Ssl,
}

impl std::str::FromStr for CodecKind {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "encodec" => Ok(Self::Encodec),
            "dac" => Ok(Self::Dac),
            "mimi" => Ok(Self::Mimi),
            "ssl" | "hubert" | "wavlm" | "wav2vec2" => Ok(Self::Ssl),
            _ => Err(CodecError::BadOption(format!(
                "unknown codec `{s}` (expected encodec, dac, mimi or ssl)"
            ))),
        }
    }
}

impl CodecKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Encodec => "encodec",
            Self::Dac => "dac",
            Self::Mimi => "mimi",
            Self::Ssl => "ssl",
        }
    }
}

/// Static facts about a loaded tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerInfo {
    pub codec: &'static str,
    /// Sample rate the model expects (input audio is resampled to it).
    pub sample_rate: u32,
    /// Code frames per second.
    pub frame_rate: f64,
    /// Number of ids per codebook (`K` clusters for SSL).
    pub codebook_size: usize,
    /// Codebooks available in the checkpoint.
    pub max_codebooks: usize,
    /// Codebooks used when none are asked for (EnCodec: the first target
    /// bandwidth, as transformers does).
    pub default_codebooks: usize,
    /// Whether `decode` exists (false for SSL + k-means).
    pub has_decoder: bool,
}

impl TokenizerInfo {
    /// Checks that `k` codebooks (1..=`max_codebooks`) can be used.
    pub fn check_codebooks(&self, k: usize) -> Result<()> {
        if k == 0 || k > self.max_codebooks {
            return Err(CodecError::BadOption(format!(
                "{k} codebooks requested; this {} model has 1..={}",
                self.codec, self.max_codebooks
            )));
        }
        Ok(())
    }

    /// Bitrate in bits per second for `codebooks` codebooks.
    pub fn bitrate(&self, codebooks: usize) -> f64 {
        self.frame_rate * codebooks as f64 * (self.codebook_size as f64).log2()
    }

    /// Codebooks that fit in `kbps` (at least 1): transformers'
    /// `floor(bandwidth * 1000 / (log2(codebook_size) * frame_rate))`.
    pub fn codebooks_for_bandwidth(&self, kbps: f64) -> Result<usize> {
        if kbps.is_nan() || kbps <= 0.0 || !kbps.is_finite() {
            return Err(CodecError::BadOption(format!(
                "bandwidth must be > 0 kbps, got {kbps}"
            )));
        }
        let k = ((kbps * 1000.0 / self.bitrate(1)).floor() as usize).max(1);
        if k > self.max_codebooks {
            return Err(CodecError::BadOption(format!(
                "{kbps} kbps needs {k} codebooks; the {} model has {} ({:.2} kbps at most)",
                self.codec,
                self.max_codebooks,
                self.bitrate(self.max_codebooks) / 1000.0
            )));
        }
        Ok(k)
    }
}

/// The common interface of every audio tokenizer (DASB's `sig_to_tokens` /
/// `tokens_to_sig`, with `[B, K, N]` codes instead of `[B, N, K]`).
pub trait AudioTokenizer: Send + Sync {
    fn info(&self) -> &TokenizerInfo;
    /// Encodes audio `[B, T]` (f32, at `info().sample_rate`) into codes
    /// `[B, K, N]` (u32) using the first `codebooks` codebooks.
    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor>;
    /// Decodes codes `[B, K, N]` (u32) into audio `[B, T]`.
    fn decode(&self, codes: &Tensor) -> Result<Tensor>;
    fn device(&self) -> &Device;
}

/// An incremental encoder ([`encodec::EncodecStream`], [`mimi::MimiStream`]):
/// push mono audio, get the code frames that are final; `finish` flushes
/// the tail. The concatenated frames equal whole-file encoding.
pub trait CodeStream {
    /// Feeds samples; returns the newly final frames (possibly none).
    fn push(&mut self, samples: &[f32]) -> Result<Codes>;
    /// Flushes the end of the stream.
    fn finish(self: Box<Self>) -> Result<Codes>;
}

impl CodeStream for encodec::EncodecStream<'_> {
    fn push(&mut self, samples: &[f32]) -> Result<Codes> {
        encodec::EncodecStream::push(self, samples)
    }
    fn finish(self: Box<Self>) -> Result<Codes> {
        encodec::EncodecStream::finish(*self)
    }
}

impl CodeStream for mimi::MimiStream<'_> {
    fn push(&mut self, samples: &[f32]) -> Result<Codes> {
        mimi::MimiStream::push(self, samples)
    }
    fn finish(self: Box<Self>) -> Result<Codes> {
        mimi::MimiStream::finish(*self)
    }
}

/// Codes of one input: `ids` is row-major `[codebooks × frames]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    pub codebooks: usize,
    pub frames: usize,
    pub ids: Vec<u32>,
}

impl Codes {
    /// Row `k` (one codebook over time).
    pub fn row(&self, k: usize) -> &[u32] {
        &self.ids[k * self.frames..(k + 1) * self.frames]
    }

    /// Checks the shape and that every id fits the tokenizer's codebooks.
    pub fn validate(&self, info: &TokenizerInfo) -> Result<()> {
        if self.ids.len() != self.codebooks * self.frames {
            return Err(CodecError::BadCodes(format!(
                "{} ids for a {}x{} code matrix",
                self.ids.len(),
                self.codebooks,
                self.frames
            )));
        }
        if self.codebooks == 0 || self.frames == 0 {
            return Err(CodecError::BadCodes(format!(
                "empty code matrix ({} codebooks x {} frames)",
                self.codebooks, self.frames
            )));
        }
        if self.codebooks > info.max_codebooks {
            return Err(CodecError::BadCodes(format!(
                "{} codebooks, but the {} model has {}",
                self.codebooks, info.codec, info.max_codebooks
            )));
        }
        if let Some((i, &id)) = self
            .ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= info.codebook_size)
        {
            return Err(CodecError::BadCodes(format!(
                "id {id} at codebook {}, frame {} is out of range (codebook size {})",
                i / self.frames,
                i % self.frames,
                info.codebook_size
            )));
        }
        Ok(())
    }

    fn from_tensor(t: &Tensor) -> Result<Self> {
        let (b, k, n) = t.dims3()?;
        if b != 1 {
            return Err(CodecError::BadCodes(format!("expected batch 1, got {b}")));
        }
        let ids = t.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        Ok(Self {
            codebooks: k,
            frames: n,
            ids,
        })
    }

    fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.ids,
            (1, self.codebooks, self.frames),
            device,
        )?)
    }
}

/// Encodes one mono signal (at the model's rate) into `[codebooks × frames]`.
pub fn encode_mono(tok: &dyn AudioTokenizer, samples: &[f32], codebooks: usize) -> Result<Codes> {
    if samples.is_empty() {
        return Err(CodecError::BadAudio("no samples".into()));
    }
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        return Err(CodecError::BadAudio(format!(
            "non-finite sample at index {i}"
        )));
    }
    let x = Tensor::from_slice(samples, (1, samples.len()), tok.device())?;
    Codes::from_tensor(&tok.encode(&x, codebooks)?)
}

/// Decodes one code matrix into mono samples, after validating it.
pub fn decode_mono(tok: &dyn AudioTokenizer, codes: &Codes) -> Result<Vec<f32>> {
    let info = tok.info();
    if !info.has_decoder {
        return Err(CodecError::NoDecoder(info.codec));
    }
    codes.validate(info)?;
    let y = tok.decode(&codes.to_tensor(tok.device())?)?;
    Ok(y.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Options for [`load`] that only some tokenizers use.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// SSL: which hidden state (transformers numbering: 0 = after the
    /// feature projection/positional conv input, i = after layer i).
    pub layer: Option<usize>,
    /// SSL: centroids file (`.npy` `[K × D]` or `.safetensors`).
    pub kmeans: Option<PathBuf>,
    /// SSL: collapse runs of repeated ids.
    pub dedup: bool,
}

/// Loads a tokenizer of `kind` from a Hugging Face-layout directory.
pub fn load(
    kind: CodecKind,
    dir: &ModelDir,
    opts: &LoadOptions,
    device: &Device,
) -> Result<Box<dyn AudioTokenizer>> {
    match kind {
        CodecKind::Encodec => Ok(Box::new(encodec::Encodec::load(dir, device)?)),
        CodecKind::Ssl => Ok(Box::new(ssl::SslTokenizer::load(dir, opts, device)?)),
        CodecKind::Dac => Ok(Box::new(dac::Dac::load(dir, device)?)),
        CodecKind::Mimi => Ok(Box::new(mimi::Mimi::load(dir, device)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TokenizerInfo {
        TokenizerInfo {
            codec: "encodec",
            sample_rate: 24000,
            frame_rate: 75.0,
            codebook_size: 64,
            max_codebooks: 8,
            default_codebooks: 2,
            has_decoder: true,
        }
    }

    #[test]
    fn validate_rejects_bad_codes() {
        let ok = Codes {
            codebooks: 2,
            frames: 2,
            ids: vec![0, 63, 5, 6],
        };
        assert!(ok.validate(&info()).is_ok());
        let e = Codes {
            codebooks: 2,
            frames: 2,
            ids: vec![0, 64, 5, 6],
        }
        .validate(&info());
        assert!(e.unwrap_err().to_string().contains("out of range"));
        let e = Codes {
            codebooks: 9,
            frames: 1,
            ids: vec![0; 9],
        }
        .validate(&info());
        assert!(e.unwrap_err().to_string().contains("9 codebooks"));
        let e = Codes {
            codebooks: 0,
            frames: 0,
            ids: vec![],
        }
        .validate(&info());
        assert!(e.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn bitrate_and_kind() {
        assert!((info().bitrate(8) - 3600.0).abs() < 1e-9);
        assert_eq!(info().codebooks_for_bandwidth(1.8).unwrap(), 4);
        assert_eq!(info().codebooks_for_bandwidth(0.1).unwrap(), 1);
        assert!(info().codebooks_for_bandwidth(6.0).is_err());
        assert!(info().codebooks_for_bandwidth(-1.0).is_err());
        assert_eq!("EnCodec".parse::<CodecKind>().unwrap(), CodecKind::Encodec);
        assert!("mp3".parse::<CodecKind>().is_err());
    }
}
