//! The high-rate tail of a SEANet decoder (transposed convs, residual
//! blocks, ELUs and the final conv) run per output time block: each block
//! recomputes the few columns of halo it needs at every layer, and every
//! intermediate stays in per-thread scratch slabs sized for L2, so memory
//! sees the tail's input once and its output once instead of every layer's
//! activations (tens of MB each at 24 kHz) being written and read again.
//!
//! Every value comes from the same kernels ([`Direct::block_ld`],
//! [`elu_avx2`]'s expression, [`epilogue_avx2`]) with the same FMA order as
//! [`super::run_layers`]: the same bits, except for a transposed conv with
//! fewer than 128 input channels, which `run_layers` runs as a GEMM per tap
//! (`conv_cpu`) and the chain as the polyphase direct conv (a different
//! summation order: equal within float rounding, about 1e-7 relative).

use super::{epilogue_avx2, fuse_enabled, ConvT, Direct, Layer, PadMode, Wino22, SMALL_M};
use crate::runtime::SendPtr;
use candle_core::{DType, Result, Tensor};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A transposed conv as its polyphase stride-1 direct conv (`s·out` rows,
/// `m = ceil(k/s)` taps over the input zero-padded by `m − 1`) plus the
/// interleave and trim.
struct Up<'a> {
    d: UpKernel<'a>,
    cin: usize,
    cout: usize,
    s: usize,
    m: usize,
    k: usize,
    tl: usize,
    tr: usize,
}

/// How a transposed conv's polyphase columns are computed.
enum UpKernel<'a> {
    /// The `m`-tap direct conv.
    Poly(Cow<'a, Direct>),
    /// Two taps as F(2, 2), the layer's own [`Wino22`] (so the same bits
    /// as [`ConvT::forward`], which then runs it too).
    Wino(&'a Wino22),
}

/// Padding of a stride-1 conv: `left` of its `span = k_eff − 1` columns on
/// the left, the rest on the right, in `mode`.
#[derive(Clone, Copy)]
struct Pad {
    span: usize,
    left: usize,
    mode: PadMode,
}

/// A residual block (ELU-padded conv1 + ELU, conv2 + input or 1x1
/// shortcut), then ELU when `elu_out` (a following [`Layer::Elu`]).
struct Res<'a> {
    d1: &'a Direct,
    d2: &'a Direct,
    ds: Option<&'a Direct>,
    c: usize,
    hid: usize,
    pad: Pad,
    elu_out: bool,
}

/// The final stride-1 conv (no ELU on its input: it ran in the block before).
struct Last<'a> {
    d: &'a Direct,
    cin: usize,
    cout: usize,
    pad: Pad,
}

enum Stage<'a> {
    Up(Up<'a>),
    Res(Res<'a>),
    Last(Last<'a>),
}

impl Stage<'_> {
    fn cout(&self) -> usize {
        match self {
            Stage::Up(u) => u.cout,
            Stage::Res(r) => r.c,
            Stage::Last(l) => l.cout,
        }
    }

    fn cin(&self) -> usize {
        match self {
            Stage::Up(u) => u.cin,
            Stage::Res(r) => r.c,
            Stage::Last(l) => l.cin,
        }
    }

    /// Output length for input length `t`.
    fn len_out(&self, t: usize) -> usize {
        match self {
            Stage::Up(u) => (t - 1) * u.s + u.k - u.tl - u.tr,
            _ => t,
        }
    }

    /// Input columns `[a, b)` (within `0..t`) that outputs `[oa, ob)` read,
    /// the sources of reflected padding included.
    fn need(&self, oa: usize, ob: usize, t: usize) -> (usize, usize) {
        let (lo, hi, reflect) = match self {
            Stage::Up(u) => {
                let (u0, u1) = u.phase_cols(oa, ob);
                if let UpKernel::Wino(_) = u.d {
                    // Pairs of columns from an even one: x' columns
                    // ue ..= ue + 2·nv, x' shifted right by one.
                    let (ue, nv) = wino_pairs(u0, u1);
                    (ue as isize - 1, (ue + 2 * nv) as isize, false)
                } else {
                    (u0 as isize - (u.m as isize - 1), u1 as isize, false)
                }
            }
            Stage::Res(Res { pad, .. }) | Stage::Last(Last { pad, .. }) => (
                oa as isize - pad.left as isize,
                (ob + pad.span - pad.left) as isize,
                pad.mode == PadMode::Reflect,
            ),
        };
        let ti = t as isize;
        let (mut a, mut b) = (lo.max(0), hi.min(ti));
        if reflect {
            if lo < 0 {
                b = b.max((1 - lo).min(ti));
            }
            if hi > ti {
                a = a.min((2 * (ti - 1) - (hi - 1)).max(0));
            }
        }
        (a as usize, b as usize)
    }
}

impl Up<'_> {
    /// Phase columns `[u0, u1)` holding trimmed outputs `[oa, ob)`.
    fn phase_cols(&self, oa: usize, ob: usize) -> (usize, usize) {
        ((oa + self.tl) / self.s, (ob - 1 + self.tl) / self.s + 1)
    }
}

