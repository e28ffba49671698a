//! Whisper log-mel spectrogram, matching Hugging Face `WhisperFeatureExtractor`.
//!
//! Recipe (16 kHz input): optional 30 s padding/truncation (480 000 samples),
//! centred STFT with reflect padding (n_fft 400, hop 160, periodic Hann
//! window), power spectrum, Slaney-normalised Slaney-scale mel filters
//! (0–8 kHz, built like transformers' `mel_filter_bank`), `log10(max(x, 1e-10))`,
//! floor at `max − 8`, then `(x + 4) / 4`; the last STFT frame is dropped as
//! HF does, so a signal of `n` samples gives `n / 160` frames (3000 when padded).
//!
//! Without padding ([`MelPadding::None`]) the frames cover the whole signal:
//! this equals HF called with `padding="longest", truncation=False` on one input.
//!
//! The STFT runs in f64 (the HF numpy path's precision); outputs are f32.
//! [`LogMel`] is streaming: samples can be pushed in chunks; only the output
//! (n_mels × frames) and one frame of input are held.

use std::path::Path;
use std::sync::Arc;

use realfft::{num_complex::Complex, RealFftPlanner, RealToComplex};

use crate::decode::Decoder;
use crate::error::{CodecError, Result};
use crate::resample::{Quality, Resampler};

/// Sample rate Whisper features expect.
pub const WHISPER_SAMPLE_RATE: u32 = 16000;
/// FFT length (25 ms).
pub const N_FFT: usize = 400;
/// Hop length (10 ms).
pub const HOP: usize = 160;
/// Samples in a 30 s Whisper window.
pub const N_SAMPLES_30S: usize = 480_000;
/// Frames in a 30 s Whisper window.
pub const N_FRAMES_30S: usize = N_SAMPLES_30S / HOP;

/// Whether to pad/truncate the signal to Whisper's 30 s window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MelPadding {
    /// Pad with zeros or truncate to 30 s: always 3000 frames (HF default).
    #[default]
    Whisper30s,
    /// Frames for the whole signal: `n / 160` frames.
    None,
    /// Pad with zeros or truncate to this many samples (a model whose window
    /// is not 30 s, e.g. `2 × max_source_positions × 160`).
    Samples(usize),
}

impl MelPadding {
    /// The padded/truncated signal length in samples, if any.
    pub fn target_samples(self) -> Option<usize> {
        match self {
            MelPadding::Whisper30s => Some(N_SAMPLES_30S),
            MelPadding::None => None,
            MelPadding::Samples(n) => Some(n),
        }
    }
}

/// A log-mel spectrogram, row-major `[n_mels, n_frames]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MelSpectrogram {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl MelSpectrogram {
    /// Value at (mel, frame).
    pub fn get(&self, mel: usize, frame: usize) -> f32 {
        self.data[mel * self.n_frames + frame]
    }

    /// As an `ndarray` of shape `[n_mels, n_frames]`.
    pub fn to_array(&self) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_vec((self.n_mels, self.n_frames), self.data.clone())
            .expect("shape matches data length")
    }
}

/// One mel filter: weights for FFT bins `start .. start + weights.len()`.
#[derive(Debug, Clone)]
struct SparseFilter {
    start: usize,
    weights: Vec<f64>,
}

fn hz_to_mel_slaney(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz_slaney(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * ((6.4f64.ln() / 27.0) * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// numpy's `linspace(start, stop, num)` (endpoint included, last value exact).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// Slaney mel filter bank `[n_freqs, n_mels]` (dense, f64), as transformers'
/// `mel_filter_bank(n_freqs, n_mels, fmin, fmax, sr, norm="slaney", mel_scale="slaney")`.
pub fn mel_filter_bank(
    n_freqs: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
    sample_rate: u32,
) -> Vec<Vec<f64>> {
    let mel_freqs = linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2);
    let filter_freqs: Vec<f64> = mel_freqs.iter().map(|&m| mel_to_hz_slaney(m)).collect();
    let fft_freqs = linspace(0.0, (sample_rate / 2) as f64, n_freqs);
    let diff: Vec<f64> = filter_freqs.windows(2).map(|w| w[1] - w[0]).collect();
    let mut fb = vec![vec![0.0f64; n_mels]; n_freqs];
    for (f, row) in fb.iter_mut().enumerate() {
        for (m, w) in row.iter_mut().enumerate() {
            let down = -(filter_freqs[m] - fft_freqs[f]) / diff[m];
            let up = (filter_freqs[m + 2] - fft_freqs[f]) / diff[m + 1];
            let enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            *w = 0.0f64.max(down.min(up)) * enorm;
        }
    }
    fb
}

/// Streaming Whisper log-mel extractor; reusable across signals.
pub struct LogMel {
    n_mels: usize,
    padding: MelPadding,
    filters: Vec<SparseFilter>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
    // stream state
    /// First samples, kept until enough arrive to build the left reflect pad.
    head: Vec<f32>,
    started: bool,
    /// Padded signal from `buf_start` on (absolute index in the padded signal).
    buf: Vec<f32>,
    buf_start: usize,
    n_in: usize,
    /// Raw log10 mel, frame-major `[frames, n_mels]`.
    out: Vec<f32>,
    n_frames: usize,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels)
            .field("padding", &self.padding)
            .finish()
    }
}

