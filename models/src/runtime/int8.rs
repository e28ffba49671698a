//! Int8 linear layers, the opt-in `int8` compute type (as CTranslate2's):
//! weights are quantized per output channel at load (symmetric, ±127),
//! activations per row at run time (symmetric, ±127, stored shifted by 128
//! as unsigned bytes), the products are summed exactly in i32 and scaled
//! back to f32.
//!
//! On CPUs with AVX-512 VNNI the kernel is `vpdpbusd` (64 u8 × i8 products
//! an instruction) on 8-row × 48-column register tiles; with AVX2 only,
//! `vpmaddwd` on bytes widened to i16 (2-row × 16-column tiles); elsewhere a
//! plain loop. All three compute the same exact integer sums and the same
//! scaling, so they give bit-identical outputs.

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use rayon::prelude::*;

/// Output columns of one packed weight panel (one 512-bit vector of i32 sums).
const PANEL: usize = 16;
/// Rows of one register tile.
const MR: usize = 8;
/// Panels of one register tile (48 columns).
const NV: usize = 3;
/// Rows per parallel task (a multiple of [`MR`]).
const MC: usize = 64;
/// Activation shift that makes the signed row values unsigned bytes.
const SHIFT: i32 = 128;

thread_local! {
    /// Each thread's quantized activation rows and their scales, reused
    /// across calls (fresh buffers per task cost page faults).
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// `y = x·Wᵀ + b` (then optional erf GELU) with int8 weights and activations.
#[derive(Debug, Clone)]
pub struct QLinear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (one `vpdpbusd` lane's bytes).
    kp: usize,
    /// Weights as panels of 16 columns: `[n/16][kp/4][16][4]`, zero-padded.
    packed: Vec<i8>,
    /// Per-column weight scale (`max|w_j| / 127`), zero-padded to panels.
    scale: Vec<f32>,
    /// `128 · Σ_k q_jk`, the shift's contribution to column `j`, padded.
    comp: Vec<i32>,
    /// Bias (zeros when the layer has none).
    bias: Vec<f32>,
}

/// Symmetric int8 value of `v` at inverse scale `inv` (ties to even).
#[inline(always)]
fn q8(v: f32, inv: f32) -> i32 {
    (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32
}

/// Inverse scale and scale of a row whose largest magnitude is `amax`.
#[inline(always)]
fn scales(amax: f32) -> (f32, f32) {
    if amax > 0.0 && amax.is_finite() {
        (127.0 / amax, amax / 127.0)
    } else {
        (0.0, 0.0)
    }
}

/// Quantizes one activation row to `round(x/s) + 128` bytes (`out` may be
/// longer than `x`: the tail gets 128, i.e. zero) and returns the scale `s`.
#[inline(always)]
fn quantize_row_impl(x: &[f32], out: &mut [u8]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *l = if a > *l { a } else { *l };
        }
    }
    let amax = chunks
        .remainder()
        .iter()
        .fold(lanes.iter().copied().fold(0f32, f32::max), |m, v| {
            m.max(v.abs())
        });
    let (inv, s) = scales(amax);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (q8(v, inv) + SHIFT) as u8;
    }
    for o in &mut out[x.len()..] {
        *o = SHIFT as u8;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(x: &[f32], out: &mut [u8]) -> f32 {
    quantize_row_impl(x, out)
}

/// [`quantize_row_impl`], vectorized for AVX2 when the CPU has it.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::whisper::fastmath::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { quantize_row_avx2(x, out) };
    }
    quantize_row_impl(x, out)
}

/// Whether the AVX-512 VNNI kernel runs on this CPU (`VOXTOK_INT8_VNNI=0`
/// turns it off, for A/B runs). Without it the AVX2 kernel runs (on a Zen 4
/// a layer's dense products take 1/1.2 of float32 gemm's time with it,
/// against 1/3 with VNNI); without AVX2, a plain loop slower than float32.
pub fn has_fast_kernel() -> bool {
    has_vnni()
}