/// The first column (even) and the number of F(2, 2) column pairs covering
/// phase columns `[u0, u1)`.
fn wino_pairs(u0: usize, u1: usize) -> (usize, usize) {
    let ue = u0 & !1;
    (ue, (u1 - ue).div_ceil(2))
}

/// The polyphase direct conv of `ct` (`[in, out, k]`, groups 1): the one
/// built at load (from 128 input channels), else built here.
fn poly_of(ct: &ConvT) -> Result<Option<Cow<'_, Direct>>> {
    if let Some(d) = &ct.poly {
        return Ok(Some(Cow::Borrowed(d)));
    }
    let Some((_, b)) = &ct.taps else {
        return Ok(None);
    };
    Ok(super::poly_direct(&ct.weight, b, ct.stride)?.map(Cow::Owned))
}

/// The stages of `layers` (a suffix starting at a transposed conv), or
/// `None` where one is not supported.
fn stages(layers: &[Layer]) -> Result<Option<Vec<Stage<'_>>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let last = i + 1 == layers.len();
        match &layers[i] {
            Layer::ConvT(ct) if !last => {
                let (cin, cout, k) = ct.weight.dims3()?;
                if ct.norm.is_some() || ct.groups != 1 || k < ct.stride {
                    return Ok(None);
                }
                let d = match &ct.wino {
                    Some(w) => UpKernel::Wino(w),
                    None => match poly_of(ct)? {
                        Some(d) => UpKernel::Poly(d),
                        None => return Ok(None),
                    },
                };
                out.push(Stage::Up(Up {
                    d,
                    cin,
                    cout,
                    s: ct.stride,
                    m: k.div_ceil(ct.stride),
                    k,
                    tl: ct.trim_left,
                    tr: ct.trim_right,
                }));
            }
            Layer::Res(r) if !last => {
                let c1 = &r.conv1;
                let Some((d1, d2, ds)) = r.block_kernels() else {
                    return Ok(None);
                };
                let (c, hid) = (d1.cin, d1.cout);
                let elu_out = matches!(layers.get(i + 1), Some(Layer::Elu));
                let pt = c1.padding_total();
                let left = if c1.causal { pt } else { pt - pt / 2 };
                out.push(Stage::Res(Res {
                    d1,
                    d2,
                    ds,
                    c,
                    hid,
                    pad: Pad {
                        span: c1.k_eff - 1,
                        left,
                        mode: c1.mode,
                    },
                    elu_out,
                }));
                if elu_out {
                    i += 1;
                }
            }
            Layer::Conv(c) if last => {
                let Some(d) = &c.direct else { return Ok(None) };
                if c.stride != 1 || c.norm.is_some() {
                    return Ok(None);
                }
                let pt = c.padding_total();
                let left = if c.causal { pt } else { pt - pt / 2 };
                out.push(Stage::Last(Last {
                    d,
                    cin: d.cin,
                    cout: d.cout,
                    pad: Pad {
                        span: c.k_eff - 1,
                        left,
                        mode: c.mode,
                    },
                }));
            }
            _ => return Ok(None),
        }
        i += 1;
    }
    Ok(Some(out))
}

/// Index of the first layer of the chain: the `ups`-th transposed conv
/// from the end (or the earliest one before an unsupported layer), where
/// `layers` ends in a stride-1 conv; `None` otherwise.
pub(super) fn suffix_start(layers: &[Layer], ups: usize) -> Option<usize> {
    let Some(Layer::Conv(c)) = layers.last() else {
        return None;
    };
    if ups == 0 {
        return None;
    }
    if c.stride != 1 || c.direct.is_none() || c.norm.is_some() {
        return None;
    }
    let mut start = None;
    let mut seen = 0;
    for i in (0..layers.len() - 1).rev() {
        match &layers[i] {
            // Measured: a wide transposed conv is slower in the chain (its
            // polyphase weights, streamed again for every block's few
            // columns, do not fit in L2).
            Layer::ConvT(ct) if poly_bytes(ct) > chain_wmax() => break,
            Layer::ConvT(_) => {
                start = Some(i);
                seen += 1;
                if seen == ups {
                    break;
                }
            }
            Layer::Res(_) => {}
            Layer::Elu if matches!(layers.get(i.wrapping_sub(1)), Some(Layer::Res(_))) => {}
            _ => break,
        }
    }
    start
}

