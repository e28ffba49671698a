//! DAC, the Descript Audio Codec (Kumar et al. 2023), from a Hugging Face
//! `DacModel` directory: Snake-activated conv encoder/decoder and a residual
//! vector quantizer with factorized, l2-normalized codebooks.
//!
//! Written against transformers' `modeling_dac.py` (same weight names; conv
//! weights may be plain or weight-normed in either spelling).

use super::conv_cpu;
use super::nn::conv_weight;
use super::winograd::{self, ConvT22, Winograd};
use super::{AudioTokenizer, CodecError, Result, TokenizerInfo};
use crate::runtime::{Device, ModelDir};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// The fields of `DacConfig` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct DacConfig {
    #[serde(default = "d_enc")]
    pub encoder_hidden_size: usize,
    #[serde(default = "d_ratios")]
    pub downsampling_ratios: Vec<usize>,
    #[serde(default = "d_dec")]
    pub decoder_hidden_size: usize,
    #[serde(default = "d_ncb")]
    pub n_codebooks: usize,
    #[serde(default = "d_cbs")]
    pub codebook_size: usize,
    #[serde(default = "d_cbd")]
    pub codebook_dim: usize,
    #[serde(default = "d_sr")]
    pub sampling_rate: u32,
}

fn d_enc() -> usize {
    64
}
fn d_ratios() -> Vec<usize> {
    vec![2, 4, 8, 8]
}
fn d_dec() -> usize {
    1536
}
fn d_ncb() -> usize {
    9
}
fn d_cbs() -> usize {
    1024
}
fn d_cbd() -> usize {
    8
}
fn d_sr() -> u32 {
    16000
}

impl DacConfig {
    pub fn hidden_size(&self) -> usize {
        self.encoder_hidden_size << self.downsampling_ratios.len()
    }
    pub fn hop_length(&self) -> usize {
        self.downsampling_ratios.iter().product()
    }
    /// `ceil(sampling_rate / hop_length)`, as transformers computes it.
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }
}

/// A (possibly strided / dilated / transposed) conv with symmetric padding.
#[derive(Debug, Clone)]
struct Conv {
    /// On CPU (f32) the taps `[k, cout, cin]` ([`conv_cpu::pack_taps`]);
    /// elsewhere `[cout, cin, k]` (transposed: `[cin, cout, k]`).
    weight: Tensor,
    packed: bool,
    bias: Tensor,
    bias_v: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    transposed: bool,
    /// On CPU, the weight transformed for Winograd F(m, k) (then `weight`
    /// is empty).
    wino: Option<Winograd>,
    /// On CPU, a transposed conv with `k = 2·stride` as Winograd F(2, 2)
    /// (then `weight` is empty).
    wino22: Option<ConvT22>,
}

/// Default Winograd tiles (outputs per tile) of the decoder's k = 7
/// residual convs on CPU, one per decoder block (the last repeated): F(2, 7)
/// in the first, lowest-rate and widest block (the most error-sensitive),
/// F(3, 7) in the others, where F(2, 7)'s transforms cost most relative to
/// its products (`2,3,3,3` vs `2,2,3,3`: decode 1.064x, 6 interleaved pairs
/// at 5 s). Decoded fixture audio: 5.4e-5 max abs error, 6.2e-5 with every
/// transposed conv in F(2, 2) (`2,2,3,3`: 5.1e-5, all F(2, 7): 3.1e-5, all
/// F(3, 7): 9.0e-5; bar 1e-4). `VOXTOK_DAC_WINOGRAD` overrides it: one
/// number for every block or a list (`2` = all F(2, 7), `0` = per-tap GEMMs).
const WINOGRAD_M: [usize; 4] = [2, 3, 3, 3];

/// Default Winograd tile of the encoder's k = 7 residual convs on CPU;
/// `VOXTOK_DAC_ENC_WINOGRAD` overrides it (0 = per-tap GEMMs).
const ENC_WINOGRAD_M: usize = 2;

/// Default least input channels of a decoder transposed conv run as
/// Winograd F(2, 2) on CPU ([`ConvT22`]): measured slower at 192 -> 96
/// (stride 2, where the transforms and the interleave cost most).
const CONVT_WINOGRAD_MIN_CIN: usize = 256;

/// The least input channels of a decoder transposed conv (`k = 2·stride`)
/// run as Winograd F(2, 2): `VOXTOK_DAC_CONVT_WINOGRAD` (0 = none, 1 = all;
/// read at load), else [`CONVT_WINOGRAD_MIN_CIN`].
fn convt_winograd_min() -> usize {
    env_usize("VOXTOK_DAC_CONVT_WINOGRAD", CONVT_WINOGRAD_MIN_CIN)
}

/// The Winograd tile of the encoder's residual convs (read at model load).
fn enc_winograd_m() -> usize {
    env_usize("VOXTOK_DAC_ENC_WINOGRAD", ENC_WINOGRAD_M)
}

