//! Vectorizable f32 math for the CPU hot loops: softmax over attention rows
//! and erf-GELU. The row kernels are compiled twice, for the x86-64 baseline
//! and for AVX2+FMA (picked at run time), so they vectorize 8 lanes wide
//! without a global `target-cpu` flag.

/// Lanes of the manual reductions (max, sum): 8 independent accumulators
/// let the compiler keep them in one vector register.
const LANES: usize = 8;

/// `exp(x)` for f32 with relative error below 2e-7 on [-87, 88]
/// (Cody-Waite range reduction + degree-6 polynomial). Rounding uses the
/// 1.5·2²³ trick and integer exponent bits, so loops over it vectorize
/// (no `roundf` call, no saturating float→int conversion).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.clamp(-87.3, 88.7);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let k = t - MAGIC;
    let n = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let bits = ((n + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `erf(x)` for f32 with absolute error below 5e-7: the rational
/// approximation used by Eigen/XLA (`x·P(x²)/Q(x²)` on [-4, 4], ±1 outside).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    x * p / q
}

/// Exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l { v } else { *l };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    if m == f32::NEG_INFINITY {
        return;
    }
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
            *v = exp_f32(*v - m);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - m);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
fn bias_gelu_row(row: &mut [f32], bias: &[f32], gelu: bool) {
    if gelu {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu_f32(*v + b);
        }
    } else {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_gelu_rows_avx2(rows: &mut [f32], bias: &[f32], gelu: bool) {
    for r in rows.chunks_mut(bias.len()) {
        bias_gelu_row(r, bias, gelu)
    }
}

/// Whether this CPU has AVX2 and FMA (checked once; false off x86-64).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Numerically stable softmax of one row, in place.
pub fn softmax_in_place(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { softmax_row_avx2(row) };
    }
    softmax_row(row)
}

/// Adds `bias` to every row of `rows` (rows of `bias.len()` values), then
/// applies the erf GELU when `gelu` is set; in place.
pub fn bias_gelu_in_place(rows: &mut [f32], bias: &[f32], gelu: bool) {
    if bias.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { bias_gelu_rows_avx2(rows, bias, gelu) };
    }
    for r in rows.chunks_mut(bias.len()) {
        bias_gelu_row(r, bias, gelu)
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

    /// erf against its Maclaurin series in f64 (exact to ~1e-11 on |x| ≤ 4;
    /// beyond, erf is ±1 within 2e-8).
    #[test]
    fn erf_and_gelu_are_accurate() {
        fn erf64(x: f64) -> f64 {
            if x.abs() > 4.0 {
                return x.signum();
            }
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let mut worst = 0f64;
        let mut x = -6f32;
        while x < 6.0 {
            worst = worst.max((super::erf_f32(x) as f64 - erf64(x as f64)).abs());
            x += 0.0013;
        }
        assert!(worst < 1e-6, "erf abs error {worst}");
        let mut rows = vec![-3.0f32, -0.5, 0.0, 0.7, 2.0, 9.0];
        super::bias_gelu_in_place(&mut rows, &[0.0, 0.5, 1.0], true);
        let want =
            [-3.0f64, 0.0, 1.0, 0.7, 2.5, 10.0].map(|v| 0.5 * v * (1.0 + erf64(v / 2f64.sqrt())));
        for (g, w) in rows.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
