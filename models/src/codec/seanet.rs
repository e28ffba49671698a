//! SEANet building blocks shared by EnCodec and Mimi: padded (causal) convs,
//! transposed convs, residual blocks and the layer stack, plus their
//! streaming state (audio chunk in, every output frame that is final out).
//!
//! A conv that produces few output frames on CPU (a streaming push at the
//! deep, low-rate layers) runs as one small-row product of the im2col window
//! against its weight viewed as `[out, in·k]`: the weights stream through
//! once instead of being repacked for a GEMM on every push.

use super::conv_cpu;
use super::nn::{conv_weight, pad_reflect, Lstm, LstmState, TapConv};
use crate::runtime::{xwt, SendPtr, SMALL_M};
use crate::whisper::fastmath::{exp_f32, has_avx2_fma};
use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor, D};
use candle_nn::{GroupNorm, VarBuilder};
use std::time::{Duration, Instant};

mod dec_chain;
pub use dec_chain::enabled as dec_chain_enabled;
mod enc_chain;
pub use enc_chain::run_prefix as enc_chain_front;

/// Padding mode of the convs (`pad_mode` in the HF configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Replicate,
    Reflect,
}

impl PadMode {
    /// `pad_mode` as the configs spell it (`constant`/`zero`, `replicate`, `reflect`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "constant" | "zero" => Some(Self::Constant),
            "replicate" => Some(Self::Replicate),
            "reflect" => Some(Self::Reflect),
            _ => None,
        }
    }
}

/// Pads the last dim of `xs` like `torch.nn.functional.pad` in `mode`.
pub fn pad(mode: PadMode, xs: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(xs.clone());
    }
    match mode {
        PadMode::Constant => xs.pad_with_zeros(D::Minus1, left, right),
        PadMode::Replicate => xs.pad_with_same(D::Minus1, left, right),
        PadMode::Reflect => pad_reflect(xs, left, right),
    }
}

/// `pad(mode, elu(xs), left, right)` in one pass on CPU f32 (padding
/// copies values, so ELU commutes with it: same bits); the separate ops
/// elsewhere.
pub fn pad_elu(mode: PadMode, xs: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    let len = xs.dim(D::Minus1)?;
    let fast = xs.device().is_cpu()
        && xs.dtype() == DType::F32
        && has_avx2_fma()
        && len > 0
        && (mode != PadMode::Reflect || len > left.max(right));
    if !fast {
        return pad(mode, &elu(xs)?, left, right);
    }
    // Source index of each edge output (u32::MAX: zero).
    const ZERO: u32 = u32::MAX;
    let edge = |i: usize| -> u32 {
        // i < left: left edge; else right edge index j = i - left - len.
        let (is_left, j) = if i < left {
            (true, left - i)
        } else {
            (false, i - left - len)
        };
        match (mode, is_left) {
            (PadMode::Constant, _) => ZERO,
            (PadMode::Replicate, true) => 0,
            (PadMode::Replicate, false) => (len - 1) as u32,
            (PadMode::Reflect, true) => j as u32,
            (PadMode::Reflect, false) => (len - 2 - j) as u32,
        }
    };
    let m = left + len + right;
    let idx: Vec<u32> = (0..left).chain(left + len..m).map(edge).collect();
    let xs = xs.contiguous()?;
    let rows = xs.elem_count() / len;
    let mut shape = xs.dims().to_vec();
    *shape.last_mut().expect("rank >= 1") = m;
    let y = super::conv_cpu::with_f32(&xs, |x| {
        use rayon::prelude::*;
        let mut y = vec![0f32; rows * m];
        let go = |(row, out): (&[f32], &mut [f32])| {
            for (k, &j) in idx.iter().enumerate() {
                let i = if k < left { k } else { k + len };
                out[i] = if j == ZERO { 0.0 } else { row[j as usize] };
            }
            // SAFETY: AVX2/FMA checked above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                elu_avx2(row, &mut out[left..left + len]);
                epilogue_avx2(&mut out[..left], None, true);
                epilogue_avx2(&mut out[left + len..], None, true);
            }
        };
        if y.len() >= 1 << 16 {
            x.par_chunks_exact(len)
                .zip(y.par_chunks_exact_mut(m))
                .for_each(go);
        } else {
            x.chunks_exact(len).zip(y.chunks_exact_mut(m)).for_each(go);
        }
        y
    });
    match y {
        Some(y) => Tensor::from_vec(y, shape, xs.device()),
        None => pad(mode, &elu(&xs)?, left, right),
    }
}

/// A padded conv1d (`EncodecConv1d` / `MimiConv1d`): causal or asymmetric
/// padding, extra right padding that completes the last window, optional
/// bias and optional one-group GroupNorm after it.
#[derive(Debug, Clone)]
pub struct Conv {
    /// The CPU f32 kernel; `taps` (GEMM per tap) where it is not built.
    direct: Option<Direct>,
    taps: Option<TapConv>,
    /// `[out, in, k]`, contiguous: also the `[out, in·k]` rows of the
    /// few-frames product.
    weight: Tensor,
    bias: Option<Tensor>,
    bias_v: Option<Vec<f32>>,
    stride: usize,
    dilation: usize,
    k_eff: usize,
    causal: bool,
    mode: PadMode,
    norm: Option<GroupNorm>,
}

impl Conv {
    /// Loads `conv.weight` (weight-normed or plain) and `conv.bias` under `vb`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        causal: bool,
        mode: PadMode,
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        bias: bool,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = conv_weight(&vb, (cout, cin, k))?;
        let bias = if bias {
            Some(vb.get(cout, "bias")?)
        } else {
            None
        };
        Self::new(weight, bias, stride, dilation, causal, mode)
    }

    /// A conv from its weight `[out, in, k]` and optional bias `[out]`.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        dilation: usize,
        causal: bool,
        mode: PadMode,
    ) -> Result<Self> {
        let weight = weight.contiguous()?;
        let k = weight.dim(2)?;
        let bias_v = match &bias {
            Some(b) if b.dtype() == DType::F32 => Some(b.to_vec1::<f32>()?),
            _ => None,
        };
        let direct = Direct::new(&weight, bias.as_ref(), stride, dilation)?;
        let taps = match direct {
            Some(_) => None,
            None => Some(TapConv::new(weight.clone(), stride)?),
        };
        Ok(Self {
            direct,
            taps,
            weight,
            bias,
            bias_v,
            stride,
            dilation,
            k_eff: (k - 1) * dilation + 1,
            causal,
            mode,
            norm: None,
        })
    }

    /// Adds a GroupNorm applied to the conv output (EnCodec `time_group_norm`).
    pub fn with_norm(mut self, norm: GroupNorm) -> Self {
        self.norm = Some(norm);
        self
    }

    pub fn padding_total(&self) -> usize {
        self.k_eff - self.stride
    }

    /// `in->out k<k>[/stride]`, for profiles.
    pub fn describe(&self) -> String {
        let (cout, cin, k) = self.weight.dims3().unwrap_or_default();
        let s = if self.stride > 1 {
            format!("/{}", self.stride)
        } else {
            String::new()
        };
        format!("{cin}->{cout} k{k}{s}")
    }

    /// Bytes of weights and bias.
    pub fn weight_bytes(&self) -> usize {
        let e = self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count());
        e * self.weight.dtype().size_in_bytes()
    }

    /// Right padding that makes the last window complete (transformers'
    /// `_get_extra_padding_for_conv1d`).
    pub fn extra_padding(&self, len: usize) -> usize {
        let (k, s, pt) = (
            self.k_eff as f64,
            self.stride as f64,
            self.padding_total() as f64,
        );
        let n_frames = ((len as f64 - k + pt) / s + 1.0).ceil() - 1.0;
        let ideal = n_frames * s + k - pt;
        (ideal - len as f64).max(0.0) as usize
    }

    /// Convolution of already padded `xs` `[B, Cin, T]`.
    pub fn conv(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = match self.few_frames(xs)? {
            Some(ys) => ys,
            None => match (&self.direct, &self.taps) {
                (Some(d), _)
                    if xs.device().is_cpu()
                        && xs.dtype() == DType::F32
                        && xs.dim(2)? >= self.k_eff =>
                {
                    let n = (xs.dim(2)? - self.k_eff) / self.stride + 1;
                    d.forward(xs, n)?
                }
                (_, taps) => {
                    let ys = match taps {
                        Some(t) => t.forward(xs, self.stride, self.dilation)?,
                        None => xs.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?,
                    };
                    match &self.bias {
                        Some(b) => ys.broadcast_add(&b.reshape((1, (), 1))?)?,
                        None => ys,
                    }
                }
            },
        };
        match &self.norm {
            Some(n) => n.forward(&ys),
            None => Ok(ys),
        }
    }

    /// Up to [`SMALL_M`] output frames on CPU (batch 1, f32): im2col rows of
    /// the window times the weight rows, bias included; `None` otherwise.
    fn few_frames(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        let (b, cin, len) = xs.dims3()?;
        let (cout, wcin, k) = self.weight.dims3()?;
        if b != 1
            || wcin != cin
            || len < self.k_eff
            || !xs.device().is_cpu()
            || xs.dtype() != DType::F32
            || (self.bias.is_some() && self.bias_v.is_none())
        {
            return Ok(None);
        }
        let n = (len - self.k_eff) / self.stride + 1;
        if n > SMALL_M {
            return Ok(None);
        }
        let (ws, wl) = self.weight.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(wd)), Some((w0, w1))) = (&*ws, wl.contiguous_offsets())
        else {
            return Ok(None);
        };
        let x = xs.flatten_all()?.to_vec1::<f32>()?;
        let ck = cin * k;
        let mut cols = vec![0f32; n * ck];
        for (i, row) in cols.chunks_exact_mut(ck).enumerate() {
            for (c, rc) in row.chunks_exact_mut(k).enumerate() {
                let xc = &x[c * len + i * self.stride..];
                for (j, v) in rc.iter_mut().enumerate() {
                    *v = xc[j * self.dilation];
                }
            }
        }
        let mut y = vec![0f32; n * cout];
        xwt(
            &cols,
            &wd[w0..w1],
            self.bias_v.as_deref(),
            &mut y,
            n,
            ck,
            cout,
        );
        drop(ws);
        let y = Tensor::from_vec(y, (n, cout), xs.device())?;
        Ok(Some(y.t()?.contiguous()?.unsqueeze(0)?))
    }

    /// Whole-signal forward: pads (left for causal, split otherwise, plus
    /// the extra right padding), then convolves.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.conv(&self.pad_whole(xs)?)
    }

    fn pad_whole(&self, xs: &Tensor) -> Result<Tensor> {
        self.pad_whole_elu(xs, false)
    }

    /// [`Conv::pad_whole`] of `elu(xs)` when `elu`.
    fn pad_whole_elu(&self, xs: &Tensor, elu_in: bool) -> Result<Tensor> {
        let extra = self.extra_padding(xs.dim(D::Minus1)?);
        let pt = self.padding_total();
        let (left, right) = if self.causal {
            (pt, extra)
        } else {
            (pt - pt / 2, pt / 2 + extra)
        };
        if elu_in {
            pad_elu(self.mode, xs, left, right)
        } else {
            pad(self.mode, xs, left, right)
        }
    }

    /// [`Conv::forward`] followed by `+ add` and ELU (when `elu`) fused
    /// into the direct kernel's stores, with the same values; `None` where
    /// [`Conv::forward`] would not take the direct kernel.
    /// With `elu_in` the input is `elu(xs)` (applied while padding).
    fn forward_epi(
        &self,
        xs: &Tensor,
        elu_in: bool,
        elu: bool,
        add: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let Some(d) = &self.direct else {
            return Ok(None);
        };
        if self.norm.is_some() || !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, _, len) = xs.dims3()?;
        let len = len + self.extra_padding(len) + self.padding_total();
        if len < self.k_eff {
            return Ok(None);
        }
        let n = (len - self.k_eff) / self.stride + 1;
        if b == 1 && n <= SMALL_M {
            return Ok(None);
        }
        let xs = self.pad_whole_elu(xs, elu_in)?;
        Ok(Some(d.forward_epi(&xs, n, elu, add)?))
    }
}

/// A transposed conv1d with fixed-padding trimming (`EncodecConvTranspose1d`
/// / `MimiConvTranspose1d`); depthwise (groups = channels, one output per
/// group) runs as an overlap-add of per-channel products.
#[derive(Debug, Clone)]
pub struct ConvT {
    weight: Tensor,
    /// CPU f32, groups 1: the taps `[k, out, in]` ([`conv_cpu::pack_taps`])
    /// and the bias (zeros without one) for [`conv_cpu::conv_transpose1d`].
    taps: Option<(Vec<f32>, Vec<f32>)>,
    /// CPU f32, groups 1: the polyphase form for [`ConvT::forward`], a
    /// stride-1 direct conv with `stride·out` rows (one block of `out` per
    /// output phase) and `ceil(k/stride)` taps.
    poly: Option<Direct>,
    /// [`ConvT::with_winograd`]: the polyphase conv's two taps as F(2, 2).
    wino: Option<Box<Wino22>>,
    bias: Option<Tensor>,
    stride: usize,
    groups: usize,
    trim_left: usize,
    trim_right: usize,
    norm: Option<GroupNorm>,
}

