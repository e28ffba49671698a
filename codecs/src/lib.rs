//! voxtok-codecs: audio in and out, and DSP front-ends.
//!
//! - [`decode`]: streaming decoding of WAV/FLAC/MP3/Ogg Vorbis/AAC (symphonia)
//!   and raw PCM to mono `f32`, with typed errors for bad input.
//! - [`resample`]: streaming, delay-free resampling (rubato).
//! - [`mel`]: Whisper log-mel features matching Hugging Face.
//! - [`wav`], [`npy`]: writing WAV and `.npy` files.
//! - [`stoi`]: short-time objective intelligibility (as pystoi).
//! - [`live`]: live 16 kHz sources (paced file replay, raw PCM on stdin).

pub mod decode;
pub mod error;
pub mod live;
pub mod mel;
mod mp4check;
pub mod npy;
pub mod resample;
pub mod stoi;
pub mod wav;

pub use decode::{read_audio, Audio, Decoder, RawPcm, RawSampleFormat};
pub use error::{CodecError, Result};
pub use mel::{whisper_mel, whisper_mel_file, LogMel, MelPadding, MelSpectrogram};
pub use resample::{Quality, Resampler};
pub use wav::{write_wav, WavFormat};

/// Lowest sample rate accepted from an input file (Hz).
pub const MIN_SAMPLE_RATE: u32 = 1000;
/// Highest sample rate accepted from an input file (Hz).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// `tests/fixtures/<rel>` of the workspace.
    pub fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel)
    }
}
