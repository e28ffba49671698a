//! The linear layer every model shares, with a CPU fast path for few rows.
//!
//! Decode steps (the LLM's batched decode, Whisper's decoder and its tied
//! vocabulary projection) multiply a handful of rows by a large weight.
//! Generic gemm packs the whole weight matrix for such thin inputs, which
//! costs more than the product itself and reads the weights at a fraction of
//! memory bandwidth. For up to [`SMALL_M`] rows on CPU in f32, `y = x·Wᵀ + b`
//! is therefore computed by a kernel that streams the weights once, in
//! order: at one row it runs at memory bandwidth, and more rows reuse each
//! weight load from registers and L1, so 8 rows cost little more than one.
//! Other shapes, dtypes and devices go through candle's matmul, unchanged.
//! `VOXTOK_SMALL_M=0` in the environment turns the kernel off (candle's matmul
//! for every shape), for same-binary A/B benchmarks.

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor};
use rayon::prelude::*;

/// Rows (all leading dimensions together) up to which the kernel is used.
pub const SMALL_M: usize = 16;

/// `Linear` with weight `[out, in]` and optional bias `[out]`, as
/// `candle_nn::Linear` (same weights, same results within float rounding).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(inner: candle_nn::Linear) -> Self {
        Self { inner }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.small_m(x)? {
            return Ok(y);
        }
        self.inner.forward(x)
    }
}

impl Linear {
    /// The kernel's result for `x [.., k]` with few rows, `None` when the
    /// shape, dtype, device or weight layout is not the kernel's.
    fn small_m(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let w = self.inner.weight();
        let (n, k) = w.dims2()?;
        let dims = x.dims();
        if dims.is_empty()
            || dims[dims.len() - 1] != k
            || !x.device().is_cpu()
            || x.dtype() != DType::F32
            || w.dtype() != DType::F32
        {
            return Ok(None);
        }
        let m = x.elem_count() / k.max(1);
        if m == 0 || m > SMALL_M || !enabled() {
            return Ok(None);
        }
        let (ws, wl) = w.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(wd)), Some((w0, w1))) = (&*ws, wl.contiguous_offsets())
        else {
            return Ok(None);
        };
        let x = x.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(xd)), Some((x0, x1))) = (&*xs, xl.contiguous_offsets())
        else {
            return Ok(None);
        };
        let bias = match self.inner.bias() {
            Some(b) => Some(b.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.len() != n) {
            return Ok(None);
        }
        let mut y = vec![0f32; m * n];
        xwt(&xd[x0..x1], &wd[w0..w1], bias.as_deref(), &mut y, m, k, n);
        drop((ws, xs));
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok(Some(Tensor::from_vec(y, shape, x.device())?))
    }
}

