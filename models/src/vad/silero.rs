//! Silero VAD v5/v6 (16 kHz) on candle, from `silero_vad_16k.safetensors`.
//!
//! Per 512-sample window with 64 samples of context carried over: reflection
//! pad (64, right) → STFT as a conv1d with a fixed basis (n_fft 256, hop 128)
//! → magnitude → 4 conv blocks with ReLU → LSTM cell (state carried across
//! windows) → ReLU → 1×1 conv → sigmoid. The conv encoder is stateless, so
//! all complete windows of a `feed` call run as one batch; only the LSTM
//! recurrence is sequential.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use super::{Vad, VadError, WINDOW};

const CONTEXT: usize = 64;
const PAD: usize = 64;
const HIDDEN: usize = 128;
const CUTOFF: usize = 129;

/// Silero VAD with its streaming state (context samples, LSTM h/c).
pub struct SileroVad {
    stft: Tensor,
    convs: [(Tensor, Tensor, usize); 4],
    w_ih_t: Tensor,
    b_gates: Tensor,
    w_hh: Vec<f32>,
    w_out: Vec<f32>,
    b_out: f32,
    h: Vec<f32>,
    c: Vec<f32>,
    context: Vec<f32>,
    pending: Vec<f32>,
}

/// Expected tensors and shapes of the 16 kHz model.
const SHAPES: &[(&str, &[usize])] = &[
    ("stft_conv.weight", &[258, 1, 256]),
    ("conv1.weight", &[128, 129, 3]),
    ("conv1.bias", &[128]),
    ("conv2.weight", &[64, 128, 3]),
    ("conv2.bias", &[64]),
    ("conv3.weight", &[64, 64, 3]),
    ("conv3.bias", &[64]),
    ("conv4.weight", &[128, 64, 3]),
    ("conv4.bias", &[128]),
    ("lstm_cell.weight_ih", &[512, 128]),
    ("lstm_cell.weight_hh", &[512, 128]),
    ("lstm_cell.bias_ih", &[512]),
    ("lstm_cell.bias_hh", &[512]),
    ("final_conv.weight", &[1, 128, 1]),
    ("final_conv.bias", &[1]),
];

