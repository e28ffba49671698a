//! Building blocks shared by the codec models: weight-normed convolutions
//! (both the `weight_g/weight_v` and the `parametrizations.weight.original0/1`
//! spellings), reflect padding, and a multi-layer LSTM with PyTorch weights.

use super::conv_cpu;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Fetches a conv weight of `shape` under `vb`: weight-normed
/// (`g * v / ||v||`, norm over every dim but the first) when the checkpoint
/// stores it that way, plain `weight` otherwise.
pub fn conv_weight(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    let (gname, vname) = if vb.contains_tensor("parametrizations.weight.original0") {
        (
            "parametrizations.weight.original0",
            "parametrizations.weight.original1",
        )
    } else if vb.contains_tensor("weight_g") {
        ("weight_g", "weight_v")
    } else {
        return vb.get(shape, "weight");
    };
    let g = vb.get((shape.0, 1, 1), gname)?;
    let v = vb.get(shape, vname)?;
    let norm = v.sqr()?.sum_keepdim((1, 2))?.sqrt()?;
    v.broadcast_mul(&g)?.broadcast_div(&norm)
}

/// Pads the last dim like `torch.nn.functional.pad(mode="reflect")`, with
/// EnCodec's fix for inputs shorter than the padding (zero-extend first).
pub fn pad_reflect(xs: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(xs.clone());
    }
    let len = xs.dim(D::Minus1)?;
    let max_pad = left.max(right);
    let (xs, extra) = if len <= max_pad {
        let extra = max_pad - len + 1;
        (xs.pad_with_zeros(D::Minus1, 0, extra)?, extra)
    } else {
        (xs.clone(), 0)
    };
    let n = len + extra;
    let mut idx: Vec<u32> = Vec::with_capacity(n + left + right);
    idx.extend((0..left).map(|i| (left - i) as u32));
    idx.extend((0..n).map(|i| i as u32));
    idx.extend((0..right).map(|j| (n - 2 - j) as u32));
    idx.truncate(idx.len() - extra);
    let m = idx.len();
    let idx = Tensor::from_vec(idx, m, xs.device())?;
    xs.contiguous()?.index_select(&idx, D::Minus1)
}

/// A multi-layer unidirectional LSTM with PyTorch's weight names
/// (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`) and
/// gate order (i, f, g, o). Input and output are `[B, C, T]` (conv layout);
/// the recurrent state can be carried between calls for streaming.
#[derive(Debug, Clone)]
pub struct Lstm {
    layers: Vec<LstmLayer>,
    hidden: usize,
}

#[derive(Debug, Clone)]
struct LstmLayer {
    w_ih_t: Tensor,
    w_hh_t: Tensor,
    bias: Tensor,
}

/// Per-layer `(h, c)`, each `[B, H]`.
pub type LstmState = Vec<(Tensor, Tensor)>;

impl Lstm {
    pub fn load(vb: &VarBuilder, dim: usize, num_layers: usize) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|l| {
                let w_ih = vb.get((4 * dim, dim), &format!("weight_ih_l{l}"))?;
                let w_hh = vb.get((4 * dim, dim), &format!("weight_hh_l{l}"))?;
                let b_ih = vb.get(4 * dim, &format!("bias_ih_l{l}"))?;
                let b_hh = vb.get(4 * dim, &format!("bias_hh_l{l}"))?;
                Ok(LstmLayer {
                    w_ih_t: w_ih.t()?.contiguous()?,
                    w_hh_t: w_hh.t()?.contiguous()?,
                    bias: (b_ih + b_hh)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            hidden: dim,
        })
    }

    /// Zero state for batch `b`.
    pub fn zero_state(
        &self,
        b: usize,
        dtype: DType,
        dev: &candle_core::Device,
    ) -> Result<LstmState> {
        self.layers
            .iter()
            .map(|_| {
                Ok((
                    Tensor::zeros((b, self.hidden), dtype, dev)?,
                    Tensor::zeros((b, self.hidden), dtype, dev)?,
                ))
            })
            .collect()
    }