impl ConvT {
    /// Loads `conv.weight` `[in, out/groups, k]` (and `conv.bias`) under `vb`;
    /// a causal one trims `ceil((k - stride)·trim_right_ratio)` on the right.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        causal: bool,
        trim_right_ratio: f64,
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = conv_weight(&vb, (cin, cout / groups, k))?;
        let bias = if bias {
            Some(vb.get(cout, "bias")?)
        } else {
            None
        };
        let pt = k - stride;
        let right = if causal {
            (pt as f64 * trim_right_ratio).ceil() as usize
        } else {
            pt / 2
        };
        let weight = weight.contiguous()?;
        let taps = if groups == 1 && weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let w = weight.flatten_all()?.to_vec1::<f32>()?;
            let b = match &bias {
                Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0f32; cout],
            };
            Some((conv_cpu::pack_taps(&w, cout, cin, k, true), b))
        } else {
            None
        };
        let poly = match &taps {
            // Measured: the interleave pass costs more than it saves at
            // few input channels (64 -> 32, stride 2).
            Some((_, b)) if fuse_enabled() && cin >= 128 => poly_direct(&weight, b, stride)?,
            _ => None,
        };
        Ok(Self {
            weight,
            taps,
            poly,
            wino: None,
            bias,
            stride,
            groups,
            trim_left: pt - right,
            trim_right: right,
            norm: None,
        })
    }

    /// Adds a GroupNorm applied before trimming (EnCodec `time_group_norm`).
    pub fn with_norm(mut self, norm: GroupNorm) -> Self {
        self.norm = Some(norm);
        self
    }

    /// Runs the whole-signal polyphase form (`k ≤ 2·stride`, groups 1, no
    /// norm; also in the decoder chain) as Winograd F(2, 2): three products
    /// on half the columns instead of two taps on all of them (3/4 of the
    /// FLOPs). The sums are in a different order, so the output differs
    /// from the direct form by float rounding (a few ulps of the output
    /// scale); streaming ([`ConvT::step`]) is unchanged.
    pub fn with_winograd(mut self) -> Result<Self> {
        let (_, _, k) = self.weight.dims3()?;
        if self.norm.is_none() && k >= self.stride && k.div_ceil(self.stride) == 2 {
            let b = match &self.taps {
                Some((_, b)) => b.clone(),
                None => return Ok(self),
            };
            self.wino = Wino22::new(&self.weight, &b, self.stride)?.map(Box::new);
        }
        Ok(self)
    }

    /// The untrimmed transposed conv `[B, Cout, (T-1)·stride + k]`, no bias.
    fn full(&self, xs: &Tensor) -> Result<Tensor> {
        let (cin, cout_g, k) = self.weight.dims3()?;
        let ys = if let Some(ys) = self.kernel(xs, 0, false)? {
            ys
        } else if self.groups == cin && cout_g == 1 && k % self.stride == 0 {
            // y[c, t·s + j] += x[c, t] · w[c, j]: products [B, C, T, k],
            // then k/s shifted overlap-adds of [B, C, T·s].
            let (b, c, t) = xs.dims3()?;
            let s = self.stride;
            let m = k / s;
            let w = self.weight.reshape((1, c, 1, k))?;
            let prod = xs.unsqueeze(3)?.broadcast_mul(&w)?; // [B, C, T, k]
            let mut acc: Option<Tensor> = None;
            for o in 0..m {
                let part = prod
                    .narrow(3, o * s, s)?
                    .reshape((b, c, t * s))?
                    .pad_with_zeros(2, o * s, (m - 1 - o) * s)?;
                acc = Some(match acc {
                    None => part,
                    Some(a) => (a + part)?,
                });
            }
            acc.expect("k >= stride")
        } else {
            xs.conv_transpose1d(&self.weight, 0, 0, self.stride, 1, self.groups)?
        };
        Ok(ys)
    }

    /// CPU f32 (groups 1): [`conv_cpu::conv_transpose1d`] per batch item,
    /// the first `crop` outputs and the trimmed right end dropped and the
    /// bias added when `trimmed`, the whole untrimmed output without bias
    /// otherwise; `None` where the kernel does not apply.
    fn kernel(&self, xs: &Tensor, crop: usize, trimmed: bool) -> Result<Option<Tensor>> {
        let Some((taps, bias)) = &self.taps else {
            return Ok(None);
        };
        if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, cin, t) = xs.dims3()?;
        let (wcin, cout, k) = self.weight.dims3()?;
        if wcin != cin || t == 0 {
            return Ok(None);
        }
        let full = (t - 1) * self.stride + k;
        let n_out = if trimmed {
            full - self.trim_left - self.trim_right
        } else {
            full
        };
        let g = conv_cpu::Geom {
            cin,
            cout,
            k,
            stride: self.stride,
            dilation: 1,
            pad: crop,
            t_in: t,
            n_out,
        };
        let xs = xs.contiguous()?;
        let mut y = vec![0f32; b * cout * n_out];
        let init = if trimmed {
            conv_cpu::Init::Bias(bias)
        } else {
            conv_cpu::Init::Add(None)
        };
        let done = conv_cpu::with_f32(&xs, |x| {
            for (xb, yb) in x.chunks(cin * t).zip(y.chunks_mut(cout * n_out)) {
                conv_cpu::conv_transpose1d(&g, xb, taps, init, yb);
            }
        });
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(y, (b, cout, n_out), xs.device())?))
    }

    /// The trimmed output plus bias through the polyphase direct conv:
    /// `y[co, u·s + r] = Σ_p w[:, co, r + p·s] · x[u − p]` is row
    /// `r·out + co`, column `u` of a stride-1 conv over `x` zero-padded by
    /// `m − 1` on both sides; the phases are then interleaved and trimmed.
    fn forward_poly(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        let Some(d) = &self.poly else {
            return Ok(None);
        };
        let (b, cin, t) = xs.dims3()?;
        let (wcin, cout, k) = self.weight.dims3()?;
        if self.norm.is_some() || wcin != cin || t == 0 || !xs.device().is_cpu() {
            return Ok(None);
        }
        let s = self.stride;
        let m = k.div_ceil(s);
        let n = t + m - 1;
        let xp = xs.pad_with_zeros(2, m - 1, m - 1)?;
        let ph = d.forward(&xp, n)?;
        let n_out = (t - 1) * s + k - self.trim_left - self.trim_right;
        let mut y = vec![0f32; b * cout * n_out];
        let done = conv_cpu::with_f32(&ph, |p| {
            use rayon::prelude::*;
            let tl = self.trim_left;
            y.par_chunks_mut(n_out).enumerate().for_each(|(row, out)| {
                let (bi, co) = (row / cout, row % cout);
                let base = bi * s * cout * n;
                // Phase r: outputs j0, j0 + s, … from consecutive columns.
                for r in 0..s {
                    let j0 = (r + s - tl % s) % s;
                    if j0 >= n_out {
                        continue;
                    }
                    let row = base + (r * cout + co) * n;
                    let src = &p[row + (j0 + tl) / s..row + n];
                    debug_assert!((n_out - j0).div_ceil(s) <= src.len());
                    for (d, &v) in out[j0..].iter_mut().step_by(s).zip(src) {
                        *d = v;
                    }
                }
            });
        });
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(y, (b, cout, n_out), xs.device())?))
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(w) = &self.wino {
            if let Some(ys) = w.forward(xs, self.trim_left, self.trim_right)? {
                return Ok(ys);
            }
        }
        if let Some(ys) = self.forward_poly(xs)? {
            return Ok(ys);
        }
        if self.norm.is_none() {
            if let Some(ys) = self.kernel(xs, self.trim_left, true)? {
                return Ok(ys);
            }
        }
        let ys = self.full(xs)?;
        let ys = match &self.bias {
            Some(bias) => ys.broadcast_add(&bias.reshape((1, (), 1))?)?,
            None => ys,
        };
        let ys = match &self.norm {
            Some(n) => n.forward(&ys)?,
            None => ys,
        };
        let len = ys.dim(D::Minus1)?;
        ys.narrow(
            D::Minus1,
            self.trim_left,
            len - self.trim_left - self.trim_right,
        )
    }

    /// Streams a causal transposed conv (all padding trimmed on the right,
    /// no norm): new input frames in, the `n·stride` outputs they complete
    /// out; `tail` carries the overlap (`k - stride` samples, without bias).
    pub fn step(&self, tail: &mut Option<Tensor>, xs: Option<Tensor>) -> Result<Option<Tensor>> {
        if self.trim_left != 0 || self.norm.is_some() {
            candle_core::bail!("only causal transposed convs without norm stream");
        }
        let Some(x) = xs else { return Ok(None) };
        let n = x.dim(2)?;
        if n == 0 {
            return Ok(None);
        }
        let mut y = self.full(&x)?;
        if let Some(t) = tail.take() {
            let (tl, len) = (t.dim(2)?, y.dim(2)?);
            let head = (y.narrow(2, 0, tl)? + t)?;
            y = Tensor::cat(&[&head, &y.narrow(2, tl, len - tl)?], 2)?;
        }
        let (len, emit) = (y.dim(2)?, n * self.stride);
        if len > emit {
            *tail = Some(y.narrow(2, emit, len - emit)?.contiguous()?);
        }
        let out = y.narrow(2, 0, emit)?;
        Ok(Some(match &self.bias {
            Some(b) => out.broadcast_add(&b.reshape((1, (), 1))?)?,
            None => out,
        }))
    }
}

/// The polyphase form of a transposed conv (`weight` `[in, out, k]`, groups
/// 1, bias `b` `[out]`) as a stride-1 direct conv: output channel `r·out + co`
/// is phase `r` of output `co`, `W'[r·out + co, ci, q] = w[ci, co, r + (m − 1 − q)·s]`
/// with `m = ceil(k / s)`; `None` where [`Direct`] is not built.
fn poly_direct(weight: &Tensor, b: &[f32], stride: usize) -> Result<Option<Direct>> {
    let (cin, cout, k) = weight.dims3()?;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let m = k.div_ceil(stride);
    let mut wp = vec![0f32; stride * cout * cin * m];
    for r in 0..stride {
        for co in 0..cout {
            for ci in 0..cin {
                for q in 0..m {
                    let j = r + (m - 1 - q) * stride;
                    if j < k {
                        wp[((r * cout + co) * cin + ci) * m + q] = w[(ci * cout + co) * k + j];
                    }
                }
            }
        }
    }
    let bp: Vec<f32> = (0..stride).flat_map(|_| b.iter().copied()).collect();
    let dev = weight.device();
    Direct::new(
        &Tensor::from_vec(wp, (stride * cout, cin, m), dev)?,
        Some(&Tensor::from_vec(bp, stride * cout, dev)?),
        1,
        1,
    )
}

/// A two-tap polyphase transposed conv (`k ≤ 2·stride`) as Winograd
/// F(2, 2). The polyphase conv is `p[u] = A·x'[u] + B·x'[u + 1]` over the
/// input zero-padded by one on each side (`A`, `B`: `[stride·out, in]`,
/// rows `r·out + co` for phase `r`). Two neighbouring columns `u = 2v, 2v + 1`
/// come from three products on `v` alone:
/// `m1 = A·(x'[2v] − x'[2v+1])`, `m2 = (A + B)·x'[2v+1] + bias`,
/// `m3 = B·(x'[2v+2] − x'[2v+1])`; `p[2v] = m1 + m2`, `p[2v+1] = m2 + m3`.
#[derive(Debug, Clone)]
struct Wino22 {
    /// 1x1 direct convs for `A`, `A + B` (with the bias) and `B`.
    d: [Direct; 3],
    stride: usize,
    cout: usize,
    k: usize,
}

