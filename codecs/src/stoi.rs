//! STOI: short-time objective intelligibility (Taal et al., 2011), computed
//! as `pystoi.stoi(x, y, fs)` does (non-extended).
//!
//! Both signals are resampled to 10 kHz (with this crate's [`Resampler`],
//! where pystoi uses its own polyphase filter), frames more than 40 dB below
//! the loudest clean frame are removed (256-sample Hann frames, 50% overlap,
//! overlap-add), a 512-point STFT is grouped into 15 one-third-octave bands
//! from 150 Hz, and 30-frame segments are normalised, clipped at β = -15 dB
//! and correlated; the result is the mean correlation.

use crate::resample::{Quality, Resampler};
use realfft::RealFftPlanner;

/// Internal sample rate of STOI (Hz).
pub const FS: u32 = 10_000;
const N_FRAME: usize = 256;
const NFFT: usize = 512;
const NUM_BANDS: usize = 15;
const MIN_FREQ: f64 = 150.0;
/// Frames per intermediate-intelligibility segment (384 ms).
const N_SEG: usize = 30;
const BETA_DB: f64 = -15.0;
const DYN_RANGE_DB: f64 = 40.0;
const EPS: f64 = f64::EPSILON;

/// STOI of the processed signal `y` against the clean signal `x`, both at
/// `rate` Hz (only their common prefix is used). `None` when fewer than 30
/// STFT frames remain after silent-frame removal (pystoi warns and returns
/// 1e-5 there) or the rate cannot be resampled.
pub fn stoi(x: &[f32], y: &[f32], rate: u32) -> Option<f64> {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    if rate == FS {
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let yd: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        return stoi_10k(&xd, &yd);
    }
    let to10 = |s: &[f32]| -> Option<Vec<f64>> {
        let r = Resampler::process_all(rate, FS, Quality::High, s).ok()?;
        Some(r.into_iter().map(|v| v as f64).collect())
    };
    stoi_10k(&to10(x)?, &to10(y)?)
}

/// STOI of two signals already at 10 kHz (common prefix used).
pub fn stoi_10k(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    let (xs, ys) = remove_silent_frames(&x[..n], &y[..n])?;
    let xt = third_octave_envelopes(&xs);
    let yt = third_octave_envelopes(&ys);
    let frames = xt.len();
    if frames < N_SEG {
        return None;
    }
    let clip = 1.0 + 10f64.powf(-BETA_DB / 20.0);
    let segs = frames - N_SEG + 1;
    let mut total = 0f64;
    let mut xv = [0f64; N_SEG];
    let mut yv = [0f64; N_SEG];
    for m in 0..segs {
        for b in 0..NUM_BANDS {
            for t in 0..N_SEG {
                xv[t] = xt[m + t][b];
                yv[t] = yt[m + t][b];
            }
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let alpha = norm(&xv) / (norm(&yv) + EPS);
            for t in 0..N_SEG {
                yv[t] = (yv[t] * alpha).min(xv[t] * clip);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / N_SEG as f64;
            let (mx, my) = (mean(&xv), mean(&yv));
            for t in 0..N_SEG {
                xv[t] -= mx;
                yv[t] -= my;
            }
            let (nx, ny) = (norm(&xv) + EPS, norm(&yv) + EPS);
            total += xv
                .iter()
                .zip(&yv)
                .map(|(a, b)| (a / nx) * (b / ny))
                .sum::<f64>();
        }
    }
    Some(total / (segs * NUM_BANDS) as f64)
}

/// MATLAB-style Hann window of `n` points (`np.hanning(n + 2)[1:-1]`).
fn hann(n: usize) -> Vec<f64> {
    (1..=n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n + 1) as f64).cos())
        .collect()
}

/// Frame starts as pystoi takes them: `range(0, len - framelen, hop)`.
fn frame_starts(len: usize, framelen: usize, hop: usize) -> impl Iterator<Item = usize> {
    (0..len.saturating_sub(framelen)).step_by(hop)
}