/// False when `VOXTOK_SMALL_M=0` (read once).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_SMALL_M").map_or(true, |v| v != "0"))
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`, all row-major and contiguous;
/// parallel over blocks of output features.
pub fn xwt(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    assert!(bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    // About 64 KiB of weights per task (a multiple of the 3-row tile):
    // enough work to amortise a task, enough tasks to balance the threads.
    let nb = (16384 / k.max(1)).max(1).div_ceil(3) * 3;
    let tasks = n.div_ceil(nb);
    let yp = SendPtr(y.as_mut_ptr());
    let run = |t: usize| {
        let j0 = t * nb;
        let j1 = (j0 + nb).min(n);
        // SAFETY: slice lengths are checked above; tasks write disjoint
        // columns j0..j1 of y.
        unsafe { block(x, w, bias, yp, m, k, n, j0, j1) }
    };
    if tasks == 1 || m * n * k < 1 << 18 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// An output buffer's base pointer shared by parallel tasks that each write
/// their own disjoint elements (`xwt`, the codec conv kernels).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: every user's tasks write disjoint elements of a buffer that outlives them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Columns `j0..j1` of `y` (caller guarantees the bounds).
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: SendPtr,
    m: usize,
    k: usize,
    n: usize,
    j0: usize,
    j1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return avx2::block(x.as_ptr(), w.as_ptr(), bias, y.0, m, k, n, j0, j1);
    }
    for j in j0..j1 {
        let row = &w[j * k..(j + 1) * k];
        let b = bias.map_or(0.0, |b| b[j]);
        for i in 0..m {
            *y.0.add(i * n + j) = dot(&x[i * k..(i + 1) * k], row) + b;
        }
    }
}

/// Dot product with 8 independent accumulators (vectorizes without fast-math).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Columns `j0..j1` of `y`. One input row: each weight row is dotted in
    /// turn, so the block is read as one sequential stream (what the
    /// hardware prefetcher handles best). Two or more: tiles of 3 weight rows
    /// × up to 4 input rows, so each load feeds 3–4 FMAs, with the next
    /// tile's rows prefetched in one sequential sweep (three interleaved
    /// row streams alone read memory at about half the rate).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        x: *const f32,
        w: *const f32,
        bias: Option<&[f32]>,
        y: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        let bias = bias.map(|b| b.as_ptr());
        let mut j = j0;
        while j < j1 {
            let c = if m >= 2 && j + 3 <= j1 { 3 } else { 1 };
            let (wr, bj, yj) = (w.add(j * k), bias.map(|b| b.add(j)), y.add(j));
            let mut i = 0;
            while i < m {
                let r = (m - i).min(if c == 3 { 4 } else { 8 });
                let (xs, ys) = (x.add(i * k), yj.add(i * n));
                macro_rules! go {
                    ($r:literal, $c:literal, $u:literal) => {
                        tile::<$r, $c, $u>(xs, wr, k, ys, n, bj)
                    };
                }
                match (c, r) {
                    (3, 4) => go!(4, 3, 1),
                    (3, 3) => go!(3, 3, 1),
                    (3, 2) => go!(2, 3, 1),
                    (3, _) => go!(1, 3, 2),
                    (_, 8) => go!(8, 1, 1),
                    (_, 7) => go!(7, 1, 1),
                    (_, 6) => go!(6, 1, 1),
                    (_, 5) => go!(5, 1, 1),
                    (_, 4) => go!(4, 1, 2),
                    (_, 3) => go!(3, 1, 2),
                    (_, 2) => go!(2, 1, 2),
                    _ => go!(1, 1, 2),
                }
                i += r;
            }
            j += c;
        }
    }

    /// `y[a·ldy + b] = x_a · w_b (+ bias_b)` for `a < R`, `b < C` (rows of
    /// `x` and `w` are `k` apart); `U` independent accumulator sets hide the
    /// FMA latency when `R·C` is small.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // fixed-size tiles read clearer by index
    unsafe fn tile<const R: usize, const C: usize, const U: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        y: *mut f32,
        ldy: usize,
        bias: Option<*const f32>,
    ) {
        let mut acc = [[[_mm256_setzero_ps(); C]; R]; U];
        let mut p = 0;
        while p + 8 * U <= k {
            if C > 1 {
                // the next tile's C rows, C floats ahead per float here
                // (prefetches never fault, so the end needs no check)
                let next = w.wrapping_add(C * k + C * p) as *const i8;
                _mm_prefetch::<_MM_HINT_T1>(next);
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64));
            }
            for (u, acc) in acc.iter_mut().enumerate() {
                let q = p + 8 * u;
                let mut wv = [_mm256_setzero_ps(); C];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(w.add(c * k + q));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(r * k + q));
                    for c in 0..C {
                        a[c] = _mm256_fmadd_ps(xv, wv[c], a[c]);
                    }
                }
            }
            p += 8 * U;
        }
        while p + 8 <= k {
            for r in 0..R {
                let xv = _mm256_loadu_ps(x.add(r * k + p));
                for c in 0..C {
                    let wv = _mm256_loadu_ps(w.add(c * k + p));
                    acc[0][r][c] = _mm256_fmadd_ps(xv, wv, acc[0][r][c]);
                }
            }
            p += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let mut v = acc[0][r][c];
                for a in &acc[1..] {
                    v = _mm256_add_ps(v, a[r][c]);
                }
                let mut s = hsum(v);
                for q in p..k {
                    s += *x.add(r * k + q) * *w.add(c * k + q);
                }
                if let Some(b) = bias {
                    s += *b.add(c);
                }
                *y.add(r * ldy + c) = s;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    use crate::runtime::testing::max_abs_diff as max_diff;

    /// Every tile shape (rows 1..=17, output features not a multiple of 3,
    /// k not a multiple of 8 or 16), with and without bias, 2-D and 3-D input.
    #[test]
    fn matches_candle_matmul() {
        let dev = Device::Cpu;
        for (k, n) in [(37, 70), (64, 5), (8, 1), (300, 1000)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            for bias in [None, Some(b.clone())] {
                let lin = Linear::new(w.clone(), bias.clone());
                let plain = candle_nn::Linear::new(w.clone(), bias);
                for m in (1..=17).chain([33]) {
                    let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
                    let d = max_diff(&plain.forward(&x).unwrap(), &lin.forward(&x).unwrap());
                    assert!(d < 1e-4, "k={k} n={n} m={m}: {d}");
                }
                let x = Tensor::randn(0f32, 1.0, (3, 2, k), &dev).unwrap();
                let got = lin.forward(&x).unwrap();
                assert_eq!(got.dims(), [3, 2, n]);
                assert!(max_diff(&plain.forward(&x).unwrap(), &got) < 1e-4);
            }
        }
    }

    /// A transposed (non-contiguous) input and a weight view are handled.
    #[test]
    fn strided_inputs() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (20, 24), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (24, 3), &dev)
            .unwrap()
            .t()
            .unwrap();
        let lin = Linear::new(w.clone(), None);
        let want = x.matmul(&w.t().unwrap()).unwrap();
        assert!(max_diff(&want, &lin.forward(&x).unwrap()) < 1e-4);
        let wt = Tensor::randn(0f32, 1.0, (24, 20), &dev)
            .unwrap()
            .t()
            .unwrap();
        let lin = Linear::new(wt.clone(), None);
        let want = x.matmul(&wt.t().unwrap()).unwrap();
        assert!(max_diff(&want, &lin.forward(&x).unwrap()) < 1e-4);
    }
}