/// Whether the AVX-512 VNNI kernel can run here (checked once).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
                && std::env::var("VOXTOK_INT8_VNNI").map_or(true, |v| v != "0")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl QLinear {
    /// Quantizes a row-major weight `w` `[n, k]` (and bias `[n]`).
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Self {
        assert!(w.len() >= n * k && bias.is_none_or(|b| b.len() >= n));
        let kp = k.div_ceil(4) * 4;
        let np = n.div_ceil(PANEL) * PANEL;
        let kg = kp / 4;
        let mut packed = vec![0i8; np * kp];
        let mut scale = vec![0f32; np];
        let mut comp = vec![0i32; np];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (inv, s) = scales(amax);
            scale[j] = s;
            let (p, jj) = (j / PANEL, j % PANEL);
            let mut sum = 0i32;
            for (c, &v) in row.iter().enumerate() {
                let q = q8(v, inv);
                sum += q;
                packed[(p * kg + c / 4) * 64 + jj * 4 + c % 4] = q as i8;
            }
            comp[j] = SHIFT * sum;
        }
        Self {
            n,
            k,
            kp,
            packed,
            scale,
            comp,
            bias: bias.map_or_else(|| vec![0.0; n], |b| b[..n].to_vec()),
        }
    }

    /// Quantizes a candle weight `[n, k]` and optional bias `[n]` (any device/dtype).
    pub fn from_tensors(w: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let wv = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bv = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        if bv.as_ref().is_some_and(|b| b.len() != n) {
            candle_core::bail!("int8 linear: bias is not [{n}]");
        }
        Ok(Self::new(&wv, n, k, bv.as_deref()))
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `y[m, n] = x[m, k]·Wᵀ + b` (then erf GELU when `gelu`), rows in parallel.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], gelu: bool) {
        self.matmul_with(x, m, y, gelu, has_vnni());
    }

    fn matmul_with(&self, x: &[f32], m: usize, y: &mut [f32], gelu: bool, vnni: bool) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && y.len() >= m * n);
        if m == 0 || n == 0 {
            return;
        }
        let task = |(t, yc): (usize, &mut [f32])| {
            SCRATCH.with_borrow_mut(|(a, sa)| self.task(x, t, yc, a, sa, gelu, vnni))
        };
        let y = &mut y[..m * n];
        if m <= MC {
            task((0, y));
        } else {
            y.par_chunks_mut(MC * n).enumerate().for_each(task);
        }
    }

    /// Rows `t·MC..` of the output (`yc`, whole rows), with this thread's
    /// reused quantization buffers.
    #[allow(clippy::too_many_arguments)]
    fn task(
        &self,
        x: &[f32],
        t: usize,
        yc: &mut [f32],
        a: &mut Vec<u8>,
        sa: &mut Vec<f32>,
        gelu: bool,
        vnni: bool,
    ) {
        let (n, k, kp) = (self.n, self.k, self.kp);
        let rows = yc.len() / n;
        a.resize(rows * kp, 0);
        sa.resize(rows, 0.0);
        let (a, sa) = (&mut a[..rows * kp], &mut sa[..rows]);
        for (r, (ar, s)) in a.chunks_mut(kp).zip(sa.iter_mut()).enumerate() {
            let i = t * MC + r;
            *s = quantize_row(&x[i * k..(i + 1) * k], ar);
        }
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked by the caller);
            // `a`, `sa` and `yc` hold `rows` rows.
            unsafe { vnni::rows(self, a, sa, rows, yc) };
            crate::whisper::fastmath::bias_gelu_in_place(yc, &self.bias, gelu);
            return;
        }
        let _ = vnni;
        self.rows_generic(a, sa, rows, yc);
        crate::whisper::fastmath::bias_gelu_in_place(yc, &self.bias, gelu);
    }

    /// Kernels without VNNI (AVX2, else a plain loop): the same integer sums
    /// and scaling as the VNNI one.
    fn rows_generic(&self, a: &[u8], sa: &[f32], rows: usize, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::whisper::fastmath::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { rows_generic_avx2(self, a, sa, rows, y) };
        }
        rows_generic_impl(self, a, sa, rows, y)
    }

    /// Forward of a CPU f32 tensor `[.., k]` → `[.., n]`.
    pub fn forward(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.last() != Some(&self.k) || !x.device().is_cpu() || x.dtype() != DType::F32 {
            candle_core::bail!(
                "int8 linear: needs a CPU f32 input [.., {}], got {:?} {:?}",
                self.k,
                x.dtype(),
                dims
            );
        }
        let m = x.elem_count() / self.k.max(1);
        let x = x.contiguous()?;
        let (s, l) = x.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) = (&*s, l.contiguous_offsets()) else {
            candle_core::bail!("int8 linear: contiguous CPU f32 input only");
        };
        let mut y = vec![0f32; m * self.n];
        self.matmul(&v[a..b], m, &mut y, gelu);
        drop(s);
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = self.n;
        Tensor::from_vec(y, shape, x.device())
    }
}

