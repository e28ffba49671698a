//! WAV writing (hound).

use std::path::Path;

use crate::error::{CodecError, Result};

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit signed PCM (scaled by 32768, clipped to the i16 range).
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
                // Scale 32768 (the decoder's inverse), clipped to the i16 range.
                w16.write_sample((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<f32> = (0..24000).map(|i| (i as f32 * 0.05).sin() * 0.8).collect();
        for (fmt, tol) in [(WavFormat::Pcm16, 0.5 / 32768.0), (WavFormat::Float32, 0.0)] {
            let p = dir.path().join(format!("{fmt:?}.wav"));
            write_wav(&p, &x, 24000, fmt).unwrap();
            let a = crate::read_audio(&p, None).unwrap();
            assert_eq!(a.sample_rate, 24000);
            let d = a
                .samples
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert_eq!(a.samples.len(), x.len());
            assert!(d <= tol, "{fmt:?}: {d}");
        }
        let e = write_wav(
            dir.path().join("no/such/dir.wav"),
            &x,
            16000,
            WavFormat::Pcm16,
        )
        .unwrap_err();
        assert!(e.to_string().contains("dir.wav"), "{e}");
    }
}
