//! Voice activity detection: per-window speech probabilities from 16 kHz mono
//! audio ([`Vad`]) and a segmenter that turns them into speech regions with
//! the rules of silero's `get_speech_timestamps` ([`segments`]).
//!
//! Two detectors: [`EnergyVad`] (built in, no model, the default) and
//! [`SileroVad`] (Silero VAD v5/v6 from `silero_vad_16k.safetensors`, run on
//! candle).

pub mod energy;
pub mod online;
pub mod silero;

pub use energy::{EnergyParams, EnergyVad};
pub use silero::SileroVad;

/// Sample rate every detector expects.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per probability window (32 ms at 16 kHz), as in Silero VAD.
pub const WINDOW: usize = 512;

/// Errors from loading or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// The model file could not be read or parsed.
    #[error("{path}: cannot load VAD model: {msg}")]
    Load { path: String, msg: String },
    /// A tensor is missing or has the wrong shape.
    #[error("{path}: not a Silero VAD 16 kHz model: {msg}")]
    BadModel { path: String, msg: String },
    /// A tensor operation failed.
    #[error("VAD inference failed: {0}")]
    Run(String),
}

impl From<candle_core::Error> for VadError {
    fn from(e: candle_core::Error) -> Self {
        VadError::Run(e.to_string())
    }
}

/// A streaming voice-activity detector over 16 kHz mono f32 samples.
pub trait Vad: Send {
    /// Feed samples; returns one probability per completed [`WINDOW`]-sample window.
    fn feed(&mut self, samples: &[f32]) -> Result<Vec<f32>, VadError>;
    /// Zero-pad and emit the last partial window, if any.
    fn flush(&mut self) -> Result<Vec<f32>, VadError>;
    /// Forget all state (start of a new stream).
    fn reset(&mut self);
    /// Short name for reports (`energy`, `silero`).
    fn name(&self) -> &'static str;
}

/// Probabilities for a whole signal: `ceil(len / WINDOW)` values (last window zero-padded).
pub fn probabilities(vad: &mut dyn Vad, samples: &[f32]) -> Result<Vec<f32>, VadError> {
    vad.reset();
    let mut p = vad.feed(samples)?;
    p.extend(vad.flush()?);
    Ok(p)
}

/// Segmenter settings; defaults equal silero's `get_speech_timestamps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentParams {
    /// Probability at or above which a window is speech.
    pub threshold: f32,
    /// Exit threshold while in speech (default `max(threshold - 0.15, 0.01)`).
    pub neg_threshold: Option<f32>,
    /// Speech shorter than this is dropped.
    pub min_speech_ms: u32,
    /// Silence must last this long to end a segment.
    pub min_silence_ms: u32,
    /// Padding added on each side of a segment.
    pub speech_pad_ms: u32,
    /// Longest segment; longer ones are split (at the longest inner silence when possible).
    pub max_speech_s: f32,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_ms: 250,
            min_silence_ms: 100,
            speech_pad_ms: 30,
            max_speech_s: f32::INFINITY,
        }
    }
}

/// A speech region in samples at 16 kHz, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

impl Segment {
    /// Start in seconds.
    pub fn start_s(&self) -> f32 {
        self.start as f32 / SAMPLE_RATE as f32
    }
    /// End in seconds.
    pub fn end_s(&self) -> f32 {
        self.end as f32 / SAMPLE_RATE as f32
    }
}