/// A number from env `var`, `default` when unset or unparsable.
fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        transposed: bool,
    ) -> candle_core::Result<Self> {
        let shape = if transposed {
            (cin, cout, k)
        } else {
            (cout, cin, k)
        };
        let weight = conv_weight(&vb, shape)?.contiguous()?;
        // On CPU only the per-tap layout the kernels read is kept.
        let packed = cpu_f32(&weight);
        let weight = if packed {
            let w = weight.flatten_all()?.to_vec1::<f32>()?;
            let taps = conv_cpu::pack_taps(&w, cout, cin, k, transposed);
            Tensor::from_vec(taps, (k, cout, cin), weight.device())?
        } else {
            weight
        };
        let bias = vb.get(cout, "bias")?;
        Ok(Self {
            weight,
            packed,
            bias_v: bias.to_dtype(DType::F32)?.to_vec1()?,
            bias,
            cin,
            cout,
            k,
            stride,
            padding,
            dilation,
            transposed,
            wino: None,
            wino22: None,
        })
    }

    /// On CPU, a stride-1 conv switched to Winograd F(m, k) (`m` = 0: kept
    /// as is); the per-tap weights are dropped.
    fn winograd(mut self, m: usize) -> candle_core::Result<Self> {
        if !self.packed
            || self.transposed
            || self.stride != 1
            || m == 0
            || m + self.k - 1 > winograd::MAX_POINTS
        {
            return Ok(self);
        }
        let w = conv_cpu::with_f32(&self.weight, |taps| {
            Winograd::new(taps, self.cout, self.cin, self.k, m)
        })
        .ok_or_else(|| candle_core::Error::Msg("DAC: packed weights are not f32".into()))?;
        self.wino = Some(w);
        self.weight = Tensor::zeros(0, DType::F32, self.weight.device())?;
        Ok(self)
    }

    /// On CPU, a transposed conv with `k = 2·stride` switched to Winograd
    /// F(2, 2) ([`ConvT22`]) when `on`; the per-tap weights are dropped.
    fn convt_winograd(mut self, on: bool) -> candle_core::Result<Self> {
        if !on
            || !self.packed
            || !self.transposed
            || self.dilation != 1
            || self.k != 2 * self.stride
        {
            return Ok(self);
        }
        let w = conv_cpu::with_f32(&self.weight, |taps| {
            ConvT22::new(taps, self.cout, self.cin, self.stride)
        })
        .ok_or_else(|| candle_core::Error::Msg("DAC: packed weights are not f32".into()))?;
        self.wino22 = Some(w);
        self.weight = Tensor::zeros(0, DType::F32, self.weight.device())?;
        Ok(self)
    }

    /// Output length for `t` input frames.
    fn out_len(&self, t: usize) -> usize {
        if self.transposed {
            ((t.max(1) - 1) * self.stride + self.k).saturating_sub(2 * self.padding)
        } else {
            conv_cpu::Geom::conv_len(t, self.k, self.stride, self.dilation, self.padding)
        }
    }

    /// CPU f32 kernel on one item: `x [cin, t]` → `y [cout, out_len(t)]`,
    /// starting from `init`.
    fn run(
        &self,
        x: &[f32],
        t: usize,
        init: conv_cpu::Init,
        y: &mut [f32],
    ) -> candle_core::Result<()> {
        let g = conv_cpu::Geom {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            dilation: self.dilation,
            pad: self.padding,
            t_in: t,
            n_out: self.out_len(t),
        };
        let t0 = prof_start();
        let kind = if self.wino.is_some() {
            "wino"
        } else if self.wino22.is_some() {
            "convT22"
        } else if self.transposed {
            "convT"
        } else {
            "conv"
        };
        let label = || {
            format!(
                "{kind} {}->{} k{} s{} d{} t{}",
                self.cin, self.cout, self.k, self.stride, self.dilation, g.n_out
            )
        };
        let steps = if self.transposed { t } else { g.n_out };
        let flop = 2.0 * (self.cin * self.cout * self.k * steps) as f64;
        if let Some(w) = &self.wino {
            w.conv(x, t, self.dilation, self.padding, g.n_out, init, y);
            prof_add(t0, label, flop);
            return Ok(());
        }
        if let Some(w) = &self.wino22 {
            if t > 0 {
                w.conv(x, t, self.padding, g.n_out, init, y);
            }
            prof_add(t0, label, flop);
            return Ok(());
        }
        let r = conv_cpu::with_f32(&self.weight, |w| {
            if self.transposed {
                conv_cpu::conv_transpose1d(&g, x, w, init, y)
            } else {
                conv_cpu::conv1d(&g, x, w, init, y)
            }
        })
        .ok_or_else(|| {
            candle_core::Error::Msg("DAC CPU kernel: weights are not f32 on CPU".into())
        });
        prof_add(t0, label, flop);
        r
    }

    /// [`Conv::run`] into a new buffer, the bias as initial value.
    fn apply(&self, x: &[f32], t: usize) -> candle_core::Result<(Vec<f32>, usize)> {
        let n = self.out_len(t);
        let mut y = vec![0f32; self.cout * n];
        self.run(x, t, conv_cpu::Init::Bias(&self.bias_v), &mut y)?;
        Ok((y, n))
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.packed {
            let (b, _, t) = xs.dims3()?;
            let x = xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let n = self.out_len(t);
            let mut y = vec![0f32; b * self.cout * n];
            for (xb, yb) in x.chunks(self.cin * t).zip(y.chunks_mut(self.cout * n)) {
                self.run(xb, t, conv_cpu::Init::Bias(&self.bias_v), yb)?;
            }
            return Tensor::from_vec(y, (b, self.cout, n), xs.device());
        }
        let ys = if self.transposed {
            // Unpadded (candle's fast col2im path), then crop the padding:
            // the same as ConvTranspose1d(padding = p).
            let full = xs.conv_transpose1d(&self.weight, 0, 0, self.stride, self.dilation, 1)?;
            let len = full.dim(D::Minus1)?;
            full.narrow(D::Minus1, self.padding, len - 2 * self.padding)?
        } else {
            xs.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?
        };
        ys.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// Snake activation `x + 1/(α + 1e-9) · sin²(αx)` with per-channel α.
#[derive(Debug, Clone)]
struct Snake {
    alpha: Tensor,
    inv: Tensor,
    alpha_v: Vec<f32>,
    inv_v: Vec<f32>,
}

impl Snake {
    fn load(vb: VarBuilder, dim: usize) -> candle_core::Result<Self> {
        let alpha = vb.get((1, dim, 1), "alpha")?;
        let inv = (&alpha + 1e-9)?.recip()?;
        Ok(Self {
            alpha_v: alpha.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            inv_v: inv.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            alpha,
            inv,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let s = xs.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        xs + s.broadcast_mul(&self.inv)?
    }

    /// CPU kernel: `x [c, t]` → `out`.
    fn run(&self, x: &[f32], t: usize, out: &mut [f32]) {
        let t0 = prof_start();
        conv_cpu::snake(x, t, &self.alpha_v, &self.inv_v, out);
        prof_add(t0, || format!("snake {} t{t}", self.alpha_v.len()), 0.0);
    }
}

/// Reusable buffers of the CPU path.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    /// A spent activation buffer, reused as the next block's output.
    spare: Vec<f32>,
    /// The last block's output, kept for the first conv's output of the
    /// next call (with `spare`, both rotating buffers stay allocated).
    spare2: Vec<f32>,
}

/// The first `n` values of `v`, grown when needed (contents unspecified).
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[derive(Debug, Clone)]
struct ResUnit {
    snake1: Snake,
    conv1: Conv,
    snake2: Snake,
    conv2: Conv,
}

impl ResUnit {
    fn load(vb: VarBuilder, dim: usize, dilation: usize) -> candle_core::Result<Self> {
        Ok(Self {
            snake1: Snake::load(vb.pp("snake1"), dim)?,
            conv1: Conv::load(
                vb.pp("conv1"),
                dim,
                dim,
                7,
                1,
                3 * dilation,
                dilation,
                false,
            )?,
            snake2: Snake::load(vb.pp("snake2"), dim)?,
            conv2: Conv::load(vb.pp("conv2"), dim, dim, 1, 1, 0, 1, false)?,
        })
    }

    /// The k = 7 conv on Winograd F(m, 7) (CPU; see [`Conv::winograd`]).
    fn winograd(mut self, m: usize) -> candle_core::Result<Self> {
        self.conv1 = self.conv1.winograd(m)?;
        Ok(self)
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.conv1.forward(&self.snake1.forward(xs)?)?;
        let ys = self.conv2.forward(&self.snake2.forward(&ys)?)?;
        let pad = (xs.dim(D::Minus1)? - ys.dim(D::Minus1)?) / 2;
        let xs = if pad > 0 {
            xs.narrow(D::Minus1, pad, ys.dim(D::Minus1)?)?
        } else {
            xs.clone()
        };
        xs + ys
    }

    /// CPU path, in place on `x [c, t]` (DAC's units keep the length):
    /// `x += conv2(snake2(conv1(snake1(x))))`, the residual as conv2's
    /// initial value.
    fn run(&self, x: &mut [f32], t: usize, sc: &mut Scratch) -> candle_core::Result<()> {
        let n = x.len();
        debug_assert_eq!(self.conv1.out_len(t), t);
        let a = buf(&mut sc.a, n);
        self.snake1.run(x, t, a);
        let h = buf(&mut sc.b, n);
        self.conv1
            .run(a, t, conv_cpu::Init::Bias(&self.conv1.bias_v), h)?;
        self.snake2.run(h, t, a);
        self.conv2
            .run(a, t, conv_cpu::Init::Add(Some(&self.conv2.bias_v)), x)
    }
}

/// Encoder block: three residual units, Snake, strided conv (or, in the
/// decoder: Snake, transposed conv, three residual units).
#[derive(Debug, Clone)]
struct Block {
    units: [ResUnit; 3],
    snake: Snake,
    conv: Conv,
    decoder: bool,
}

impl Block {
    /// `m`: the Winograd tile of the residual units' k = 7 convs (0: per-tap).
    fn load_enc(vb: VarBuilder, dim: usize, stride: usize, m: usize) -> candle_core::Result<Self> {
        let h = dim / 2;
        Ok(Self {
            units: [
                ResUnit::load(vb.pp("res_unit1"), h, 1)?.winograd(m)?,
                ResUnit::load(vb.pp("res_unit2"), h, 3)?.winograd(m)?,
                ResUnit::load(vb.pp("res_unit3"), h, 9)?.winograd(m)?,
            ],
            snake: Snake::load(vb.pp("snake1"), h)?,
            conv: Conv::load(
                vb.pp("conv1"),
                h,
                dim,
                2 * stride,
                stride,
                stride.div_ceil(2),
                1,
                false,
            )?,
            decoder: false,
        })
    }

    /// `m` as in [`Block::load_enc`]; the transposed conv on Winograd
    /// F(2, 2) (CPU) when `cin >= convt22 > 0`.
    fn load_dec(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        stride: usize,
        m: usize,
        convt22: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            snake: Snake::load(vb.pp("snake1"), cin)?,
            conv: Conv::load(
                vb.pp("conv_t1"),
                cin,
                cout,
                2 * stride,
                stride,
                stride.div_ceil(2),
                1,
                true,
            )?
            .convt_winograd(convt22 > 0 && cin >= convt22)?,
            units: [
                ResUnit::load(vb.pp("res_unit1"), cout, 1)?.winograd(m)?,
                ResUnit::load(vb.pp("res_unit2"), cout, 3)?.winograd(m)?,
                ResUnit::load(vb.pp("res_unit3"), cout, 9)?.winograd(m)?,
            ],
            decoder: true,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.decoder {
            let mut xs = self.conv.forward(&self.snake.forward(xs)?)?;
            for u in &self.units {
                xs = u.forward(&xs)?;
            }
            Ok(xs)
        } else {
            let mut xs = xs.clone();
            for u in &self.units {
                xs = u.forward(&xs)?;
            }
            self.conv.forward(&self.snake.forward(&xs)?)
        }
    }

    /// CPU path: `x [cin, t]` → `(y [cout, t'], t')`.
    fn run(
        &self,
        mut x: Vec<f32>,
        t: usize,
        sc: &mut Scratch,
    ) -> candle_core::Result<(Vec<f32>, usize)> {
        if self.decoder {
            let a = buf(&mut sc.a, x.len());
            self.snake.run(&x, t, a);
            // The output goes into the spare buffer and x becomes the spare
            // (no fresh, page-faulting buffer per block).
            let n = self.conv.out_len(t);
            let mut y = std::mem::replace(&mut sc.spare, x);
            y.resize(self.conv.cout * n, 0.0);
            self.conv
                .run(a, t, conv_cpu::Init::Bias(&self.conv.bias_v), &mut y)?;
            for u in &self.units {
                u.run(&mut y, n, sc)?;
            }
            Ok((y, n))
        } else {
            for u in &self.units {
                u.run(&mut x, t, sc)?;
            }
            let a = buf(&mut sc.a, x.len());
            self.snake.run(&x, t, a);
            // Into the spare buffer, as in the decoder.
            let n = self.conv.out_len(t);
            let mut y = std::mem::replace(&mut sc.spare, x);
            y.resize(self.conv.cout * n, 0.0);
            self.conv
                .run(a, t, conv_cpu::Init::Bias(&self.conv.bias_v), &mut y)?;
            Ok((y, n))
        }
    }
}

/// One factorized quantizer: `in_proj` to `codebook_dim`, cosine nearest
/// neighbour, `out_proj` back.
#[derive(Debug, Clone)]
struct Quantizer {
    in_proj: Conv,
    out_proj: Conv,
    codebook: Tensor,
    /// l2-normalized codebook, transposed `[d, C]`, and its squared norms `[1, C]`.
    cb_norm_t: Tensor,
    cb_norm2: Tensor,
}

fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    // F.normalize: x / max(||x||, 1e-12) over dim 1.
    let n = xs.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    xs.broadcast_div(&n)
}

impl Quantizer {
    fn load(vb: VarBuilder, cfg: &DacConfig) -> candle_core::Result<Self> {
        let (h, d) = (cfg.hidden_size(), cfg.codebook_dim);
        let codebook = vb.get((cfg.codebook_size, d), "codebook.weight")?;
        let cn = l2_normalize(&codebook)?;
        Ok(Self {
            in_proj: Conv::load(vb.pp("in_proj"), h, d, 1, 1, 0, 1, false)?,
            out_proj: Conv::load(vb.pp("out_proj"), d, h, 1, 1, 0, 1, false)?,
            cb_norm2: cn.sqr()?.sum_keepdim(1)?.t()?,
            cb_norm_t: cn.t()?.contiguous()?,
            codebook,
        })
    }

    /// Codes `[B, N]` for the residual `[B, H, N]` (transformers' expression:
    /// `-(|e|² - 2 e·c) + |c|²`, argmax).
    fn encode(&self, residual: &Tensor) -> candle_core::Result<Tensor> {
        let lat = self.in_proj.forward(residual)?;
        let (b, d, n) = lat.dims3()?;
        let e = l2_normalize(&lat.transpose(1, 2)?.reshape((b * n, d))?)?;
        let l2 = e.sqr()?.sum_keepdim(1)?;
        let dist = (l2
            .broadcast_sub(&(e.matmul(&self.cb_norm_t)? * 2.0)?)?
            .neg()?)
        .broadcast_add(&self.cb_norm2)?;
        dist.argmax(D::Minus1)?.reshape((b, n))
    }

    /// `out_proj(codebook[codes])` → `[B, H, N]`.
    fn decode(&self, codes: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = codes.dims2()?;
        let q = self
            .codebook
            .index_select(&codes.flatten_all()?, 0)?
            .reshape((b, n, ()))?;
        self.out_proj.forward(&q.transpose(1, 2)?.contiguous()?)
    }
}

/// DAC loaded from a `DacModel` directory.
pub struct Dac {
    cfg: DacConfig,
    info: TokenizerInfo,
    enc_conv1: Conv,
    enc_blocks: Vec<Block>,
    enc_snake: Snake,
    enc_conv2: Conv,
    quantizers: Vec<Quantizer>,
    dec_conv1: Conv,
    dec_blocks: Vec<Block>,
    dec_snake: Snake,
    dec_conv2: Conv,
    device: Device,
    /// CPU encoder and decoder buffers kept between calls (a busy lock:
    /// fresh ones), so that a call does not page-fault its activations in.
    enc_scratch: std::sync::Mutex<Scratch>,
    dec_scratch: std::sync::Mutex<Scratch>,
}

impl Dac {
    /// Loads `config.json` + safetensors from `dir` (float32).
    pub fn load(dir: &ModelDir, device: &Device) -> Result<Self> {
        let dec_m = winograd::env_ms("VOXTOK_DAC_WINOGRAD", &WINOGRAD_M);
        Self::load_with(dir, device, enc_winograd_m(), &dec_m, convt_winograd_min())
    }

    /// [`Dac::load`] with the Winograd tiles of the encoder's and the
    /// decoder's k = 7 residual convs given (0: per-tap GEMMs; CPU only):
    /// `dec_m` one per decoder block, the last one repeated; `convt22`: the
    /// least input channels of a decoder transposed conv on Winograd F(2, 2)
    /// (0: none).
    fn load_with(
        dir: &ModelDir,
        device: &Device,
        enc_m: usize,
        dec_m: &[usize],
        convt22: usize,
    ) -> Result<Self> {
        let cfg: DacConfig = dir.config()?;
        if cfg.downsampling_ratios.is_empty() || cfg.n_codebooks == 0 {
            return Err(CodecError::Config {
                path: dir.root().join("config.json"),
                msg: "no downsampling ratios or no codebooks".into(),
            });
        }
        let vb = dir.var_builder(DType::F32, device)?;
        let (e, h) = (cfg.encoder_hidden_size, cfg.hidden_size());
        let ev = vb.pp("encoder");
        let enc_conv1 = Conv::load(ev.pp("conv1"), 1, e, 7, 1, 3, 1, false)?;
        let enc_blocks = cfg
            .downsampling_ratios
            .iter()
            .enumerate()
            .map(|(i, &s)| Block::load_enc(ev.pp(format!("block.{i}")), e << (i + 1), s, enc_m))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let enc_snake = Snake::load(ev.pp("snake1"), h)?;
        let enc_conv2 = Conv::load(ev.pp("conv2"), h, h, 3, 1, 1, 1, false)?;
        let quantizers = (0..cfg.n_codebooks)
            .map(|i| Quantizer::load(vb.pp(format!("quantizer.quantizers.{i}")), &cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dv = vb.pp("decoder");
        let dh = cfg.decoder_hidden_size;
        let dec_conv1 = Conv::load(dv.pp("conv1"), h, dh, 7, 1, 3, 1, false)?;
        let ups: Vec<usize> = cfg.downsampling_ratios.iter().rev().copied().collect();
        let dec_blocks = ups
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let m = dec_m[i.min(dec_m.len() - 1)];
                let vb = dv.pp(format!("block.{i}"));
                Block::load_dec(vb, dh >> i, dh >> (i + 1), s, m, convt22)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let out_dim = dh >> ups.len();
        let dec_snake = Snake::load(dv.pp("snake1"), out_dim)?;
        let dec_conv2 = Conv::load(dv.pp("conv2"), out_dim, 1, 7, 1, 3, 1, false)?;
        let info = TokenizerInfo {
            codec: "dac",
            sample_rate: cfg.sampling_rate,
            frame_rate: cfg.frame_rate() as f64,
            codebook_size: cfg.codebook_size,
            max_codebooks: cfg.n_codebooks,
            default_codebooks: cfg.n_codebooks,
            has_decoder: true,
        };
        Ok(Self {
            cfg,
            info,
            enc_conv1,
            enc_blocks,
            enc_snake,
            enc_conv2,
            quantizers,
            dec_conv1,
            dec_blocks,
            dec_snake,
            dec_conv2,
            device: device.clone(),
            enc_scratch: Default::default(),
            dec_scratch: Default::default(),
        })
    }

    pub fn config(&self) -> &DacConfig {
        &self.cfg
    }

    /// Encoder output `[B, H, N]` for audio `[B, T]`.
    pub fn embeddings(&self, audio: &Tensor) -> Result<Tensor> {
        let (_b, t) = audio.dims2()?;
        if t < self.cfg.hop_length() {
            return Err(CodecError::BadAudio(format!(
                "{t} samples is shorter than one DAC frame ({} samples)",
                self.cfg.hop_length()
            )));
        }
        if cpu_f32(audio) {
            return self.embeddings_cpu(audio);
        }
        let mut xs = self.enc_conv1.forward(&audio.unsqueeze(1)?)?;
        for b in &self.enc_blocks {
            xs = b.forward(&xs)?;
        }
        Ok(self.enc_conv2.forward(&self.enc_snake.forward(&xs)?)?)
    }

    /// [`Dac::embeddings`] through the CPU kernels, one item at a time.
    fn embeddings_cpu(&self, audio: &Tensor) -> Result<Tensor> {
        let (b, t) = audio.dims2()?;
        let t0 = prof_start();
        let mut lock = if reuse_buffers() {
            self.enc_scratch.try_lock().ok()
        } else {
            None
        };
        let mut fresh = Scratch::default();
        let sc = lock.as_deref_mut().unwrap_or(&mut fresh);
        let mut items = Vec::with_capacity(b);
        for i in 0..b {
            let x = audio.get(i)?.to_vec1::<f32>()?;
            let n1 = self.enc_conv1.out_len(t);
            let mut x1 = std::mem::take(&mut sc.spare2);
            x1.resize(self.enc_conv1.cout * n1, 0.0);
            self.enc_conv1
                .run(&x, t, conv_cpu::Init::Bias(&self.enc_conv1.bias_v), &mut x1)?;
            let (mut x, mut t) = (x1, n1);
            for blk in &self.enc_blocks {
                (x, t) = blk.run(x, t, sc)?;
            }
            let a = buf(&mut sc.a, x.len());
            self.enc_snake.run(&x, t, a);
            let (y, n) = self.enc_conv2.apply(a, t)?;
            sc.spare2 = x;
            items.push(Tensor::from_vec(
                y,
                (1, self.enc_conv2.cout, n),
                audio.device(),
            )?);
        }
        prof_dump("encoder", t0);
        Ok(Tensor::cat(&items, 0)?)
    }

    /// The decoder on the summed quantizer outputs `z [B, H, N]` → `[B, T]`,
    /// through the CPU kernels, one item at a time.
    fn decode_cpu(&self, z: &Tensor) -> Result<Tensor> {
        let (b, _, n) = z.dims3()?;
        let t0 = prof_start();
        let mut lock = if reuse_buffers() {
            self.dec_scratch.try_lock().ok()
        } else {
            None
        };
        let mut fresh = Scratch::default();
        let sc = lock.as_deref_mut().unwrap_or(&mut fresh);
        let mut items = Vec::with_capacity(b);
        for i in 0..b {
            let x = z.get(i)?.flatten_all()?.to_vec1::<f32>()?;
            let n1 = self.dec_conv1.out_len(n);
            let mut x1 = std::mem::take(&mut sc.spare2);
            x1.resize(self.dec_conv1.cout * n1, 0.0);
            self.dec_conv1
                .run(&x, n, conv_cpu::Init::Bias(&self.dec_conv1.bias_v), &mut x1)?;
            let (mut x, mut t) = (x1, n1);
            for blk in &self.dec_blocks {
                (x, t) = blk.run(x, t, sc)?;
            }
            let a = buf(&mut sc.a, x.len());
            self.dec_snake.run(&x, t, a);
            let (mut y, t) = self.dec_conv2.apply(a, t)?;
            sc.spare2 = x;
            y.iter_mut().for_each(|v| *v = v.tanh());
            items.push(Tensor::from_vec(y, (1, t), z.device())?);
        }
        prof_dump("decoder", t0);
        Ok(Tensor::cat(&items, 0)?)
    }
}

/// Per-stage wall times of the CPU path with `VOXTOK_CODEC_PROFILE=1`:
/// `(label, seconds, direct-conv FLOPs)`, printed and cleared by [`prof_dump`].
static PROF: std::sync::Mutex<Vec<(String, f64, f64)>> = std::sync::Mutex::new(Vec::new());

/// Adds the time since `t0` (when profiling) to stage `label`.
fn prof_add(t0: Option<std::time::Instant>, label: impl FnOnce() -> String, flop: f64) {
    if let Some(t0) = t0 {
        let dt = t0.elapsed().as_secs_f64();
        let label = label();
        let mut p = PROF.lock().unwrap_or_else(|e| e.into_inner());
        match p.iter_mut().find(|e| e.0 == label) {
            Some(e) => {
                e.1 += dt;
                e.2 += flop;
            }
            None => p.push((label, dt, flop)),
        }
    }
}

/// `Instant::now()` when `VOXTOK_CODEC_PROFILE=1`.
fn prof_start() -> Option<std::time::Instant> {
    super::seanet::profile_enabled().then(std::time::Instant::now)
}

/// Prints the stages recorded since the last dump (and clears them).
fn prof_dump(title: &str, t0: Option<std::time::Instant>) {
    let Some(t0) = t0 else { return };
    let total = t0.elapsed().as_secs_f64();
    let mut p = PROF.lock().unwrap_or_else(|e| e.into_inner());
    let staged: f64 = p.iter().map(|e| e.1).sum();
    eprintln!(
        "DAC {title}: {:.1} ms ({:.1} ms in stages)",
        total * 1e3,
        staged * 1e3
    );
    for (label, dt, flop) in p.drain(..) {
        let rate = if flop > 0.0 {
            format!("{:6.1} GFLOP/s", flop / dt / 1e9)
        } else {
            String::new()
        };
        eprintln!(
            "  {label:<40} {:8.2} ms {:5.1}% {rate}",
            dt * 1e3,
            100.0 * dt / total
        );
    }
}

/// False with `VOXTOK_DAC_KEEP_BUFFERS=0`: every CPU call allocates fresh
/// activation buffers (the A/B baseline of the buffers kept in [`Dac`]).
fn reuse_buffers() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_DAC_KEEP_BUFFERS").map_or(true, |v| v != "0"))
}

/// True for tensors the CPU kernels take (f32 on CPU).
fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

impl AudioTokenizer for Dac {
    fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor> {
        self.info.check_codebooks(codebooks)?;
        let mut residual = self.embeddings(audio)?;
        let mut out = Vec::with_capacity(codebooks);
        for q in &self.quantizers[..codebooks] {
            let ids = q.encode(&residual)?;
            residual = (residual - q.decode(&ids)?)?;
            out.push(ids);
        }
        Ok(Tensor::stack(&out, 1)?)
    }

    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (_b, k, _n) = codes.dims3()?;
        self.info.check_codebooks(k)?;
        let mut z: Option<Tensor> = None;
        for (i, q) in self.quantizers[..k].iter().enumerate() {
            let part = q.decode(&codes.narrow(1, i, 1)?.squeeze(1)?.to_dtype(DType::U32)?)?;
            z = Some(match z {
                None => part,
                Some(z) => (z + part)?,
            });
        }
        let z = z.expect("k >= 1");
        if cpu_f32(&z) {
            return self.decode_cpu(&z);
        }
        let mut xs = self.dec_conv1.forward(&z)?;
        for b in &self.dec_blocks {
            xs = b.forward(&xs)?;
        }
        let xs = self
            .dec_conv2
            .forward(&self.dec_snake.forward(&xs)?)?
            .tanh()?;
        Ok(xs.squeeze(1)?)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{self, max_abs};
    use super::*;

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/codecs/dac")
    }

    /// Parity on fixture `name`: encoder output and decoded audio (where the
    /// reference has it) within 1e-4, identical codes with 2 and 4 codebooks.
    fn check_parity(name: &str, sigs: &[&str], frame_rate: f64) {
        let dir = test_util::fixture_dir(name);
        let model = Dac::load(&ModelDir::open(&dir).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(model.info().frame_rate, frame_rate);
        let refs = test_util::refs(name);
        for sig in sigs {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let emb = model.embeddings(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&emb, &refs[&format!("{sig}.embeddings")]);
            eprintln!("{name} {sig}: embeddings max abs err {err}");
            assert!(err <= 1e-4, "{name} {sig}: embeddings max abs err {err}");
            for k in [2usize, 4] {
                let codes = model.encode(&audio, k).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap();
                assert_eq!(
                    codes.squeeze(0).unwrap().to_vec2::<u32>().unwrap(),
                    want.to_vec2::<u32>().unwrap(),
                    "{name} {sig}: codes with {k} codebooks differ"
                );
                if let Some(want) = refs.get(&format!("{sig}.decoded_{k}")) {
                    let dec = model.decode(&codes).unwrap().squeeze(0).unwrap();
                    assert_eq!(dec.dims(), want.dims());
                    let err = max_abs(&dec, want);
                    eprintln!("{name} {sig}/{k}: decoded max abs err {err}");
                    assert!(err <= 1e-4, "{name} {sig}/{k}: decoded max abs err {err}");
                }
            }
        }
    }

    /// The encoder's k = 7 convs on Winograd F(2, 7) against per-tap GEMMs,
    /// on every DAC fixture: encoder output within 2e-5 relative to its
    /// largest magnitude (and within 1e-4 of transformers), and codes
    /// identical to transformers' in both modes.
    #[test]
    fn encoder_winograd_equals_per_tap() {
        let dec_m = winograd::env_ms("VOXTOK_DAC_WINOGRAD", &WINOGRAD_M);
        for (name, sigs) in [
            ("dac", &["chirp", "noise", "speech"][..]),
            ("dac24", &["chirp", "speech"][..]),
            ("dac44", &["chirp", "speech"][..]),
        ] {
            let dir = ModelDir::open(test_util::fixture_dir(name)).unwrap();
            let on = convt_winograd_min();
            let tap = Dac::load_with(&dir, &Device::Cpu, 0, &dec_m, on).unwrap();
            let wino = Dac::load_with(&dir, &Device::Cpu, 2, &dec_m, on).unwrap();
            let refs = test_util::refs(name);
            for sig in sigs {
                let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
                let a = tap.embeddings(&audio).unwrap();
                let b = wino.embeddings(&audio).unwrap();
                let top = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let err = max_abs(&a, &b);
                let want = &refs[&format!("{sig}.embeddings")];
                let err_ref = max_abs(&b.squeeze(0).unwrap(), want);
                let tap_ref = max_abs(&a.squeeze(0).unwrap(), want);
                eprintln!(
                    "{name} {sig}: F(2,7) vs per-tap encoder max abs {err:.2e} (max |y| {top:.2}); \
                     vs transformers: F(2,7) {err_ref:.2e}, per-tap {tap_ref:.2e}"
                );
                assert!(err <= 2e-5 * top, "{name} {sig}: {err} vs max |y| {top}");
                assert!(err_ref <= 1e-4, "{name} {sig}: vs transformers {err_ref}");
                for k in [2usize, 4] {
                    let want = refs[&format!("{sig}.codes_{k}")]
                        .to_dtype(DType::U32)
                        .unwrap()
                        .to_vec2::<u32>()
                        .unwrap();
                    for (mode, model) in [("per-tap", &tap), ("F(2,7)", &wino)] {
                        let codes = model.encode(&audio, k).unwrap().squeeze(0).unwrap();
                        assert_eq!(
                            codes.to_vec2::<u32>().unwrap(),
                            want,
                            "{name} {sig}: {mode} codes with {k} codebooks differ"
                        );
                    }
                }
            }
        }
    }

    /// The decoder with every transposed conv on Winograd F(2, 2) (the
    /// fixtures' 32 channels are below the default's threshold), on every
    /// DAC fixture (strides 8, 5, 4, 2): decoded audio within 3e-5 of the
    /// per-tap transposed convs (both with per-tap k = 7 convs, so only the
    /// transposed convs differ), and within 1e-4 of transformers with the
    /// default k = 7 Winograd tiles.
    #[test]
    fn decoder_convt_winograd_parity() {
        let dec_m = winograd::env_ms("VOXTOK_DAC_WINOGRAD", &WINOGRAD_M);
        let mut worst = (0f32, 0f32);
        for (name, sigs) in [
            ("dac", &["chirp", "noise", "speech"][..]),
            ("dac24", &["chirp", "speech"][..]),
            ("dac44", &["chirp", "speech"][..]),
        ] {
            let dir = ModelDir::open(test_util::fixture_dir(name)).unwrap();
            let tap = Dac::load_with(&dir, &Device::Cpu, 2, &[0], 0).unwrap();
            let wino0 = Dac::load_with(&dir, &Device::Cpu, 2, &[0], 1).unwrap();
            let wino = Dac::load_with(&dir, &Device::Cpu, 2, &dec_m, 1).unwrap();
            assert!(wino0.dec_blocks.iter().all(|b| b.conv.wino22.is_some()));
            assert!(tap.dec_blocks.iter().all(|b| b.conv.wino22.is_none()));
            let refs = test_util::refs(name);
            for sig in sigs {
                for k in [2usize, 4] {
                    let Some(want) = refs.get(&format!("{sig}.decoded_{k}")) else {
                        continue;
                    };
                    let codes = refs[&format!("{sig}.codes_{k}")]
                        .to_dtype(DType::U32)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    let dec = |m: &Dac| m.decode(&codes).unwrap().squeeze(0).unwrap();
                    let e_tap = max_abs(&dec(&tap), &dec(&wino0));
                    let e_ref = max_abs(&dec(&wino), want);
                    eprintln!(
                        "{name} {sig}/{k}: F(2,2) convT decoded vs per-tap {e_tap:.2e}, \
                         vs transformers {e_ref:.2e}"
                    );
                    assert!(e_tap <= 3e-5, "{name} {sig}/{k}: vs per-tap {e_tap}");
                    assert!(e_ref <= 1e-4, "{name} {sig}/{k}: vs transformers {e_ref}");
                    worst = (worst.0.max(e_tap), worst.1.max(e_ref));
                }
            }
        }
        eprintln!(
            "worst: vs per-tap {:.2e}, vs transformers {:.2e}",
            worst.0, worst.1
        );
    }

    /// The 24 kHz configuration (ratios 2, 4, 5, 8: hop 320, an odd stride).
    #[test]
    fn parity_24khz() {
        check_parity("dac24", &["chirp", "speech"], 75.0);
    }

    /// The 44.1 kHz configuration (hop 512: frame rate ceil(44100 / 512) = 87).
    #[test]
    fn parity_44khz() {
        check_parity("dac44", &["chirp", "speech"], 87.0);
    }

    /// Parity with transformers' DacModel on the random-weight fixture:
    /// encoder output and decoded audio within 1e-4, identical codes.
    #[test]
    fn parity_with_transformers() {
        let model = Dac::load(&ModelDir::open(fixture_dir()).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(model.info().frame_rate, 32.0);
        let refs = candle_core::safetensors::load(
            fixture_dir().join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        for sig in ["chirp", "noise", "speech"] {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let emb = model.embeddings(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&emb, &refs[&format!("{sig}.embeddings")]);
            eprintln!("{sig}: embeddings max abs err {err}");
            assert!(err <= 1e-4, "{sig}: embeddings max abs err {err}");
            for k in [2usize, 4] {
                let codes = model.encode(&audio, k).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap();
                assert_eq!(
                    codes.squeeze(0).unwrap().to_vec2::<u32>().unwrap(),
                    want.to_vec2::<u32>().unwrap(),
                    "{sig}: codes with {k} codebooks differ"
                );
                let dec = model.decode(&codes).unwrap().squeeze(0).unwrap();
                let want = &refs[&format!("{sig}.decoded_{k}")];
                assert_eq!(dec.dims(), want.dims());
                let err = max_abs(&dec, want);
                eprintln!("{sig}/{k}: decoded max abs err {err}");
                assert!(err <= 1e-4, "{sig}/{k}: decoded max abs err {err}");
            }
        }
    }
}
