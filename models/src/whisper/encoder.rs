//! Whisper's audio encoder: two kernel-3 convolutions (GELU), sinusoidal or
//! learned positions, pre-LN transformer layers and a final layer norm.
//!
//! The attention projections are fused into one `[3·d, d]` matrix (the
//! `1/√head_dim` query scale folded in). On CPU float32 the layers run on
//! [`super::encoder_cpu`]'s kernels (convolutions as im2col + one matmul,
//! bias+GELU fused, attention straight from the packed projection); other
//! devices and dtypes use the same weights through plain candle ops.

use super::config::WhisperConfig;
use super::encoder_cpu as cpu;
use crate::runtime::int8::QLinear;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use std::sync::Arc;

/// Largest attention score tensor the generic (non-CPU-kernel) path
/// computes at once (bytes): longer inputs go in query blocks.
const MAX_SCORE_BYTES: usize = 8 << 20;

fn layer_norm(n: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(n, "weight")?,
        vb.get(n, "bias")?,
        1e-5,
    ))
}

/// A dense layer's weight `[out, in]` and bias `[out]`, and its int8
/// form once [`Encoder::quantize_int8`] has made it.
#[derive(Debug, Clone)]
struct Dense {
    w: Tensor,
    b: Tensor,
    q: Option<Arc<QLinear>>,
}

impl Dense {
    fn load(i: usize, o: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            w: vb.get((o, i), "weight")?,
            b: vb.get(o, "bias")?,
            q: None,
        })
    }

    fn quantize_int8(&mut self) -> Result<()> {
        self.q = Some(Arc::new(QLinear::from_tensors(&self.w, Some(&self.b))?));
        Ok(())
    }

    /// `x·wᵀ + b` (then erf GELU) over the last dimension of `x`.
    fn forward(&self, x: &Tensor, gelu: bool, fast: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let x2 = x.reshape(((), k))?;
        let y = if let (Some(q), true) = (&self.q, cpu::supported(x)) {
            q.forward(&x2, gelu)?
        } else if fast && cpu::supported(x) {
            cpu::dense(&x2, &self.w, &self.b, gelu)?
        } else {
            let y = x2.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
            if gelu {
                y.gelu_erf()?
            } else {
                y
            }
        };
        let mut out = dims;
        *out.last_mut().expect("non-empty dims") = self.w.dim(0)?;
        y.reshape(out)
    }

    /// `x·wᵀ` over the last dimension of CPU f32 `x`, and the bias still to
    /// add (`None` when the int8 layer has added it), for a fused consumer.
    fn forward_unbiased(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let x2 = x.reshape(((), k))?;
        let (y, b) = match &self.q {
            Some(q) => (q.forward(&x2, false)?, None),
            None => (cpu::matmul_t(&x2, &self.w)?, Some(&self.b)),
        };
        let mut out = dims;
        *out.last_mut().expect("non-empty dims") = self.w.dim(0)?;
        Ok((y.reshape(out)?, b))
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    attn_ln: LayerNorm,
    /// `[q·s; k; v]` projections, `s = head_dim^-½` (k has no bias: zeros).
    qkv: Dense,
    out: Dense,
    mlp_ln: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    heads: usize,
}

