//! `transcribe --vad`: skip non-speech before Whisper sees it, as
//! faster-whisper's `vad_filter` does. The speech regions of a file are
//! concatenated, transcribed as one stream, and segment times are mapped
//! back to the original timeline.

use voxtok_models::vad::{self, SegmentParams, Vad};
use voxtok_models::whisper::longform::SampleSource;
use voxtok_models::whisper::Transcript;

const RATE: f64 = 16000.0;

/// Where each piece of the concatenated speech came from:
/// `(start in the concatenation, start in the original)`, in seconds.
#[derive(Debug, Clone, Default)]
pub struct TimeMap {
    pieces: Vec<(f64, f64)>,
    pub original_duration_s: f64,
}

impl TimeMap {
    /// Maps a time of the concatenated audio back to the original file.
    pub fn to_original(&self, t: f64) -> f64 {
        let k = self
            .pieces
            .partition_point(|&(c, _)| c <= t + 1e-9)
            .saturating_sub(1);
        match self.pieces.get(k) {
            Some(&(c, o)) => o + (t - c),
            None => t,
        }
    }

    /// Rewrites a transcript's segment times and duration.
    pub fn apply(&self, t: &mut Transcript) {
        for s in &mut t.segments {
            s.start = self.to_original(s.start);
            s.end = self.to_original(s.end).max(s.start);
        }
        t.duration_s = self.original_duration_s;
    }
}

/// faster-whisper's `vad_filter` defaults: generous padding and long
/// minimum silences, so words at region edges are not clipped and short
/// pauses stay inside one region.
pub fn transcribe_params() -> SegmentParams {
    SegmentParams {
        min_speech_ms: 0,
        min_silence_ms: 2000,
        speech_pad_ms: 400,
        ..SegmentParams::default()
    }
}

/// Reads a whole source, keeps its speech regions, and returns the
/// concatenated speech with the map back to the original times.
pub fn speech_only(
    src: &mut dyn SampleSource,
    detector: &mut dyn Vad,
) -> Result<(Vec<f32>, TimeMap), String> {
    let mut all = Vec::new();
    while let Some(c) = src.next_chunk()? {
        all.extend_from_slice(&c);
    }
    let regions =
        vad::speech_regions(&all, detector, &transcribe_params()).map_err(|e| e.to_string())?;
    let mut speech = Vec::new();
    let mut map = TimeMap {
        pieces: Vec::new(),
        original_duration_s: all.len() as f64 / RATE,
    };
    for (s, e) in regions {
        let (a, b) = (
            (s as f64 * RATE) as usize,
            ((e as f64 * RATE) as usize).min(all.len()),
        );
        if a >= b {
            continue;
        }
        map.pieces
            .push((speech.len() as f64 / RATE, a as f64 / RATE));
        speech.extend_from_slice(&all[a..b]);
    }
    Ok((speech, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Chunks(Vec<Vec<f32>>);
    impl SampleSource for Chunks {
        fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, String> {
            Ok(if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            })
        }
    }

    #[test]
    fn keeps_speech_and_maps_times_back() {
        // 1 s silence, 1 s of a voiced harmonic signal, 3 s silence, 1 s voiced.
        let voiced = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let t = i as f32 / 16000.0;
                    (1..6)
                        .map(|k| {
                            (2.0 * std::f32::consts::PI * 150.0 * k as f32 * t).sin() / k as f32
                        })
                        .sum::<f32>()
                        * 0.3
                })
                .collect()
        };
        let mut x = vec![0.0f32; 16000];
        x.extend(voiced(16000));
        x.extend(vec![0.0f32; 48000]);
        x.extend(voiced(16000));
        let mut src = Chunks(x.chunks(4000).map(|c| c.to_vec()).collect());
        let (speech, map) =
            speech_only(&mut src, &mut voxtok_models::vad::EnergyVad::default()).unwrap();
        assert!((map.original_duration_s - 6.0).abs() < 1e-9);
        // Silence is cut down to the 0.4 s pads, both voiced seconds are kept.
        assert!(
            speech.len() > 30000 && speech.len() < 64000,
            "{}",
            speech.len()
        );
        // The second piece starts about 0.4 s (the pad) before 5 s.
        let second = map.pieces.last().unwrap();
        assert!(map.pieces.len() == 2, "{:?}", map.pieces);
        assert!((map.to_original(second.0 + 0.5) - (second.1 + 0.5)).abs() < 1e-9);
        assert!((second.1 - 4.6).abs() < 0.35, "{second:?}");
        assert!((map.to_original(0.0) - map.pieces[0].1).abs() < 1e-9);
    }
}