impl Wino22 {
    /// From a transposed conv's `weight` `[in, out, k]` and bias `b`;
    /// `None` where [`Direct`] is not built.
    fn new(weight: &Tensor, b: &[f32], stride: usize) -> Result<Option<Self>> {
        let (cin, cout, k) = weight.dims3()?;
        assert!(k.div_ceil(stride) == 2, "F(2, 2) needs two polyphase taps");
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let rows = stride * cout;
        // Tap q = 0 (A) reads kernel index r + s, q = 1 (B) index r.
        let tap = |co: usize, ci: usize, j: usize| -> f64 {
            if j < k {
                w[(ci * cout + co) * k + j] as f64
            } else {
                0.0
            }
        };
        let (mut a, mut ab, mut bb) = (
            vec![0f32; rows * cin],
            vec![0f32; rows * cin],
            vec![0f32; rows * cin],
        );
        for r in 0..stride {
            for co in 0..cout {
                for ci in 0..cin {
                    let i = (r * cout + co) * cin + ci;
                    let (wa, wb) = (tap(co, ci, r + stride), tap(co, ci, r));
                    a[i] = wa as f32;
                    bb[i] = wb as f32;
                    ab[i] = (wa + wb) as f32;
                }
            }
        }
        let bias: Vec<f32> = (0..stride).flat_map(|_| b.iter().copied()).collect();
        let dev = weight.device();
        let mk = |w: Vec<f32>, bias: Option<&Tensor>| {
            Direct::new(&Tensor::from_vec(w, (rows, cin, 1), dev)?, bias, 1, 1)
        };
        let bias = Tensor::from_vec(bias, rows, dev)?;
        let (Some(da), Some(dab), Some(db)) = (mk(a, None)?, mk(ab, Some(&bias))?, mk(bb, None)?)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            d: [da, dab, db],
            stride,
            cout,
            k,
        }))
    }

    /// The trimmed output plus bias of the transposed conv of `xs`
    /// `[B, in, T]` (CPU f32); `None` otherwise.
    fn forward(&self, xs: &Tensor, trim_left: usize, trim_right: usize) -> Result<Option<Tensor>> {
        let (b, cin, t) = xs.dims3()?;
        if t == 0 || !xs.device().is_cpu() || xs.dtype() != DType::F32 || cin != self.d[0].cin {
            return Ok(None);
        }
        let n_out = (t - 1) * self.stride + self.k - trim_left - trim_right;
        let xs = xs.contiguous()?;
        let mut y = vec![0f32; b * self.cout * n_out];
        let done = conv_cpu::with_f32(&xs, |x| {
            // Blocks re-read the three weights once per block: past a few
            // MB (512 -> 256: 12 MB) the whole-signal passes measured faster.
            let wbytes = 12 * self.stride * self.cout * cin;
            if wino_blocked() && wbytes <= 4 << 20 {
                self.run_blocked(x, b, t, &mut y, n_out, trim_left);
            } else {
                self.run_whole(x, t, &mut y, n_out, trim_left);
            }
        });
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(
            y,
            (b, self.cout, n_out),
            xs.device(),
        )?))
    }

    /// Outputs `o < n_out` of `y` (rows `n_out`) from phase columns `u` of
    /// the products `m1, m2, m3` (`[rows, ld]`, column `u / 2 − v0`), for
    /// `u` in `us`; output `o = u·s + r − trim_left` is phase `r` of `u`.
    #[allow(clippy::too_many_arguments)]
    fn scatter(
        &self,
        m: (&[f32], &[f32], &[f32]),
        ld: usize,
        v0: usize,
        us: std::ops::Range<usize>,
        co: usize,
        out: &mut [f32],
        trim_left: usize,
    ) {
        let (s, n_out) = (self.stride, out.len());
        for u in us {
            let base = u * s;
            if base >= trim_left + n_out {
                break;
            }
            let (a, c) = if u % 2 == 0 { (m.0, m.1) } else { (m.1, m.2) };
            let r0 = trim_left.saturating_sub(base);
            let r1 = (trim_left + n_out - base).min(s);
            for r in r0..r1 {
                let i = (r * self.cout + co) * ld + u / 2 - v0;
                out[base + r - trim_left] = a[i] + c[i];
            }
        }
    }

    /// The three inputs `x'[2v] − x'[2v+1]`, `x'[2v+1]`, `x'[2v+2] − x'[2v+1]`
    /// (`x'[i] = x[i − 1]`, zero outside) of pairs `v0 .. v0 + w` of one
    /// input row, into `d0, d1, d2`.
    fn transform(row: &[f32], v0: usize, d0: &mut [f32], d1: &mut [f32], d2: &mut [f32]) {
        let t = row.len();
        let xp = |i: usize| if i >= 1 && i <= t { row[i - 1] } else { 0.0 };
        for (j, ((d0, d1), d2)) in d0
            .iter_mut()
            .zip(d1.iter_mut())
            .zip(d2.iter_mut())
            .enumerate()
        {
            let v = v0 + j;
            let (a, c, e) = (xp(2 * v), xp(2 * v + 1), xp(2 * v + 2));
            *d0 = a - c;
            *d1 = c;
            *d2 = e - c;
        }
    }

    /// [`Wino22::forward`] per block of column pairs (rayon over batch ×
    /// blocks): the transformed inputs and the three products of a block
    /// stay in per-thread scratch (~200 KiB of input), the outputs go
    /// straight to `y`. Each value comes from the same ops as
    /// [`Wino22::run_whole`]: the same bits.
    fn run_blocked(
        &self,
        x: &[f32],
        b: usize,
        t: usize,
        y: &mut [f32],
        n_out: usize,
        trim_left: usize,
    ) {
        use rayon::prelude::*;
        let (cin, cout, rows) = (self.d[0].cin, self.cout, self.stride * self.cout);
        let nv = (t + 1).div_ceil(2);
        let bv = ((200 << 10) / (12 * cin)).max(16).min(nv);
        let nblk = nv.div_ceil(bv);
        let yp = SendPtr(y.as_mut_ptr());
        let go = |(dx, m): &mut (Vec<f32>, Vec<f32>), i: usize| {
            let (bi, v0) = (i / nblk, (i % nblk) * bv);
            let w = bv.min(nv - v0);
            let xb = &x[bi * cin * t..(bi + 1) * cin * t];
            dx.resize(3 * cin * w, 0.0);
            let (d0, rest) = dx.split_at_mut(cin * w);
            let (d1, d2) = rest.split_at_mut(cin * w);
            for (ci, row) in xb.chunks_exact(t).enumerate() {
                let r = ci * w..(ci + 1) * w;
                Self::transform(row, v0, &mut d0[r.clone()], &mut d1[r.clone()], &mut d2[r]);
            }
            m.resize(3 * rows * w, 0.0);
            for (j, d) in self.d.iter().enumerate() {
                // SAFETY: `dx` holds `[cin, w]` per product, `m` `[rows, w]`.
                unsafe {
                    d.block_ld(
                        &dx[j * cin * w..(j + 1) * cin * w],
                        w,
                        m.as_mut_ptr().add(j * rows * w),
                        w,
                        w,
                    )
                };
            }
            let (m1, rest) = m.split_at(rows * w);
            let (m2, m3) = rest.split_at(rows * w);
            for co in 0..cout {
                // SAFETY: blocks write the outputs of their own phase
                // columns, disjoint from every other block's.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(yp.get().add((bi * cout + co) * n_out), n_out)
                };
                self.scatter(
                    (m1, m2, m3),
                    w,
                    v0,
                    2 * v0..2 * (v0 + w),
                    co,
                    out,
                    trim_left,
                );
            }
        };
        let init = || (Vec::new(), Vec::new());
        if b * nblk > 1 && rayon::current_num_threads() > 1 {
            (0..b * nblk).into_par_iter().for_each_init(init, go);
        } else {
            let mut sc = init();
            (0..b * nblk).for_each(|i| go(&mut sc, i));
        }
    }

    /// The whole-signal form (`VOXTOK_SEANET_WINO_BLOCKED=0`): the three
    /// transformed inputs, then the three products over all columns, then
    /// the outputs, each pass in parallel.
    fn run_whole(&self, x: &[f32], t: usize, y: &mut [f32], n_out: usize, trim_left: usize) {
        use rayon::prelude::*;
        let (cin, cout, rows) = (self.d[0].cin, self.cout, self.stride * self.cout);
        let nv = (t + 1).div_ceil(2);
        let mut dx = vec![0f32; 3 * cin * nv];
        let mut m = vec![0f32; 3 * rows * nv];
        for (xb, yb) in x
            .chunks_exact(cin * t)
            .zip(y.chunks_exact_mut(cout * n_out))
        {
            let (d0, rest) = dx.split_at_mut(cin * nv);
            let (d1, d2) = rest.split_at_mut(cin * nv);
            d0.par_chunks_mut(nv)
                .zip(d1.par_chunks_mut(nv))
                .zip(d2.par_chunks_mut(nv))
                .zip(xb.par_chunks_exact(t))
                .for_each(|(((d0, d1), d2), row)| Self::transform(row, 0, d0, d1, d2));
            for (j, (d, mj)) in self.d.iter().zip(m.chunks_exact_mut(rows * nv)).enumerate() {
                d.run(
                    &dx[j * cin * nv..(j + 1) * cin * nv],
                    nv,
                    mj,
                    nv,
                    false,
                    None,
                );
            }
            let (m1, rest) = m.split_at(rows * nv);
            let (m2, m3) = rest.split_at(rows * nv);
            yb.par_chunks_mut(n_out).enumerate().for_each(|(co, out)| {
                self.scatter((m1, m2, m3), nv, 0, 0..2 * nv, co, out, trim_left);
            });
        }
    }
}

/// False when `VOXTOK_SEANET_WINO_BLOCKED=0` (read once): [`Wino22`] then
/// runs each pass over the whole signal instead of per block of columns
/// (which it does only while its three weights total ≤ 4 MB).
fn wino_blocked() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_SEANET_WINO_BLOCKED").map_or(true, |v| v != "0"))
}

/// ELU (alpha 1): `x` for `x > 0`, else `exp(x) - 1`. On CPU in f32 with
/// AVX2/FMA a vectorized exp (relative error below 2e-7) replaces candle's
/// scalar one; other tensors go through candle.
pub fn elu(xs: &Tensor) -> Result<Tensor> {
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 || !has_avx2_fma() {
        return xs.elu(1.0);
    }
    let xs = xs.contiguous()?;
    let (st, l) = xs.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(d)), Some((o0, o1))) = (&*st, l.contiguous_offsets()) else {
        return xs.elu(1.0);
    };
    let mut y = vec![0f32; o1 - o0];
    // Chunks in parallel (the first touch of `y`'s pages too).
    const CHUNK: usize = 1 << 15;
    let go = |(x, y): (&[f32], &mut [f32])| {
        // SAFETY: AVX2/FMA checked above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            elu_avx2(x, y)
        };
    };
    if y.len() > 2 * CHUNK {
        use rayon::prelude::*;
        d[o0..o1]
            .par_chunks(CHUNK)
            .zip(y.par_chunks_mut(CHUNK))
            .for_each(go);
    } else {
        go((&d[o0..o1], &mut y));
    }
    drop(st);
    Tensor::from_vec(y, xs.shape(), xs.device())
}

/// `y += add`, then ELU in place when `elu` (the direct conv's epilogue).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn epilogue_avx2(y: &mut [f32], add: Option<&[f32]>, elu: bool) {
    if let Some(a) = add {
        assert!(a.len() >= y.len());
    }
    if elu_zmm::enabled() {
        let x = y.as_mut_ptr();
        return elu_zmm::map(x, add.map(|a| a.as_ptr()), x, y.len(), elu);
    }
    epilogue_ymm(y, add, elu)
}

/// [`epilogue_avx2`] 8 lanes wide (autovectorized `exp_f32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn epilogue_ymm(y: &mut [f32], add: Option<&[f32]>, elu: bool) {
    if let Some(a) = add {
        for (o, &r) in y.iter_mut().zip(a) {
            *o += r;
        }
    }
    if elu {
        for o in y.iter_mut() {
            let v = *o;
            let e = exp_f32(v.min(0.0)) - 1.0;
            *o = if v > 0.0 { v } else { e };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn elu_avx2(x: &[f32], y: &mut [f32]) {
    if elu_zmm::enabled() {
        let n = x.len().min(y.len());
        return elu_zmm::map(x.as_ptr(), None, y.as_mut_ptr(), n, true);
    }
    elu_ymm(x, y)
}

/// [`elu_avx2`] 8 lanes wide (autovectorized `exp_f32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn elu_ymm(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let e = exp_f32(v.min(0.0)) - 1.0;
        *o = if v > 0.0 { v } else { e };
    }
}

/// ELU and the direct conv's epilogue on 16 AVX-512 lanes, four vectors per
/// iteration: element by element the same operations in the same order as
/// [`elu_ymm`] / [`epilogue_ymm`] (`exp_f32` spelled out, no contraction),
/// so the same bits in about a third of the time.
#[cfg(target_arch = "x86_64")]
mod elu_zmm {
    use super::super::nn::exp_zmm;
    use std::arch::x86_64::*;