    /// Runs the stack over `xs` `[B, C, T]` → `[B, H, T]` from `state`,
    /// updating it.
    pub fn forward(&self, xs: &Tensor, state: &mut LstmState) -> Result<Tensor> {
        let (b, _c, t) = xs.dims3()?;
        let h = self.hidden;
        // [B, T, C]
        let mut seq = xs.transpose(1, 2)?.contiguous()?;
        for (layer, (hs, cs)) in self.layers.iter().zip(state.iter_mut()) {
            // Input projection for all steps at once: [B, T, 4H].
            let proj = seq
                .broadcast_matmul(&layer.w_ih_t)?
                .broadcast_add(&layer.bias)?;
            let mut outs = Vec::with_capacity(t);
            for step in 0..t {
                let gates = (proj.narrow(1, step, 1)?.squeeze(1)? + hs.matmul(&layer.w_hh_t)?)?;
                let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h)?)?;
                let f = candle_nn::ops::sigmoid(&gates.narrow(1, h, h)?)?;
                let g = gates.narrow(1, 2 * h, h)?.tanh()?;
                let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h, h)?)?;
                *cs = ((f * &*cs)? + (i * g)?)?;
                *hs = (o * cs.tanh()?)?;
                outs.push(hs.clone());
            }
            seq = if t == 0 {
                Tensor::zeros((b, 0, h), xs.dtype(), xs.device())?
            } else {
                Tensor::stack(&outs, 1)?
            };
        }
        seq.transpose(1, 2)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_matches_torch() {
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &Device::Cpu).unwrap();
        let y = pad_reflect(&x, 2, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![3., 2., 1., 2., 3., 4., 3., 2., 1.]);
        // Shorter than the padding: zero-extend, reflect, cut (EnCodec `_pad1d`).
        let x = Tensor::new(&[[[1f32, 2.]]], &Device::Cpu).unwrap();
        let y = pad_reflect(&x, 3, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![0., 0., 2., 1., 2.]);
    }
}

/// An unpadded conv1d for the codec stacks. On CPU (f32) it runs
/// [`conv_cpu::conv1d`]: one GEMM per tap on strided views of the input,
/// accumulated into one output (no im2col, no per-tap copies, any stride,
/// dilation and k). Other devices and dtypes use candle's conv1d.
#[derive(Debug, Clone)]
pub struct TapConv {
    /// `[Cout, Cin, k]`.
    weight: Tensor,
    /// On CPU (f32): the taps `[k, Cout, Cin]` ([`conv_cpu::pack_taps`]).
    taps: Option<Tensor>,
}

impl TapConv {
    /// A conv from its weight `[Cout, Cin, k]`; `stride` is given again to
    /// [`TapConv::forward`] (kept for source compatibility).
    pub fn new(weight: Tensor, _stride: usize) -> Result<Self> {
        let weight = weight.contiguous()?;
        let taps = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let (cout, cin, k) = weight.dims3()?;
            let w = weight.flatten_all()?.to_vec1::<f32>()?;
            let taps = conv_cpu::pack_taps(&w, cout, cin, k, false);
            Some(Tensor::from_vec(taps, (k, cout, cin), weight.device())?)
        } else {
            None
        };
        Ok(Self { weight, taps })
    }

    /// Unpadded convolution of `xs` `[B, Cin, T]`.
    pub fn forward(&self, xs: &Tensor, stride: usize, dilation: usize) -> Result<Tensor> {
        let (b, cin, t) = xs.dims3()?;
        let (cout, wcin, k) = self.weight.dims3()?;
        let span = (k - 1) * dilation + 1;
        let Some(taps) = &self.taps else {
            return xs.conv1d(&self.weight, 0, stride, dilation, 1);
        };
        if wcin != cin || t < span || !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            return xs.conv1d(&self.weight, 0, stride, dilation, 1);
        }
        let g = conv_cpu::Geom {
            cin,
            cout,
            k,
            stride,
            dilation,
            pad: 0,
            t_in: t,
            n_out: (t - span) / stride + 1,
        };
        let xs = xs.contiguous()?;
        let mut y = vec![0f32; b * cout * g.n_out];
        let done = conv_cpu::with_f32(taps, |w| {
            conv_cpu::with_f32(&xs, |x| {
                for (xb, yb) in x.chunks(cin * t).zip(y.chunks_mut(cout * g.n_out)) {
                    // y starts zeroed.
                    conv_cpu::conv1d(&g, xb, w, conv_cpu::Init::Add(None), yb);
                }
            })
        });
        if done.flatten().is_none() {
            return xs.conv1d(&self.weight, 0, stride, dilation, 1);
        }
        Tensor::from_vec(y, (b, cout, g.n_out), xs.device())
    }
}
