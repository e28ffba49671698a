//! Online speech segmentation: turns a stream of per-window speech
//! probabilities into speech start / end events as they happen (silero's
//! `VADIterator` rules: enter at `threshold`, leave after `min_silence_ms`
//! below the exit threshold, `speech_pad_ms` of padding on both sides).

use super::{SegmentParams, SAMPLE_RATE, WINDOW};

/// A change of state at an absolute 16 kHz sample position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech begins at this sample (padding included).
    Start(usize),
    /// Speech ended at this sample (padding included).
    End(usize),
}

/// Hysteresis segmenter fed one probability per [`WINDOW`] samples.
#[derive(Debug, Clone)]
pub struct OnlineSegmenter {
    threshold: f32,
    neg_threshold: f32,
    min_silence: usize,
    pad: usize,
    /// Windows seen so far.
    windows: usize,
    in_speech: bool,
    /// Start of the current run of silence while in speech.
    temp_end: Option<usize>,
}

impl OnlineSegmenter {
    /// Uses `threshold`, `neg_threshold`, `min_silence_ms` and `speech_pad_ms`
    /// of `p` (min-speech and max-speech are left to the caller).
    pub fn new(p: &SegmentParams) -> Self {
        let ms = |v: u32| SAMPLE_RATE as usize * v as usize / 1000;
        OnlineSegmenter {
            threshold: p.threshold,
            neg_threshold: p.neg_threshold.unwrap_or((p.threshold - 0.15).max(0.01)),
            min_silence: ms(p.min_silence_ms),
            pad: ms(p.speech_pad_ms),
            windows: 0,
            in_speech: false,
            temp_end: None,
        }
    }

    /// Padding (samples) added before a start and after an end.
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// True between a `Start` and its `End`.
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// While in speech: where the current run of below-exit-threshold
    /// windows began (the speech may be ending there), if there is one.
    pub fn pause_start(&self) -> Option<usize> {
        self.temp_end.filter(|_| self.in_speech)
    }

    /// Samples covered by the probabilities pushed so far.
    pub fn position(&self) -> usize {
        self.windows * WINDOW
    }

    /// The probability of the next window; returns an event if the state changed.
    pub fn push(&mut self, prob: f32) -> Option<VadEvent> {
        let start = self.windows * WINDOW;
        self.windows += 1;
        let end = start + WINDOW;
        if prob >= self.threshold {
            self.temp_end = None;
            if !self.in_speech {
                self.in_speech = true;
                return Some(VadEvent::Start(start.saturating_sub(self.pad)));
            }
            return None;
        }
        if self.in_speech && prob < self.neg_threshold {
            let te = *self.temp_end.get_or_insert(start);
            if end - te >= self.min_silence {
                self.in_speech = false;
                self.temp_end = None;
                return Some(VadEvent::End((te + self.pad).min(end)));
            }
        }
        None
    }

    /// End of input: closes open speech at the last sample seen.
    pub fn finish(&mut self, total_samples: usize) -> Option<VadEvent> {
        if !self.in_speech {
            return None;
        }
        self.in_speech = false;
        let end = match self.temp_end.take() {
            Some(te) => (te + self.pad).min(total_samples),
            None => total_samples,
        };
        Some(VadEvent::End(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SegmentParams {
        SegmentParams {
            min_silence_ms: 96, // 3 windows
            speech_pad_ms: 0,
            ..SegmentParams::default()
        }
    }

    #[test]
    fn start_and_end_with_hysteresis() {
        let mut s = OnlineSegmenter::new(&params());
        let probs = [0.1, 0.9, 0.6, 0.4, 0.1, 0.1, 0.9, 0.2, 0.1, 0.1, 0.1];
        let mut pauses = Vec::new();
        let ev: Vec<(usize, VadEvent)> = probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| {
                let e = s.push(p).map(|e| (i, e));
                pauses.push(s.pause_start().map(|t| t / 512));
                e
            })
            .collect();
        // A pause is open from the first window below the exit threshold
        // until speech resumes or ends (never outside speech).
        let n = None;
        assert_eq!(
            pauses,
            vec![n, n, n, n, Some(4), Some(4), n, Some(7), Some(7), n, n]
        );
        // 0.4 is above the exit threshold 0.35: still speech. The 0.1, 0.1 run
        // is too short (2 windows); the final run of 4 ends it at window 7.
        assert_eq!(
            ev,
            vec![(1, VadEvent::Start(512)), (9, VadEvent::End(7 * 512))]
        );
        assert!(!s.in_speech());
        assert_eq!(s.finish(11 * 512), None);
    }

    #[test]
    fn padding_and_finish() {
        let p = SegmentParams {
            speech_pad_ms: 30,
            ..params()
        };
        let mut s = OnlineSegmenter::new(&p);
        assert_eq!(s.pad(), 480);
        assert_eq!(s.push(0.0), None);
        assert_eq!(s.push(0.0), None);
        assert_eq!(s.push(0.99), Some(VadEvent::Start(1024 - 480)));
        assert_eq!(s.push(0.0), None);
        assert_eq!(s.finish(4 * 512 - 10), Some(VadEvent::End(3 * 512 + 480)));
        let mut s = OnlineSegmenter::new(&p);
        s.push(0.9);
        assert_eq!(s.finish(300), Some(VadEvent::End(300)));
    }
}