    /// True where AVX-512F exists, unless `VOXTOK_SEANET_ELU512=0` (read once).
    pub fn enabled() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::env::var("VOXTOK_SEANET_ELU512").map_or(true, |v| v != "0")
                && std::is_x86_feature_detected!("avx512f")
        })
    }

    /// `v > 0 ? v : exp_f32(min(v, 0)) − 1` (`min` returns 0 for NaN `v`,
    /// as `f32::min` does).
    #[inline(always)]
    unsafe fn elu(v: __m512) -> __m512 {
        let zero = _mm512_setzero_ps();
        let e = _mm512_sub_ps(exp_zmm(_mm512_min_ps(v, zero)), _mm512_set1_ps(1.0));
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, zero), e, v)
    }

    #[inline(always)]
    unsafe fn one<const ADD: bool, const ON: bool>(
        x: *const f32,
        a: *const f32,
        y: *mut f32,
        m: __mmask16,
    ) {
        let mut v = _mm512_maskz_loadu_ps(m, x);
        if ADD {
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a));
        }
        if ON {
            v = elu(v);
        }
        _mm512_mask_storeu_ps(y, m, v);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run<const ADD: bool, const ON: bool>(
        x: *const f32,
        a: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let mut i = 0;
        while i + 64 <= n {
            for v in 0..4 {
                let o = i + 16 * v;
                one::<ADD, ON>(x.add(o), a.wrapping_add(o), y.add(o), 0xffff);
            }
            i += 64;
        }
        while i < n {
            let w = (n - i).min(16);
            let m = if w == 16 { 0xffff } else { (1u16 << w) - 1 };
            one::<ADD, ON>(x.add(i), a.wrapping_add(i), y.add(i), m);
            i += w;
        }
    }

    /// `y[i] = x[i] (+ a[i])`, then ELU when `on`, for `i < n`; `y` may be `x`.
    ///
    /// # Safety
    /// AVX-512F; the pointers hold `n` floats; `y` overlaps `x` only exactly.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn map(x: *const f32, a: Option<*const f32>, y: *mut f32, n: usize, on: bool) {
        match (a, on) {
            (Some(a), true) => run::<true, true>(x, a, y, n),
            (Some(a), false) => run::<true, false>(x, a, y, n),
            (None, true) => run::<false, true>(x, std::ptr::null(), y, n),
            (None, false) => {
                if !std::ptr::eq(x, y) {
                    std::ptr::copy_nonoverlapping(x, y, n);
                }
            }
        }
    }
}

/// SEANet residual block: ELU, conv(k, dilation), ELU, conv(1), plus the
/// input or a 1x1 shortcut conv of it.
#[derive(Debug, Clone)]
pub struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
}

/// Loads one conv of a block: `(vb, cin, cout, kernel, dilation)`.
pub type ConvLoader<'a> = dyn Fn(VarBuilder, usize, usize, usize, usize) -> Result<Conv> + 'a;

impl ResBlock {
    /// `block.1` (dim → hidden, kernel `k`), `block.3` (hidden → dim, 1) and
    /// optionally `shortcut` (dim → dim, 1) under `vb`.
    pub fn load(
        conv: &ConvLoader,
        vb: VarBuilder,
        dim: usize,
        hidden: usize,
        k: usize,
        dilation: usize,
        shortcut: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb.pp("block.1"), dim, hidden, k, dilation)?,
            conv2: conv(vb.pp("block.3"), hidden, dim, 1, 1)?,
            shortcut: if shortcut {
                Some(conv(vb.pp("shortcut"), dim, dim, 1, 1)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if fuse_enabled() {
            if let Some(ys) = self.forward_fused(xs, false)? {
                return Ok(ys);
            }
        }
        let ys = self.conv1.forward(&elu(xs)?)?;
        let ys = self.conv2.forward(&elu(&ys)?)?;
        let res = match &self.shortcut {
            Some(s) => s.forward(xs)?,
            None => xs.clone(),
        };
        res + ys
    }
}

impl ResBlock {
    /// [`ResBlock::forward`] with the second ELU fused into conv1's stores
    /// and the residual add into conv2's (same values, two fewer passes and
    /// buffers), then ELU of the block's output when `elu_out` (a following
    /// [`Layer::Elu`]); `None` where the convs do not run on the direct kernel.
    fn forward_fused(&self, xs: &Tensor, elu_out: bool) -> Result<Option<Tensor>> {
        if let Some(cols) = blocked_cols() {
            if let Some(ys) = self.forward_blocked(xs, elu_out, cols)? {
                return Ok(Some(ys));
            }
        }
        self.forward_fused_whole(xs, elu_out)
    }

    /// [`ResBlock::forward_fused`] over the whole signal, layer by layer.
    fn forward_fused_whole(&self, xs: &Tensor, elu_out: bool) -> Result<Option<Tensor>> {
        let c2 = &self.conv2;
        if c2.k_eff != 1 || c2.stride != 1 || c2.direct.is_none() || self.conv1.direct.is_none() {
            return Ok(None);
        }
        let Some(h) = self.conv1.forward_epi(xs, true, true, None)? else {
            return Ok(None);
        };
        let res = match &self.shortcut {
            Some(s) => s.forward(xs)?,
            None => xs.clone(),
        };
        c2.forward_epi(&h, false, elu_out, Some(&res))
    }
}

impl ResBlock {
    /// The direct kernels `(conv1, conv2, shortcut)` of a block that runs
    /// as one fused unit per time block (here and in the encoder/decoder
    /// chains): `None` when a conv has no direct kernel or has a norm,
    /// conv1 is strided, conv2 or the shortcut is not a stride-1 1x1 conv,
    /// or the channels do not chain (`c → hidden → c`, shortcut `c → c`).
    fn block_kernels(&self) -> Option<(&Direct, &Direct, Option<&Direct>)> {
        let (c1, c2) = (&self.conv1, &self.conv2);
        let (d1, d2) = (c1.direct.as_ref()?, c2.direct.as_ref()?);
        let ds = match &self.shortcut {
            Some(s) => match &s.direct {
                Some(d) if s.k_eff == 1 && s.stride == 1 && s.norm.is_none() => Some(d),
                _ => return None,
            },
            None => None,
        };
        let c = d1.cin;
        if c1.norm.is_some()
            || c2.norm.is_some()
            || c1.stride != 1
            || c2.k_eff != 1
            || c2.stride != 1
            || d2.cin != d1.cout
            || d2.cout != c
            || ds.is_some_and(|d| d.cin != c || d.cout != c)
        {
            return None;
        }
        Some((d1, d2, ds))
    }
}

impl ResBlock {
    /// [`ResBlock::forward_fused_whole`] run per time block of `cols`
    /// columns (per batch item, in parallel): the ELU-padded input slab,
    /// conv1 + ELU, the shortcut and conv2 + residual (+ ELU) stay in
    /// cache, so memory sees one read of `x` and one write of `y`. Each
    /// output is computed by the same kernel with the same FMA order as the
    /// whole-signal path: the same bits. `None` where that path would not
    /// run fused, for blocks wider than [`blocked_max_c`] channels, or for
    /// padding that is not a plain function of the index (reflect on a
    /// signal shorter than its padding).
    fn forward_blocked(&self, xs: &Tensor, elu_out: bool, cols: usize) -> Result<Option<Tensor>> {
        let c1 = &self.conv1;
        let Some((d1, d2, ds)) = self.block_kernels() else {
            return Ok(None);
        };
        if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            return Ok(None);
        }
        let (b, c, t) = xs.dims3()?;
        let hid = d1.cout;
        if c > blocked_max_c() || d1.cin != c || t == 0 {
            return Ok(None);
        }
        // The whole-signal path's conditions (same padding, same kernels).
        let pt = c1.padding_total();
        let extra = c1.extra_padding(t);
        let span = c1.k_eff - 1;
        if extra != 0 || (b == 1 && t <= SMALL_M) {
            return Ok(None);
        }
        let left = if c1.causal { pt } else { pt - pt / 2 };
        let right = pt - left;
        if c1.mode == PadMode::Reflect && t <= left.max(right) {
            return Ok(None);
        }
        let mode = c1.mode;
        let xs = xs.contiguous()?;
        let mut y = vec![0f32; b * c * t];
        let cols = cols.max(1).min(t);
        let nblk = t.div_ceil(cols);
        let yp = SendPtr(y.as_mut_ptr());
        let done = super::conv_cpu::with_f32(&xs, |x| {
            use rayon::prelude::*;
            let go = |(e, h, r): &mut (Vec<f32>, Vec<f32>, Vec<f32>), i: usize| {
                let (bi, t0) = (i / nblk, (i % nblk) * cols);
                let w = cols.min(t - t0);
                let xb = &x[bi * c * t..(bi + 1) * c * t];
                let ew = w + span;
                // ELU of the padded input, columns t0 - left .. t0 + w + right.
                e.resize(c * ew, 0.0);
                for (ci, dst) in e.chunks_exact_mut(ew).enumerate() {
                    let row = &xb[ci * t..(ci + 1) * t];
                    // Padded column j reads input index t0 + j - left.
                    let lo = left.saturating_sub(t0).min(ew);
                    let hi = (t + left - t0).min(ew).max(lo);
                    let src = |j: usize| -> f32 {
                        let p = t0 + j;
                        let idx = if p < left {
                            match mode {
                                PadMode::Constant => return 0.0,
                                PadMode::Replicate => 0,
                                PadMode::Reflect => left - p,
                            }
                        } else {
                            match mode {
                                PadMode::Constant => return 0.0,
                                PadMode::Replicate => t - 1,
                                PadMode::Reflect => 2 * (t - 1) - (p - left),
                            }
                        };
                        row[idx]
                    };
                    for j in (0..lo).chain(hi..ew) {
                        dst[j] = src(j);
                    }
                    // SAFETY: `Direct` exists only with AVX2/FMA.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        let a = t0 + lo - left;
                        elu_avx2(&row[a..a + hi - lo], &mut dst[lo..hi]);
                        epilogue_avx2(&mut dst[..lo], None, true);
                        epilogue_avx2(&mut dst[hi..], None, true);
                    }
                }
                // conv1 + ELU.
                h.resize(hid * w, 0.0);
                // SAFETY: the slabs hold `[cin, ld]` inputs and `[cout, w]`
                // outputs; tasks write disjoint columns of `y`.
                unsafe {
                    d1.block_ld(e, ew, h.as_mut_ptr(), w, w);
                    #[cfg(target_arch = "x86_64")]
                    for row in h.chunks_exact_mut(w) {
                        epilogue_avx2(row, None, true);
                    }
                    let xt = &xb[t0..];
                    let res: &[f32] = match ds {
                        Some(ds) => {
                            r.resize(c * w, 0.0);
                            ds.block_ld(xt, t, r.as_mut_ptr(), w, w);
                            &r[..]
                        }
                        None => xt,
                    };
                    let ldr = if ds.is_some() { w } else { t };
                    let yb = yp.get().add(bi * c * t + t0);
                    d2.block_ld(h, w, yb, t, w);
                    #[cfg(target_arch = "x86_64")]
                    for ci in 0..c {
                        let row = std::slice::from_raw_parts_mut(yb.add(ci * t), w);
                        epilogue_avx2(row, Some(&res[ci * ldr..ci * ldr + w]), elu_out);
                    }
                }
            };
            let init = || (Vec::new(), Vec::new(), Vec::new());
            if b * nblk > 1 && rayon::current_num_threads() > 1 {
                (0..b * nblk).into_par_iter().for_each_init(init, go);
            } else {
                let mut s = init();
                (0..b * nblk).for_each(|i| go(&mut s, i));
            }
        });
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(y, (b, c, t), xs.device())?))
    }
}

/// Widest residual block (input channels) run by [`ResBlock::forward_blocked`]
/// (`VOXTOK_SEANET_BLOCKED_MAXC`, default 128; read once): the narrow
/// high-rate blocks are memory-bound (blocking cut the 128-channel blocks
/// by ~10% too, the 32/64 ones by ~30%); the deep, low-rate ones are not.
fn blocked_max_c() -> usize {
    static ON: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("VOXTOK_SEANET_BLOCKED_MAXC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128)
    })
}

/// Columns per time block of [`ResBlock::forward_blocked`]
/// (`VOXTOK_SEANET_BLOCK_COLS`, default 1536); `None` when
/// `VOXTOK_SEANET_BLOCKED=0` or `VOXTOK_SEANET_FUSE=0` (read once).
fn blocked_cols() -> Option<usize> {
    static ON: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("VOXTOK_SEANET_BLOCKED").map_or(true, |v| v != "0");
        let cols = std::env::var("VOXTOK_SEANET_BLOCK_COLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1536);
        (on && fuse_enabled()).then_some(cols)
    })
}

