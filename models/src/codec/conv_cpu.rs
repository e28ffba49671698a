//! CPU float32 kernels of the codec convolutions on raw `[C, T]` buffers
//! (one batch item, row-major): conv1d and transposed conv1d as one `gemm`
//! per tap on strided views that accumulates into a single output (bias or
//! the residual as its initial value, zero padding implicit, no im2col, no
//! col2im), tiled over output rows × time so each tile's taps stay in cache
//! and the tiles run on rayon's threads; and DAC's Snake activation in one
//! vectorized pass with a fast `sin²`.

use crate::runtime::SendPtr;
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

/// Runs `f` on the values of a contiguous f32 CPU tensor; `None` for any
/// other tensor.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (s, l) = t.storage_and_layout();
    match (&*s, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// A conv weight `[cout, cin, k]` (transposed conv: `[cin, cout, k]`)
/// laid out as one contiguous `[cout, cin]` matrix per tap, `[k, cout, cin]`:
/// the form the kernels read (no strided weight gathers in the GEMMs).
pub fn pack_taps(w: &[f32], cout: usize, cin: usize, k: usize, transposed: bool) -> Vec<f32> {
    assert_eq!(w.len(), cout * cin * k);
    let mut out = vec![0f32; w.len()];
    // Read `w` in order (its taps are the innermost, contiguous dim).
    for (i, taps) in w.chunks_exact(k).enumerate() {
        let (co, ci) = if transposed {
            (i % cout, i / cout)
        } else {
            (i / cin, i % cin)
        };
        for (j, &v) in taps.iter().enumerate() {
            out[(j * cout + co) * cin + ci] = v;
        }
    }
    out
}

/// How the output starts before the taps accumulate into it.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// Overwritten with the bias (`[cout]`) broadcast over time.
    Bias(&'a [f32]),
    /// Kept (e.g. the residual), plus the bias when given.
    Add(Option<&'a [f32]>),
}

/// Shape of a conv1d: `x [cin, t_in]`, `w [cout, cin, k]` (transposed:
/// `[cin, cout, k]`), `y [cout, n_out]`.
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    /// Conv: implicit zeros before the input. Transposed: outputs cropped on the left.
    pub pad: usize,
    pub t_in: usize,
    pub n_out: usize,
}

impl Geom {
    /// Output length of an (implicitly) zero-padded conv with `pad` on both sides.
    pub fn conv_len(t_in: usize, k: usize, stride: usize, dilation: usize, pad: usize) -> usize {
        let span = (k - 1) * dilation + 1;
        (t_in + 2 * pad).saturating_sub(span) / stride + usize::from(t_in + 2 * pad >= span)
    }
}

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Tiles `(rows, cols)` of the output: columns in blocks that keep a
/// tile's input and output (`bytes_per_col`) near L2 size, rows split when
/// there are too few column blocks to feed every thread.
pub(super) fn tiles(
    rows: usize,
    cols: usize,
    bytes_per_col: usize,
) -> Vec<(usize, usize, usize, usize)> {
    const L2: usize = 512 * 1024;
    let nb = (L2 / bytes_per_col.max(1)).clamp(64, 2048).div_ceil(64) * 64;
    let nb = nb.min(cols.max(1));
    let ncol = cols.div_ceil(nb).max(1);
    let want = 2 * threads();
    let nrow = if ncol >= want || rows < 32 {
        1
    } else {
        want.div_ceil(ncol).min(rows / 16).max(1)
    };
    let rb = rows.div_ceil(nrow);
    let mut out = Vec::with_capacity(nrow * ncol);
    for r in (0..rows).step_by(rb.max(1)) {
        for c in (0..cols).step_by(nb) {
            out.push((r, (r + rb).min(rows), c, (c + nb).min(cols)));
        }
    }
    out
}

/// Fills rows `r0..r1`, columns `c0..c1` of `y` (row stride `rs`) per `init`.
///
/// # Safety
/// `y` must point to a buffer holding those rows and columns.
unsafe fn init_tile(
    y: *mut f32,
    rs: usize,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    init: Init,
) {
    for r in r0..r1 {
        let row = std::slice::from_raw_parts_mut(y.add(r * rs + c0), c1 - c0);
        match init {
            Init::Bias(b) => row.fill(b[r]),
            Init::Add(Some(b)) => row.iter_mut().for_each(|v| *v += b[r]),
            Init::Add(None) => {}
        }
    }
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]` with explicit strides (row, column).
///
/// # Safety
/// Every pointer must cover its matrix under the strides given.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        true,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `y[co, o] = init + Σ_j Σ_ci w[co, ci, j] · x[ci, o·s + j·d − pad]`
/// (zero outside the input) for `o < n_out`; `wt` is the weight as
/// [`pack_taps`] lays it out.
pub fn conv1d(g: &Geom, x: &[f32], wt: &[f32], init: Init, y: &mut [f32]) {
    let Geom {
        cin,
        cout,
        k,
        stride: s,
        dilation: d,
        pad,
        t_in,
        n_out,
    } = *g;
    assert!(x.len() >= cin * t_in && wt.len() >= cout * cin * k && y.len() >= cout * n_out);
    check_init(init, cout);
    let yp = SendPtr(y.as_mut_ptr());
    let work = tiles(cout, n_out, 4 * (cin * s + cout));
    work.par_iter().for_each(|&(r0, r1, c0, c1)| {
        // SAFETY: the tile is inside y, tiles are disjoint, and every
        // gemm below reads x / w inside their bounds (valid ranges per tap).
        unsafe {
            init_tile(yp.get(), n_out, r0, r1, c0, c1, init);
            for j in 0..k {
                // Valid outputs: 0 <= o·s + j·d − pad < t_in.
                let off = j * d;
                let lo = if pad > off {
                    (pad - off).div_ceil(s)
                } else {
                    0
                };
                let hi = if t_in + pad > off {
                    (t_in + pad - off - 1) / s + 1
                } else {
                    0
                };
                let (lo, hi) = (lo.max(c0), hi.min(c1));
                if lo >= hi {
                    continue;
                }
                let xi = lo * s + off - pad;
                gemm_acc(
                    r1 - r0,
                    hi - lo,
                    cin,
                    yp.get().add(r0 * n_out + lo),
                    n_out,
                    1,
                    wt.as_ptr().add((j * cout + r0) * cin),
                    cin,
                    1,
                    x.as_ptr().add(xi),
                    t_in,
                    s,
                );
            }
        }
    });
}

/// Transposed conv1d: `y[co, o] = init + Σ_ci Σ_j w[ci, co, j] · x[ci, t]`
/// over `o = t·s + j − pad`, for `o < n_out` (`pad` = outputs cropped on the
/// left, as `ConvTranspose1d(padding = pad)`; dilation 1); `wt` as
/// [`pack_taps`] lays it out.
pub fn conv_transpose1d(g: &Geom, x: &[f32], wt: &[f32], init: Init, y: &mut [f32]) {
    let Geom {
        cin,
        cout,
        k,
        stride: s,
        pad,
        t_in,
        n_out,
        ..
    } = *g;
    assert_eq!(g.dilation, 1, "conv_transpose1d: dilation 1 only");
    assert!(x.len() >= cin * t_in && wt.len() >= cout * cin * k && y.len() >= cout * n_out);
    check_init(init, cout);
    let yp = SendPtr(y.as_mut_ptr());
    let work = tiles(cout, n_out, 4 * (cin / s.max(1) + cout));
    work.par_iter().for_each(|&(r0, r1, c0, c1)| {
        // SAFETY: as in conv1d; each tap writes outputs o = t·s + j − pad
        // inside this tile's columns only.
        unsafe {
            init_tile(yp.get(), n_out, r0, r1, c0, c1, init);
            for j in 0..k {
                // c0 <= t·s + j − pad < c1, 0 <= t < t_in.
                let first = |c: usize| {
                    if c + pad > j {
                        (c + pad - j).div_ceil(s)
                    } else {
                        0
                    }
                };
                let (lo, hi) = (first(c0), first(c1).min(t_in));
                if lo >= hi {
                    continue;
                }
                let o = lo * s + j - pad;
                gemm_acc(
                    r1 - r0,
                    hi - lo,
                    cin,
                    yp.get().add(r0 * n_out + o),
                    n_out,
                    s,
                    wt.as_ptr().add((j * cout + r0) * cin),
                    cin,
                    1,
                    x.as_ptr().add(lo),
                    t_in,
                    1,
                );
            }
        }
    });
}

fn check_init(init: Init, cout: usize) {
    match init {
        Init::Bias(b) | Init::Add(Some(b)) => assert!(b.len() >= cout, "bias shorter than cout"),
        _ => {}
    }
}

/// Inputs above this (|α·x|) leave the fast `sin²`'s accurate range.
const SIN_RANGE: f32 = 8192.0;

/// `sin²(y)` for |y| ≤ [`SIN_RANGE`], absolute error about 1e-7:
/// Cody-Waite reduction by π/2, then cephes' sinf / cosf polynomials on
/// [−π/4, π/4] (sin² of the odd quadrants is cos² of the remainder).
#[inline(always)]
fn sin2_f32(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let t = y * std::f32::consts::FRAC_2_PI + MAGIC;
    let kf = t - MAGIC;
    let odd = t.to_bits() & 1;
    let r = ((y - kf * 1.570_312_5) - kf * 4.837_513e-4) - kf * 7.549_79e-8;
    let z = r * r;
    let s = r + r * z * (-1.666_665_5e-1 + z * (8.332_161e-3 + z * -1.951_529_6e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166_664_6e-2 + z * (-1.388_731_6e-3 + z * 2.443_315_7e-5));
    let v = if odd == 1 { c } else { s };
    v * v
}

/// One channel of Snake: `out = x + inv · sin²(α·x)`; true when some
/// |α·x| was out of the fast range (the caller redoes the row exactly).
#[inline(always)]
fn snake_row(x: &[f32], alpha: f32, inv: f32, out: &mut [f32]) -> bool {
    let mut big = false;
    for (o, &v) in out.iter_mut().zip(x) {
        let y = alpha * v;
        big |= y.abs() > SIN_RANGE;
        *o = v + inv * sin2_f32(y);
    }
    big
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn snake_row_avx512(x: &[f32], alpha: f32, inv: f32, out: &mut [f32]) -> bool {
    snake_row(x, alpha, inv, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn snake_row_avx2(x: &[f32], alpha: f32, inv: f32, out: &mut [f32]) -> bool {
    snake_row(x, alpha, inv, out)
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
    Base,
}

pub(super) fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    })
}

fn snake_row_dispatch(x: &[f32], alpha: f32, inv: f32, out: &mut [f32]) {
    let big = match isa() {
        // SAFETY: the CPU has the features (checked in `isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { snake_row_avx512(x, alpha, inv, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { snake_row_avx2(x, alpha, inv, out) },
        _ => snake_row(x, alpha, inv, out),
    };
    if big {
        for (o, &v) in out.iter_mut().zip(x) {
            let s = (alpha * v).sin();
            *o = v + inv * (s * s);
        }
    }
}

/// Snake over `x [c, t]` into `out`: `x + inv[c] · sin²(alpha[c] · x)`,
/// channels in parallel.
pub fn snake(x: &[f32], t: usize, alpha: &[f32], inv: &[f32], out: &mut [f32]) {
    let c = alpha.len();
    assert!(x.len() >= c * t && out.len() >= c * t && inv.len() >= c);
    if t == 0 {
        return;
    }
    let rows = (16384 / t).max(1);
    out[..c * t]
        .par_chunks_mut(rows * t)
        .zip(x[..c * t].par_chunks(rows * t))
        .enumerate()
        .for_each(|(i, (o, xs))| {
            for (r, (or, xr)) in o.chunks_mut(t).zip(xs.chunks(t)).enumerate() {
                let ch = i * rows + r;
                snake_row_dispatch(xr, alpha[ch], inv[ch], or);
            }
        });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Deterministic values in [-1, 1) (an LCG), shared by the codec kernel tests.
    pub(in crate::codec) fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// (cin, cout, k, stride, dilation, pad, t_in): odd shapes, strides
    /// that do not divide k, dilation, padding wider than the input, and
    /// lengths that cross several time tiles.
    const CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
        (3, 5, 7, 1, 1, 3, 50),
        (4, 6, 7, 1, 3, 9, 41),
        (5, 3, 7, 1, 9, 27, 30),
        (6, 8, 5, 3, 1, 2, 37),
        (7, 9, 4, 2, 1, 1, 33),
        (2, 4, 3, 2, 2, 2, 20),
        (1, 16, 7, 1, 1, 3, 2600),
        (33, 40, 16, 8, 1, 4, 300),
        (17, 1, 7, 1, 1, 3, 3000),
        (64, 48, 3, 1, 1, 1, 5000),
        (9, 11, 1, 1, 1, 0, 77),
        (3, 2, 5, 1, 1, 6, 4),
    ];

    #[test]
    fn conv1d_equals_candle() {
        for (i, &(cin, cout, k, s, d, pad, t)) in CASES.iter().enumerate() {
            let x = rand(cin * t, i as u64);
            let w = rand(cout * cin * k, 100 + i as u64);
            let b = rand(cout, 200 + i as u64);
            let n = Geom::conv_len(t, k, s, d, pad);
            let xt = Tensor::from_slice(&x, (1, cin, t), &Device::Cpu).unwrap();
            let wt = Tensor::from_slice(&w, (cout, cin, k), &Device::Cpu).unwrap();
            let bt = Tensor::from_slice(&b, (1, cout, 1), &Device::Cpu).unwrap();
            let want = xt
                .conv1d(&wt, pad, s, d, 1)
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            assert_eq!(want.dim(2).unwrap(), n, "case {i}: length");
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let g = Geom {
                cin,
                cout,
                k,
                stride: s,
                dilation: d,
                pad,
                t_in: t,
                n_out: n,
            };
            let wt = pack_taps(&w, cout, cin, k, false);
            let mut y = vec![f32::NAN; cout * n];
            conv1d(&g, &x, &wt, Init::Bias(&b), &mut y);
            let err = max_diff(&y, &want);
            assert!(err <= 1e-4, "case {i} {:?}: max abs err {err}", CASES[i]);
            // Accumulating into a residual: y = r + b + conv.
            let r = rand(cout * n, 300 + i as u64);
            let mut y2 = r.clone();
            conv1d(&g, &x, &wt, Init::Add(Some(&b)), &mut y2);
            let want2: Vec<f32> = want.iter().zip(&r).map(|(a, b)| a + b).collect();
            let err = max_diff(&y2, &want2);
            assert!(err <= 1e-4, "case {i} residual: max abs err {err}");
        }
    }

    #[test]
    fn conv_transpose1d_equals_candle() {
        // (cin, cout, k, stride, pad, t_in): k = 2s (DAC), k not a multiple
        // of s, k < s, no crop, long inputs over several tiles.
        let cases: &[(usize, usize, usize, usize, usize, usize)] = &[
            (6, 4, 16, 8, 4, 9),
            (5, 3, 4, 2, 1, 40),
            (7, 9, 10, 5, 3, 13),
            (3, 5, 7, 3, 0, 11),
            (4, 2, 2, 3, 0, 8),
            (8, 6, 5, 2, 2, 1),
            (24, 12, 8, 4, 2, 2000),
            (48, 40, 16, 8, 4, 333),
        ];
        for (i, &(cin, cout, k, s, pad, t)) in cases.iter().enumerate() {
            let x = rand(cin * t, i as u64);
            let w = rand(cin * cout * k, 50 + i as u64);
            let b = rand(cout, 90 + i as u64);
            let xt = Tensor::from_slice(&x, (1, cin, t), &Device::Cpu).unwrap();
            let wt = Tensor::from_slice(&w, (cin, cout, k), &Device::Cpu).unwrap();
            let full = xt.conv_transpose1d(&wt, 0, 0, s, 1, 1).unwrap();
            let len = full.dim(2).unwrap();
            let n = len - 2 * pad;
            let want = full
                .narrow(2, pad, n)
                .unwrap()
                .broadcast_add(&Tensor::from_slice(&b, (1, cout, 1), &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let g = Geom {
                cin,
                cout,
                k,
                stride: s,
                dilation: 1,
                pad,
                t_in: t,
                n_out: n,
            };
            let wt = pack_taps(&w, cout, cin, k, true);
            let mut y = vec![f32::NAN; cout * n];
            conv_transpose1d(&g, &x, &wt, Init::Bias(&b), &mut y);
            let err = max_diff(&y, &want);
            assert!(err <= 1e-4, "case {i} {:?}: max abs err {err}", cases[i]);
        }
    }

    #[test]
    fn snake_equals_exact() {
        let (c, t) = (5, 3001);
        let mut x = rand(c * t, 7);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= [1.0, 10.0, 300.0, 1e4, 0.01][i / t];
        }
        let alpha = [1.0f32, 0.3, 2.5, 1.7, 40.0];
        let inv: Vec<f32> = alpha.iter().map(|a| 1.0 / (a + 1e-9)).collect();
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                // α·x rounded to f32 first, as torch computes it.
                let s = ((alpha[i / t] * v) as f64).sin();
                (v as f64 + inv[i / t] as f64 * s * s) as f32
            })
            .collect();
        let mut out = vec![0f32; c * t];
        snake(&x, t, &alpha, &inv, &mut out);
        for ch in 0..c {
            let r = ch * t..(ch + 1) * t;
            // Relative to the row's scale (|x| up to 1e4 in row 3).
            let scale = x[r.clone()].iter().fold(1f32, |m, v| m.max(v.abs()));
            let err = max_diff(&out[r.clone()], &want[r]);
            assert!(err <= 1e-6 * scale, "channel {ch}: max abs err {err}");
        }
    }
}
