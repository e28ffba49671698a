//! WAV writing (hound).

use std::path::Path;

use crate::error::{CodecError, Result};

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit signed PCM (samples clipped to [-1, 1]).
    #[default]
    Pcm16,
    /// 32-bit IEEE float.
    Float32,
}

/// Writes mono `samples` in [-1, 1] to a WAV file.
pub fn write_wav(
    path: impl AsRef<Path>,
    samples: &[f32],
    sample_rate: u32,
    format: WavFormat,
) -> Result<()> {
    let path = path.as_ref();
    let werr = |e: hound::Error| CodecError::Write {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    if sample_rate == 0 {
        return Err(CodecError::InvalidArgument(
            "WAV sample rate must be > 0".into(),
        ));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: match format {
            WavFormat::Pcm16 => 16,
            WavFormat::Float32 => 32,
        },
        sample_format: match format {
            WavFormat::Pcm16 => hound::SampleFormat::Int,
            WavFormat::Float32 => hound::SampleFormat::Float,
        },
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(werr)?;
    match format {
        WavFormat::Pcm16 => {
            let mut w16 = w.get_i16_writer(samples.len() as u32);
            for &s in samples {
                w16.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
            }
            w16.flush().map_err(werr)?;
        }
        WavFormat::Float32 => {
            for &s in samples {
                w.write_sample(s).map_err(werr)?;
            }
        }
    }
    w.finalize().map_err(werr)
}