/// False when `VOXTOK_SEANET_FUSE=0` (read once; A/B runs).
fn fuse_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_SEANET_FUSE").map_or(true, |v| v != "0"))
}

/// One entry of a SEANet `layers` list (HF module indices).
#[derive(Debug, Clone)]
pub enum Layer {
    Conv(Conv),
    ConvT(ConvT),
    Res(Box<ResBlock>),
    /// LSTM with a residual connection (EnCodec).
    Lstm(Lstm),
    Elu,
}

impl Layer {
    /// A short description (kind and shape), for profiles.
    pub fn describe(&self) -> String {
        match self {
            Layer::Conv(c) => format!("conv {}", c.describe()),
            Layer::ConvT(c) => {
                let (cin, cout, k) = c.weight.dims3().unwrap_or_default();
                format!("convT {cin}->{cout} k{k}/{}", c.stride)
            }
            Layer::Res(r) => format!("res {} | {}", r.conv1.describe(), r.conv2.describe()),
            Layer::Lstm(_) => "lstm".into(),
            Layer::Elu => "elu".into(),
        }
    }

    /// Bytes of conv weights (convs and residual blocks; 0 otherwise).
    pub fn weight_bytes(&self) -> usize {
        match self {
            Layer::Conv(c) => c.weight_bytes(),
            Layer::Res(r) => {
                r.conv1.weight_bytes()
                    + r.conv2.weight_bytes()
                    + r.shortcut.as_ref().map_or(0, |s| s.weight_bytes())
            }
            _ => 0,
        }
    }
}

/// Runs a layer stack over the whole signal `[B, C, T]`.
/// With `VOXTOK_CODEC_PROFILE=1` each layer's wall time goes to stderr.
pub fn run_layers(layers: &[Layer], xs: &Tensor) -> Result<Tensor> {
    // A decoder's high-rate tail runs per time block ([`dec_chain`]).
    if let Some(i) = dec_chain::suffix_start(layers, dec_chain::chain_ups()) {
        let xs = run_layers(&layers[..i], xs)?;
        let t0 = profile_enabled().then(Instant::now);
        if let Some(ys) = dec_chain::run(&layers[i..], &xs, dec_chain::chain_cols())? {
            profile_line(
                t0,
                i,
                || format!("dec-chain {} layers", layers.len() - i),
                &ys,
            );
            return Ok(ys);
        }
        return run_layers_seq(&layers[i..], &xs);
    }
    run_layers_seq(layers, xs)
}

/// [`run_layers`] one layer after the other.
fn run_layers_seq(layers: &[Layer], xs: &Tensor) -> Result<Tensor> {
    // An encoder's high-rate front runs per time block ([`enc_chain`]).
    let (mut xs, start) = enc_chain::run_prefix(layers, xs)?.unwrap_or_else(|| (xs.clone(), 0));
    let profile = profile_enabled();
    // An ELU whose next layer is a conv on the direct kernel is applied
    // while that conv pads its input.
    let mut elu_pending = false;
    // An ELU right after a fused residual block ran in its stores.
    let mut elu_done = false;
    for (i, l) in layers.iter().enumerate().skip(start) {
        let t0 = profile.then(Instant::now);
        if elu_done {
            elu_done = false;
            continue;
        }
        if let (Layer::Res(r), Some(Layer::Elu)) = (l, layers.get(i + 1)) {
            if fuse_enabled() {
                if let Some(ys) = r.forward_fused(&xs, true)? {
                    xs = ys;
                    elu_done = true;
                    profile_line(t0, i, || format!("{}+elu", l.describe()), &xs);
                    continue;
                }
            }
        }
        if let (Layer::Elu, Some(Layer::Conv(c))) = (l, layers.get(i + 1)) {
            if fuse_enabled() && c.direct.is_some() && c.norm.is_none() {
                elu_pending = true;
                continue;
            }
        }
        if elu_pending {
            elu_pending = false;
            let Layer::Conv(c) = l else {
                unreachable!("a pending ELU is followed by a conv")
            };
            xs = match c.forward_epi(&xs, true, false, None)? {
                Some(ys) => ys,
                None => c.forward(&elu(&xs)?)?,
            };
            profile_line(t0, i, || format!("elu+{}", l.describe()), &xs);
            continue;
        }
        xs = match l {
            Layer::Conv(c) => c.forward(&xs)?,
            Layer::ConvT(c) => c.forward(&xs)?,
            Layer::Res(r) => r.forward(&xs)?,
            Layer::Lstm(lstm) => {
                let (b, _, _) = xs.dims3()?;
                let mut st = lstm.zero_state(b, xs.dtype(), xs.device())?;
                (lstm.forward(&xs, &mut st)? + &xs)?
            }
            Layer::Elu => elu(&xs)?,
        };
        profile_line(t0, i, || l.describe(), &xs);
    }
    Ok(xs)
}

/// With profiling on (`t0` set), layer `i`'s time since `t0` and output shape to stderr.
fn profile_line(t0: Option<Instant>, i: usize, what: impl FnOnce() -> String, xs: &Tensor) {
    if let Some(t0) = t0 {
        let what = what();
        eprintln!(
            "codec-profile {i:>2} {what:<32} {:>8.3} ms  -> {:?}",
            t0.elapsed().as_secs_f64() * 1e3,
            xs.dims()
        );
    }
}

/// True when `VOXTOK_CODEC_PROFILE=1` (read once): per-layer times to stderr.
pub fn profile_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_CODEC_PROFILE").is_ok_and(|v| v == "1"))
}

// ------------------------------------------------------- direct CPU conv

/// Rows of output channels per micro-tile.
const MR: usize = 8;
/// Output columns per time block step (the AVX-512 tile width).
const NR: usize = 48;

/// A conv1d on CPU in f32 without im2col or GEMM packing: a stride-`s`
/// conv is folded once per call into a stride-1 conv over `cin·s`
/// polyphase channels (`x'[ci·s + r, u] = x[ci, u·s + r]`, taps padded
/// with zeros to a multiple of `s`); output tiles of 8 channels × 48
/// columns (AVX-512; 8 × 8 with AVX2) then accumulate `w · x` in registers over every input channel
/// and tap, time block by time block so the input slab stays in cache.
/// Each output is `bias + Σ w·x` fused-multiply-added in the same
/// (channel, tap) order whatever the tiling, so results do not depend on
/// the length of the input (streaming chunks give the same bits as the
/// whole signal).
#[derive(Debug, Clone)]
struct Direct {
    cout: usize,
    /// Folded input channels (`cin·s`) and taps (`ceil(k/s)`).
    cin: usize,
    k: usize,
    /// Dilation of the folded conv (`s == 1` only; 1 otherwise).
    dil: usize,
    fold: usize,
    /// `[cout/MR tiles][cin][k][MR]`, zero rows past `cout`.
    packed: Vec<f32>,
    /// Bias padded to the tiles (zeros without bias).
    bias: Vec<f32>,
}

impl Direct {
    /// `None` when this CPU lacks AVX2/FMA, for a dilated strided conv, or
    /// when turned off (`VOXTOK_SEANET_DIRECT=0`, for A/B runs).
    fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        dilation: usize,
    ) -> Result<Option<Self>> {
        if !direct_enabled()
            || !has_avx2_fma()
            || weight.dtype() != DType::F32
            || !weight.device().is_cpu()
            || (stride > 1 && dilation > 1)
        {
            return Ok(None);
        }
        let (cout, cin, k) = weight.dims3()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let s = stride.max(1);
        let (fc, fk) = (cin * s, k.div_ceil(s));
        let tiles = cout.div_ceil(MR);
        let mut packed = vec![0f32; tiles * fc * fk * MR];
        for co in 0..cout {
            let (t, r) = (co / MR, co % MR);
            for ci in 0..cin {
                for j in 0..k {
                    // tap j = o·s + ph reads x'[ci·s + ph, t + o]
                    let (o, ph) = (j / s, j % s);
                    let c2 = ci * s + ph;
                    packed[((t * fc + c2) * fk + o) * MR + r] = w[(co * cin + ci) * k + j];
                }
            }
        }
        let mut b = vec![0f32; tiles * MR];
        if let Some(bias) = bias {
            for (d, v) in b.iter_mut().zip(bias.to_vec1::<f32>()?) {
                *d = v;
            }
        }
        Ok(Some(Self {
            cout,
            cin: fc,
            k: fk,
            dil: if s == 1 { dilation } else { 1 },
            fold: s,
            packed,
            bias: b,
        }))
    }

    /// Unpadded conv of `xs` `[B, Cin, T]` (CPU, f32): `[B, Cout, n]`.
    fn forward(&self, xs: &Tensor, n: usize) -> Result<Tensor> {
        self.forward_epi(xs, n, false, None)
    }

    /// [`Direct::forward`], then per output block while it is in cache:
    /// `+ add` (`[B, Cout, n]`, contiguous) and ELU when `elu`; the same
    /// values as the separate ops (`y + r` and [`elu`]'s expression).
    fn forward_epi(
        &self,
        xs: &Tensor,
        n: usize,
        elu: bool,
        add: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, cin, t) = xs.dims3()?;
        let add = match add {
            Some(a) => {
                if a.dims3()? != (b, self.cout, n) {
                    candle_core::bail!("direct conv: residual shape {:?}", a.dims());
                }
                Some(a.contiguous()?)
            }
            None => None,
        };
        let add_guard = add.as_ref().map(|a| a.storage_and_layout());
        let add_slice: Option<&[f32]> = match &add_guard {
            Some((st, l)) => match (&**st, l.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(d)), Some((a0, a1))) => Some(&d[a0..a1]),
                _ => candle_core::bail!("direct conv: residual must be f32 on CPU"),
            },
            None => None,
        };
        // Rows may be views into a longer buffer (a streaming window):
        // read them in place.
        let st = xs.stride();
        let xs = if st[2] == 1 && st[1] >= t && st[0] >= cin * st[1] {
            xs.clone()
        } else {
            xs.contiguous()?
        };
        let (bs, rs) = (xs.stride()[0], xs.stride()[1]);
        let (st, l) = xs.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(d)) = &*st else {
            candle_core::bail!("direct conv needs f32 CPU input");
        };
        let x = &d[l.start_offset()..];
        let mut y = vec![0f32; b * self.cout * n];
        let s = self.fold;
        // Folded columns: outputs plus the taps' reach.
        let u = n + (self.k - 1) * self.dil;
        let mut folded = Vec::new();
        for bi in 0..b {
            let xb = &x[bi * bs..];
            let (src, ldx) = if s == 1 {
                (&xb[..(cin - 1) * rs + t], rs)
            } else {
                use rayon::prelude::*;
                folded.clear();
                folded.resize(cin * s * u, 0f32);
                let fold = |(ci, dst): (usize, &mut [f32])| {
                    let row = &xb[ci * rs..ci * rs + t];
                    for (ph, dst) in dst.chunks_exact_mut(u).enumerate() {
                        // Past the input only zero-weight taps read (zeros).
                        let full = (t.saturating_sub(ph)).div_ceil(s).min(u);
                        for (c, v) in dst[..full].iter_mut().enumerate() {
                            *v = row[c * s + ph];
                        }
                    }
                };
                if cin * s * u >= 1 << 16 {
                    folded.par_chunks_mut(s * u).enumerate().for_each(fold);
                } else {
                    folded.chunks_mut(s * u).enumerate().for_each(fold);
                }
                (&folded[..], u)
            };
            let span = bi * self.cout * n..(bi + 1) * self.cout * n;
            let add = add_slice.map(|a| &a[span.clone()]);
            self.run(src, ldx, &mut y[span], n, elu, add);
        }
        drop(st);
        drop(add_guard);
        Tensor::from_vec(y, (b, self.cout, n), xs.device())
    }

    /// `y [cout, n]` from the stride-1 input `x [cin, ldx]`, by blocks of
    /// output channels (weights ≈ 256 KiB, kept in L2) × time (input slab
    /// ≈ 256 KiB), in parallel when there are threads and enough work.
    fn run(&self, x: &[f32], ldx: usize, y: &mut [f32], n: usize, elu: bool, add: Option<&[f32]>) {
        use rayon::prelude::*;
        if let Some(a) = add {
            assert_eq!(a.len(), self.cout * n);
        }
        const BUDGET: usize = 256 << 10;
        let tiles = self.cout.div_ceil(MR);
        let per_tile = 4 * self.cin * self.k * MR;
        let cb = (BUDGET / per_tile.max(1)).clamp(1, tiles);
        let tb = ((BUDGET / (4 * self.cin).max(1)) / NR).max(1) * NR;
        let (co_blocks, t_blocks) = (tiles.div_ceil(cb), n.div_ceil(tb));
        let yp = SendPtr(y.as_mut_ptr());
        let go = |i: usize| {
            let (c, t) = (i / t_blocks, i % t_blocks);
            let (c0, t0) = (c * cb, t * tb);
            // SAFETY: blocks write disjoint tiles × columns of y; reads stay
            // within x (asserted in `block`).
            unsafe {
                self.block(
                    x,
                    ldx,
                    yp,
                    n,
                    c0,
                    (c0 + cb).min(tiles),
                    t0,
                    (t0 + tb).min(n),
                );
                if elu || add.is_some() {
                    let y = yp;
                    for r in c0 * MR..((c0 + cb) * MR).min(self.cout) {
                        let (a, b) = (r * n + t0, r * n + (t0 + tb).min(n));
                        let row = std::slice::from_raw_parts_mut(y.get().add(a), b - a);
                        #[cfg(target_arch = "x86_64")]
                        epilogue_avx2(row, add.map(|s| &s[a..b]), elu);
                    }
                }
            }
        };
        let blocks = co_blocks * t_blocks;
        let work = n * self.cout * self.cin * self.k;
        if blocks > 1 && work >= 1 << 22 && rayon::current_num_threads() > 1 {
            (0..blocks).into_par_iter().for_each(go);
        } else {
            (0..blocks).for_each(go);
        }
    }

    /// Every output tile, columns `0..w`, of `y` rows `ldy` apart from the
    /// stride-1 input `x [cin, ldx]` (no epilogue); `y` must hold
    /// `[cout, ldy]` from its start.
    unsafe fn block_ld(&self, x: &[f32], ldx: usize, y: *mut f32, ldy: usize, w: usize) {
        let span = (self.k - 1) * self.dil;
        assert!(self.fold == 1 && w <= ldy);
        assert!(x.len() >= (self.cin - 1) * ldx + w + span && ldx >= w + span);
        let tiles = self.cout.div_ceil(MR);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && !FORCE_AVX2.with(|f| f.get()) {
            direct_avx512::block(self, x.as_ptr(), ldx, y, ldy, 0, tiles, 0, w)
        } else {
            direct_avx2::block(self, x.as_ptr(), ldx, y, ldy, 0, tiles, 0, w)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("Direct is only built with AVX2/FMA");
    }

    /// Output tiles `c0..c1` (of `MR` channels), columns `t0..t1`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        x: &[f32],
        ldx: usize,
        y: SendPtr,
        n: usize,
        c0: usize,
        c1: usize,
        t0: usize,
        t1: usize,
    ) {
        let span = (self.k - 1) * self.dil;
        assert!(t1 <= n && x.len() >= (self.cin - 1) * ldx + n + span && ldx >= n + span);
        assert!(c1 <= self.cout.div_ceil(MR));
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && !FORCE_AVX2.with(|f| f.get()) {
            direct_avx512::block(self, x.as_ptr(), ldx, y.0, n, c0, c1, t0, t1)
        } else {
            direct_avx2::block(self, x.as_ptr(), ldx, y.0, n, c0, c1, t0, t1)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("Direct is only built with AVX2/FMA");
    }
}