impl SileroVad {
    /// Load `silero_vad_16k.safetensors` (the file in the silero-vad wheel).
    pub fn load(path: impl AsRef<Path>) -> Result<SileroVad, VadError> {
        let path = path.as_ref();
        let ps = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| VadError::Load {
            path: ps.clone(),
            msg: e.to_string(),
        })?;
        let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            VadError::Load {
                path: ps.clone(),
                msg: format!("not a safetensors file ({e})"),
            }
        })?;
        Self::from_tensors(t, &ps)
    }

    /// Build from named tensors (checked against the expected names and shapes).
    pub fn from_tensors(mut t: HashMap<String, Tensor>, path: &str) -> Result<SileroVad, VadError> {
        for (name, shape) in SHAPES {
            match t.get(*name) {
                None => {
                    return Err(VadError::BadModel {
                        path: path.into(),
                        msg: format!("missing tensor {name}"),
                    })
                }
                Some(x) if x.dims() != *shape => {
                    return Err(VadError::BadModel {
                        path: path.into(),
                        msg: format!(
                            "tensor {name} has shape {:?}, expected {:?}",
                            x.dims(),
                            shape
                        ),
                    })
                }
                Some(_) => {}
            }
        }
        let mut take = |n: &str| -> Result<Tensor, VadError> {
            Ok(t.remove(n).expect("checked").to_dtype(DType::F32)?)
        };
        let stft = take("stft_conv.weight")?;
        let convs = [
            (take("conv1.weight")?, take("conv1.bias")?, 1),
            (take("conv2.weight")?, take("conv2.bias")?, 2),
            (take("conv3.weight")?, take("conv3.bias")?, 2),
            (take("conv4.weight")?, take("conv4.bias")?, 1),
        ];
        let w_ih_t = take("lstm_cell.weight_ih")?.t()?.contiguous()?;
        let b_gates = (take("lstm_cell.bias_ih")? + take("lstm_cell.bias_hh")?)?;
        let w_hh = take("lstm_cell.weight_hh")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let w_out = take("final_conv.weight")?.flatten_all()?.to_vec1::<f32>()?;
        let b_out = take("final_conv.bias")?.to_vec1::<f32>()?[0];
        Ok(SileroVad {
            stft,
            convs,
            w_ih_t,
            b_gates,
            w_hh,
            w_out,
            b_out,
            h: vec![0.0; HIDDEN],
            c: vec![0.0; HIDDEN],
            context: vec![0.0; CONTEXT],
            pending: Vec::new(),
        })
    }

    /// Probabilities for `n` complete windows at the start of `pending`.
    fn run_windows(&mut self, n: usize) -> Result<Vec<f32>, VadError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let len = CONTEXT + WINDOW + PAD;
        let mut input = Vec::with_capacity(n * len);
        for w in 0..n {
            let win = &self.pending[w * WINDOW..(w + 1) * WINDOW];
            let start = input.len();
            input.extend_from_slice(&self.context);
            input.extend_from_slice(win);
            // reflection pad on the right: x[L + j] = x[L - 2 - j]
            let l = CONTEXT + WINDOW;
            for j in 0..PAD {
                let v = input[start + l - 2 - j];
                input.push(v);
            }
            self.context.copy_from_slice(&win[WINDOW - CONTEXT..]);
        }
        let x = Tensor::from_vec(input, (n, 1, len), &Device::Cpu)?;
        let spec = x.conv1d(&self.stft, 0, 128, 1, 1)?; // [n, 258, 4]
        let re = spec.narrow(1, 0, CUTOFF)?;
        let im = spec.narrow(1, CUTOFF, CUTOFF)?;
        let mut x = (re.sqr()? + im.sqr()?)?.sqrt()?;
        for (w, b, stride) in &self.convs {
            x = x
                .conv1d(w, 1, *stride, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1))?)?
                .relu()?;
        }
        // [n, 128, 1] -> input gates [n, 512]
        let feats = x.squeeze(D::Minus1)?;
        let gx = feats
            .matmul(&self.w_ih_t)?
            .broadcast_add(&self.b_gates)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(n);
        let mut gates = [0f32; 4 * HIDDEN];
        for w in 0..n {
            let g = &gx[w * 4 * HIDDEN..(w + 1) * 4 * HIDDEN];
            for (r, gate) in gates.iter_mut().enumerate() {
                let row = &self.w_hh[r * HIDDEN..(r + 1) * HIDDEN];
                *gate = g[r] + dot(row, &self.h);
            }
            let mut logit = self.b_out;
            for k in 0..HIDDEN {
                let i = sigmoid(gates[k]);
                let f = sigmoid(gates[HIDDEN + k]);
                let gg = gates[2 * HIDDEN + k].tanh();
                let o = sigmoid(gates[3 * HIDDEN + k]);
                self.c[k] = f * self.c[k] + i * gg;
                self.h[k] = o * self.c[k].tanh();
                logit += self.w_out[k] * self.h[k].max(0.0);
            }
            out.push(sigmoid(logit));
        }
        self.pending.drain(..n * WINDOW);
        Ok(out)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 8 independent accumulators so the compiler vectorises.
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += ca[j] * cb[j];
        }
    }
    acc.iter().sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Vad for SileroVad {
    fn feed(&mut self, samples: &[f32]) -> Result<Vec<f32>, VadError> {
        self.pending.extend_from_slice(samples);
        // bound the batch so memory stays small for long inputs
        let mut out = Vec::new();
        while self.pending.len() >= WINDOW {
            let n = (self.pending.len() / WINDOW).min(1024);
            out.extend(self.run_windows(n)?);
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<Vec<f32>, VadError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        self.pending.resize(WINDOW, 0.0);
        self.run_windows(1)
    }

    fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
        self.context.fill(0.0);
        self.pending.clear();
    }

    fn name(&self) -> &'static str {
        "silero"
    }
}
