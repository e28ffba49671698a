//! 1-D Winograd / Toom-Cook convolution F(m, k) on CPU f32 for stride-1,
//! possibly dilated convs on raw `[C, T]` buffers (DAC's k = 7 residual
//! convs): `m` outputs from `n = m + k − 1` products instead of `m · k`, each
//! product a GEMM `[cout × cin] · [cin × tiles]`.
//!
//! A tile holds the outputs `o0, o0 + d, …, o0 + (m − 1)·d` (dilation `d`);
//! its inputs are `n` samples `d` apart. The input is first split into
//! `m·d` phases so that, for one input tap, consecutive tiles read
//! consecutive values (the transforms vectorize over tiles). Filters are
//! transformed once, at construction, in f64. The f32 error grows with `m`
//! (interpolation points 0, ±1, ±2, ±1/2, ±3/2, …, ∞): see the tests.

use super::conv_cpu::{self, Init, Isa};
use crate::runtime::SendPtr;
use rayon::prelude::*;
use std::cell::RefCell;

/// Finite interpolation points, taken in this order (∞ is always added).
const POINTS: [f64; 11] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 3.0, -3.0];

/// Largest supported `n = m + k − 1`.
pub const MAX_POINTS: usize = POINTS.len() + 1;

/// A conv weight transformed for F(m, k).
#[derive(Debug, Clone)]
pub struct Winograd {
    m: usize,
    n: usize,
    cin: usize,
    cout: usize,
    /// Output transform `[m][n]`.
    at: Vec<f32>,
    /// Input transform `[n][n]`.
    bt: Vec<f32>,
    /// Transformed filters `[n][cout][cin]`.
    gw: Vec<f32>,
}

/// `(A^T [m×n], G [n×k], B^T [n×n])` of F(m, k), in f64:
/// `y = A^T [(G g) ⊙ (B^T d)]` for the correlation `y_i = Σ_j g_j d_{i+j}`.
fn transforms(m: usize, k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = m + k - 1;
    assert!(
        m >= 1 && k >= 1 && n <= MAX_POINTS,
        "F({m}, {k}) not supported"
    );
    let pts = &POINTS[..n - 1];
    let pow = |p: f64, e: usize| p.powi(e as i32);
    // Vandermonde rows p^0..p^{cols-1}, and the point at ∞ (leading coefficient).
    let vand = |cols: usize| {
        let mut v = vec![0f64; n * cols];
        for (a, &p) in pts.iter().enumerate() {
            for j in 0..cols {
                v[a * cols + j] = pow(p, j);
            }
        }
        v[(n - 1) * cols + cols - 1] = 1.0;
        v
    };
    let vm = vand(m);
    let mut at = vec![0f64; m * n];
    for i in 0..m {
        for a in 0..n {
            at[i * n + a] = vm[a * m + i];
        }
    }
    let g = vand(k);
    let vinv = invert(vand(n), n);
    let mut bt = vec![0f64; n * n];
    for a in 0..n {
        for l in 0..n {
            bt[a * n + l] = vinv[l * n + a];
        }
    }
    (at, g, bt)
}

/// Inverse of the `n × n` matrix `a` (Gauss-Jordan, partial pivoting).
fn invert(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs()))
            .expect("n > 0");
        for j in 0..n {
            a.swap(col * n + j, piv * n + j);
            inv.swap(col * n + j, piv * n + j);
        }
        let p = a[col * n + col];
        assert!(p != 0.0, "singular Vandermonde matrix");
        for j in 0..n {
            a[col * n + j] /= p;
            inv[col * n + j] /= p;
        }
        for r in 0..n {
            let f = a[r * n + col];
            if r != col && f != 0.0 {
                for j in 0..n {
                    a[r * n + j] -= f * a[col * n + j];
                    inv[r * n + j] -= f * inv[col * n + j];
                }
            }
        }
    }
    inv
}

/// The first `n` values of `v`, grown when needed (contents unspecified).
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