thread_local! {
    /// Tests: run the AVX2 kernel on an AVX-512 machine (this thread).
    static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// False when `VOXTOK_SEANET_DIRECT=0` (read once).
fn direct_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_SEANET_DIRECT").map_or(true, |v| v != "0"))
}

#[cfg(target_arch = "x86_64")]
mod direct_avx512 {
    use super::{Direct, MR};
    use std::arch::x86_64::*;

    /// Tiles `c0..c1` × columns `t0..t1` of `y [cout, n]`: 8 channels ×
    /// 48 columns (the last vector masked at the end).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        d: &Direct,
        x: *const f32,
        ldx: usize,
        y: *mut f32,
        n: usize,
        c0: usize,
        c1: usize,
        t0: usize,
        t1: usize,
    ) {
        let kk = d.cin * d.k * MR;
        let mut t = t0;
        while t < t1 {
            let w = (t1 - t).min(48);
            let v = w.div_ceil(16);
            let last = w - 16 * (v - 1);
            let mask: __mmask16 = if last == 16 {
                0xffff
            } else {
                (1u16 << last) - 1
            };
            for ti in c0..c1 {
                let rows = (d.cout - ti * MR).min(MR);
                let wp = d.packed.as_ptr().add(ti * kk);
                let bp = d.bias.as_ptr().add(ti * MR);
                let yp = y.add(ti * MR * n + t);
                let (xt, c, k, dl) = (x.add(t), d.cin, d.k, d.dil);
                if d.cout == 1 {
                    // One output channel: skip the 7 zero rows of the tile.
                    match v {
                        3 => tile_row::<3>(xt, ldx, c, k, dl, wp, bp, yp, mask),
                        2 => tile_row::<2>(xt, ldx, c, k, dl, wp, bp, yp, mask),
                        _ => tile_row::<1>(xt, ldx, c, k, dl, wp, bp, yp, mask),
                    }
                    continue;
                }
                match (v, k) {
                    (3, 1) => tile::<3, 1>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                    (3, 2) => tile::<3, 2>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                    (3, 3) => tile::<3, 3>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                    (3, _) => tile::<3, 0>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                    (2, _) => tile::<2, 0>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                    _ => tile::<1, 0>(xt, ldx, c, k, dl, wp, bp, yp, n, rows, mask),
                }
            }
            t += w;
        }
    }

    /// Vector `v` of the `V` vectors from `p`, the last one masked.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load<const V: usize>(p: *const f32, v: usize, mask: __mmask16) -> __m512 {
        if v + 1 == V {
            _mm512_maskz_loadu_ps(mask, p.add(16 * v))
        } else {
            _mm512_loadu_ps(p.add(16 * v))
        }
    }

    /// Stores `a` as vector `v` of the `V` vectors from `p`, the last one masked.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const V: usize>(p: *mut f32, v: usize, mask: __mmask16, a: __m512) {
        if v + 1 == V {
            _mm512_mask_storeu_ps(p.add(16 * v), mask, a);
        } else {
            _mm512_storeu_ps(p.add(16 * v), a);
        }
    }

    /// Row 0 of [`tile`] alone (a one-channel conv): the same FMAs in the
    /// same order, so the same bits.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn tile_row<const V: usize>(
        x: *const f32,
        ldx: usize,
        cin: usize,
        k: usize,
        dil: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        mask: __mmask16,
    ) {
        let mut acc = [_mm512_set1_ps(*bias); V];
        let mut wp = w;
        for ci in 0..cin {
            let xr = x.add(ci * ldx);
            for j in 0..k {
                let xp = xr.add(j * dil);
                let wb = _mm512_set1_ps(*wp);
                for v in 0..V {
                    acc[v] = _mm512_fmadd_ps(wb, load::<V>(xp, v, mask), acc[v]);
                }
                wp = wp.add(MR);
            }
        }
        for v in 0..V {
            store::<V>(y, v, mask, acc[v]);
        }
    }

    /// An 8 × 16·V tile; `K` taps (0: `k`); the last vector is masked.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn tile<const V: usize, const K: usize>(
        x: *const f32,
        ldx: usize,
        cin: usize,
        k: usize,
        dil: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        ldy: usize,
        rows: usize,
        mask: __mmask16,
    ) {
        let k = if K > 0 { K } else { k };
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        for r in 0..MR {
            let b = _mm512_set1_ps(*bias.add(r));
            for v in 0..V {
                acc[r][v] = b;
            }
        }
        let mut wp = w;
        for ci in 0..cin {
            let xr = x.add(ci * ldx);
            for j in 0..k {
                let xp = xr.add(j * dil);
                let mut xv = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    xv[v] = load::<V>(xp, v, mask);
                }
                for r in 0..MR {
                    let wb = _mm512_set1_ps(*wp.add(r));
                    for v in 0..V {
                        acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
                    }
                }
                wp = wp.add(MR);
            }
        }
        for r in 0..rows {
            for v in 0..V {
                store::<V>(y.add(r * ldy), v, mask, acc[r][v]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod direct_avx2 {
    use super::{Direct, MR};
    use std::arch::x86_64::*;

    /// Tiles `c0..c1` × columns `t0..t1` of `y [cout, n]`: 8 × 8 tiles,
    /// then one column at a time (same per-output FMA order throughout).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        d: &Direct,
        x: *const f32,
        ldx: usize,
        y: *mut f32,
        n: usize,
        c0: usize,
        c1: usize,
        t0: usize,
        t1: usize,
    ) {
        let kk = d.cin * d.k * MR;
        let mut t = t0;
        while t < t1 {
            let w = if t1 - t >= 8 { 8 } else { 1 };
            for tile in c0..c1 {
                let rows = (d.cout - tile * MR).min(MR);
                let wp = d.packed.as_ptr().add(tile * kk);
                let bp = d.bias.as_ptr().add(tile * MR);
                let yp = y.add(tile * MR * n + t);
                if w == 8 {
                    tile_8(x.add(t), ldx, d.cin, d.k, d.dil, wp, bp, yp, n, rows);
                } else {
                    tile_1(x.add(t), ldx, d.cin, d.k, d.dil, wp, bp, yp, n, rows);
                }
            }
            t += w;
        }
    }

    /// An 8 × 8 tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_8(
        x: *const f32,
        ldx: usize,
        cin: usize,
        k: usize,
        dil: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        ldy: usize,
        rows: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); MR];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_set1_ps(*bias.add(r));
        }
        let mut wp = w;
        for ci in 0..cin {
            let xr = x.add(ci * ldx);
            for j in 0..k {
                let xv = _mm256_loadu_ps(xr.add(j * dil));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*wp.add(r)), xv, *a);
                }
                wp = wp.add(MR);
            }
        }
        for (r, a) in acc.iter().enumerate().take(rows) {
            _mm256_storeu_ps(y.add(r * ldy), *a);
        }
    }

    /// An 8 × 1 tile (the last columns).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_1(
        x: *const f32,
        ldx: usize,
        cin: usize,
        k: usize,
        dil: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        ldy: usize,
        rows: usize,
    ) {
        let mut acc = [0f32; MR];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = *bias.add(r);
        }
        let mut wp = w;
        for ci in 0..cin {
            let xr = x.add(ci * ldx);
            for j in 0..k {
                let xv = *xr.add(j * dil);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = (*wp.add(r)).mul_add(xv, *a);
                }
                wp = wp.add(MR);
            }
        }
        for (r, a) in acc.iter().enumerate().take(rows) {
            *y.add(r * ldy) = *a;
        }
    }
}

// ------------------------------------------------------------- streaming

/// Streaming state of one conv: pending input, whether the left padding has
/// been applied, and how many input samples it has seen.
#[derive(Debug, Default)]
pub struct ConvState {
    buf: Option<Tensor>,
    started: bool,
    seen: usize,
}

fn cat_opt(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(a), Some(b)) => Some(Tensor::cat(&[&a, &b], 2)?),
    })
}

/// Streams one conv: buffers input, pads the left once, emits every output
/// frame whose window is complete; with `last`, pads the right as
/// [`Conv::forward`] does for the total length and flushes.
pub fn step_conv(
    c: &Conv,
    st: &mut ConvState,
    xs: Option<Tensor>,
    last: bool,
) -> Result<Option<Tensor>> {
    if let Some(x) = &xs {
        st.seen += x.dim(2)?;
    }
    let Some(mut cur) = cat_opt(st.buf.take(), xs)? else {
        return Ok(None);
    };
    let pt = c.padding_total();
    let left = if c.causal { pt } else { pt - pt / 2 };
    if !st.started {
        // Constant/replicate padding needs one sample, reflect more than `left`.
        let need = if c.mode == PadMode::Reflect {
            left + 1
        } else {
            1
        };
        if cur.dim(2)? < need && !last {
            st.buf = Some(cur);
            return Ok(None);
        }
        cur = pad(c.mode, &cur, left, 0)?;
        st.started = true;
    }
    if last {
        let right = if c.causal { 0 } else { pt / 2 } + c.extra_padding(st.seen);
        if right > 0 {
            // Reflect mirrors the last samples, which are still buffered.
            if c.mode == PadMode::Reflect && cur.dim(2)? <= right {
                candle_core::bail!("stream tail too short for reflect padding");
            }
            cur = pad(c.mode, &cur, 0, right)?;
        }
    }
    let len = cur.dim(2)?;
    if len < c.k_eff {
        st.buf = Some(cur);
        return Ok(None);
    }
    let n = (len - c.k_eff) / c.stride + 1;
    let ys = c.conv(&cur.narrow(2, 0, (n - 1) * c.stride + c.k_eff)?)?;
    let consumed = n * c.stride;
    if consumed < len {
        st.buf = Some(cur.narrow(2, consumed, len - consumed)?);
    }
    Ok(Some(ys))
}