impl EncoderLayer {
    fn load(d: usize, heads: usize, ffn: usize, vb: VarBuilder) -> Result<Self> {
        let a = vb.pp("self_attn");
        let scale = ((d / heads) as f64).powf(-0.5);
        let q = Dense::load(d, d, a.pp("q_proj"))?;
        let v = Dense::load(d, d, a.pp("v_proj"))?;
        let kw = a.pp("k_proj").get((d, d), "weight")?;
        let qkv = Dense {
            w: Tensor::cat(&[&(q.w * scale)?, &kw, &v.w], 0)?,
            b: Tensor::cat(&[&(q.b * scale)?, &v.b.zeros_like()?, &v.b], 0)?,
            q: None,
        };
        Ok(Self {
            attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            qkv,
            out: Dense::load(d, d, a.pp("out_proj"))?,
            mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
            fc1: Dense::load(d, ffn, vb.pp("fc1"))?,
            fc2: Dense::load(ffn, d, vb.pp("fc2"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, fast: bool, clock: &mut StageClock) -> Result<Tensor> {
        let h = self.attn_ln.forward(x)?;
        clock.lap(Stage::Norm);
        let qkv = self.qkv.forward(&h, false, fast)?;
        clock.lap(Stage::Qkv);
        let a = if fast && cpu::supported(&qkv) {
            cpu::packed_self_attention(&qkv, self.heads)?
        } else {
            attention_generic(&qkv, self.heads)?
        };
        clock.lap(Stage::Attention);
        let o = self.out.forward(&a, false, fast)?;
        clock.lap(Stage::Out);
        let x = (x + o)?;
        clock.lap(Stage::Residual);
        let h = self.mlp_ln.forward(&x)?;
        clock.lap(Stage::Norm);
        let h = self.fc1.forward(&h, true, fast)?;
        clock.lap(Stage::Fc1);
        let h = self.fc2.forward(&h, false, fast)?;
        clock.lap(Stage::Fc2);
        let x = (x + h)?;
        clock.lap(Stage::Residual);
        Ok(x)
    }
}

/// Windows the CPU float32 path runs through the encoder together: one
/// window's activations (≤ 9 MB each for tiny) stay in the L3 cache and the
/// allocator recycles them, where a whole batch's (8 windows: up to 74 MB
/// each) would stream through memory and page-fault fresh allocations.
/// Every row's arithmetic is the same either way (gemm's blocking over k
/// does not depend on the row count), so outputs are bit-identical.
/// `VOXTOK_ENC_WINDOWS=N` overrides (A/B runs).
fn windows_per_pass() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("VOXTOK_ENC_WINDOWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(1)
    })
}

/// Encoder stages timed by [`StageClock`].
#[derive(Clone, Copy)]
enum Stage {
    Conv,
    Norm,
    Qkv,
    Attention,
    Out,
    Residual,
    Fc1,
    Fc2,
}

const STAGE_NAMES: [&str; 8] = [
    "conv", "norm", "qkv", "attn", "out", "residual", "fc1", "fc2",
];

/// Wall time per encoder stage, printed to stderr after each forward when
/// `VOXTOK_ENC_TIMING=1` (a profiling aid; a no-op otherwise).
struct StageClock {
    last: Option<std::time::Instant>,
    acc: [f64; 8],
}

impl StageClock {
    fn start() -> Self {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = *ON.get_or_init(|| std::env::var("VOXTOK_ENC_TIMING").is_ok_and(|v| v == "1"));
        Self {
            last: on.then(std::time::Instant::now),
            acc: [0.0; 8],
        }
    }

    fn lap(&mut self, stage: Stage) {
        if let Some(last) = &mut self.last {
            let now = std::time::Instant::now();
            self.acc[stage as usize] += (now - *last).as_secs_f64();
            *last = now;
        }
    }

    fn report(&self, batch: usize) {
        if self.last.is_some() {
            let total: f64 = self.acc.iter().sum();
            let parts: Vec<String> = STAGE_NAMES
                .iter()
                .zip(self.acc)
                .map(|(n, s)| format!("{n} {:.1}", s * 1e3))
                .collect();
            eprintln!(
                "encoder timing (batch {batch}, ms): total {:.1}; {}",
                total * 1e3,
                parts.join(", ")
            );
        }
    }
}

impl EncoderLayer {
    /// One layer on the CPU float32 kernels with the passes fused: the qkv
    /// bias goes into the attention's packing, the out/fc2 biases and the
    /// residual sums into the following layer norms. Takes `x` and
    /// `attn_ln(x)`, returns the next `x` and `next_ln(x)` (`x` only when
    /// `keep_sum`); bit-identical to [`Self::forward`] with the same
    /// attention kernel.
    fn forward_fused(
        &self,
        x: &Tensor,
        h: &Tensor,
        next_ln: &LayerNorm,
        keep_sum: bool,
        clock: &mut StageClock,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (qkv, qkv_b) = self.qkv.forward_unbiased(h)?;
        clock.lap(Stage::Qkv);
        let a = cpu::self_attention_unbiased(&qkv, qkv_b, self.heads)?;
        drop(qkv);
        clock.lap(Stage::Attention);
        let (o, o_b) = self.out.forward_unbiased(&a)?;
        drop(a);
        clock.lap(Stage::Out);
        let (x, h) = cpu::add_layer_norm(x, &o, o_b, &self.mlp_ln, true)?;
        let x = x.expect("kept sum");
        drop(o);
        clock.lap(Stage::Norm);
        let f = self.fc1.forward(&h, true, true)?;
        drop(h);
        clock.lap(Stage::Fc1);
        let (y, y_b) = self.fc2.forward_unbiased(&f)?;
        drop(f);
        clock.lap(Stage::Fc2);
        let out = cpu::add_layer_norm(&x, &y, y_b, next_ln, keep_sum)?;
        clock.lap(Stage::Norm);
        Ok(out)
    }
}

/// Softmax attention of packed `[b, t, 3·d]` (`q` scaled) with candle ops,
/// in query blocks of bounded score size → `[b, t, d]`.
fn attention_generic(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d3) = qkv.dims3()?;
    let d = d3 / 3;
    let parts = qkv
        .reshape((b, t, 3, heads, d / heads))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
    let kt = k.t()?;
    let per_row = b * heads * t * qkv.dtype().size_in_bytes();
    let rows = (MAX_SCORE_BYTES / per_row.max(1)).clamp(1, t);
    let mut outs = Vec::new();
    for s in (0..t).step_by(rows) {
        let n = rows.min(t - s);
        let w = q.narrow(2, s, n)?.matmul(&kt)?;
        let w = super::fastmath::softmax_last_dim(&w.contiguous()?)?;
        outs.push(w.matmul(&v)?);
    }
    Tensor::cat(&outs, 2)?.transpose(1, 2)?.reshape((b, t, d))
}

/// A kernel-3, padding-1 convolution stored as `[out, in·3]` (+ bias).
#[derive(Debug, Clone)]
struct Conv3 {
    dense: Dense,
    stride: usize,
}

impl Conv3 {
    fn load(i: usize, o: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            dense: Dense {
                w: vb.get((o, i, 3), "weight")?.reshape((o, i * 3))?,
                b: vb.get(o, "bias")?,
                q: None,
            },
            stride,
        })
    }

    /// GELU(conv(x)) as `[b, t_out, out]`; `x` is `[b, in, t]`, or
    /// `[b, t, in]` when `time_major`.
    fn forward_gelu(&self, x: &Tensor, time_major: bool, fast: bool) -> Result<Tensor> {
        let b = x.dim(0)?;
        let (o, i3) = self.dense.w.dims2()?;
        if fast && cpu::supported(x) {
            let cols = cpu::im2col3(x, self.stride, time_major)?;
            return self.dense.forward(&cols, true, true)?.reshape((b, (), o));
        }
        let x = if time_major {
            x.transpose(1, 2)?.contiguous()?
        } else {
            x.clone()
        };
        let w = self.dense.w.reshape((o, i3 / 3, 3))?;
        x.conv1d(&w, 1, self.stride, 1, 1)?
            .broadcast_add(&self.dense.b.reshape((1, o, 1))?)?
            .gelu_erf()?
            .transpose(1, 2)
    }
}