thread_local! {
    /// Phase-split input of the conv running on this thread.
    static PHASES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Transformed inputs and products of one work item.
    static WORK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `cell` grown to `len` (a fresh buffer
/// when it is already in use, e.g. re-entered through rayon work stealing).
fn with_buf<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    cell.with(|c| match c.try_borrow_mut() {
        Ok(mut v) => f(grow(&mut v, len)),
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// `dst_r = Σ_l coef[r][l] · src_l` over `len` values for each output row
/// `r` (`coef` is `[dsts.len()][srcs.len()]`), each sum in the order of `l`.
///
/// # Safety
/// Every pointer must cover `len` values; no dst may overlap a src.
#[inline(always)]
unsafe fn mix(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], len: usize) {
    match srcs.len() {
        4 => mix_n::<4>(coef, srcs, dsts, len),
        5 => mix_n::<5>(coef, srcs, dsts, len),
        6 => mix_n::<6>(coef, srcs, dsts, len),
        7 => mix_n::<7>(coef, srcs, dsts, len),
        8 => mix_n::<8>(coef, srcs, dsts, len),
        9 => mix_n::<9>(coef, srcs, dsts, len),
        10 => mix_n::<10>(coef, srcs, dsts, len),
        11 => mix_n::<11>(coef, srcs, dsts, len),
        12 => mix_n::<12>(coef, srcs, dsts, len),
        _ => mix_tail(coef, srcs, dsts, 0, len),
    }
}

/// [`mix`] with `NS` sources: 16 columns at a time, the sources held in
/// registers while every output row is summed.
#[inline(always)]
unsafe fn mix_n<const NS: usize>(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], len: usize) {
    const L: usize = 16;
    let coef = &coef[..dsts.len() * NS];
    let mut j = 0;
    while j + L <= len {
        let mut v = [[0f32; L]; NS];
        for (vl, &sp) in v.iter_mut().zip(srcs) {
            *vl = std::ptr::read_unaligned(sp.add(j) as *const [f32; L]);
        }
        for (c, &dp) in coef.chunks_exact(NS).zip(dsts) {
            let mut acc = [0f32; L];
            for (&w, vl) in c.iter().zip(&v) {
                for (a, &x) in acc.iter_mut().zip(vl) {
                    *a += w * x;
                }
            }
            std::ptr::write_unaligned(dp.add(j) as *mut [f32; L], acc);
        }
        j += L;
    }
    mix_tail(coef, srcs, dsts, j, len);
}

/// [`mix`] on the values `from..len`, one at a time (same sums).
#[inline(always)]
unsafe fn mix_tail(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], from: usize, len: usize) {
    let ns = srcs.len();
    for j in from..len {
        for (c, &dp) in coef.chunks_exact(ns).zip(dsts) {
            let mut acc = 0f32;
            for (&w, &sp) in c.iter().zip(srcs) {
                acc += w * *sp.add(j);
            }
            *dp.add(j) = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn mix_avx512(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], len: usize) {
    mix(coef, srcs, dsts, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mix_avx2(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], len: usize) {
    mix(coef, srcs, dsts, len)
}

/// [`mix`] for the running CPU.
///
/// # Safety
/// As [`mix`].
unsafe fn mix_dispatch(coef: &[f32], srcs: &[*const f32], dsts: &[*mut f32], len: usize) {
    match conv_cpu::isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => mix_avx512(coef, srcs, dsts, len),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => mix_avx2(coef, srcs, dsts, len),
        _ => mix(coef, srcs, dsts, len),
    }
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]`, all row-major with row strides
/// `dst_rs`, `lhs_rs`, `rhs_rs`.
///
/// # Safety
/// Every pointer must cover its matrix.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_set(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        1,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Tiles per segment piece in the transforms (stack buffers).
const PIECE: usize = 256;

/// Phase `ph` of one input row (zero-padded by `pad` on the left and as
/// far as needed on the right): `dph[j·d + r] = x_pad[(j·m + ph)·d + r]`.
fn split_phase(row: &[f32], pad: usize, m: usize, d: usize, ph: usize, dph: &mut [f32]) {
    let t_in = row.len();
    if d == 1 {
        // dph[j] = x_pad[j·m + ph]: zeros, a strided run of the row, zeros.
        let lo = pad.saturating_sub(ph).div_ceil(m).min(dph.len());
        let hi = (t_in + pad)
            .saturating_sub(ph)
            .div_ceil(m)
            .clamp(lo, dph.len());
        dph[..lo].fill(0.0);
        if lo < hi {
            let src = row[lo * m + ph - pad..].iter().step_by(m);
            dph[lo..hi].iter_mut().zip(src).for_each(|(v, &x)| *v = x);
        }
        dph[hi..].fill(0.0);
        return;
    }
    for (jb, blk) in dph.chunks_mut(d).enumerate() {
        let j0 = (jb * m + ph) * d;
        if j0 >= pad && j0 - pad + blk.len() <= t_in {
            blk.copy_from_slice(&row[j0 - pad..j0 - pad + blk.len()]);
        } else {
            for (r, v) in blk.iter_mut().enumerate() {
                let j = j0 + r;
                *v = if j >= pad && j - pad < t_in {
                    row[j - pad]
                } else {
                    0.0
                };
            }
        }
    }
}

impl Winograd {
    /// Transforms the taps of a `[cout, cin, k]` conv laid out as
    /// [`conv_cpu::pack_taps`] does (`[k, cout, cin]`) for F(m, k).
    pub fn new(taps: &[f32], cout: usize, cin: usize, k: usize, m: usize) -> Self {
        assert_eq!(taps.len(), k * cout * cin);
        let (at, g, bt) = transforms(m, k);
        let n = m + k - 1;
        let cc = cout * cin;
        let mut gw = vec![0f32; n * cc];
        gw.par_chunks_mut(cc).enumerate().for_each(|(a, out)| {
            let row = &g[a * k..(a + 1) * k];
            let mut acc = vec![0f64; cc];
            for (j, &c) in row.iter().enumerate() {
                if c != 0.0 {
                    for (s, &w) in acc.iter_mut().zip(&taps[j * cc..(j + 1) * cc]) {
                        *s += c * w as f64;
                    }
                }
            }
            out.iter_mut().zip(&acc).for_each(|(o, &v)| *o = v as f32);
        });
        Self {
            m,
            n,
            cin,
            cout,
            at: at.iter().map(|&v| v as f32).collect(),
            bt: bt.iter().map(|&v| v as f32).collect(),
            gw,
        }
    }

    /// `y[co, o] = init + Σ_j Σ_ci w[co, ci, j] · x[ci, o + j·d − pad]`
    /// (zero outside the input) for `o < n_out`, as `conv_cpu::conv1d` with
    /// stride 1.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &self,
        x: &[f32],
        t_in: usize,
        dilation: usize,
        pad: usize,
        n_out: usize,
        init: Init,
        y: &mut [f32],
    ) {
        self.conv_cols(x, t_in, dilation, pad, n_out, init, y, 0)
    }

    /// [`Winograd::conv`] with `cols` tiles per work item (0: sized to L2).
    #[allow(clippy::too_many_arguments)]
    fn conv_cols(
        &self,
        x: &[f32],
        t_in: usize,
        dilation: usize,
        pad: usize,
        n_out: usize,
        init: Init,
        y: &mut [f32],
        cols: usize,
    ) {
        let (m, n, cin, cout) = (self.m, self.n, self.cin, self.cout);
        let d = dilation.max(1);
        assert!(x.len() >= cin * t_in && y.len() >= cout * n_out);
        if let Init::Bias(b) | Init::Add(Some(b)) = init {
            assert!(b.len() >= cout, "bias shorter than cout");
        }
        if n_out == 0 {
            return;
        }
        // Tile c = b·d + r (r < d): outputs (b·m + i)·d + r (i < m), inputs
        // at padded positions (b·m + l)·d + r (l < n). The input is split
        // into m phases of d-blocks, xs[ci][ph][j·d + r] = x_pad[(j·m + ph)·d + r],
        // so tap l of columns c.. reads xs[ci][l % m][(l / m)·d + c..]:
        // contiguous over columns whatever the dilation.
        let nbk = n_out.div_ceil(m * d);
        let ql = (nbk + (n - 1) / m + 1) * d;
        let nt = d * nbk;
        with_buf(&PHASES, cin * m * ql, |xs| {
            xs.par_chunks_mut(m * ql).enumerate().for_each(|(ci, dst)| {
                let row = &x[ci * t_in..(ci + 1) * t_in];
                for (ph, dph) in dst.chunks_mut(ql).enumerate() {
                    split_phase(row, pad, m, d, ph, dph);
                }
            });
            let xs: &[f32] = xs;
            let yp = SendPtr(y.as_mut_ptr());
            let bytes = (512 * 1024usize)
                .checked_div(cols)
                .unwrap_or(4 * n * (cin + cout));
            let work = conv_cpu::tiles(cout, nt, bytes);
            work.par_iter().for_each(|&(r0, r1, c0, c1)| {
                let (rows, nc) = (r1 - r0, c1 - c0);
                with_buf(&WORK, n * (cin + rows) * nc, |buf| {
                    let (u, mm) = buf.split_at_mut(n * cin * nc);
                    // SAFETY: every slice below stays inside xs, u, mm,
                    // gw or y's rows r0..r1 (outputs o < n_out); tiles
                    // partition y.
                    unsafe {
                        self.input_transform(xs, ql, d, c0, c1, u);
                        for a in 0..n {
                            gemm_set(
                                rows,
                                nc,
                                cin,
                                mm.as_mut_ptr().add(a * rows * nc),
                                nc,
                                self.gw.as_ptr().add((a * cout + r0) * cin),
                                cin,
                                u.as_ptr().add(a * cin * nc),
                                nc,
                            );
                        }
                        self.output_transform(mm, rows, r0, d, c0, c1, n_out, init, yp);
                    }
                });
            });
        });
    }

    /// `u[a][ci][c − c0] = Σ_l B^T[a][l] · xs[ci][l % m][(l / m)·d + c]` for
    /// columns c0..c1.
    ///
    /// # Safety
    /// `xs` is the phase split `[cin][m][ql]`, `u` holds `[n][cin][c1 − c0]`.
    unsafe fn input_transform(
        &self,
        xs: &[f32],
        ql: usize,
        d: usize,
        c0: usize,
        c1: usize,
        u: &mut [f32],
    ) {
        let (m, n, cin, nc) = (self.m, self.n, self.cin, c1 - c0);
        let mut srcs = [std::ptr::null::<f32>(); MAX_POINTS];
        let mut dsts = [std::ptr::null_mut::<f32>(); MAX_POINTS];
        for ci in 0..cin {
            for c in (c0..c1).step_by(PIECE) {
                let len = PIECE.min(c1 - c);
                for (l, sp) in srcs[..n].iter_mut().enumerate() {
                    *sp = xs.as_ptr().add((ci * m + l % m) * ql + (l / m) * d + c);
                }
                for (a, dp) in dsts[..n].iter_mut().enumerate() {
                    *dp = u.as_mut_ptr().add((a * cin + ci) * nc + c - c0);
                }
                mix_dispatch(&self.bt, &srcs[..n], &dsts[..n], len);
            }
        }
    }

    /// `y[r0 + row, (b·m + i)·d + r] = init + Σ_a A^T[i][a] · mm[a][row][c − c0]`
    /// for columns c = b·d + r in c0..c1.
    ///
    /// # Safety
    /// `mm` holds `[n][rows][c1 − c0]`; `y` is `[cout, n_out]`, written only
    /// in rows `r0..r0 + rows` at the outputs of columns c0..c1.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_transform(
        &self,
        mm: &[f32],
        rows: usize,
        r0: usize,
        d: usize,
        c0: usize,
        c1: usize,
        n_out: usize,
        init: Init,
        y: SendPtr,
    ) {
        let (m, n, nc) = (self.m, self.n, c1 - c0);
        let mut tmp = [0f32; MAX_POINTS * PIECE];
        let mut srcs = [std::ptr::null::<f32>(); MAX_POINTS];
        let mut dsts = [std::ptr::null_mut::<f32>(); MAX_POINTS];
        for (i, dp) in dsts[..m].iter_mut().enumerate() {
            *dp = tmp.as_mut_ptr().add(i * PIECE);
        }
        let keep = matches!(init, Init::Add(_));
        for row in 0..rows {
            let co = r0 + row;
            let yr = y.get().add(co * n_out);
            let bias = match init {
                Init::Bias(b) | Init::Add(Some(b)) => b[co],
                Init::Add(None) => 0.0,
            };
            for c in (c0..c1).step_by(PIECE) {
                let len = PIECE.min(c1 - c);
                for (a, sp) in srcs[..n].iter_mut().enumerate() {
                    *sp = mm.as_ptr().add((a * rows + row) * nc + c - c0);
                }
                mix_dispatch(&self.at, &srcs[..n], &dsts[..m], len);
                let put = |o: usize, src: &[f32]| {
                    let dst = std::slice::from_raw_parts_mut(yr.add(o), src.len());
                    if keep {
                        dst.iter_mut().zip(src).for_each(|(y, &v)| *y += bias + v);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(y, &v)| *y = bias + v);
                    }
                };
                if d == 1 {
                    // Column c + k holds the m consecutive outputs (c + k)·m + i:
                    // one contiguous run of outputs, interleaved from tmp.
                    let o0 = c * m;
                    if o0 >= n_out {
                        continue;
                    }
                    let cnt = (len * m).min(n_out - o0);
                    let dst = std::slice::from_raw_parts_mut(yr.add(o0), cnt);
                    match m {
                        2 => interleave::<2>(&tmp, dst, bias, keep),
                        3 => interleave::<3>(&tmp, dst, bias, keep),
                        _ => interleave_any(&tmp, m, dst, bias, keep),
                    }
                    continue;
                }
                for i in 0..m {
                    let vals = &tmp[i * PIECE..i * PIECE + len];
                    // Runs of columns in one block b: contiguous outputs.
                    let mut k = 0;
                    while k < len {
                        let (b, r) = ((c + k) / d, (c + k) % d);
                        let o = (b * m + i) * d + r;
                        if o >= n_out {
                            break;
                        }
                        let run = (d - r).min(len - k);
                        put(o, &vals[k..k + run.min(n_out - o)]);
                        k += run;
                    }
                }
            }
        }
    }
}

/// `dst[k·M + i] (+)= bias + tmp[i·PIECE + k]` (`+=` when `keep`): the
/// outputs of F(M, ·) tiles at dilation 1, as `output_transform` stores them.
#[inline(always)]
fn interleave<const M: usize>(tmp: &[f32], dst: &mut [f32], bias: f32, keep: bool) {
    let full = dst.len() / M;
    let (head, tail) = dst.split_at_mut(full * M);
    let rows: [&[f32]; M] = std::array::from_fn(|i| &tmp[i * PIECE..i * PIECE + full]);
    if keep {
        for (k, out) in head.chunks_exact_mut(M).enumerate() {
            for (i, y) in out.iter_mut().enumerate() {
                *y += bias + rows[i][k];
            }
        }
    } else {
        for (k, out) in head.chunks_exact_mut(M).enumerate() {
            for (i, y) in out.iter_mut().enumerate() {
                *y = bias + rows[i][k];
            }
        }
    }
    for (i, y) in tail.iter_mut().enumerate() {
        let v = tmp[i * PIECE + full];
        *y = if keep { *y + (bias + v) } else { bias + v };
    }
}

/// [`interleave`] for any `m`.
fn interleave_any(tmp: &[f32], m: usize, dst: &mut [f32], bias: f32, keep: bool) {
    for (j, y) in dst.iter_mut().enumerate() {
        let v = tmp[(j % m) * PIECE + j / m];
        *y = if keep { *y + (bias + v) } else { bias + v };
    }
}

/// A transposed conv with `k = 2·stride` (DAC's decoder upsampling; dilation
/// 1, outputs cropped by `pad` on the left) as Winograd F(2, 2) on its
/// polyphase form. Phase `r` of full output column `u` (output `u·s + r − pad`)
/// is `p[u] = A·x'[u] + B·x'[u + 1]` with `A = w[:, :, r + s]`, `B = w[:, :, r]`
/// and `x'[i] = x[i − 1]` (zero outside). Two neighbouring columns come from
/// three products on half the columns: `m1 = A·(x'[2v] − x'[2v+1])`,
/// `m2 = (A + B)·x'[2v+1]`, `m3 = B·(x'[2v+2] − x'[2v+1])`;
/// `p[2v] = m1 + m2`, `p[2v+1] = m2 + m3` (3/4 of the direct FLOPs).
#[derive(Debug, Clone)]
pub struct ConvT22 {
    /// `A`, `A + B`, `B`, each `[s·cout, cin]` with row `co·s + r`.
    w: [Vec<f32>; 3],
    s: usize,
    cin: usize,
    cout: usize,
}

impl ConvT22 {
    /// From per-tap weights `taps [k, cout, cin]` ([`conv_cpu::pack_taps`]
    /// of a transposed conv) with `k = 2·s`.
    pub fn new(taps: &[f32], cout: usize, cin: usize, s: usize) -> Self {
        assert!(
            s >= 1 && taps.len() == 2 * s * cout * cin,
            "ConvT22: k must be 2·stride"
        );
        let rows = s * cout;
        let mut w = [
            vec![0f32; rows * cin],
            vec![0f32; rows * cin],
            vec![0f32; rows * cin],
        ];
        let tap = |j: usize, co: usize| &taps[(j * cout + co) * cin..(j * cout + co + 1) * cin];
        for co in 0..cout {
            for r in 0..s {
                let row = (co * s + r) * cin..(co * s + r + 1) * cin;
                let (a, b) = (tap(r + s, co), tap(r, co));
                w[0][row.clone()].copy_from_slice(a);
                w[2][row.clone()].copy_from_slice(b);
                for ((d, &a), &b) in w[1][row].iter_mut().zip(a).zip(b) {
                    *d = a + b;
                }
            }
        }
        Self { w, s, cin, cout }
    }

    /// `y [cout, n_out] = init + convT(x [cin, t])`, outputs `o` being full
    /// outputs `o + pad` (`o + pad < (t + 1)·s`).
    pub fn conv(&self, x: &[f32], t: usize, pad: usize, n_out: usize, init: Init, y: &mut [f32]) {
        let (s, cin, cout) = (self.s, self.cin, self.cout);
        assert!(x.len() >= cin * t && y.len() >= cout * n_out && t > 0);
        assert!(
            n_out + pad <= (t + 1) * s,
            "ConvT22: output past the signal"
        );
        if let Init::Bias(b) | Init::Add(Some(b)) = init {
            assert!(b.len() >= cout, "bias shorter than cout");
        }
        let nv = (t + 1).div_ceil(2);
        // The transformed inputs, whole signal: d_j [cin, nv].
        let mut dx = vec![0f32; 3 * cin * nv];
        {
            let (d0, rest) = dx.split_at_mut(cin * nv);
            let (d1, d2) = rest.split_at_mut(cin * nv);
            d0.par_chunks_mut(nv)
                .zip(d1.par_chunks_mut(nv))
                .zip(d2.par_chunks_mut(nv))
                .zip(x[..cin * t].par_chunks_exact(t))
                .for_each(|(((d0, d1), d2), row)| transform22(row, d0, d1, d2));
        }
        let rows = s * cout;
        let yp = SendPtr(y.as_mut_ptr());
        let work = conv_cpu::tiles(rows, nv, 4 * 3 * (cin + rows));
        let dx = &dx;
        work.par_iter()
            .for_each_init(Vec::new, |m: &mut Vec<f32>, &(r0, r1, c0, c1)| {
                let (nr, nc) = (r1 - r0, c1 - c0);
                m.resize(3 * nr * nc, 0.0);
                for j in 0..3 {
                    // SAFETY: w_j rows r0..r1 are [nr, cin], d_j columns c0..c1
                    // of [cin, nv], m_j is [nr, nc]: all in bounds.
                    unsafe {
                        gemm::gemm(
                            nr,
                            nc,
                            cin,
                            m.as_mut_ptr().add(j * nr * nc),
                            1,
                            nc as isize,
                            false,
                            self.w[j].as_ptr().add(r0 * cin),
                            1,
                            cin as isize,
                            dx.as_ptr().add(j * cin * nv + c0),
                            1,
                            nv as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                let (m1, rest) = m.split_at(nr * nc);
                let (m2, m3) = rest.split_at(nr * nc);
                // Per output channel, its phases in this tile: each pair `jv`
                // gives the contiguous outputs of full columns 2v and 2v + 1.
                for co in r0 / s..r1.div_ceil(s) {
                    let (rlo, rhi) = ((co * s).max(r0) - co * s, ((co + 1) * s).min(r1) - co * s);
                    let (bias, keep) = match init {
                        Init::Bias(b) => (b[co], false),
                        Init::Add(b) => (b.map_or(0.0, |b| b[co]), true),
                    };
                    // SAFETY: row co of y; this tile writes only phases
                    // rlo..rhi of full columns 2·c0 .. 2·c1, no other tile
                    // writes those.
                    let out =
                        unsafe { std::slice::from_raw_parts_mut(yp.get().add(co * n_out), n_out) };
                    let i0 = co * s + rlo - r0;
                    for jv in 0..nc {
                        let f = 2 * (c0 + jv) * s;
                        let inside = f >= pad && f + 2 * s <= pad + n_out;
                        for r in rlo..rhi {
                            let i = (i0 + r - rlo) * nc + jv;
                            let (a, b, c) = (m1[i], m2[i], m3[i]);
                            for (f, v) in [(f + r, a + b), (f + s + r, b + c)] {
                                if inside || (f >= pad && f - pad < n_out) {
                                    let o = &mut out[f - pad];
                                    *o = if keep { *o + (bias + v) } else { bias + v };
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// F(2, 2) input transform of one row `x` (length `t`): for pairs `v`,
/// `d0 = x'[2v] − x'[2v+1]`, `d1 = x'[2v+1]`, `d2 = x'[2v+2] − x'[2v+1]`
/// with `x'[i] = x[i − 1]`, zero outside.
fn transform22(x: &[f32], d0: &mut [f32], d1: &mut [f32], d2: &mut [f32]) {
    let t = x.len();
    let xp = |i: usize| if i >= 1 && i <= t { x[i - 1] } else { 0.0 };
    let edge = |v: usize, d0: &mut f32, d1: &mut f32, d2: &mut f32| {
        let (a, c, e) = (xp(2 * v), xp(2 * v + 1), xp(2 * v + 2));
        *d0 = a - c;
        *d1 = c;
        *d2 = e - c;
    };
    let nv = d0.len();
    // Interior pairs 1 ≤ v < hi read x[2v − 1], x[2v], x[2v + 1] in bounds.
    let hi = (t / 2).clamp(1, nv);
    if nv > 0 {
        edge(0, &mut d0[0], &mut d1[0], &mut d2[0]);
    }
    if hi > 1 {
        let xs = &x[1..2 * hi];
        for (((d0, d1), d2), w) in d0[1..hi]
            .iter_mut()
            .zip(&mut d1[1..hi])
            .zip(&mut d2[1..hi])
            .zip(xs.chunks_exact(2).zip(xs[2..].iter().step_by(2)))
        {
            let (a, c, e) = (w.0[0], w.0[1], *w.1);
            *d0 = a - c;
            *d1 = c;
            *d2 = e - c;
        }
    }
    for v in hi..nv {
        edge(v, &mut d0[v], &mut d1[v], &mut d2[v]);
    }
}

/// Tile sizes from env `var`: one number for every layer or a
/// comma-separated list (one per layer, the last repeated); `default` when
/// unset or unparsable (never empty).
pub fn env_ms(var: &str, default: &[usize]) -> Vec<usize> {
    let parsed: Option<Vec<usize>> = std::env::var(var)
        .ok()
        .and_then(|v| v.split(',').map(|p| p.trim().parse().ok()).collect());
    match parsed {
        Some(v) if !v.is_empty() => v,
        _ => default.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::conv_cpu::tests::rand;
    use crate::codec::conv_cpu::{conv1d, pack_taps, Geom};

    /// CPU seconds of this process so far (all its threads).
    fn cpu_s() -> f64 {
        let mut ns = 0u64;
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
            }
        }
        ns as f64 * 1e-9
    }

    /// Not a test: CPU time of the per-tap conv and of F(m, 7) at the real
    /// DAC decoder's residual conv shapes (1 s of 16 kHz audio), on one
    /// thread, printed.
    /// `cargo test --release -p voxtok-models --lib winograd_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn winograd_speed() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let best = |f: &mut (dyn FnMut() + Send)| {
            pool.install(|| {
                f();
                (0..5)
                    .map(|_| {
                        let t0 = cpu_s();
                        f();
                        cpu_s() - t0
                    })
                    .fold(f64::INFINITY, f64::min)
            })
        };
        for (c, t) in [(768usize, 256usize), (384, 2048), (192, 8192), (96, 16384)] {
            let x = rand(c * t, 1);
            let w = rand(c * c * 7, 2);
            let b = rand(c, 3);
            let taps = pack_taps(&w, c, c, 7, false);
            for d in [1usize, 9] {
                let g = Geom {
                    cin: c,
                    cout: c,
                    k: 7,
                    stride: 1,
                    dilation: d,
                    pad: 3 * d,
                    t_in: t,
                    n_out: t,
                };
                let mut y = vec![0f32; c * t];
                let flop = 2.0 * 7.0 * (c * c * t) as f64;
                let t0 = best(&mut || conv1d(&g, &x, &taps, Init::Bias(&b), &mut y));
                print!(
                    "c {c:4} t {t:5} d {d}: per-tap {:6.1} ms ({:4.1} GFLOP/s)",
                    t0 * 1e3,
                    flop / t0 / 1e9
                );
                for m in [2usize, 3] {
                    let wg = Winograd::new(&taps, c, c, 7, m);
                    for cols in [0usize, 64, 128, 256, 512] {
                        let tw = best(&mut || {
                            wg.conv_cols(&x, t, d, 3 * d, t, Init::Bias(&b), &mut y, cols)
                        });
                        print!(" | F({m}) {cols}: x{:.2}", t0 / tw);
                    }
                }
                println!();
            }
        }
    }

    /// Tile sizes from the environment: a number, a list, junk (the default).
    #[test]
    fn env_ms_parses() {
        let var = "VOXTOK_TEST_WINOGRAD_ENV_MS";
        std::env::remove_var(var);
        assert_eq!(env_ms(var, &[2, 3]), [2, 3]);
        std::env::set_var(var, "0");
        assert_eq!(env_ms(var, &[2, 3]), [0]);
        std::env::set_var(var, " 2, 2,3 ");
        assert_eq!(env_ms(var, &[2]), [2, 2, 3]);
        std::env::set_var(var, "2,x");
        assert_eq!(env_ms(var, &[2, 3]), [2, 3]);
        std::env::remove_var(var);
    }

    /// The transforms reproduce a correlation exactly in f64.
    #[test]
    fn transforms_are_exact() {
        for (m, k) in [(2, 7), (3, 7), (4, 7), (2, 3), (1, 7), (5, 7)] {
            let n = m + k - 1;
            let (at, g, bt) = transforms(m, k);
            let d: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let w: Vec<f64> = (0..k).map(|j| (j as f64 * 1.3 + 0.2).cos()).collect();
            let gw: Vec<f64> = (0..n)
                .map(|a| (0..k).map(|j| g[a * k + j] * w[j]).sum())
                .collect();
            let bd: Vec<f64> = (0..n)
                .map(|a| (0..n).map(|l| bt[a * n + l] * d[l]).sum())
                .collect();
            for i in 0..m {
                let y: f64 = (0..n).map(|a| at[i * n + a] * gw[a] * bd[a]).sum();
                let want: f64 = (0..k).map(|j| w[j] * d[i + j]).sum();
                assert!(
                    (y - want).abs() < 1e-9,
                    "F({m},{k}) output {i}: {y} vs {want}"
                );
            }
        }
    }

    /// Against `conv_cpu::conv1d` on odd shapes: dilations 1/3/9, odd and
    /// short lengths (shorter than one tile), "same" and other paddings,
    /// one channel, outputs split over rows and column blocks, both init
    /// forms. Error relative to the output's largest magnitude ≤ 2e-6 for
    /// m = 2, ≤ 1e-5 for m = 3, 4 (the plain f32 conv itself is ~3e-7).
    #[test]
    fn winograd_equals_conv1d() {
        // (cin, cout, k, dilation, pad, t_in)
        let cases: &[(usize, usize, usize, usize, usize, usize)] = &[
            (3, 5, 7, 1, 3, 50),
            (4, 6, 7, 3, 9, 41),
            (5, 3, 7, 9, 27, 30),
            (8, 8, 7, 9, 27, 5),
            (1, 1, 7, 1, 3, 1),
            (6, 4, 7, 3, 0, 40),
            (7, 9, 7, 1, 5, 33),
            (64, 48, 7, 1, 3, 3001),
            (96, 96, 7, 9, 27, 2047),
            (40, 200, 7, 3, 9, 301),
            (16, 12, 3, 2, 2, 77),
        ];
        for m in [2usize, 3, 4] {
            let tol = if m == 2 { 2e-6 } else { 1e-5 };
            for (i, &(cin, cout, k, d, pad, t)) in cases.iter().enumerate() {
                let x = rand(cin * t, i as u64);
                let scale = 1.0 / ((cin * k) as f32).sqrt();
                let w: Vec<f32> = rand(cout * cin * k, 100 + i as u64)
                    .iter()
                    .map(|v| v * scale)
                    .collect();
                let b = rand(cout, 200 + i as u64);
                let n_out = Geom::conv_len(t, k, 1, d, pad);
                let g = Geom {
                    cin,
                    cout,
                    k,
                    stride: 1,
                    dilation: d,
                    pad,
                    t_in: t,
                    n_out,
                };
                let taps = pack_taps(&w, cout, cin, k, false);
                let wg = Winograd::new(&taps, cout, cin, k, m);
                let r = rand(cout * n_out, 300 + i as u64);
                for (name, init) in [
                    ("bias", Init::Bias(&b)),
                    ("residual", Init::Add(Some(&b))),
                    ("residual, no bias", Init::Add(None)),
                ] {
                    let start = if let Init::Bias(_) = init {
                        vec![f32::NAN; cout * n_out]
                    } else {
                        r.clone()
                    };
                    let mut want = start.clone();
                    conv1d(&g, &x, &taps, init, &mut want);
                    let mut got = start;
                    wg.conv(&x, t, d, pad, n_out, init, &mut got);
                    let top = want.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        err <= tol * top,
                        "F({m}) case {i} {:?} {name}: max abs err {err} (max |y| {top})",
                        cases[i]
                    );
                }
            }
        }
    }

    /// [`ConvT22`] against the per-tap transposed conv
    /// ([`conv_cpu::conv_transpose1d`]) for `k = 2·s`, DAC's crop
    /// `ceil(s / 2)` and none, odd and even strides, lengths 1 .. 41 (both
    /// parities, the edge pairs; 300: several column tiles), row tiles, bias and
    /// residual-add inits: within 2e-6 of the output scale. A swapped tap
    /// or a misplaced phase fails it.
    #[test]
    fn convt22_equals_per_tap() {
        use crate::codec::conv_cpu::conv_transpose1d;
        let mut seed = 7u64;
        for &(cin, cout, s) in &[
            (5, 3, 1),
            (8, 6, 2),
            (7, 4, 3),
            (16, 40, 4),
            (12, 5, 5),
            (9, 3, 8),
        ] {
            let k = 2 * s;
            seed += 1;
            let w = rand(cin * cout * k, seed);
            let taps = pack_taps(&w, cout, cin, k, true);
            let bias = rand(cout, seed + 100);
            let wino = ConvT22::new(&taps, cout, cin, s);
            for t in (1..=12).chain([17, 40, 41, 300]) {
                let x = rand(cin * t, seed * 31 + t as u64);
                for pad in [0, s.div_ceil(2)] {
                    let n_out = (t + 1) * s - 2 * pad;
                    let g = Geom {
                        cin,
                        cout,
                        k,
                        stride: s,
                        dilation: 1,
                        pad,
                        t_in: t,
                        n_out,
                    };
                    let res = rand(cout * n_out, seed + 7);
                    for add in [false, true] {
                        let init = if add {
                            Init::Add(Some(&bias))
                        } else {
                            Init::Bias(&bias)
                        };
                        let mut want = res.clone();
                        conv_transpose1d(&g, &x, &taps, init, &mut want);
                        let mut got = res.clone();
                        wino.conv(&x, t, pad, n_out, init, &mut got);
                        let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let err = want
                            .iter()
                            .zip(&got)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err <= 2e-6 * top.max(1.0),
                            "cin {cin} cout {cout} s {s} t {t} pad {pad} add {add}: err {err} (max {top})"
                        );
                    }
                }
            }
        }
    }
}