enum LayerState {
    Conv(ConvState),
    Res {
        c1: ConvState,
        c2: ConvState,
        sc: ConvState,
        /// Shortcut output waiting for the main branch.
        pending: Option<Tensor>,
    },
    Lstm(Option<LstmState>),
    /// Overlap tail of a transposed conv.
    ConvT(Option<Tensor>),
    Stateless,
}

/// Streaming state of a whole layer stack (encoder or causal decoder), with
/// the time spent in each layer.
pub struct StackState(Vec<LayerState>, Vec<Duration>);

impl StackState {
    pub fn new(layers: &[Layer]) -> Self {
        Self(
            layers
                .iter()
                .map(|l| match l {
                    Layer::Conv(_) => LayerState::Conv(ConvState::default()),
                    Layer::Res(_) => LayerState::Res {
                        c1: ConvState::default(),
                        c2: ConvState::default(),
                        sc: ConvState::default(),
                        pending: None,
                    },
                    Layer::Lstm(_) => LayerState::Lstm(None),
                    Layer::ConvT(_) => LayerState::ConvT(None),
                    Layer::Elu => LayerState::Stateless,
                })
                .collect(),
            vec![Duration::ZERO; layers.len()],
        )
    }

    /// Time spent in each layer so far.
    pub fn layer_times(&self) -> &[Duration] {
        &self.1
    }

    /// Whether the first conv has applied its left padding.
    pub fn started(&self) -> bool {
        matches!(self.0.first(), Some(LayerState::Conv(s)) if s.started)
    }

    /// Feeds `xs` `[1, C, t]` (or nothing) through `layers`; returns the
    /// output frames that are now final (`last` flushes).
    pub fn step(
        &mut self,
        layers: &[Layer],
        xs: Option<Tensor>,
        last: bool,
    ) -> Result<Option<Tensor>> {
        let mut xs = xs;
        for ((layer, st), t) in layers.iter().zip(self.0.iter_mut()).zip(self.1.iter_mut()) {
            let t0 = Instant::now();
            xs = step_layer(layer, st, xs, last)?;
            *t += t0.elapsed();
        }
        Ok(xs)
    }
}

