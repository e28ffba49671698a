//! Vectorizable f32 math for the CPU hot loops (softmax over attention rows).

/// `exp(x)` for f32 with relative error below 2e-7 on [-87, 88]
/// (Cody-Waite range reduction + degree-6 polynomial); written so the
/// compiler can vectorize loops over it.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let k = (x * std::f32::consts::LOG2_E).round();
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let bits = ((k as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// Numerically stable softmax of one row, in place.
pub fn softmax_in_place(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = exp_f32(*v - m);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Softmax over the last dimension of a contiguous f32 CPU tensor with the
/// vectorizable [`exp_f32`], rows in parallel; other tensors go through
/// candle's own softmax.
pub fn softmax_last_dim(t: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    if t.device().is_cpu() && t.dtype() == candle_core::DType::F32 {
        t.apply_op1_no_bwd(&FastSoftmax)
    } else {
        candle_nn::ops::softmax_last_dim(t)
    }
}

struct FastSoftmax;

impl candle_core::CustomOp1 for FastSoftmax {
    fn name(&self) -> &'static str {
        "fast-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let src = match s {
            candle_core::CpuStorage::F32(v) => v,
            _ => candle_core::bail!("fast softmax: f32 only"),
        };
        let src = match l.contiguous_offsets() {
            Some((a, b)) => &src[a..b],
            None => candle_core::bail!("fast softmax: contiguous input only"),
        };
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = src.to_vec();
        out.par_chunks_mut(n * 64).for_each(|block| {
            for row in block.chunks_mut(n) {
                softmax_in_place(row);
            }
        });
        Ok((candle_core::CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80f32;
        while x < 80.0 {
            let a = super::exp_f32(x) as f64;
            let b = (x as f64).exp();
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(super::exp_f32(f32::NEG_INFINITY), super::exp_f32(-87.3));
        let mut r = [1.0f32, 2.0, f32::NEG_INFINITY];
        super::softmax_in_place(&mut r);
        assert!((r[0] + r[1] - 1.0).abs() < 1e-6 && r[2] < 1e-30);
    }
}