/// The audio encoder: log-mel `[batch, n_mels, 2·frames]` → `[batch, frames, d]`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv1: Conv3,
    conv2: Conv3,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    ln: LayerNorm,
    n_mels: usize,
    /// Use the CPU float32 kernels when the input allows (tests compare
    /// both paths by clearing it).
    fast: bool,
}

impl Encoder {
    pub(super) fn load(cfg: &WhisperConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let positions = if vb.contains_tensor("embed_positions.weight") {
            vb.get((cfg.max_source_positions, d), "embed_positions.weight")?
        } else {
            sinusoids(cfg.max_source_positions, d, vb.device())?.to_dtype(vb.dtype())?
        };
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                EncoderLayer::load(
                    d,
                    cfg.encoder_attention_heads,
                    cfg.encoder_ffn(),
                    vb.pp(format!("layers.{i}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv1: Conv3::load(cfg.num_mel_bins, d, 1, vb.pp("conv1"))?,
            conv2: Conv3::load(d, d, 2, vb.pp("conv2"))?,
            positions,
            layers,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            n_mels: cfg.num_mel_bins,
            fast: true,
        })
    }

    /// Switches the transformer layers' dense layers (attention
    /// projections and MLP) to int8 weights and activations, used on CPU
    /// float32 inputs (the `int8` compute type; the convolutions, layer
    /// norms and attention itself stay float32).
    pub(super) fn quantize_int8(&mut self) -> Result<()> {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.out, &mut l.fc1, &mut l.fc2] {
                d.quantize_int8()?;
            }
        }
        Ok(())
    }

    /// Encodes a batch of log-mel windows.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let (_, n_mels, frames) = mel.dims3()?;
        if n_mels != self.n_mels || frames != 2 * self.positions.dim(0)? {
            candle_core::bail!(
                "encoder input is [{n_mels} × {frames}], the model expects [{} × {}]",
                self.n_mels,
                2 * self.positions.dim(0)?
            );
        }
        let batch = mel.dim(0)?;
        let mut clock = StageClock::start();
        let chunk = if self.fast && cpu::supported(mel) {
            windows_per_pass()
        } else {
            batch
        };
        let out = if batch > chunk {
            let parts = (0..batch)
                .step_by(chunk)
                .map(|s| self.forward_windows(&mel.narrow(0, s, chunk.min(batch - s))?, &mut clock))
                .collect::<Result<Vec<_>>>()?;
            let out = Tensor::cat(&parts, 0)?;
            clock.lap(Stage::Residual);
            out
        } else {
            self.forward_windows(mel, &mut clock)?
        };
        clock.report(batch);
        Ok(out)
    }

    /// The encoder on all windows of `mel` at once.
    fn forward_windows(&self, mel: &Tensor, clock: &mut StageClock) -> Result<Tensor> {
        let x = self.conv1.forward_gelu(mel, false, self.fast)?;
        let x = self.conv2.forward_gelu(&x, true, self.fast)?;
        let mut x = x.broadcast_add(&self.positions)?;
        clock.lap(Stage::Conv);
        let d = x.dim(2)?;
        let fused = self.fast
            && cpu::supported(&x)
            && !self.layers.is_empty()
            && self
                .layers
                .iter()
                .all(|l| cpu::fused_attention_used(d, l.heads));
        if fused {
            let mut h = self.layers[0].attn_ln.forward(&x)?;
            clock.lap(Stage::Norm);
            for (i, l) in self.layers.iter().enumerate() {
                let next = self.layers.get(i + 1);
                let next_ln = next.map_or(&self.ln, |n| &n.attn_ln);
                let (sum, norm) = l.forward_fused(&x, &h, next_ln, next.is_some(), clock)?;
                h = norm;
                if let Some(sum) = sum {
                    x = sum;
                }
            }
            return Ok(h);
        }
        for l in &self.layers {
            x = l.forward(&x, self.fast, clock)?;
        }
        let x = self.ln.forward(&x)?;
        clock.lap(Stage::Norm);
        Ok(x)
    }
}