/// Bytes of `ct`'s polyphase weights (`s·out × in × ceil(k/s)` floats).
fn poly_bytes(ct: &ConvT) -> usize {
    let (cin, cout, k) = ct.weight.dims3().unwrap_or_default();
    4 * ct.stride * cout * cin * k.div_ceil(ct.stride.max(1))
}

/// Largest polyphase weight of a transposed conv in the chain
/// (`VOXTOK_SEANET_DEC_CHAIN_WMAX` bytes, default 512 KiB: EnCodec's
/// 128 -> 64 and 64 -> 32, Mimi's 128 -> 64).
fn chain_wmax() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("VOXTOK_SEANET_DEC_CHAIN_WMAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512 << 10)
    })
}

/// Output columns per block (`VOXTOK_SEANET_DEC_CHAIN_COLS`, default 1024).
pub(super) fn chain_cols() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("VOXTOK_SEANET_DEC_CHAIN_COLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v| v > 0)
            .unwrap_or(1024)
    })
}

/// Most transposed convs in the chain (`VOXTOK_SEANET_DEC_CHAIN_UPS`,
/// default 8: as many as [`chain_wmax`] admits), 0 when `VOXTOK_SEANET_DEC_CHAIN=0` or `VOXTOK_SEANET_FUSE=0`.
pub(super) fn chain_ups() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        let on = std::env::var("VOXTOK_SEANET_DEC_CHAIN").map_or(true, |v| v != "0");
        let ups = std::env::var("VOXTOK_SEANET_DEC_CHAIN_UPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        if on && fuse_enabled() {
            ups
        } else {
            0
        }
    })
}

/// True when whole-signal decodes of a stack ending like a SEANet decoder
/// go through the chain (Mimi then skips its pieced decode).
pub fn enabled() -> bool {
    chain_ups() > 0
}

/// Per-thread scratch: two stage outputs (ping-pong) and the slabs of one
/// stage (padded input, conv1 output, shortcut, phases).
#[derive(Default)]
struct Scratch {
    io: [Vec<f32>; 2],
    e: Vec<f32>,
    h: Vec<f32>,
    r: Vec<f32>,
    ph: Vec<f32>,
    ranges: Vec<(usize, usize)>,
}

/// A stage's input: `[c, ld]` columns holding indices `a..` of a signal of
/// length `t`.
#[derive(Clone, Copy)]
struct In<'a> {
    x: &'a [f32],
    ld: usize,
    a: usize,
    t: usize,
}