const PAD: usize = N_FFT / 2;

/// Index into a signal of length `n` with numpy "reflect" padding semantics.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut k = i.rem_euclid(period);
    if k >= n as isize {
        k = period - k;
    }
    k as usize
}

impl LogMel {
    /// A Whisper log-mel extractor with `n_mels` bins (80 or 128 for Whisper).
    pub fn new(n_mels: usize, padding: MelPadding) -> Result<LogMel> {
        if n_mels == 0 || n_mels > 512 {
            return Err(CodecError::InvalidArgument(format!(
                "n_mels must be in 1..=512, got {n_mels}"
            )));
        }
        let n_freqs = N_FFT / 2 + 1;
        let dense = mel_filter_bank(n_freqs, n_mels, 0.0, 8000.0, WHISPER_SAMPLE_RATE);
        let filters = (0..n_mels)
            .map(|m| {
                let nz: Vec<usize> = (0..n_freqs).filter(|&f| dense[f][m] != 0.0).collect();
                match (nz.first(), nz.last()) {
                    (Some(&a), Some(&b)) => SparseFilter {
                        start: a,
                        weights: (a..=b).map(|f| dense[f][m]).collect(),
                    },
                    _ => SparseFilter {
                        start: 0,
                        weights: Vec::new(),
                    },
                }
            })
            .collect();
        // Periodic Hann window (torch.hann_window(400) / HF window_function(400, "hann")).
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let frame = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Ok(LogMel {
            n_mels,
            padding,
            filters,
            window,
            fft,
            frame,
            spectrum,
            scratch,
            power: vec![0.0; n_freqs],
            head: Vec::new(),
            started: false,
            buf: Vec::new(),
            buf_start: 0,
            n_in: 0,
            out: Vec::new(),
            n_frames: 0,
        })
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// True once the window is full (padded mode): further input is ignored.
    pub fn is_full(&self) -> bool {
        self.padding
            .target_samples()
            .is_some_and(|n| self.n_in >= n)
    }

    /// Feeds 16 kHz mono samples.
    pub fn push(&mut self, samples: &[f32]) {
        let samples = match self.padding.target_samples() {
            Some(n) => &samples[..samples.len().min(n.saturating_sub(self.n_in))],
            None => samples,
        };
        if samples.is_empty() {
            return;
        }
        self.n_in += samples.len();
        if self.started {
            self.buf.extend_from_slice(samples);
        } else {
            self.head.extend_from_slice(samples);
            if self.head.len() > 2 * PAD {
                // Left reflect pad: x[200], x[199], ..., x[1], then the signal.
                self.buf.clear();
                self.buf.extend((1..=PAD).rev().map(|i| self.head[i]));
                self.buf.extend_from_slice(&self.head);
                self.head.clear();
                self.buf_start = 0;
                self.started = true;
            }
        }
        self.drain_frames(None);
    }

    /// Computes every frame that is complete; with `limit`, at most up to that frame count.
    fn drain_frames(&mut self, limit: Option<usize>) {
        let mut consumed = 0;
        loop {
            if limit.is_some_and(|l| self.n_frames >= l) {
                break;
            }
            let off = self.n_frames * HOP - self.buf_start;
            if off + N_FFT > self.buf.len() {
                break;
            }
            self.frame_at(off);
            consumed = off + HOP;
        }
        let consumed = consumed.min(self.buf.len());
        if consumed > 0 {
            self.buf.drain(..consumed);
            self.buf_start += consumed;
        }
    }

    fn frame_at(&mut self, off: usize) {
        let src = &self.buf[off..off + N_FFT];
        for ((d, &s), &w) in self.frame.iter_mut().zip(src).zip(&self.window) {
            *d = s as f64 * w;
        }
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .expect("FFT buffer sizes fixed at construction");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for f in &self.filters {
            let pw = &self.power[f.start..f.start + f.weights.len()];
            let e: f64 = pw.iter().zip(&f.weights).map(|(a, b)| a * b).sum();
            self.out.push(e.max(1e-10).log10() as f32);
        }
        self.n_frames += 1;
    }

    /// Ends the signal: returns its log-mel and resets for the next signal.
    pub fn finish(&mut self) -> MelSpectrogram {
        if let Some(target) = self.padding.target_samples() {
            let zeros = vec![0.0f32; 16000];
            while self.n_in < target {
                let k = zeros.len().min(target - self.n_in);
                self.push(&zeros[..k]);
            }
        }
        let n = self.n_in;
        let total = n / HOP; // frames kept (the last STFT frame is dropped)
        if n > 0 {
            if !self.started {
                // Short signal: build the whole padded signal with numpy reflect semantics.
                let x = std::mem::take(&mut self.head);
                self.buf = (-(PAD as isize)..(n + PAD) as isize)
                    .map(|i| x[reflect(i, n)])
                    .collect();
                self.buf_start = 0;
            } else {
                // Right reflect pad: x[n-2], x[n-3], ..., x[n-201] (x's tail is still buffered).
                let end = self.buf.len();
                for k in 0..PAD {
                    let v = self.buf[end - 2 - k];
                    self.buf.push(v);
                }
            }
            self.drain_frames(Some(total));
        }
        debug_assert_eq!(self.n_frames, total);
        let m = self.n_mels;
        let max = self.out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        let mut data = vec![0.0f32; m * total];
        for (t, fr) in self.out.chunks_exact(m).enumerate().take(total) {
            for (j, &v) in fr.iter().enumerate() {
                data[j * total + t] = (v.max(floor) + 4.0) / 4.0;
            }
        }
        self.reset();
        MelSpectrogram {
            n_mels: m,
            n_frames: total,
            data,
        }
    }

    /// Drops any buffered signal.
    pub fn reset(&mut self) {
        self.head.clear();
        self.buf.clear();
        self.out.clear();
        self.started = false;
        self.buf_start = 0;
        self.n_in = 0;
        self.n_frames = 0;
    }

    /// Log-mel of a whole 16 kHz signal.
    pub fn compute(&mut self, samples: &[f32]) -> MelSpectrogram {
        self.reset();
        self.push(samples);
        self.finish()
    }
}

/// Whisper log-mel of a 16 kHz signal held in memory.
pub fn whisper_mel(samples: &[f32], n_mels: usize, padding: MelPadding) -> Result<MelSpectrogram> {
    Ok(LogMel::new(n_mels, padding)?.compute(samples))
}

/// Decodes a file, resamples it to 16 kHz and computes its Whisper log-mel,
/// streaming (the audio is never held whole). In padded mode decoding stops
/// after the first 30 s, so damage later in the file is not seen.
pub fn whisper_mel_file(
    path: impl AsRef<Path>,
    n_mels: usize,
    padding: MelPadding,
) -> Result<MelSpectrogram> {
    let dec = Decoder::open(path)?;
    whisper_mel_decoder(dec, n_mels, padding)
}

/// Like [`whisper_mel_file`], for an already opened decoder (e.g. stdin).
pub fn whisper_mel_decoder(
    mut dec: Decoder,
    n_mels: usize,
    padding: MelPadding,
) -> Result<MelSpectrogram> {
    let mut mel = LogMel::new(n_mels, padding)?;
    let mut rs = Resampler::new(dec.sample_rate(), WHISPER_SAMPLE_RATE, Quality::High)?;
    let mut buf = Vec::new();
    while let Some(chunk) = dec.next_chunk()? {
        buf.clear();
        rs.process_into(&chunk, &mut buf)?;
        mel.push(&buf);
        if mel.is_full() {
            return Ok(mel.finish());
        }
    }
    buf.clear();
    rs.finish_into(&mut buf)?;
    mel.push(&buf);
    Ok(mel.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::read_npy_f32;
    use crate::testutil::fixture;

    const TOL: f32 = 1e-4;

    fn manifest() -> serde_json::Value {
        let text = std::fs::read_to_string(fixture("mel/manifest.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn filters_match_transformers() {
        for n in [80usize, 128] {
            let want = read_npy_f32(fixture(&format!("mel/filters_{n}.npy"))).unwrap();
            assert_eq!(want.shape(), &[201, n]);
            let got = mel_filter_bank(201, n, 0.0, 8000.0, 16000);
            let mut worst = 0f64;
            for f in 0..201 {
                for m in 0..n {
                    worst = worst.max((got[f][m] - want[[f, m]] as f64).abs());
                }
            }
            // The fixture is stored as f32: agreement to f32 rounding.
            assert!(worst < 1e-6, "n_mels {n}: max abs diff {worst}");
        }
    }

    /// Every reference log-mel (80/128 bins, padded and not) decoded from its
    /// file through the decoder, compared with HF `WhisperFeatureExtractor`.
    #[test]
    fn parity_with_hf_feature_extractor() {
        let m = manifest();
        let entries = m["entries"].as_array().unwrap();
        assert!(entries.len() >= 16);
        for e in entries {
            let audio = e["audio"].as_str().unwrap();
            let n_mels = e["n_mels"].as_u64().unwrap() as usize;
            let padding = if e["pad"].as_bool().unwrap() {
                MelPadding::Whisper30s
            } else {
                MelPadding::None
            };
            let mel =
                whisper_mel_file(fixture(&format!("audio/{audio}")), n_mels, padding).unwrap();
            assert_eq!(mel.n_mels, n_mels);
            assert_eq!(
                mel.n_frames as u64,
                e["frames_total"].as_u64().unwrap(),
                "{audio}"
            );
            let want =
                read_npy_f32(fixture(&format!("mel/{}", e["npy"].as_str().unwrap()))).unwrap();
            let mut col = 0;
            let mut worst = 0f32;
            for r in e["ranges"].as_array().unwrap() {
                let (a, b) = (
                    r[0].as_u64().unwrap() as usize,
                    r[1].as_u64().unwrap() as usize,
                );
                for t in a..b {
                    for j in 0..n_mels {
                        worst = worst.max((mel.get(j, t) - want[[j, col]]).abs());
                    }
                    col += 1;
                }
            }
            assert_eq!(col, want.shape()[1]);
            if let Some(from) = e.get("tail_from").and_then(|v| v.as_u64()) {
                let tail = e["tail_value"].as_f64().unwrap() as f32;
                for t in from as usize..mel.n_frames {
                    for j in 0..n_mels {
                        worst = worst.max((mel.get(j, t) - tail).abs());
                    }
                }
            }
            assert!(
                worst <= TOL,
                "{audio} n_mels {n_mels} {padding:?}: max abs err {worst}"
            );
            eprintln!("{audio} n_mels {n_mels} {padding:?}: max abs err {worst:.2e}");
        }
    }

    #[test]
    fn streaming_equals_whole_for_any_split() {
        let audio = crate::read_audio(fixture("audio/speech_16k.wav"), None).unwrap();
        for padding in [MelPadding::None, MelPadding::Whisper30s] {
            let whole = whisper_mel(&audio.samples, 80, padding).unwrap();
            let mut lm = LogMel::new(80, padding).unwrap();
            for split in [1usize, 7, 160, 333, 4096] {
                for c in audio.samples.chunks(split) {
                    lm.push(c);
                }
                assert_eq!(lm.finish(), whole, "split {split}");
            }
        }
    }

    #[test]
    fn frame_counts_and_short_signals() {
        let mut lm = LogMel::new(80, MelPadding::None).unwrap();
        for n in [0usize, 1, 2, 159, 160, 161, 200, 201, 399, 400, 401, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 100) as f32 / 100.0 - 0.5)
                .collect();
            let m = lm.compute(&x);
            assert_eq!(m.n_frames, n / HOP, "n={n}");
            assert!(m.data.iter().all(|v| v.is_finite()));
        }
        let m = whisper_mel(&[], 128, MelPadding::Whisper30s).unwrap();
        assert_eq!((m.n_mels, m.n_frames), (128, 3000));
        // Silence: log10(1e-10) = -10 everywhere -> (-10 + 4) / 4.
        assert!(m.data.iter().all(|&v| v == -1.5));
    }

    #[test]
    fn long_input_is_truncated_to_30s() {
        let x: Vec<f32> = (0..N_SAMPLES_30S + 5000)
            .map(|i| (i as f32 * 0.01).sin() * 0.1)
            .collect();
        let a = whisper_mel(&x, 80, MelPadding::Whisper30s).unwrap();
        let b = whisper_mel(&x[..N_SAMPLES_30S], 80, MelPadding::Whisper30s).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.n_frames, N_FRAMES_30S);
    }

    #[test]
    fn custom_window_pads_and_truncates() {
        // A 6 s window (max_source_positions 300): 96 000 samples, 600 frames.
        let n = 96_000;
        let x: Vec<f32> = (0..n + 3000)
            .map(|i| (i as f32 * 0.013).sin() * 0.2)
            .collect();
        let a = whisper_mel(&x, 80, MelPadding::Samples(n)).unwrap();
        let b = whisper_mel(&x[..n], 80, MelPadding::None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.n_frames, 600);
        let short = whisper_mel(&x[..1000], 80, MelPadding::Samples(n)).unwrap();
        let mut padded = x[..1000].to_vec();
        padded.resize(n, 0.0);
        assert_eq!(short, whisper_mel(&padded, 80, MelPadding::None).unwrap());
        assert!(
            LogMel::new(80, MelPadding::Samples(n))
                .unwrap()
                .padding
                .target_samples()
                == Some(n)
        );
    }

    #[test]
    fn rejects_bad_n_mels() {
        assert!(matches!(
            LogMel::new(0, MelPadding::None),
            Err(CodecError::InvalidArgument(_))
        ));
    }
}