/// Whisper's sinusoidal encoder positions (used when the checkpoint lacks them).
fn sinusoids(length: usize, channels: usize, dev: &Device) -> Result<Tensor> {
    let half = channels / 2;
    let inc = (10000f64).ln() / (half as f64 - 1.0);
    let mut v = vec![0f32; length * channels];
    for t in 0..length {
        for i in 0..half {
            let a = t as f64 * (-(i as f64) * inc).exp();
            v[t * channels + i] = a.sin() as f32;
            v[t * channels + half + i] = a.cos() as f32;
        }
    }
    Tensor::from_vec(v, (length, channels), dev)
}

#[cfg(test)]
mod tests {
    use crate::whisper::testutil;
    use candle_core::D;

    /// Windows one at a time (the CPU default) and a whole batch at once
    /// give bit-identical encoder outputs.
    #[test]
    fn window_passes_equal_whole_batch() {
        let w = testutil::load("tiny-multi");
        let enc = &w.model.encoder;
        let frames = 2 * enc.positions.dim(0).unwrap();
        let mel = testutil::features(80, "voiced")
            .narrow(2, 0, frames)
            .unwrap();
        let mel =
            candle_core::Tensor::cat(&[&mel, &(&mel * 0.5).unwrap(), &(&mel * -0.3).unwrap()], 0)
                .unwrap();
        let mut clock = super::StageClock::start();
        let whole = enc.forward_windows(&mel, &mut clock).unwrap();
        let parts = enc.forward(&mel).unwrap();
        let diff = crate::runtime::testing::max_abs_diff(&whole, &parts);
        assert_eq!(diff, 0.0);
    }