/// Runs `layers` (a chain found by [`suffix_start`]) over `xs` `[B, C, T]`,
/// block by block; `None` where the chain does not apply (the caller runs
/// the layers one by one).
pub(super) fn run(layers: &[Layer], xs: &Tensor, cols: usize) -> Result<Option<Tensor>> {
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(st) = stages(layers)? else {
        return Ok(None);
    };
    if !matches!(st.last(), Some(Stage::Last(_))) {
        return Ok(None);
    }
    let (b, c, t0) = xs.dims3()?;
    if t0 == 0 || st[0].cin() != c {
        return Ok(None);
    }
    // Lengths, and the whole-signal path's conditions (its small-signal
    // forms use other kernels; reflect shorter than its padding pads
    // differently).
    let mut lens = vec![t0];
    for (j, s) in st.iter().enumerate() {
        let t = lens[j];
        if j > 0 && s.cin() != st[j - 1].cout() {
            return Ok(None);
        }
        if let Stage::Res(Res { pad, .. }) | Stage::Last(Last { pad, .. }) = s {
            let right = pad.span - pad.left;
            if (b == 1 && t <= SMALL_M)
                || (pad.mode == PadMode::Reflect && t <= pad.left.max(right))
            {
                return Ok(None);
            }
        }
        lens.push(s.len_out(t));
    }
    let tn = *lens.last().expect("stages");
    let cn = st.last().expect("stages").cout();
    let xs = xs.contiguous()?;
    let mut y = vec![0f32; b * cn * tn];
    let cols = cols.clamp(1, tn);
    let nblk = tn.div_ceil(cols);
    let yp = SendPtr(y.as_mut_ptr());
    // Per-stage thread time with `VOXTOK_CODEC_PROFILE=1`.
    let times: Option<Vec<AtomicU64>> =
        super::profile_enabled().then(|| st.iter().map(|_| AtomicU64::new(0)).collect());
    let done = super::conv_cpu::with_f32(&xs, |x| {
        use rayon::prelude::*;
        let go = |sc: &mut Scratch, i: usize| {
            let (bi, o0) = (i / nblk, (i % nblk) * cols);
            let o1 = (o0 + cols).min(tn);
            // Output ranges per stage, back to front.
            sc.ranges.clear();
            sc.ranges.resize(st.len() + 1, (0, 0));
            sc.ranges[st.len()] = (o0, o1);
            for j in (0..st.len()).rev() {
                let (oa, ob) = sc.ranges[j + 1];
                sc.ranges[j] = st[j].need(oa, ob, lens[j]);
            }
            let mut input = In {
                x: &x[bi * c * t0..(bi + 1) * c * t0],
                ld: t0,
                a: 0,
                t: t0,
            };
            let Scratch {
                io,
                e,
                h,
                r,
                ph,
                ranges,
            } = sc;
            for (j, s) in st.iter().enumerate() {
                let (oa, ob) = ranges[j + 1];
                let w = ob - oa;
                let _timer = Timer::start(&times, j);
                if let Stage::Last(l) = s {
                    // SAFETY: blocks write disjoint columns of `y`.
                    unsafe {
                        let yb = yp.get().add(bi * cn * tn + oa);
                        last(l, input, oa, w, e, yb, tn);
                    }
                    break;
                }
                // Stage j writes io[j % 2] and reads io[(j + 1) % 2] (or `x`).
                let dst = &mut io[j % 2];
                dst.resize(s.cout() * w, 0.0);
                // SAFETY: the slabs are sized for the kernels' reads.
                unsafe {
                    match s {
                        Stage::Up(u) => match &u.d {
                            UpKernel::Poly(d) => up(u, d, input, oa, ob, e, ph, dst),
                            UpKernel::Wino(wz) => up_wino(u, wz, input, oa, ob, e, h, ph, dst),
                        },
                        Stage::Res(rb) => res(rb, input, oa, w, e, h, r, dst),
                        Stage::Last(_) => unreachable!(),
                    }
                }
                let o = &io[j % 2];
                input = In {
                    // SAFETY: `io[j % 2]` is not written until stage j + 2,
                    // after this view's last use at stage j + 1.
                    x: unsafe { std::slice::from_raw_parts(o.as_ptr(), o.len()) },
                    ld: w,
                    a: oa,
                    t: lens[j + 1],
                };
            }
        };
        let n = b * nblk;
        if n > 1 && rayon::current_num_threads() > 1 {
            (0..n).into_par_iter().for_each_init(Scratch::default, go);
        } else {
            let mut sc = Scratch::default();
            (0..n).for_each(|i| go(&mut sc, i));
        }
    });
    if done.is_none() {
        return Ok(None);
    }
    if let Some(times) = &times {
        for (j, (s, ns)) in st.iter().zip(times).enumerate() {
            let what = match s {
                Stage::Up(u) => format!("convT {}->{} /{}", u.cin, u.cout, u.s),
                Stage::Res(r) => format!("res {}", r.c),
                Stage::Last(l) => format!("conv {}->{}", l.cin, l.cout),
            };
            let ms = ns.load(Ordering::Relaxed) as f64 * 1e-6;
            eprintln!("codec-profile    dec-chain stage {j} {what:<20} {ms:>8.3} ms (thread time)");
        }
    }
    Ok(Some(Tensor::from_vec(y, (b, cn, tn), xs.device())?))
}

/// Adds the time until drop to `times[j]` (when profiling).
struct Timer<'a>(Option<(&'a AtomicU64, Instant)>);

