//! Streaming mono resampling (rubato) to any target rate.
//!
//! Output is aligned and delay-free: the resampler's own delay is trimmed at
//! the start, and [`Resampler::finish`] flushes the tail so the total output
//! length is exactly `ceil(n_in * to / from)` ([`Resampler::output_len`]),
//! like rubato's `process_all_into_buffer`. Input is cut into fixed-size
//! chunks internally, so the output does not depend on how the input was
//! split: streaming gives the same samples as processing the whole signal.
//! When the rates match the resampler is the identity.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, FixedSync, Indexing, PolynomialDegree, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::error::{CodecError, Result};

/// Speed/quality trade-off of the resampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    /// Cubic polynomial interpolation, no anti-alias filter (fastest).
    Fast,
    /// Windowed-sinc interpolation, 64 taps, linear sub-sample interpolation.
    Balanced,
    /// FFT-based synchronous resampling (rubato `Fft`): best quality, and fast.
    #[default]
    High,
}

impl std::str::FromStr for Quality {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fast" => Ok(Quality::Fast),
            "balanced" => Ok(Quality::Balanced),
            "high" => Ok(Quality::High),
            _ => Err(format!(
                "unknown resampling quality {s:?} (fast, balanced, high)"
            )),
        }
    }
}

/// Input frames per internal rubato call (requested; rubato may adjust it).
const CHUNK: usize = 2048;

/// A streaming mono resampler from one fixed rate to another.
pub struct Resampler {
    from: u32,
    to: u32,
    inner: Option<Box<dyn rubato::Resampler<f32>>>,
    /// Input frames per rubato call (fixed-input mode).
    chunk: usize,
    /// Pending input not yet processed (less than one chunk after each call).
    pending: Vec<f32>,
    /// Output scratch buffer of `output_frames_max` frames.
    scratch: Vec<f32>,
    /// Output frames still to drop (the resampler delay).
    to_trim: usize,
    n_in: u64,
    n_out: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz (identity when equal).
    pub fn new(from: u32, to: u32, quality: Quality) -> Result<Resampler> {
        if from == 0 || to == 0 {
            return Err(CodecError::InvalidArgument(format!(
                "resampling {from} Hz -> {to} Hz: rates must be > 0"
            )));
        }
        let inner: Option<Box<dyn rubato::Resampler<f32>>> = if from == to {
            None
        } else {
            let bad = |e: rubato::ResamplerConstructionError| {
                CodecError::InvalidArgument(format!("resampler {from} Hz -> {to} Hz: {e}"))
            };
            let ratio = to as f64 / from as f64;
            Some(match quality {
                Quality::High => Box::new(
                    rubato::Fft::<f32>::new(
                        from as usize,
                        to as usize,
                        CHUNK,
                        1,
                        1,
                        FixedSync::Input,
                    )
                    .map_err(bad)?,
                ),
                Quality::Balanced => {
                    let p = SincInterpolationParameters {
                        sinc_len: 64,
                        f_cutoff: 0.915,
                        interpolation: SincInterpolationType::Linear,
                        oversampling_factor: 128,
                        window: WindowFunction::BlackmanHarris2,
                    };
                    Box::new(
                        Async::<f32>::new_sinc(ratio, 1.0, &p, CHUNK, 1, FixedAsync::Input)
                            .map_err(bad)?,
                    )
                }
                Quality::Fast => Box::new(
                    Async::<f32>::new_poly(
                        ratio,
                        1.0,
                        PolynomialDegree::Cubic,
                        CHUNK,
                        1,
                        FixedAsync::Input,
                    )
                    .map_err(bad)?,
                ),
            })
        };
        let (scratch, to_trim, chunk) = match &inner {
            Some(r) => (
                vec![0.0; r.output_frames_max()],
                r.output_delay(),
                r.input_frames_next(),
            ),
            None => (Vec::new(), 0, CHUNK),
        };
        Ok(Resampler {
            from,
            to,
            inner,
            chunk,
            pending: Vec::with_capacity(chunk),
            scratch,
            to_trim,
            n_in: 0,
            n_out: 0,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Output length for `n_in` input samples: `ceil(n_in * to / from)`.
    pub fn output_len(from: u32, to: u32, n_in: u64) -> u64 {
        if from == to {
            return n_in;
        }
        ((n_in as u128 * to as u128).div_ceil(from as u128)) as u64
    }

    /// Feeds samples; returns the output that is ready.
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.process_into(input, &mut out)?;
        Ok(out)
    }

    /// Feeds samples, appending ready output to `out`.
    pub fn process_into(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        self.n_in += input.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.n_out += input.len() as u64;
            return Ok(());
        }
        let chunk = self.chunk;
        let mut rest = input;
        // Complete a pending partial chunk first, then run whole chunks straight from `input`.
        if !self.pending.is_empty() {
            let take = (chunk - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == chunk {
                let full = std::mem::take(&mut self.pending);
                self.run(&full, None, out)?;
                self.pending = full;
                self.pending.clear();
            }
        }
        while rest.len() >= chunk {
            self.run(&rest[..chunk], None, out)?;
            rest = &rest[chunk..];
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// Flushes the tail; returns the last output. Total output length is
    /// [`Resampler::output_len`] of the total input. The resampler can then be reused.
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.finish_into(&mut out)?;
        Ok(out)
    }

    /// Like [`Resampler::finish`], appending to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<f32>) -> Result<()> {
        if self.inner.is_some() {
            let expected = Self::output_len(self.from, self.to, self.n_in);
            let mut buf = std::mem::take(&mut self.pending);
            let partial = buf.len();
            let chunk = self.chunk;
            buf.resize(chunk, 0.0);
            if partial > 0 {
                self.run(&buf, Some(partial), out)?;
            }
            while self.n_out < expected {
                self.run(&buf, Some(0), out)?;
            }
            let extra = (self.n_out - expected) as usize;
            out.truncate(out.len() - extra);
            if let Some(r) = self.inner.as_mut() {
                r.reset();
                self.to_trim = r.output_delay();
            }
            buf.clear();
            self.pending = buf;
        }
        self.n_in = 0;
        self.n_out = 0;
        Ok(())
    }

    fn run(&mut self, chunk: &[f32], partial: Option<usize>, out: &mut Vec<f32>) -> Result<()> {
        let r = self.inner.as_mut().expect("non-identity resampler");
        let err = |e: &dyn std::fmt::Display| {
            CodecError::InvalidArgument(format!("resampling failed: {e}"))
        };
        let input = InterleavedSlice::new(chunk, 1, chunk.len()).map_err(|e| err(&e))?;
        let frames_out = self.scratch.len();
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch, 1, frames_out).map_err(|e| err(&e))?;
        let idx = Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len: partial,
            active_channels_mask: None,
        };
        let (_, n) = r
            .process_into_buffer(&input, &mut output, Some(&idx))
            .map_err(|e| err(&e))?;
        let skip = self.to_trim.min(n);
        self.to_trim -= skip;
        out.extend_from_slice(&self.scratch[skip..n]);
        self.n_out += (n - skip) as u64;
        Ok(())
    }

    /// Resamples a whole signal.
    pub fn process_all(from: u32, to: u32, quality: Quality, input: &[f32]) -> Result<Vec<f32>> {
        let mut r = Resampler::new(from, to, quality)?;
        let mut out =
            Vec::with_capacity(Self::output_len(from, to, input.len() as u64) as usize + 16);
        r.process_into(input, &mut out)?;
        r.finish_into(&mut out)?;
        Ok(out)
    }
}
