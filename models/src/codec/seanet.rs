//! SEANet building blocks shared by EnCodec and Mimi: padded (causal) convs,
//! transposed convs, residual blocks and the layer stack, plus their
//! streaming state (audio chunk in, every output frame that is final out).
//!
//! A conv that produces few output frames on CPU (a streaming push at the
//! deep, low-rate layers) runs as one small-row product of the im2col window
//! against its weight viewed as `[out, in·k]`: the weights stream through
//! once instead of being repacked for a GEMM on every push.

use super::nn::{conv_weight, pad_reflect, Lstm, LstmState, TapConv};
use crate::runtime::{xwt, SMALL_M};
use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor, D};
use candle_nn::{GroupNorm, VarBuilder};

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

/// A padded conv1d (`EncodecConv1d` / `MimiConv1d`): causal or asymmetric
/// padding, extra right padding that completes the last window, optional
/// bias and optional one-group GroupNorm after it.
#[derive(Debug, Clone)]
pub struct Conv {
    taps: TapConv,
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
        Ok(Self {
            taps: TapConv::new(weight.clone(), stride)?,
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
            None => {
                let ys = self.taps.forward(xs, self.stride, self.dilation)?;
                match &self.bias {
                    Some(b) => ys.broadcast_add(&b.reshape((1, (), 1))?)?,
                    None => ys,
                }
            }
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
        let extra = self.extra_padding(xs.dim(D::Minus1)?);
        let pt = self.padding_total();
        let xs = if self.causal {
            pad(self.mode, xs, pt, extra)?
        } else {
            let right = pt / 2;
            pad(self.mode, xs, pt - right, right + extra)?
        };
        self.conv(&xs)
    }
}

/// A transposed conv1d with fixed-padding trimming (`EncodecConvTranspose1d`
/// / `MimiConvTranspose1d`); depthwise (groups = channels, one output per
/// group) runs as an overlap-add of per-channel products.
#[derive(Debug, Clone)]
pub struct ConvT {
    weight: Tensor,
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
        Ok(Self {
            weight,
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

    /// The untrimmed transposed conv `[B, Cout, (T-1)·stride + k]`, no bias.
    fn full(&self, xs: &Tensor) -> Result<Tensor> {
        let (cin, cout_g, k) = self.weight.dims3()?;
        let ys = if self.groups == cin && cout_g == 1 && k % self.stride == 0 {
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

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
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
        let ys = self.conv1.forward(&xs.elu(1.0)?)?;
        let ys = self.conv2.forward(&ys.elu(1.0)?)?;
        let res = match &self.shortcut {
            Some(s) => s.forward(xs)?,
            None => xs.clone(),
        };
        res + ys
    }
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

/// Runs a layer stack over the whole signal `[B, C, T]`.
pub fn run_layers(layers: &[Layer], xs: &Tensor) -> Result<Tensor> {
    let mut xs = xs.clone();
    for l in layers {
        xs = match l {
            Layer::Conv(c) => c.forward(&xs)?,
            Layer::ConvT(c) => c.forward(&xs)?,
            Layer::Res(r) => r.forward(&xs)?,
            Layer::Lstm(lstm) => {
                let (b, _, _) = xs.dims3()?;
                let mut st = lstm.zero_state(b, xs.dtype(), xs.device())?;
                (lstm.forward(&xs, &mut st)? + &xs)?
            }
            Layer::Elu => xs.elu(1.0)?,
        };
    }
    Ok(xs)
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

/// Streaming state of a whole layer stack (encoder or causal decoder).
pub struct StackState(Vec<LayerState>);

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
        )
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
        for (layer, st) in layers.iter().zip(self.0.iter_mut()) {
            xs = step_layer(layer, st, xs, last)?;
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
        (Layer::Elu, _) => xs.map(|x| x.elu(1.0)).transpose(),
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
            let main = step_conv(
                &r.conv1,
                c1,
                xs.as_ref().map(|x| x.elu(1.0)).transpose()?,
                last,
            )?;
            let main = step_conv(&r.conv2, c2, main.map(|x| x.elu(1.0)).transpose()?, last)?;
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
}