/// Speech segments from per-window probabilities, a port of silero's
/// `get_speech_timestamps_from_probs` (16 kHz, 512-sample windows).
pub fn segments(probs: &[f32], audio_len: usize, p: &SegmentParams) -> Vec<Segment> {
    let sr = SAMPLE_RATE as f64;
    let w = WINDOW as i64;
    let min_speech = sr * p.min_speech_ms as f64 / 1000.0;
    let pad = sr * p.speech_pad_ms as f64 / 1000.0;
    let max_speech = sr * p.max_speech_s as f64 - w as f64 - 2.0 * pad;
    let min_silence = sr * p.min_silence_ms as f64 / 1000.0;
    let min_sil_at_max = sr * 98.0 / 1000.0;
    let thr = p.threshold;
    let neg = p.neg_threshold.unwrap_or((thr - 0.15).max(0.01));
    let audio_len = audio_len as i64;

    let mut triggered = false;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    let mut cur_start: Option<i64> = None;
    let (mut temp_end, mut prev_end, mut next_start) = (0i64, 0i64, 0i64);
    let mut possible_ends: Vec<(i64, i64)> = Vec::new();

    for (i, &prob) in probs.iter().enumerate() {
        let cur = w * i as i64;
        if prob >= thr && temp_end != 0 {
            let sil = cur - temp_end;
            if sil as f64 > min_sil_at_max {
                possible_ends.push((temp_end, sil));
            }
            temp_end = 0;
            if next_start < prev_end {
                next_start = cur;
            }
        }
        if prob >= thr && !triggered {
            triggered = true;
            cur_start = Some(cur);
            continue;
        }
        if triggered {
            if let Some(s) = cur_start {
                if (cur - s) as f64 > max_speech {
                    if let Some(&(pe, dur)) =
                        possible_ends
                            .iter()
                            .reduce(|a, b| if b.1 > a.1 { b } else { a })
                    {
                        speeches.push((s, pe));
                        cur_start = None;
                        next_start = pe + dur;
                        if next_start < pe + cur {
                            cur_start = Some(next_start);
                        } else {
                            triggered = false;
                        }
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                        possible_ends.clear();
                    } else {
                        speeches.push((s, cur));
                        cur_start = None;
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                        triggered = false;
                        possible_ends.clear();
                        continue;
                    }
                }
            }
        }
        if prob < neg && triggered {
            if temp_end == 0 {
                temp_end = cur;
            }
            if ((cur - temp_end) as f64) < min_silence {
                continue;
            }
            if let Some(s) = cur_start.take() {
                if (temp_end - s) as f64 > min_speech {
                    speeches.push((s, temp_end));
                }
            }
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
            possible_ends.clear();
            continue;
        }
    }
    if let Some(s) = cur_start {
        if (audio_len - s) as f64 > min_speech {
            speeches.push((s, audio_len));
        }
    }
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[i].0 = (speeches[i].0 as f64 - pad).max(0.0) as i64;
        }
        if i != n - 1 {
            let sil = speeches[i + 1].0 - speeches[i].1;
            if (sil as f64) < 2.0 * pad {
                speeches[i].1 += sil.div_euclid(2);
                speeches[i + 1].0 = (speeches[i + 1].0 - sil.div_euclid(2)).max(0);
            } else {
                speeches[i].1 = (speeches[i].1 as f64 + pad).min(audio_len as f64) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (speeches[i].1 as f64 + pad).min(audio_len as f64) as i64;
        }
    }
    speeches
        .into_iter()
        .map(|(s, e)| Segment {
            start: s.max(0) as usize,
            end: e.max(0) as usize,
        })
        .collect()
}

/// Speech regions `(start_s, end_s)` of a whole 16 kHz signal: the entry
/// point for `transcribe --vad` and other callers that skip silence.
pub fn speech_regions(
    samples: &[f32],
    vad: &mut dyn Vad,
    params: &SegmentParams,
) -> Result<Vec<(f32, f32)>, VadError> {
    let probs = probabilities(vad, samples)?;
    Ok(segments(&probs, samples.len(), params)
        .into_iter()
        .map(|s| (s.start_s(), s.end_s()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmenter_basic_rules() {
        let p = SegmentParams::default();
        // 20 windows silence, 20 speech, 20 silence.
        let mut probs = vec![0.0; 20];
        probs.extend(vec![0.9; 20]);
        probs.extend(vec![0.0; 20]);
        let s = segments(&probs, 60 * WINDOW, &p);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].start, 20 * WINDOW - 480);
        assert_eq!(s[0].end, 40 * WINDOW + 480);
        // too short speech (3 windows = 96 ms) is dropped
        let mut short = vec![0.0; 10];
        short.extend(vec![0.9; 3]);
        short.extend(vec![0.0; 20]);
        assert!(segments(&short, 33 * WINDOW, &p).is_empty());
        // a short dip (2 windows < 100 ms) does not split
        let mut dip = vec![0.9; 20];
        dip.extend(vec![0.0; 2]);
        dip.extend(vec![0.9; 20]);
        assert_eq!(segments(&dip, 42 * WINDOW, &p).len(), 1);
        // speech to the end runs to the end of the audio
        let s = segments(&[0.9; 20], 20 * WINDOW - 100, &p);
        assert_eq!(
            s,
            vec![Segment {
                start: 0,
                end: 20 * WINDOW - 100
            }]
        );
    }

    #[test]
    fn max_speech_splits() {
        let p = SegmentParams {
            max_speech_s: 1.0,
            ..Default::default()
        };
        let s = segments(&[0.9; 100], 100 * WINDOW, &p);
        assert!(s.len() >= 3, "{s:?}");
        for seg in &s {
            assert!(seg.end - seg.start <= 16000 + 2 * 480 + WINDOW, "{seg:?}");
        }
    }
}

#[cfg(test)]
mod parity_tests;
