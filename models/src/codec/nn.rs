//! Building blocks shared by the codec models: weight-normed convolutions
//! (both the `weight_g/weight_v` and the `parametrizations.weight.original0/1`
//! spellings), reflect padding, and a multi-layer LSTM with PyTorch weights.

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

/// A conv1d weight split into per-tap `[Cout, Cin]` matrices, for a faster
/// CPU path without im2col copies: stride 1 is `y = Σ_j W_j · x[:, j·d ..]`
/// (one GEMM per tap on strided views); stride `s` with `k = m·s` folds the
/// input to `[Cin·s, T/s]` once and does `m` GEMMs. Other cases (batch > 1,
/// GPU) use candle's conv1d.
#[derive(Debug, Clone)]
pub struct TapConv {
    weight: Tensor,
    stride: usize,
    /// stride 1: one `[Cout, Cin]` per tap; stride s: one `[Cout, Cin·s]` per block of s taps.
    taps: Vec<Tensor>,
}

impl TapConv {
    pub fn new(weight: Tensor, stride: usize) -> Result<Self> {
        let (cout, cin, k) = weight.dims3()?;
        let taps = if stride == 1 {
            (0..k)
                .map(|j| weight.narrow(2, j, 1)?.squeeze(2)?.contiguous())
                .collect::<Result<Vec<_>>>()?
        } else if k % stride == 0 {
            (0..k / stride)
                .map(|o| {
                    weight
                        .narrow(2, o * stride, stride)?
                        .contiguous()?
                        .reshape((cout, cin * stride))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            weight,
            stride,
            taps,
        })
    }

    /// Unpadded convolution of `xs` `[B, Cin, T]`.
    pub fn forward(&self, xs: &Tensor, stride: usize, dilation: usize) -> Result<Tensor> {
        let (b, cin, t) = xs.dims3()?;
        let k = self.weight.dim(2)?;
        let span = (k - 1) * dilation + 1;
        let usable =
            stride == self.stride && !self.taps.is_empty() && (stride == 1 || dilation == 1);
        if !usable || b != 1 || t < span || !xs.device().is_cpu() {
            return xs.conv1d(&self.weight, 0, stride, dilation, 1);
        }
        let n = (t - span) / stride + 1;
        let (x, step) = if stride == 1 {
            (xs.squeeze(0)?.contiguous()?, dilation)
        } else {
            // [Cin, (n + m - 1)·s] -> [Cin, s, n + m - 1] -> [Cin·s, n + m - 1]
            let cols = n + self.taps.len() - 1;
            let x = xs
                .squeeze(0)?
                .narrow(1, 0, cols * stride)?
                .reshape((cin, cols, stride))?;
            (
                x.transpose(1, 2)?
                    .contiguous()?
                    .reshape((cin * stride, cols))?,
                1,
            )
        };
        let mut acc: Option<Tensor> = None;
        for (j, w) in self.taps.iter().enumerate() {
            let y = w.matmul(&x.narrow(1, j * step, n)?)?;
            acc = Some(match acc {
                None => y,
                Some(a) => (a + y)?,
            });
        }
        acc.expect("k >= 1").unsqueeze(0)
    }
}