impl<'a> Timer<'a> {
    fn start(times: &'a Option<Vec<AtomicU64>>, j: usize) -> Self {
        Self(times.as_ref().map(|t| (&t[j], Instant::now())))
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if let Some((t, t0)) = self.0 {
            t.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// Input index read by padded column `p` (`p` may be out of `0..t`), or
/// `None` for a zero.
#[inline]
fn src_index(p: isize, t: usize, mode: PadMode) -> Option<usize> {
    let ti = t as isize;
    if (0..ti).contains(&p) {
        return Some(p as usize);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Replicate => Some(if p < 0 { 0 } else { t - 1 }),
        PadMode::Reflect => Some(if p < 0 {
            (-p) as usize
        } else {
            (2 * (ti - 1) - p) as usize
        }),
    }
}

/// `e [c, w + span]`: the padded input columns `oa − left ..` of `input`,
/// then ELU in place when `elu`.
unsafe fn gather(input: In, c: usize, pad: Pad, oa: usize, w: usize, elu: bool, e: &mut Vec<f32>) {
    let ew = w + pad.span;
    e.resize(c * ew, 0.0);
    let p0 = oa as isize - pad.left as isize;
    // Columns inside the signal: [lo, hi).
    let lo = ((-p0).max(0) as usize).min(ew);
    let hi = ((input.t as isize - p0).max(0) as usize).clamp(lo, ew);
    for (ci, dst) in e.chunks_exact_mut(ew).enumerate() {
        let row = &input.x[ci * input.ld..];
        if hi > lo {
            let s0 = (p0 + lo as isize) as usize - input.a;
            dst[lo..hi].copy_from_slice(&row[s0..s0 + hi - lo]);
        }
        for j in (0..lo).chain(hi..ew) {
            dst[j] = match src_index(p0 + j as isize, input.t, pad.mode) {
                Some(k) => row[k - input.a],
                None => 0.0,
            };
        }
        #[cfg(target_arch = "x86_64")]
        if elu {
            epilogue_avx2(dst, None, true);
        }
    }
}

/// Transposed conv outputs `[oa, ob)` into `out [cout, ob − oa]`.
#[allow(clippy::too_many_arguments)]
unsafe fn up(
    u: &Up,
    d: &Direct,
    input: In,
    oa: usize,
    ob: usize,
    xp: &mut Vec<f32>,
    ph: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (u0, u1) = u.phase_cols(oa, ob);
    let wu = u1 - u0;
    let lp = wu + u.m - 1;
    // The input zero-padded by m − 1: padded column j reads index u0 + j − (m − 1).
    gather(
        input,
        u.cin,
        Pad {
            span: u.m - 1,
            left: u.m - 1,
            mode: PadMode::Constant,
        },
        u0,
        wu,
        false,
        xp,
    );
    debug_assert_eq!(xp.len(), u.cin * lp);
    ph.resize(u.s * u.cout * wu, 0.0);
    d.block_ld(xp, lp, ph.as_mut_ptr(), wu, wu);
    let w = ob - oa;
    let sh = (oa + u.tl) % u.s;
    for co in 0..u.cout {
        let dst = &mut out[co * w..(co + 1) * w];
        // Phase r: outputs j0, j0 + s, … from consecutive phase columns.
        for r in 0..u.s {
            let j0 = (r + u.s - sh) % u.s;
            if j0 >= w {
                continue;
            }
            let q0 = (oa + j0 + u.tl) / u.s - u0;
            let src = &ph[(r * u.cout + co) * wu + q0..(r * u.cout + co + 1) * wu];
            debug_assert!((w - j0).div_ceil(u.s) <= src.len());
            for (d, &v) in dst[j0..].iter_mut().step_by(u.s).zip(src) {
                *d = v;
            }
        }
    }
}

/// [`up`] through F(2, 2) ([`Wino22`]): column pairs start at even phase
/// columns of the whole signal, as in [`Wino22::forward`], and each value
/// comes from the same ops: the same bits.
#[allow(clippy::too_many_arguments)]
unsafe fn up_wino(
    u: &Up,
    wz: &Wino22,
    input: In,
    oa: usize,
    ob: usize,
    xp: &mut Vec<f32>,
    dx: &mut Vec<f32>,
    m: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (u0, u1) = u.phase_cols(oa, ob);
    let (ue, nv) = wino_pairs(u0, u1);
    // x' columns ue ..= ue + 2·nv (x'[i] = x[i − 1], zero outside).
    let pad = Pad {
        span: 1,
        left: 1,
        mode: PadMode::Constant,
    };
    gather(input, u.cin, pad, ue, 2 * nv, false, xp);
    let (cin, lx) = (u.cin, 2 * nv + 1);
    dx.resize(3 * cin * nv, 0.0);
    let (d0, rest) = dx.split_at_mut(cin * nv);
    let (d1, d2) = rest.split_at_mut(cin * nv);
    for (ci, row) in xp.chunks_exact(lx).enumerate() {
        for v in 0..nv {
            let (a, c, e) = (row[2 * v], row[2 * v + 1], row[2 * v + 2]);
            d0[ci * nv + v] = a - c;
            d1[ci * nv + v] = c;
            d2[ci * nv + v] = e - c;
        }
    }
    let rows = u.s * u.cout;
    m.resize(3 * rows * nv, 0.0);
    for (j, d) in wz.d.iter().enumerate() {
        let src = &dx[j * cin * nv..(j + 1) * cin * nv];
        d.block_ld(src, nv, m.as_mut_ptr().add(j * rows * nv), nv, nv);
    }
    let (m1, rest) = m.split_at(rows * nv);
    let (m2, m3) = rest.split_at(rows * nv);
    let w = ob - oa;
    let sh = (oa + u.tl) % u.s;
    for co in 0..u.cout {
        let dst = &mut out[co * w..(co + 1) * w];
        // Phase r: outputs j = j0, j0 + s, … of columns uu, uu + 1, …;
        // an even column and the next odd one share pair v.
        for r in 0..u.s {
            let j0 = (r + u.s - sh) % u.s;
            if j0 >= w {
                continue;
            }
            let row = (r * u.cout + co) * nv;
            let (a, b, c) = (&m1[row..row + nv], &m2[row..row + nv], &m3[row..row + nv]);
            let mut uu = (oa + j0 + u.tl) / u.s;
            let mut j = j0;
            if uu % 2 == 1 {
                let v = (uu - ue) / 2;
                dst[j] = b[v] + c[v];
                j += u.s;
                uu += 1;
            }
            let mut v = (uu - ue) / 2;
            while j + u.s < w {
                dst[j] = a[v] + b[v];
                dst[j + u.s] = b[v] + c[v];
                j += 2 * u.s;
                v += 1;
            }
            if j < w {
                dst[j] = a[v] + b[v];
            }
        }
    }
}

/// Residual block outputs `[oa, oa + w)` into `out [c, w]` (as
/// `ResBlock::forward_blocked`).
#[allow(clippy::too_many_arguments)]
unsafe fn res(
    rb: &Res,
    input: In,
    oa: usize,
    w: usize,
    e: &mut Vec<f32>,
    h: &mut Vec<f32>,
    r: &mut Vec<f32>,
    out: &mut [f32],
) {
    let c = rb.c;
    gather(input, c, rb.pad, oa, w, true, e);
    h.resize(rb.hid * w, 0.0);
    rb.d1.block_ld(e, w + rb.pad.span, h.as_mut_ptr(), w, w);
    #[cfg(target_arch = "x86_64")]
    for row in h.chunks_exact_mut(w) {
        epilogue_avx2(row, None, true);
    }
    let xt = &input.x[oa - input.a..];
    let (res, ldr): (&[f32], usize) = match rb.ds {
        Some(ds) => {
            r.resize(c * w, 0.0);
            ds.block_ld(xt, input.ld, r.as_mut_ptr(), w, w);
            (&r[..], w)
        }
        None => (xt, input.ld),
    };
    rb.d2.block_ld(h, w, out.as_mut_ptr(), w, w);
    #[cfg(target_arch = "x86_64")]
    for (ci, row) in out.chunks_exact_mut(w).enumerate() {
        epilogue_avx2(row, Some(&res[ci * ldr..ci * ldr + w]), rb.elu_out);
    }
}

/// The final conv's outputs `[oa, oa + w)` into `y` (rows `ldy` apart).
unsafe fn last(
    l: &Last,
    input: In,
    oa: usize,
    w: usize,
    e: &mut Vec<f32>,
    y: *mut f32,
    ldy: usize,
) {
    gather(input, l.cin, l.pad, oa, w, false, e);
    l.d.block_ld(e, w + l.pad.span, y, ldy, w);
}

/// True when every layer of the chain gives `run_layers`' bits (no
/// transposed conv below 128 input channels); `None` when `layers` is not
/// a chain.
#[cfg(test)]
fn same_bits(layers: &[Layer]) -> Result<Option<bool>> {
    Ok(stages(layers)?.map(|st| {
        st.iter().all(|s| {
            !matches!(
                s,
                Stage::Up(Up {
                    d: UpKernel::Poly(Cow::Owned(_)),
                    ..
                })
            )
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{run_layers, run_layers_seq, Conv, ResBlock};
    use super::*;
    use crate::whisper::fastmath::has_avx2_fma;
    use candle_core::Device;
    use candle_nn::VarBuilder;

    fn convt(cin: usize, cout: usize, s: usize, k: usize, causal: bool) -> ConvT {
        let dev = Device::Cpu;
        let mut map = std::collections::HashMap::new();
        let w = Tensor::randn(0f32, 0.15, (cin, cout, k), &dev).unwrap();
        map.insert("conv.weight".to_string(), w);
        let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
        map.insert("conv.bias".to_string(), b);
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        ConvT::load(causal, 1.0, vb, cin, cout, k, s, 1, true).unwrap()
    }

    fn conv(cin: usize, cout: usize, k: usize, dil: usize, causal: bool, mode: PadMode) -> Conv {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
        Conv::new(w, Some(b), 1, dil, causal, mode).unwrap()
    }

    fn res(dim: usize, dil: usize, causal: bool, mode: PadMode, shortcut: bool) -> Layer {
        Layer::Res(Box::new(ResBlock {
            conv1: conv(dim, dim / 2, 3, dil, causal, mode),
            conv2: conv(dim / 2, dim, 1, 1, causal, mode),
            shortcut: shortcut.then(|| conv(dim, dim, 1, 1, causal, mode)),
        }))
    }

    /// A decoder tail: per `(cin, cout, stride, k)` a transposed conv, a
    /// residual block (two with `two_res`, the second dilated) and an ELU,
    /// then the final conv `→ last_out`, kernel `last_k`.
    #[allow(clippy::too_many_arguments)]
    fn tail(
        ups: &[(usize, usize, usize, usize)],
        causal: bool,
        mode: PadMode,
        shortcut: bool,
        two_res: bool,
        last_out: usize,
        last_k: usize,
    ) -> Vec<Layer> {
        let mut l = Vec::new();
        for &(cin, cout, s, k) in ups {
            l.push(Layer::ConvT(convt(cin, cout, s, k, causal)));
            l.push(res(cout, 1, causal, mode, shortcut));
            if two_res {
                l.push(res(cout, 3, causal, mode, shortcut));
            }
            l.push(Layer::Elu);
        }
        let c = ups.last().unwrap().1;
        l.push(Layer::Conv(conv(c, last_out, last_k, 1, causal, mode)));
        l
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Runs the chain over `layers` for many lengths, batch 1 and 2 and
    /// several block widths against the layer-by-layer path: the same bits
    /// when `exact`, else within 1e-6 of the output's scale. Returns how
    /// many comparisons ran blocked.
    fn check(layers: &[Layer], exact: bool, what: &str) -> usize {
        let dev = Device::Cpu;
        let cin = match &layers[0] {
            Layer::ConvT(c) => c.weight.dims3().unwrap().0,
            _ => unreachable!(),
        };
        assert_eq!(same_bits(layers).unwrap(), Some(exact), "{what}");
        let mut ran = 0;
        for t in [1usize, 2, 3, 4, 5, 9, 17, 40, 101, 333] {
            for b in [1usize, 2] {
                let x = Tensor::randn(0f32, 1.0, (b, cin, t), &dev).unwrap();
                let want = run_layers_seq(layers, &x).unwrap();
                for cols in [1usize, 7, 64, 100, 2048] {
                    let Some(got) = run(layers, &x, cols).unwrap() else {
                        continue;
                    };
                    ran += 1;
                    assert_eq!(got.dims(), want.dims(), "{what} t={t} b={b} cols={cols}");
                    if exact {
                        assert!(bits(&got) == bits(&want), "{what} t={t} b={b} cols={cols}");
                    } else {
                        let d = (&got - &want).unwrap().abs().unwrap();
                        let d = d
                            .flatten_all()
                            .unwrap()
                            .max(0)
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap();
                        let s = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                        let s = s.to_scalar::<f32>().unwrap();
                        assert!(
                            d <= 1e-6 * s.max(1.0),
                            "{what} t={t} b={b} cols={cols}: {d} of {s}"
                        );
                    }
                }
            }
        }
        ran
    }

    /// Transposed convs from 128 input channels (polyphase in both paths):
    /// the chain gives `run_layers`' bits for every length, batch, block
    /// width, padding mode, trim (causal / centred), with and without
    /// shortcut, one or two (dilated) residual blocks, final conv of 1 or
    /// 3 channels.
    #[test]
    fn chain_equals_layers_bitwise() {
        if !has_avx2_fma() {
            return;
        }
        let mut ran = 0;
        for (causal, mode, shortcut, two_res, last_out, last_k) in [
            (true, PadMode::Reflect, true, false, 1, 7),
            (true, PadMode::Constant, false, false, 1, 3),
            (false, PadMode::Reflect, true, true, 3, 7),
            (false, PadMode::Replicate, false, false, 1, 4),
            (true, PadMode::Replicate, true, true, 2, 5),
            (false, PadMode::Constant, true, false, 1, 7),
        ] {
            let ups = [(160, 128, 3, 6), (128, 16, 4, 7)];
            let layers = tail(&ups, causal, mode, shortcut, two_res, last_out, last_k);
            let what = format!("causal={causal} {mode:?} sc={shortcut} two={two_res}");
            ran += check(&layers, true, &what);
        }
        assert!(ran > 200, "only {ran} chained runs");
    }

    /// An EnCodec-shaped tail (128 -> 64 /4, 64 -> 32 /2, reflect, final
    /// 32 -> 1 k7): the 64-channel transposed conv is a GEMM layer by layer
    /// and polyphase here, so within 1e-6 relative instead of the same bits.
    #[test]
    fn chain_close_to_layers_below_128_channels() {
        if !has_avx2_fma() {
            return;
        }
        let layers = tail(
            &[(128, 64, 4, 8), (64, 32, 2, 4)],
            true,
            PadMode::Reflect,
            true,
            false,
            1,
            7,
        );
        assert!(check(&layers, false, "encodec-like") > 60);
    }

    /// With the transposed convs in F(2, 2) (EnCodec's decoder), both paths
    /// run [`Wino22`]: the chain gives `run_layers`' bits, also below 128
    /// input channels, for every length, batch, block width (pairs that
    /// straddle blocks, odd first columns), trim and padding mode.
    #[test]
    fn chain_equals_layers_bitwise_winograd() {
        if !has_avx2_fma() {
            return;
        }
        let wino = |layers: Vec<Layer>| -> Vec<Layer> {
            layers
                .into_iter()
                .map(|l| match l {
                    Layer::ConvT(c) => {
                        let c = c.with_winograd().unwrap();
                        assert!(c.wino.is_some());
                        Layer::ConvT(c)
                    }
                    l => l,
                })
                .collect()
        };
        let mut ran = 0;
        for (ups, causal, mode, shortcut, two_res) in [
            (
                &[(128, 64, 4, 8), (64, 32, 2, 4)][..],
                true,
                PadMode::Reflect,
                true,
                false,
            ),
            (
                &[(160, 128, 3, 6), (128, 16, 4, 7)][..],
                false,
                PadMode::Reflect,
                true,
                true,
            ),
            (
                &[(48, 24, 5, 10), (24, 8, 2, 3)][..],
                true,
                PadMode::Constant,
                false,
                false,
            ),
            (
                &[(40, 16, 3, 5)][..],
                false,
                PadMode::Replicate,
                true,
                false,
            ),
        ] {
            let layers = wino(tail(ups, causal, mode, shortcut, two_res, 1, 7));
            let what = format!("winograd {ups:?} causal={causal} {mode:?}");
            ran += check(&layers, true, &what);
        }
        assert!(ran > 150, "only {ran} chained runs");
    }

    /// Speed probe (ignored): an EnCodec-sized decoder tail (10 s at 24 kHz,
    /// 128 -> 64 /4, 64 -> 32 /2, final 32 -> 1), polyphase vs F(2, 2) for
    /// the 128 -> 64, best of 5 on one thread (CPU time).
    #[test]
    #[ignore]
    fn chain_speed() {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let layers = tail(
            &[(128, 64, 4, 8), (64, 32, 2, 4)],
            true,
            PadMode::Reflect,
            true,
            false,
            1,
            7,
        );
        let mut wl = layers.clone();
        if let Layer::ConvT(c) = &wl[0] {
            wl[0] = Layer::ConvT(c.clone().with_winograd().unwrap());
        }
        let x = Tensor::randn(0f32, 1.0, (1, 128, 30000), &dev).unwrap();
        let cpu_ms = || {
            #[repr(C)]
            struct Ts {
                s: i64,
                ns: i64,
            }
            extern "C" {
                fn clock_gettime(clk: i32, ts: *mut Ts) -> i32;
            }
            let mut ts = Ts { s: 0, ns: 0 };
            // SAFETY: CLOCK_THREAD_CPUTIME_ID (3) into a timespec.
            unsafe { clock_gettime(3, &mut ts) };
            ts.s as f64 * 1e3 + ts.ns as f64 * 1e-6
        };
        for _ in 0..2 {
            for (name, l) in [("poly", &layers), ("F(2,2)", &wl)] {
                let best = pool.install(|| {
                    (0..5)
                        .map(|_| {
                            let t0 = cpu_ms();
                            run(l, &x, chain_cols()).unwrap().unwrap();
                            cpu_ms() - t0
                        })
                        .fold(f64::MAX, f64::min)
                });
                eprintln!("dec chain {name}: {best:.1} ms");
            }
        }
    }

    /// `run_layers` finds the tail after a prefix (conv, ELU before the
    /// first transposed conv) and gives the layer-by-layer bits; a stack
    /// not ending in a conv has no tail.
    #[test]
    fn run_layers_dispatches_to_chain() {
        if !has_avx2_fma() {
            return;
        }
        let dev = Device::Cpu;
        let mut layers = vec![
            Layer::Conv(conv(8, 256, 3, 1, true, PadMode::Constant)),
            Layer::Elu,
        ];
        layers.extend(tail(
            &[(256, 128, 2, 4), (128, 32, 5, 10)],
            true,
            PadMode::Constant,
            true,
            false,
            1,
            3,
        ));
        assert_eq!(suffix_start(&layers, 3), Some(2));
        assert_eq!(suffix_start(&layers, 1), Some(5));
        assert_eq!(suffix_start(&layers, 0), None);
        assert_eq!(suffix_start(&layers[..layers.len() - 1], 3), None);
        // A transposed conv with polyphase weights over the budget ends the chain.
        let wide = tail(
            &[(512, 128, 6, 12), (128, 8, 2, 4)],
            true,
            PadMode::Constant,
            false,
            false,
            1,
            3,
        );
        assert!(
            poly_bytes(match &wide[0] {
                Layer::ConvT(c) => c,
                _ => unreachable!(),
            }) > chain_wmax()
        );
        assert_eq!(suffix_start(&wide, 8), Some(3));
        let x = Tensor::randn(0f32, 1.0, (1, 8, 50), &dev).unwrap();
        let want = run_layers_seq(&layers, &x).unwrap();
        let got = run_layers(&layers, &x).unwrap();
        assert!(bits(&got) == bits(&want));
        let i = suffix_start(&layers, 3).unwrap();
        let mid = run_layers_seq(&layers[..i], &x).unwrap();
        assert!(run(&layers[i..], &mid, 100).unwrap().is_some());
    }
}