#[inline(always)]
fn rows_generic_impl(q: &QLinear, a: &[u8], sa: &[f32], rows: usize, y: &mut [f32]) {
    let (n, kp) = (q.n, q.kp);
    let kg = kp / 4;
    for i in 0..rows {
        let ar = &a[i * kp..(i + 1) * kp];
        for p in 0..n.div_ceil(PANEL) {
            let mut acc = [0i32; PANEL];
            let panel = &q.packed[p * kg * 64..(p + 1) * kg * 64];
            for (a4, b) in ar.chunks_exact(4).zip(panel.chunks_exact(64)) {
                for (jj, acc) in acc.iter_mut().enumerate() {
                    let mut s = 0i32;
                    for t in 0..4 {
                        s += a4[t] as i32 * b[jj * 4 + t] as i32;
                    }
                    *acc += s;
                }
            }
            for (jj, &s) in acc.iter().enumerate() {
                let j = p * PANEL + jj;
                if j < n {
                    y[i * n + j] = ((s - q.comp[j]) as f32 * q.scale[j]) * sa[i];
                }
            }
        }
    }
}

/// AVX2 kernel without VNNI: bytes widened to i16 and `vpmaddwd` (pairs
/// of u8·i8 products summed exactly in i32), 2-row × 16-column tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_generic_avx2(q: &QLinear, a: &[u8], sa: &[f32], rows: usize, y: &mut [f32]) {
    let mut i = 0;
    while i < rows {
        if rows - i >= 2 {
            avx2_rows::<2>(q, a, sa, i, y);
            i += 2;
        } else {
            avx2_rows::<1>(q, a, sa, i, y);
            i += 1;
        }
    }
}