    /// The fused layer path (biases folded into attention packing and the
    /// layer norms, residual sums fused) is bit-identical to the layer-by-
    /// layer kernels it replaces.
    #[test]
    fn fused_layers_equal_unfused() {
        for name in ["tiny-multi", "tiny-6s"] {
            let w = testutil::load(name);
            let enc = &w.model.encoder;
            let frames = 2 * enc.positions.dim(0).unwrap();
            let mel = testutil::features(80, "voiced")
                .narrow(2, 0, frames)
                .unwrap();
            let mel = candle_core::Tensor::cat(&[&mel, &(&mel * 0.7).unwrap()], 0).unwrap();
            let mut clock = super::StageClock::start();
            let fused = enc.forward_windows(&mel, &mut clock).unwrap();
            let x = enc.conv1.forward_gelu(&mel, false, true).unwrap();
            let x = enc.conv2.forward_gelu(&x, true, true).unwrap();
            let mut x = x.broadcast_add(&enc.positions).unwrap();
            for l in &enc.layers {
                x = l.forward(&x, true, &mut clock).unwrap();
            }
            let want = candle_core::Module::forward(&enc.ln, &x).unwrap();
            let diff = crate::runtime::testing::max_abs_diff(&fused, &want);
            assert_eq!(diff, 0.0, "{name}");
        }
    }

    /// The CPU kernels and the generic candle path agree within 1e-4 (the
    /// generic path is what CUDA and half-precision runs use; both differ
    /// only in summation order, erf/exp approximations and the folded
    /// query scale).
    #[test]
    fn cpu_kernels_match_generic_path() {
        for (name, n_mels) in [("tiny-multi", 80), ("tiny-6s", 80)] {
            let w = testutil::load(name);
            let mut enc = w.model.encoder.clone();
            let frames = 2 * enc.positions.dim(0).unwrap();
            let mel = testutil::features(n_mels, "voiced")
                .narrow(2, 0, frames)
                .unwrap();
            let mel = candle_core::Tensor::cat(&[&mel, &(&mel * 0.5).unwrap()], 0).unwrap();
            let fast = enc.forward(&mel).unwrap();
            enc.fast = false;
            let generic = enc.forward(&mel).unwrap();
            let err: f32 = (fast - generic)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(D::Minus1)
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(err <= 1e-4, "{name}: fast vs generic encoder {err}");
        }
    }
}