/// Drops frames of both signals where the clean one is more than 40 dB below
/// its loudest frame, and overlap-adds the rest.
fn remove_silent_frames(x: &[f64], y: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let hop = N_FRAME / 2;
    let w = hann(N_FRAME);
    let starts: Vec<usize> = frame_starts(x.len(), N_FRAME, hop).collect();
    if starts.is_empty() {
        return None;
    }
    let energy: Vec<f64> = starts
        .iter()
        .map(|&s| {
            let e: f64 = (0..N_FRAME).map(|i| (w[i] * x[s + i]).powi(2)).sum();
            20.0 * (e.sqrt() + EPS).log10()
        })
        .collect();
    let max = energy.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let kept: Vec<usize> = starts
        .iter()
        .zip(&energy)
        .filter(|(_, &e)| max - DYN_RANGE_DB - e < 0.0)
        .map(|(&s, _)| s)
        .collect();
    let len = (kept.len() - 1) * hop + N_FRAME;
    let (mut xo, mut yo) = (vec![0f64; len], vec![0f64; len]);
    for (j, &s) in kept.iter().enumerate() {
        for i in 0..N_FRAME {
            xo[j * hop + i] += w[i] * x[s + i];
            yo[j * hop + i] += w[i] * y[s + i];
        }
    }
    Some((xo, yo))
}

/// One-third-octave band envelopes, `[frame][band]`: the square root of the
/// summed STFT power in each band (512-point FFT of 256-sample Hann frames).
fn third_octave_envelopes(x: &[f64]) -> Vec<[f64; NUM_BANDS]> {
    let bands = band_bins();
    let w = hann(N_FRAME);
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(NFFT);
    let mut buf = fft.make_input_vec();
    let mut spec = fft.make_output_vec();
    frame_starts(x.len(), N_FRAME, N_FRAME / 2)
        .map(|s| {
            buf.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..N_FRAME {
                buf[i] = w[i] * x[s + i];
            }
            fft.process(&mut buf, &mut spec)
                .expect("buffer sizes come from the plan");
            let mut out = [0f64; NUM_BANDS];
            for (o, &(lo, hi)) in out.iter_mut().zip(&bands) {
                *o = spec[lo..hi]
                    .iter()
                    .map(|c| c.norm_sqr())
                    .sum::<f64>()
                    .sqrt();
            }
            out
        })
        .collect()
}

/// FFT bin ranges `[lo, hi)` of the 15 one-third-octave bands (pystoi's
/// `thirdoct`: band edges snapped to the nearest bin).
fn band_bins() -> [(usize, usize); NUM_BANDS] {
    let f: Vec<f64> = (0..=NFFT / 2)
        .map(|i| i as f64 * FS as f64 / NFFT as f64)
        .collect();
    let nearest = |target: f64| {
        let mut best = 0;
        for (i, &v) in f.iter().enumerate() {
            if (v - target).powi(2) < (f[best] - target).powi(2) {
                best = i;
            }
        }
        best
    };
    let mut out = [(0, 0); NUM_BANDS];
    for (k, o) in out.iter_mut().enumerate() {
        let k = k as f64;
        let lo = MIN_FREQ * 2f64.powf((2.0 * k - 1.0) / 6.0);
        let hi = MIN_FREQ * 2f64.powf((2.0 * k + 1.0) / 6.0);
        *o = (nearest(lo), nearest(hi));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn read(p: &std::path::Path) -> (Vec<f32>, u32) {
        let mut r = hound::WavReader::open(p).unwrap();
        let rate = r.spec().sample_rate;
        let v = r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect();
        (v, rate)
    }

    #[test]
    fn identical_signals_score_one_and_short_ones_none() {
        let x: Vec<f32> = (0..20000)
            .map(|i| (i as f32 * 0.031).sin() * (i as f32 * 0.0007).sin())
            .collect();
        let s = stoi(&x, &x, FS).unwrap();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert!(stoi(&x[..3000], &x[..3000], FS).is_none());
    }

    /// Against pystoi 0.4.1 on the pairs written by tools/fixtures/gen_stoi.py.
    #[test]
    fn matches_pystoi() {
        let dir = fixture("stoi");
        let refs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let mut n = 0;
        for case in refs["cases"].as_array().unwrap() {
            let (x, rx) = read(&dir.join(case["clean"].as_str().unwrap()));
            let (y, ry) = read(&dir.join(case["processed"].as_str().unwrap()));
            assert_eq!(rx, ry);
            let want = case["stoi"].as_f64().unwrap();
            let got = stoi(&x, &y, rx).unwrap();
            // 10 kHz: same arithmetic as pystoi (measured <= 2.4e-15). 16 kHz: our
            // resampler vs pystoi's polyphase filter (measured <= 2.3e-6).
            let tol = if rx == FS { 1e-9 } else { 1e-4 };
            eprintln!(
                "{rx} Hz {}: |ours - pystoi| = {:.2e}",
                case["processed"],
                (got - want).abs()
            );
            assert!(
                (got - want).abs() <= tol,
                "{}: ours {got} pystoi {want} (tol {tol})",
                case["processed"]
            );
            n += 1;
        }
        assert!(n >= 6);
    }
}