/// Rows `i..i+R` of `y`, every panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // fixed-size tiles read clearer by index
unsafe fn avx2_rows<const R: usize>(q: &QLinear, a: &[u8], sa: &[f32], i: usize, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let (n, kp) = (q.n, q.kp);
    let kg = kp / 4;
    for p in 0..n.div_ceil(PANEL) {
        let b = q.packed.as_ptr().add(p * kg * 64);
        // acc[r][c4]: columns 4·c4..4·c4+3 as pairs of partial sums
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        for g in 0..kg {
            let mut w = [_mm256_setzero_si256(); 4];
            for (c4, w) in w.iter_mut().enumerate() {
                *w = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(g * 64 + c4 * 16) as *const _));
            }
            for r in 0..R {
                let a4 = (a.as_ptr().add((i + r) * kp + 4 * g) as *const i32).read_unaligned();
                let av = _mm256_cvtepu8_epi16(_mm_set1_epi32(a4));
                for c4 in 0..4 {
                    acc[r][c4] = _mm256_add_epi32(acc[r][c4], _mm256_madd_epi16(av, w[c4]));
                }
            }
        }
        let c0 = p * PANEL;
        let cols = (n - c0).min(PANEL);
        for r in 0..R {
            let mut out = [0f32; PANEL];
            for h in 0..2 {
                // [c0 c1 c4 c5 | c2 c3 c6 c7] -> c0..c7 of this half
                let s = _mm256_hadd_epi32(acc[r][2 * h], acc[r][2 * h + 1]);
                let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
                let cc = c0 + 8 * h;
                let s =
                    _mm256_sub_epi32(s, _mm256_loadu_si256(q.comp.as_ptr().add(cc) as *const _));
                let f = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(s),
                    _mm256_loadu_ps(q.scale.as_ptr().add(cc)),
                );
                let f = _mm256_mul_ps(f, _mm256_set1_ps(sa[i + r]));
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), f);
            }
            y[(i + r) * n + c0..(i + r) * n + c0 + cols].copy_from_slice(&out[..cols]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{QLinear, MR, NV, PANEL};
    use std::arch::x86_64::*;

    /// All columns of `rows` quantized rows (`a` `[rows, kp]`, scales `sa`)
    /// into `y` `[rows, n]`: 48-column weight strips, each reused over the
    /// rows in 8-row tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(q: &QLinear, a: &[u8], sa: &[f32], rows: usize, y: &mut [f32]) {
        let (n, kp) = (q.n, q.kp);
        let kg = kp / 4;
        let pstride = kg * 64;
        let panels = n.div_ceil(PANEL);
        let mut p = 0;
        while p < panels {
            let v = (panels - p).min(NV);
            let c0 = p * PANEL;
            let cols = (n - c0).min(v * PANEL);
            let b = q.packed.as_ptr().add(p * pstride);
            let (sw, comp) = (q.scale.as_ptr().add(c0), q.comp.as_ptr().add(c0));
            let mut i = 0;
            while i < rows {
                let r = (rows - i).min(MR);
                let (ai, si, yi) = (
                    a.as_ptr().add(i * kp),
                    sa.as_ptr().add(i),
                    y.as_mut_ptr().add(i * n + c0),
                );
                macro_rules! go {
                    ($($r:literal),*) => {
                        match (r, v) {
                            $(($r, 3) => tile::<$r, 3>(ai, kp, si, b, pstride, kg, sw, comp, yi, n, cols),
                              ($r, 2) => tile::<$r, 2>(ai, kp, si, b, pstride, kg, sw, comp, yi, n, cols),
                              ($r, _) => tile::<$r, 1>(ai, kp, si, b, pstride, kg, sw, comp, yi, n, cols),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(8, 7, 6, 5, 4, 3, 2, 1);
                i += r;
            }
            p += v;
        }
    }

    /// One `R × 16V` tile: `y[r, c] = ((Σ a_r·b_c − comp_c)·sw_c)·sa_r` for
    /// the first `cols` columns (the scale and compensation arrays are padded
    /// to whole panels, so their loads stay in bounds).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::needless_range_loop)] // fixed-size tiles read clearer by index
    unsafe fn tile<const R: usize, const V: usize>(
        a: *const u8,
        lda: usize,
        sa: *const f32,
        b: *const i8,
        pstride: usize,
        kg: usize,
        sw: *const f32,
        comp: *const i32,
        y: *mut f32,
        ldy: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        for g in 0..kg {
            let mut bv = [_mm512_setzero_si512(); V];
            for v in 0..V {
                bv[v] = _mm512_loadu_si512(b.add(v * pstride + g * 64) as *const _);
            }
            for r in 0..R {
                let av = _mm512_set1_epi32((a.add(r * lda + 4 * g) as *const i32).read_unaligned());
                for v in 0..V {
                    acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
                }
            }
        }
        for v in 0..V {
            let c0 = v * PANEL;
            if c0 >= cols {
                break;
            }
            let left = cols - c0;
            let mask: __mmask16 = if left >= PANEL {
                0xffff
            } else {
                ((1u32 << left) - 1) as u16
            };
            let swv = _mm512_loadu_ps(sw.add(c0));
            let cv = _mm512_loadu_si512(comp.add(c0) as *const _);
            for r in 0..R {
                let s = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], cv));
                let f = _mm512_mul_ps(_mm512_mul_ps(s, swv), _mm512_set1_ps(*sa.add(r)));
                _mm512_mask_storeu_ps(y.add(r * ldy + c0), mask, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        // xorshift, uniform in [-scale, scale)
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 37),
        (70, 48, 64),
        (9, 100, 384),
        (130, 61, 30),
        (65, 16, 1536),
    ];

    /// The kernel's integer arithmetic is exact: its output equals the sum
    /// of the dequantized products (quantized here independently) in f64,
    /// to f32 rounding (relative 1e-6 of Σ|terms|).
    #[test]
    fn matches_dequantized_reference() {
        for &(m, n, k) in &SHAPES {
            let x = rand(m * k, 1 + m as u64, 3.0);
            let w = rand(n * k, 2 + n as u64, 0.5);
            let q = QLinear::new(&w, n, k, None);
            let mut y = vec![0f32; m * n];
            q.matmul(&x, m, &mut y, false);
            let deq = |v: &[f32]| -> Vec<f64> {
                let amax = v.iter().fold(0f32, |a, b| a.max(b.abs()));
                let s = amax / 127.0;
                v.iter()
                    .map(|&e| (e * (127.0 / amax)).round_ties_even() as f64 * s as f64)
                    .collect()
            };
            let wq: Vec<Vec<f64>> = w.chunks(k).map(deq).collect();
            for i in 0..m {
                let xq = deq(&x[i * k..(i + 1) * k]);
                for j in 0..n {
                    let terms = xq.iter().zip(&wq[j]).map(|(a, b)| a * b);
                    let want: f64 = terms.clone().sum();
                    let mag: f64 = terms.map(f64::abs).sum();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * mag + 1e-12,
                        "m={m} n={n} k={k} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Against the float32 product: within the rounding bound of symmetric
    /// quantization, |Δ| ≤ (sₓ/2)·Σ|w| + (s_w/2)·Σ|x| + k·sₓ·s_w/4 per
    /// element (plus f32 summation slack), with bias and GELU applied.
    #[test]
    fn within_quantization_bound_of_f32() {
        for &(m, n, k) in &SHAPES {
            let x = rand(m * k, 3 + k as u64, 2.0);
            let w = rand(n * k, 4 + k as u64, 0.3);
            let b = rand(n, 5, 0.5);
            let q = QLinear::new(&w, n, k, Some(&b));
            for gelu in [false, true] {
                let mut y = vec![0f32; m * n];
                q.matmul(&x, m, &mut y, gelu);
                for i in 0..m {
                    let xr = &x[i * k..(i + 1) * k];
                    let sx = xr.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                    let sum_x: f32 = xr.iter().map(|v| v.abs()).sum();
                    for j in 0..n {
                        let wr = &w[j * k..(j + 1) * k];
                        let sw = wr.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        let sum_w: f32 = wr.iter().map(|v| v.abs()).sum();
                        let mut want: f32 =
                            xr.iter().zip(wr).map(|(a, c)| a * c).sum::<f32>() + b[j];
                        // GELU is 1.13-Lipschitz, so the bound carries over.
                        let lip = if gelu { 1.13 } else { 1.0 };
                        if gelu {
                            want = crate::whisper::fastmath::gelu_f32(want);
                        }
                        let bound = lip
                            * (sx / 2.0 * sum_w + sw / 2.0 * sum_x + k as f32 * sx * sw / 4.0)
                            + 1e-5 * (1.0 + want.abs());
                        let got = y[i * n + j];
                        assert!(
                            (got - want).abs() <= bound,
                            "m={m} n={n} k={k} gelu={gelu} [{i},{j}]: {got} vs {want} (bound {bound})"
                        );
                    }
                }
            }
        }
    }

    /// The VNNI and portable kernels give bit-identical outputs (skipped,
    /// with a note, on CPUs without AVX-512 VNNI).
    #[test]
    fn vnni_equals_portable() {
        if !has_vnni() {
            eprintln!("no AVX-512 VNNI here: only the portable kernel was tested");
            return;
        }
        for &(m, n, k) in &SHAPES {
            let x = rand(m * k, 6 + m as u64, 1.0);
            let w = rand(n * k, 7 + n as u64, 1.0);
            let q = QLinear::new(&w, n, k, Some(&rand(n, 8, 1.0)));
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            q.matmul_with(&x, m, &mut a, true, true);
            q.matmul_with(&x, m, &mut b, true, false);
            assert!(
                a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()),
                "m={m} n={n} k={k}"
            );
        }
    }

    /// The AVX2 kernel and the plain loop give bit-identical outputs.
    #[test]
    fn avx2_equals_plain_loop() {
        if !crate::whisper::fastmath::has_avx2_fma() {
            eprintln!("no AVX2 here: only the plain loop was tested");
            return;
        }
        for &(m, n, k) in &SHAPES {
            let x = rand(m * k, 9 + m as u64, 1.0);
            let w = rand(n * k, 10 + n as u64, 1.0);
            let q = QLinear::new(&w, n, k, None);
            let kp = q.kp;
            let mut a = vec![0u8; m * kp];
            let mut sa = vec![0f32; m];
            for i in 0..m {
                sa[i] = quantize_row(&x[i * k..(i + 1) * k], &mut a[i * kp..(i + 1) * kp]);
            }
            let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
            rows_generic_impl(&q, &a, &sa, m, &mut y1);
            // SAFETY: AVX2 and FMA checked above.
            unsafe { rows_generic_avx2(&q, &a, &sa, m, &mut y2) };
            assert!(
                y1.iter().zip(&y2).all(|(u, v)| u.to_bits() == v.to_bits()),
                "m={m} n={n} k={k}"
            );
        }
    }

    /// Zero rows and zero weights give exact zeros (plus bias); tensors of
    /// any rank go through `forward`.
    #[test]
    fn zeros_and_tensor_forward() -> Result<()> {
        let q = QLinear::new(&[0.0; 12], 3, 4, Some(&[1.0, 2.0, 3.0]));
        let mut y = vec![9f32; 6];
        q.matmul(&[0.5, -1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0], 2, &mut y, false);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let dev = candle_core::Device::Cpu;
        let w = Tensor::randn(0f32, 0.3, (20, 24), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 24), &dev)?;
        let q = QLinear::from_tensors(&w, None)?;
        let got = q.forward(&x, false)?;
        assert_eq!(got.dims(), [2, 3, 20]);
        let want = x.matmul(&w.t()?.unsqueeze(0)?.broadcast_as((2, 24, 20))?)?;
        let err = crate::runtime::testing::max_abs_diff(&got, &want);
        assert!(err < 0.05, "{err}");
        Ok(())
    }
}
