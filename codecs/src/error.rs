//! Typed errors of the audio front-end. Every variant that concerns an input
//! names it (`path` is the file path, or a label such as `<stdin>`).

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

/// What went wrong while reading, converting or writing audio.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input path does not exist.
    #[error("{path}: no such file", path = .path.display())]
    NotFound { path: PathBuf },
    /// The input path is a directory, not a file.
    #[error("{path}: is a directory, not an audio file", path = .path.display())]
    IsDirectory { path: PathBuf },
    /// The file has zero bytes.
    #[error("{path}: empty file (0 bytes)", path = .path.display())]
    EmptyFile { path: PathBuf },
    /// The container was read but holds no audio samples.
    #[error("{path}: no audio samples (zero-length audio)", path = .path.display())]
    NoAudio { path: PathBuf },
    /// No container format recognises the bytes (e.g. a text file named `.wav`).
    #[error("{path}: not a recognised audio file ({detail})", path = .path.display())]
    UnrecognizedFormat { path: PathBuf, detail: String },
    /// The container holds a codec that cannot be decoded.
    #[error("{path}: unsupported codec {codec}", path = .path.display())]
    UnsupportedCodec { path: PathBuf, codec: String },
    /// The file ends before the length its header announces.
    #[error(
        "{path}: truncated: decoded {decoded} of {expected} sample frames announced by the header",
        path = .path.display()
    )]
    Truncated {
        path: PathBuf,
        decoded: u64,
        expected: u64,
    },
    /// The stream is malformed (demuxer/decoder error, or a decoder panic caught here).
    #[error("{path}: malformed audio: {detail}", path = .path.display())]
    Malformed { path: PathBuf, detail: String },
    /// A sample is NaN or infinite.
    #[error("{path}: non-finite sample (NaN or Inf) at sample frame {frame}", path = .path.display())]
    NonFinite { path: PathBuf, frame: u64 },
    /// The sample rate is missing, zero or outside the supported range.
    #[error(
        "{path}: unsupported sample rate {rate} Hz (supported: {min}..={max} Hz)",
        path = .path.display(), min = crate::MIN_SAMPLE_RATE, max = crate::MAX_SAMPLE_RATE
    )]
    BadSampleRate { path: PathBuf, rate: u64 },
    /// An I/O error while reading or writing the file.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Invalid parameters given by the caller (not a problem of the input file).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Writing a WAV or .npy file failed.
    #[error("{path}: cannot write: {detail}", path = .path.display())]
    Write { path: PathBuf, detail: String },
}

impl CodecError {
    /// The input or output path this error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        use CodecError::*;
        match self {
            NotFound { path }
            | IsDirectory { path }
            | EmptyFile { path }
            | NoAudio { path }
            | UnrecognizedFormat { path, .. }
            | UnsupportedCodec { path, .. }
            | Truncated { path, .. }
            | Malformed { path, .. }
            | NonFinite { path, .. }
            | BadSampleRate { path, .. }
            | Io { path, .. }
            | Write { path, .. } => Some(path),
            InvalidArgument(_) => None,
        }
    }
}
