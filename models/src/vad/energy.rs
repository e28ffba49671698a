//! Built-in energy/spectral VAD (no model): per 512-sample window, the
//! frame energy above an adaptive noise floor and the spectral flatness of
//! the 100–4000 Hz band give a speech probability. Hysteresis comes from the
//! segmenter's two thresholds; the floor follows minima down at once and
//! rises slowly (minimum tracking), so stationary noise is learned.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use super::{Vad, VadError, WINDOW};

/// Tuning of [`EnergyVad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyParams {
    /// SNR (dB above the noise floor) at which the energy cue is 0.5.
    pub snr_mid_db: f32,
    /// Frames quieter than this (dBFS) are never speech.
    pub min_level_db: f32,
    /// Spectral flatness at which the spectral cue is 0.5 (noise ≈ 0.5–0.6, voiced speech < 0.2).
    pub flatness_mid: f32,
    /// Noise floor rise per window in dB (down is immediate).
    pub floor_rise_db: f32,
    /// Lowest noise floor in dBFS (so digital silence does not make every sound speech).
    pub floor_min_db: f32,
}

impl Default for EnergyParams {
    fn default() -> Self {
        EnergyParams {
            snr_mid_db: 10.0,
            min_level_db: -55.0,
            flatness_mid: 0.35,
            floor_rise_db: 0.05,
            floor_min_db: -80.0,
        }
    }
}

/// The energy/spectral detector with its streaming state.
pub struct EnergyVad {
    params: EnergyParams,
    fft: Arc<dyn RealToComplex<f32>>,
    hann: Vec<f32>,
    floor: Option<f32>,
    pending: Vec<f32>,
    buf: Vec<f32>,
    spec: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
}

impl Default for EnergyVad {
    fn default() -> Self {
        Self::new(EnergyParams::default())
    }
}

impl EnergyVad {
    /// A detector with the given tuning.
    pub fn new(params: EnergyParams) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(WINDOW);
        let hann = (0..WINDOW)
            .map(|i| {
                let x = std::f32::consts::PI * 2.0 * i as f32 / WINDOW as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        let spec = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        EnergyVad {
            params,
            fft,
            hann,
            floor: None,
            pending: Vec::new(),
            buf: vec![0.0; WINDOW],
            spec,
            scratch,
        }
    }

    fn window_prob(&mut self, w: &[f32]) -> f32 {
        let p = &self.params;
        let energy = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
        let db = 10.0 * (energy + 1e-12).log10();
        let floor = match self.floor {
            None => db.max(p.floor_min_db),
            Some(f) if db < f => db.max(p.floor_min_db),
            Some(f) => f + p.floor_rise_db,
        };
        self.floor = Some(floor);
        if db < p.min_level_db {
            return 0.0;
        }
        let e_cue = sigmoid((db - floor - p.snr_mid_db) / 2.0);
        for ((b, x), h) in self.buf.iter_mut().zip(w).zip(&self.hann) {
            *b = x * h;
        }
        if self
            .fft
            .process_with_scratch(&mut self.buf, &mut self.spec, &mut self.scratch)
            .is_err()
        {
            return 0.0;
        }
        // 100..4000 Hz at 31.25 Hz per bin
        let band = &self.spec[3..=128];
        let (mut log_sum, mut sum) = (0f64, 0f64);
        for c in band {
            let pw = (c.norm_sqr() as f64) + 1e-12;
            log_sum += pw.ln();
            sum += pw;
        }
        let n = band.len() as f64;
        let flatness = ((log_sum / n).exp() / (sum / n)) as f32;
        let s_cue = 1.0 - sigmoid((flatness - p.flatness_mid) / 0.05);
        e_cue * s_cue
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Vad for EnergyVad {
    fn feed(&mut self, samples: &[f32]) -> Result<Vec<f32>, VadError> {
        self.pending.extend_from_slice(samples);
        let n = self.pending.len() / WINDOW;
        let pending = std::mem::take(&mut self.pending);
        let out = pending
            .chunks_exact(WINDOW)
            .map(|w| self.window_prob(w))
            .collect();
        self.pending = pending[n * WINDOW..].to_vec();
        Ok(out)
    }

    fn flush(&mut self) -> Result<Vec<f32>, VadError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = std::mem::take(&mut self.pending);
        w.resize(WINDOW, 0.0);
        Ok(vec![self.window_prob(&w)])
    }

    fn reset(&mut self) {
        self.floor = None;
        self.pending.clear();
    }

    fn name(&self) -> &'static str {
        "energy"
    }
}