fn step_layer(
    layer: &Layer,
    st: &mut LayerState,
    xs: Option<Tensor>,
    last: bool,
) -> Result<Option<Tensor>> {
    match (layer, st) {
        (Layer::Conv(c), LayerState::Conv(s)) => step_conv(c, s, xs, last),
        (Layer::Elu, _) => xs.map(|x| elu(&x)).transpose(),
        (Layer::Lstm(lstm), LayerState::Lstm(state)) => {
            let Some(x) = xs else { return Ok(None) };
            if x.dim(2)? == 0 {
                return Ok(Some(x));
            }
            let s = match state {
                Some(s) => s,
                None => state.insert(lstm.zero_state(x.dim(0)?, x.dtype(), x.device())?),
            };
            Ok(Some((lstm.forward(&x, s)? + &x)?))
        }
        (
            Layer::Res(r),
            LayerState::Res {
                c1,
                c2,
                sc,
                pending,
            },
        ) => {
            let main = step_conv(&r.conv1, c1, xs.as_ref().map(elu).transpose()?, last)?;
            let main = step_conv(&r.conv2, c2, main.map(|x| elu(&x)).transpose()?, last)?;
            let short = match &r.shortcut {
                Some(s) => step_conv(s, sc, xs, last)?,
                None => xs,
            };
            // The branches may advance at different paces (a reflect-padded
            // conv waits for samples): keep the shortcut until the main
            // branch catches up.
            let short = cat_opt(pending.take(), short)?;
            match (main, short) {
                (Some(m), Some(s)) => {
                    let n = m.dim(2)?;
                    let ns = s.dim(2)?;
                    if ns > n {
                        *pending = Some(s.narrow(2, n, ns - n)?);
                    }
                    Ok(Some((m + s.narrow(2, 0, n)?)?))
                }
                (None, s) => {
                    *pending = s;
                    Ok(None)
                }
                (Some(_), None) => candle_core::bail!("residual branch ahead of its shortcut"),
            }
        }
        (Layer::ConvT(c), LayerState::ConvT(tail)) => c.step(tail, xs),
        _ => candle_core::bail!("streaming state does not match the layer"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::max_abs;
    use super::*;
    use candle_core::Device;

    /// The few-frames product equals the GEMM path (strides, dilation,
    /// with and without bias).
    #[test]
    fn few_frames_equals_gemm() {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, dilation, bias) in [
            (5, 7, 3, 1, 2, true),
            (16, 24, 8, 4, 1, true),
            (12, 9, 1, 1, 1, false),
            (33, 70, 10, 5, 1, true),
        ] {
            let w = Tensor::randn(0f32, 1.0, (cout, cin, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, cout, &dev).unwrap());
            let c = Conv::new(w, b, stride, dilation, true, PadMode::Constant).unwrap();
            for n in [1, 2, 5, SMALL_M] {
                let len = (n - 1) * stride + c.k_eff;
                let x = Tensor::randn(0f32, 1.0, (1, cin, len), &dev).unwrap();
                let fast = c.few_frames(&x).unwrap().expect("few frames");
                let mut want = x.conv1d(&c.weight, 0, stride, dilation, 1).unwrap();
                if let Some(b) = &c.bias {
                    want = want.broadcast_add(&b.reshape((1, (), 1)).unwrap()).unwrap();
                }
                assert_eq!(fast.dims(), want.dims());
                let d = max_abs(&fast, &want);
                assert!(d < 1e-4, "cin={cin} k={k} s={stride} n={n}: {d}");
            }
        }
    }
    /// The transposed-conv kernel path equals candle's conv_transpose1d +
    /// bias + trim (strides 2/4/5/8, k = 2s and k not a multiple of s,
    /// T = 1, batch 2), and its untrimmed form (streaming) too.
    #[test]
    fn convt_kernel_equals_candle() {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, causal) in [
            (8, 4, 4, 2, true),
            (6, 3, 10, 5, true),
            (5, 7, 16, 8, false),
            (3, 2, 7, 4, true),
            (16, 8, 8, 4, false),
            // cin >= 128: the polyphase direct path.
            (128, 5, 4, 2, true),
            (130, 3, 7, 4, false),
            (128, 9, 10, 5, true),
        ] {
            let w = Tensor::randn(0f32, 1.0, (cin, cout, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let mut map = std::collections::HashMap::new();
            map.insert("conv.weight".to_string(), w);
            map.insert("conv.bias".to_string(), b);
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let fast = ConvT::load(causal, 1.0, vb, cin, cout, k, stride, 1, true).unwrap();
            assert!(fast.taps.is_some());
            assert!(fast.poly.is_some() == (cin >= 128 && has_avx2_fma()));
            let mut slow = fast.clone();
            slow.taps = None;
            slow.poly = None;
            let mut gemm_path = fast.clone();
            gemm_path.poly = None;
            for t in [1usize, 2, 7, 33] {
                let x = Tensor::randn(0f32, 1.0, (2, cin, t), &dev).unwrap();
                // Candle's batched conv_transpose1d is not trusted: the
                // reference runs one item at a time.
                let per_item = |m: &ConvT, f: &dyn Fn(&ConvT, &Tensor) -> Tensor| {
                    let items: Vec<Tensor> =
                        (0..2).map(|i| f(m, &x.narrow(0, i, 1).unwrap())).collect();
                    Tensor::cat(&items, 0).unwrap()
                };
                let want = per_item(&slow, &|m, x| m.forward(x).unwrap());
                for (a, path) in [
                    (fast.forward(&x).unwrap(), "poly"),
                    (gemm_path.forward(&x).unwrap(), "gemm"),
                ] {
                    assert_eq!(a.dims(), want.dims());
                    let err = max_abs(&a, &want);
                    assert!(err < 1e-4, "{path} cin={cin} k={k} s={stride} t={t}: {err}");
                }
                let (a, b) = (
                    fast.full(&x).unwrap(),
                    per_item(&slow, &|m, x| m.full(x).unwrap()),
                );
                assert_eq!(a.dims(), b.dims());
                let err = max_abs(&a, &b);
                assert!(err < 1e-4, "full cin={cin} k={k} s={stride} t={t}: {err}");
            }
        }
    }

    /// The F(2, 2) transposed conv equals the polyphase direct one within
    /// float rounding (relative to the output scale), over kernels of
    /// exactly two and fewer than two polyphase taps, causal and centred
    /// trims, batch 1 and 2, odd and even lengths; it declines where the
    /// polyphase form has more than two taps.
    #[test]
    fn convt_winograd_close_to_poly() {
        if !has_avx2_fma() {
            return;
        }
        let dev = Device::Cpu;
        let mut ran = 0;
        for (cin, cout, k, stride, causal) in [
            (128, 5, 4, 2, true),
            (128, 9, 10, 5, false),
            (130, 3, 7, 4, true),
            (144, 17, 3, 2, false),
            (128, 4, 16, 8, true),
            (128, 4, 9, 4, true),
        ] {
            let w = Tensor::randn(0f32, 1.0, (cin, cout, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let mut map = std::collections::HashMap::new();
            map.insert("conv.weight".to_string(), w);
            map.insert("conv.bias".to_string(), b);
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let poly = ConvT::load(causal, 1.0, vb, cin, cout, k, stride, 1, true).unwrap();
            let wino = poly.clone().with_winograd().unwrap();
            assert_eq!(
                wino.wino.is_some(),
                k.div_ceil(stride) == 2,
                "k={k} s={stride}"
            );
            if wino.wino.is_none() {
                continue;
            }
            for bs in [1, 2] {
                for t in [1usize, 2, 3, 4, 7, 33, 100, 257, 1001] {
                    let x = Tensor::randn(0f32, 1.0, (bs, cin, t), &dev).unwrap();
                    let (a, want) = (wino.forward(&x).unwrap(), poly.forward(&x).unwrap());
                    // Per block of column pairs (several above ~130 pairs)
                    // and over the whole signal: the same bits.
                    let wz = wino.wino.as_ref().unwrap();
                    let n_out = a.dim(2).unwrap();
                    let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let (mut yb, mut yw) =
                        (vec![0f32; bs * cout * n_out], vec![1f32; bs * cout * n_out]);
                    wz.run_blocked(&xv, bs, t, &mut yb, n_out, wino.trim_left);
                    wz.run_whole(&xv, t, &mut yw, n_out, wino.trim_left);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&yb) == bits(&yw), "blocked vs whole t={t} b={bs}");
                    assert_eq!(a.dims(), want.dims());
                    let scale = want
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let err = max_abs(&a, &want);
                    assert!(
                        err <= 2e-6 * scale,
                        "cin={cin} k={k} s={stride} t={t} b={bs}: {err} (scale {scale})"
                    );
                    ran += 1;
                }
            }
        }
        assert_eq!(ran, 5 * 2 * 9);
    }

    /// Speed probe (ignored): EnCodec's two wide decoder transposed convs
    /// (10 s), polyphase direct vs F(2, 2), best of 7 on one thread (CPU time).
    #[test]
    #[ignore]
    fn convt_winograd_speed() {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (cin, cout, k, stride, t) in [(512, 256, 16, 8, 750), (256, 128, 10, 5, 6000)] {
            let w = (Tensor::randn(0f32, 1.0, (cin, cout, k), &dev).unwrap() * 0.05).unwrap();
            let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let mut map = std::collections::HashMap::new();
            map.insert("conv.weight".to_string(), w);
            map.insert("conv.bias".to_string(), b);
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let poly = ConvT::load(true, 1.0, vb, cin, cout, k, stride, 1, true).unwrap();
            let wino = poly.clone().with_winograd().unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, cin, t), &dev).unwrap();
            // Thread CPU time (the machine may be busy).
            #[repr(C)]
            struct Ts {
                s: i64,
                ns: i64,
            }
            extern "C" {
                fn clock_gettime(clk: i32, ts: *mut Ts) -> i32;
            }
            let cpu_ms = || {
                let mut ts = Ts { s: 0, ns: 0 };
                // SAFETY: CLOCK_THREAD_CPUTIME_ID (3) into a timespec.
                unsafe { clock_gettime(3, &mut ts) };
                ts.s as f64 * 1e3 + ts.ns as f64 * 1e-6
            };
            let best = |c: &ConvT| {
                pool.install(|| {
                    (0..7)
                        .map(|_| {
                            let t0 = cpu_ms();
                            c.forward(&x).unwrap();
                            cpu_ms() - t0
                        })
                        .fold(f64::MAX, f64::min)
                })
            };
            let (a, b) = (best(&poly), best(&wino));
            eprintln!("convT {cin}->{cout} k{k}/{stride} T {t}: poly {a:.2} ms, F(2,2) {b:.2} ms ({:.2}x)", a / b);
        }
    }

    /// A random SEANet residual block (k3 `dim -> dim/2`, k1 back, optional
    /// k1 shortcut) for the fused-block tests.
    fn rand_resblock(
        dim: usize,
        dil: usize,
        causal: bool,
        mode: PadMode,
        shortcut: bool,
    ) -> ResBlock {
        let dev = Device::Cpu;
        let conv = |cin: usize, cout: usize, k: usize, dil: usize| {
            let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
            Conv::new(w, Some(b), 1, dil, causal, mode).unwrap()
        };
        ResBlock {
            conv1: conv(dim, dim / 2, 3, dil),
            conv2: conv(dim / 2, dim, 1, 1),
            shortcut: shortcut.then(|| conv(dim, dim, 1, 1)),
        }
    }

    /// The fused residual block (ELU and residual add in the direct
    /// kernel's stores) gives the same bits as the separate ops: causal
    /// reflect and non-causal constant padding, with and without a
    /// shortcut conv, dilation 1 and 3, batch 1 and 2, short and odd T.
    #[test]
    fn fused_resblock_equals_separate_ops() {
        if !has_avx2_fma() {
            return;
        }
        let dev = Device::Cpu;
        for (dim, dil, causal, mode, shortcut) in [
            (16, 1, true, PadMode::Reflect, true),
            (12, 3, false, PadMode::Constant, false),
            (9, 1, true, PadMode::Constant, true),
        ] {
            let r = rand_resblock(dim, dil, causal, mode, shortcut);
            for (b, t) in [(1usize, 40usize), (2, 5), (1, 333), (2, 1001)] {
                let x = Tensor::randn(0f32, 1.0, (b, dim, t), &dev).unwrap();
                let fused_elu = r.forward_fused(&x, true).unwrap();
                let fused = r.forward_fused(&x, false).unwrap();
                let fused = match fused {
                    Some(f) => f,
                    None => {
                        assert!(b == 1 && t <= SMALL_M, "fused path not taken b={b} t={t}");
                        continue;
                    }
                };
                let ys = r.conv1.forward(&elu(&x).unwrap()).unwrap();
                let ys = r.conv2.forward(&elu(&ys).unwrap()).unwrap();
                let res = match &r.shortcut {
                    Some(s) => s.forward(&x).unwrap(),
                    None => x.clone(),
                };
                let want = (res + ys).unwrap();
                assert_eq!(fused.dims(), want.dims());
                assert_eq!(bits(&fused), bits(&want), "dim={dim} b={b} t={t}");
                let fused_elu = fused_elu.expect("fused with ELU too");
                let want_elu = elu(&want).unwrap();
                assert_eq!(
                    bits(&fused_elu),
                    bits(&want_elu),
                    "+elu dim={dim} b={b} t={t}"
                );
            }
        }
    }

    /// The residual block run per time block gives the bits of the
    /// whole-signal fused block: every padding mode, causal and centred,
    /// with and without shortcut, dilation 1 and 3, batch 1 and 2, T from 1
    /// to 33333 and around the block width, with and without the output
    /// ELU.
    #[test]
    fn blocked_resblock_equals_fused() {
        if !has_avx2_fma() {
            return;
        }
        let dev = Device::Cpu;
        let cols = 100;
        let mut blocked_runs = 0;
        for mode in [PadMode::Constant, PadMode::Replicate, PadMode::Reflect] {
            for (dim, dil, causal, shortcut) in [
                (16, 1, true, true),
                (12, 3, false, false),
                (9, 3, true, false),
                (32, 1, false, true),
            ] {
                let r = rand_resblock(dim, dil, causal, mode, shortcut);
                for (b, t) in [
                    (1usize, 1usize),
                    (2, 1),
                    (1, 5),
                    (2, 5),
                    (1, cols - 1),
                    (2, cols),
                    (1, cols + 1),
                    (2, 2 * cols + 1),
                    (1, 1001),
                    (2, 1001),
                    (1, 33333),
                ] {
                    let x = Tensor::randn(0f32, 1.0, (b, dim, t), &dev).unwrap();
                    for elu_out in [false, true] {
                        let whole = r.forward_fused_whole(&x, elu_out).unwrap();
                        for c in [cols, 4096] {
                            let blk = r.forward_blocked(&x, elu_out, c).unwrap();
                            let ctx = format!("{mode:?} dim={dim} dil={dil} b={b} t={t} cols={c}");
                            match (&whole, blk) {
                                (Some(w), Some(k)) => {
                                    assert_eq!(w.dims(), k.dims(), "{ctx}");
                                    assert_eq!(bits(w), bits(&k), "{ctx} elu={elu_out}");
                                    blocked_runs += 1;
                                }
                                (None, None) => {}
                                (None, Some(_)) => panic!("blocked without fused: {ctx}"),
                                (Some(_), None) => {
                                    // Only a reflect pad longer than the signal.
                                    let ok = mode == PadMode::Reflect && t <= 3 * dil;
                                    assert!(ok, "fused without blocked: {ctx}");
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(blocked_runs > 300, "{blocked_runs}");
    }

    /// `pad_elu` gives the bits of `pad(elu(x))` in every mode (lengths
    /// around the reflect limit, batch 2), and a strided conv on it those
    /// of the separate ops.
    #[test]
    fn pad_elu_equals_separate_ops() {
        let dev = Device::Cpu;
        for mode in [PadMode::Constant, PadMode::Replicate, PadMode::Reflect] {
            for (len, left, right) in [(1, 0, 0), (1, 2, 1), (4, 3, 0), (4, 2, 3), (300, 6, 7)] {
                let x = Tensor::randn(0f32, 2.0, (2, 3, len), &dev).unwrap();
                let want = match pad(mode, &elu(&x).unwrap(), left, right) {
                    Ok(w) => w,
                    Err(_) => continue,
                };
                let got = pad_elu(mode, &x, left, right).unwrap();
                assert_eq!(bits(&got), bits(&want), "{mode:?} len={len} {left}/{right}");
            }
        }
        let w = Tensor::randn(0f32, 0.3, (10, 6, 8), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 10, &dev).unwrap();
        let c = Conv::new(w, Some(b), 4, 1, true, PadMode::Reflect).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 6, 1001), &dev).unwrap();
        let fused = c
            .forward_epi(&x, true, false, None)
            .unwrap()
            .expect("direct");
        let want = c.forward(&elu(&x).unwrap()).unwrap();
        assert_eq!(bits(&fused), bits(&want));
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The direct kernel equals candle's conv1d (strides with and without
    /// k a multiple of them, dilation, output channels not a multiple of 4,
    /// lengths around the tile widths, batch 2), and a window of the input
    /// gives bit-identical outputs to the whole (independent of tiling).
    #[test]
    fn direct_equals_conv1d() {
        if !has_avx2_fma() {
            eprintln!("no AVX2/FMA: direct conv not used");
            return;
        }
        let dev = Device::Cpu;
        for (cin, cout, k, stride, dilation, bias) in [
            (1, 8, 7, 1, 1, true),
            (6, 3, 3, 1, 2, true),
            (16, 8, 1, 1, 1, false),
            (8, 16, 8, 4, 1, true),
            (5, 7, 7, 3, 1, true),
            (12, 9, 10, 5, 1, false),
            (20, 17, 3, 1, 1, true),
            // One output channel (the decoder's last conv): the 1-row tile.
            (5, 1, 7, 1, 1, true),
            (3, 1, 4, 2, 1, false),
        ] {
            let w = Tensor::randn(0f32, 1.0, (cout, cin, k), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, cout, &dev).unwrap());
            let d = Direct::new(&w, b.as_ref(), stride, dilation)
                .unwrap()
                .expect("direct");
            let k_eff = (k - 1) * dilation + 1;
            for n in [1, 7, 8, 15, 16, 17, 31, 32, 33, 57, 300] {
                let len = (n - 1) * stride + k_eff + stride - 1;
                let x = Tensor::randn(0f32, 1.0, (2, cin, len), &dev).unwrap();
                let got = d.forward(&x, n).unwrap();
                let mut want = x.conv1d(&w, 0, stride, dilation, 1).unwrap();
                if let Some(b) = &b {
                    want = want.broadcast_add(&b.reshape((1, (), 1)).unwrap()).unwrap();
                }
                assert_eq!(got.dims(), want.dims());
                let err = max_abs(&got, &want);
                assert!(
                    err < 1e-4,
                    "cin={cin} k={k} s={stride} d={dilation} n={n}: {err}"
                );
                // The AVX2 kernel gives the same bits.
                FORCE_AVX2.with(|f| f.set(true));
                let avx2 = d.forward(&x, n).unwrap();
                FORCE_AVX2.with(|f| f.set(false));
                assert_eq!(
                    bits(&avx2),
                    bits(&got),
                    "cin={cin} k={k} s={stride} n={n}: AVX2 bits"
                );
                // Outputs 3.. from the window that starts 3 frames later.
                if n > 3 {
                    let part = x.narrow(2, 3 * stride, len - 3 * stride).unwrap();
                    let sub = d.forward(&part, n - 3).unwrap();
                    let full = got.narrow(2, 3, n - 3).unwrap();
                    assert_eq!(
                        bits(&sub),
                        bits(&full),
                        "cin={cin} k={k} s={stride} n={n}: window not bit-identical"
                    );
                }
            }
        }
    }
    /// The vectorized ELU matches candle's within 1e-6 on [-90, 10]
    /// (strided input too) and passes positive inputs through exactly.
    #[test]
    fn elu_matches_candle() {
        let dev = Device::Cpu;
        let v: Vec<f32> = (0..10_000).map(|i| -90.0 + i as f32 * 0.01).collect();
        let x = Tensor::from_vec(v, (1, 2, 5000), &dev).unwrap();
        let xt = x.transpose(1, 2).unwrap();
        let err = max_abs(&elu(&xt).unwrap(), &xt.elu(1.0).unwrap());
        assert!(err < 1e-6, "elu max abs err {err}");
        let pos = x.narrow(1, 1, 1).unwrap().narrow(2, 4100, 900).unwrap();
        let a = elu(&pos)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = pos.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(b.iter().all(|&v| v > 0.0) && a == b);
    }

    /// The AVX-512 ELU / epilogue gives the bits of the 8-lane one and of
    /// the scalar expression, in place and not, with and without the
    /// residual add, at every tail length; inputs cover exp's clamps, ±0,
    /// subnormals, ±inf and NaN.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn elu_zmm_equals_ymm() {
        if !has_avx2_fma() || !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let special = [
            0.0f32,
            -0.0,
            1e-40,
            -1e-40,
            -1e-30,
            -87.2,
            -87.3,
            -87.31,
            -88.0,
            -100.0,
            -1e30,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
            1.0,
            -1.0,
            -0.5,
            -1e-7,
        ];
        let mut v: Vec<f32> = special.to_vec();
        let u = conv_cpu::tests::rand(3000, 7);
        v.extend(
            u.iter()
                .enumerate()
                .map(|(i, x)| x * if i % 3 == 0 { 120.0 } else { 8.0 }),
        );
        let add: Vec<f32> = conv_cpu::tests::rand(v.len(), 8)
            .iter()
            .map(|x| x * 4.0)
            .collect();
        let scalar = |x: f32| {
            let e = exp_f32(x.min(0.0)) - 1.0;
            if x > 0.0 {
                x
            } else {
                e
            }
        };
        let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut checked = 0;
        for off in [0, 5, 13] {
            for n in (0..=70).chain([1000, v.len() - off]) {
                let x = &v[off..off + n];
                let a = &add[off..off + n];
                for (with_add, on) in [(false, true), (true, true), (true, false)] {
                    let a = with_add.then_some(a);
                    let (mut y8, mut y16) = (x.to_vec(), x.to_vec());
                    // SAFETY: AVX2/FMA and AVX-512F checked above.
                    unsafe {
                        epilogue_ymm(&mut y8, a, on);
                        elu_zmm::map(
                            y16.as_mut_ptr(),
                            a.map(|a| a.as_ptr()),
                            y16.as_mut_ptr(),
                            n,
                            on,
                        );
                    }
                    assert_eq!(
                        bits(&y8),
                        bits(&y16),
                        "n {n} off {off} add {with_add} elu {on}"
                    );
                    if !with_add {
                        let want: Vec<f32> = x.iter().map(|&x| scalar(x)).collect();
                        assert_eq!(bits(&want), bits(&y16), "scalar, n {n}");
                        let mut y = vec![7f32; n + 1];
                        unsafe { elu_zmm::map(x.as_ptr(), None, y.as_mut_ptr(), n, true) };
                        assert_eq!(bits(&want), bits(&y[..n]), "out of place, n {n}");
                        assert_eq!(y[n], 7.0, "wrote past n");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 600);
    }
}
