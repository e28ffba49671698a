//! The high-rate front of a SEANet encoder (the first conv, then residual
//! blocks, ELUs and strided convs while they stay narrow) run per output
//! time block: each block recomputes its small halos layer by layer from
//! the input, keeping every intermediate in per-thread scratch slabs (a
//! few hundred KiB) instead of writing and re-reading tens of MB per layer.
//!
//! Every value is computed by the same direct kernel ([`Direct::block_ld`])
//! from the same inputs (padding mapped per index as [`pad_elu`] and the
//! polyphase fold do, ELU by the same expression), so the output has the
//! same bits as [`run_layers`](super::run_layers) layer by layer.
//! `VOXTOK_SEANET_CHAIN=0` turns it off; `VOXTOK_SEANET_CHAIN_COLS` (input
//! columns per block, default 4096) and `VOXTOK_SEANET_CHAIN_MAXC` (widest
//! layer output run in the chain, default 256: EnCodec's and Mimi's fronts
//! through the 256-channel residual block) tune it. At load ~1.7 on 2 cores
//! 256/4096 beat 128/2048 by ~6% (EnCodec) and ~4% (Mimi) whole encode.
//!
//! [`pad_elu`]: super::pad_elu

#[cfg(target_arch = "x86_64")]
use super::{elu_avx2, epilogue_avx2};
use super::{fuse_enabled, profile_line, Conv, Direct, Layer, PadMode};
use crate::runtime::{SendPtr, SMALL_M};
use candle_core::{DType, Result, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Padded position → input index for one conv (`None`: a constant zero).
#[derive(Debug, Clone, Copy)]
struct Pad {
    mode: PadMode,
    left: usize,
    /// Input length.
    t: usize,
    /// Padded length (`left + t + right`).
    tpad: usize,
}

impl Pad {
    fn new(c: &Conv, t: usize) -> Self {
        let extra = c.extra_padding(t);
        let pt = c.padding_total();
        let (left, right) = if c.causal {
            (pt, extra)
        } else {
            (pt - pt / 2, pt / 2 + extra)
        };
        Self {
            mode: c.mode,
            left,
            t,
            tpad: left + t + right,
        }
    }

    fn right(&self) -> usize {
        self.tpad - self.left - self.t
    }

    /// The input index padded position `p < tpad` copies (as
    /// [`super::pad_elu`] maps it; reflect needs `t > left, right`).
    #[inline]
    fn src(&self, p: usize) -> Option<usize> {
        let (l, t) = (self.left, self.t);
        if p < l {
            match self.mode {
                PadMode::Constant => None,
                PadMode::Replicate => Some(0),
                PadMode::Reflect => Some(l - p),
            }
        } else if p - l < t {
            Some(p - l)
        } else {
            match self.mode {
                PadMode::Constant => None,
                PadMode::Replicate => Some(t - 1),
                PadMode::Reflect => Some(2 * (t - 1) - (p - l)),
            }
        }
    }

    /// Hull of the input indices read by padded positions `pa..pb`.
    fn hull(&self, pa: usize, pb: usize) -> Option<(usize, usize)> {
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut add = |a: usize, b: usize| {
            if a < b {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        };
        let (l, t) = (self.left, self.t);
        add(pa.max(l).min(l + t) - l, pb.max(l).min(l + t) - l);
        // The edges: at most the extreme positions matter (monotone maps).
        for p in [pa, pb.saturating_sub(1), l.saturating_sub(1), l + t]
            .into_iter()
            .filter(|&p| p >= pa && p < pb && p < self.tpad)
        {
            if let Some(i) = self.src(p) {
                add(i, i + 1);
            }
        }
        (lo < hi).then_some((lo, hi))
    }
}

/// One step of the chain: a conv (optionally of the ELU of its input) or
/// a residual block (optionally followed by an ELU).
#[derive(Debug)]
enum Kind<'a> {
    Conv {
        d: &'a Direct,
        elu_in: bool,
    },
    Res {
        d1: &'a Direct,
        d2: &'a Direct,
        ds: Option<&'a Direct>,
        elu_out: bool,
    },
}

#[derive(Debug)]
struct Step<'a> {
    kind: Kind<'a>,
    cin: usize,
    cout: usize,
    /// Padding of the conv (conv1 for a block).
    pad: Pad,
    stride: usize,
    /// Padded positions read from `a·stride` for outputs `a..b`:
    /// `(b - 1)·stride + reach` (the fold reads whole phases).
    reach: usize,
    /// Output length.
    t_out: usize,
    /// Layers of the list this step covers.
    layers: usize,
}

impl Step<'_> {
    /// Input indices `[lo, hi)` needed for outputs `a..b` (`None`: none).
    fn need(&self, a: usize, b: usize) -> Option<(usize, usize)> {
        let pa = a * self.stride;
        let pb = ((b - 1) * self.stride + self.reach).min(self.pad.tpad);
        let h = self.pad.hull(pa, pb);
        match self.kind {
            // The residual reads `x[a..b]`.
            Kind::Res { .. } => Some(match h {
                Some((lo, hi)) => (lo.min(a), hi.max(b)),
                None => (a, b),
            }),
            Kind::Conv { .. } => h,
        }
    }
}

/// The conv as a chain step on an input of length `t` (batch `b`): `None`
/// where [`super::run_layers`] would not run it on the direct kernel from a
/// padding that is a plain function of the index.
fn conv_step(c: &Conv, elu_in: bool, b: usize, t: usize) -> Option<Step<'_>> {
    let d = c.direct.as_ref()?;
    if c.norm.is_some() || t == 0 || d.fold != c.stride {
        return None;
    }
    let pad = Pad::new(c, t);
    if pad.tpad < c.k_eff || (c.mode == PadMode::Reflect && t <= pad.left.max(pad.right())) {
        return None;
    }
    let n = (pad.tpad - c.k_eff) / c.stride + 1;
    if b == 1 && n <= SMALL_M {
        return None;
    }
    let reach = if c.stride == 1 {
        c.k_eff
    } else {
        d.k * c.stride
    };
    Some(Step {
        kind: Kind::Conv { d, elu_in },
        cin: d.cin / d.fold,
        cout: d.cout,
        pad,
        stride: c.stride,
        reach,
        t_out: n,
        layers: if elu_in { 2 } else { 1 },
    })
}

/// The residual block as a chain step (the conditions of
/// `ResBlock::forward_blocked`, any width).
fn res_step(r: &super::ResBlock, elu_out: bool, b: usize, t: usize) -> Option<Step<'_>> {
    let c1 = &r.conv1;
    let (d1, d2, ds) = r.block_kernels()?;
    let c = d1.cin;
    if t == 0 {
        return None;
    }
    let pad = Pad::new(c1, t);
    if pad.tpad != t + c1.k_eff - 1
        || (b == 1 && t <= SMALL_M)
        || (c1.mode == PadMode::Reflect && t <= pad.left.max(pad.right()))
    {
        return None;
    }
    Some(Step {
        kind: Kind::Res {
            d1,
            d2,
            ds,
            elu_out,
        },
        cin: c,
        cout: c,
        pad,
        stride: 1,
        reach: c1.k_eff,
        t_out: t,
        layers: if elu_out { 2 } else { 1 },
    })
}

/// The longest supported prefix of `layers` for input `[b, _, t]` whose
/// outputs stay within `maxc` channels; `None` unless it starts with a conv
/// from the audio (at most 2 channels) and has at least two steps.
fn plan(layers: &[Layer], b: usize, t: usize, maxc: usize) -> Option<Vec<Step<'_>>> {
    let mut steps: Vec<Step> = Vec::new();
    let (mut i, mut t) = (0, t);
    while i < layers.len() {
        let step = match (&layers[i], layers.get(i + 1)) {
            (Layer::Conv(c), _) => conv_step(c, false, b, t),
            (Layer::Elu, Some(Layer::Conv(c))) => conv_step(c, true, b, t),
            (Layer::Res(r), Some(Layer::Elu)) => res_step(r, true, b, t),
            (Layer::Res(r), _) => res_step(r, false, b, t),
            _ => None,
        };
        let Some(step) = step else { break };
        if step.cout > maxc || steps.last().is_some_and(|s| s.cout != step.cin) {
            break;
        }
        if steps.is_empty() && !(matches!(step.kind, Kind::Conv { .. }) && step.cin <= 2) {
            return None;
        }
        i += step.layers;
        t = step.t_out;
        steps.push(step);
    }
    (steps.len() >= 2).then_some(steps)
}

/// Rows of a step's input: `rows[ci·ld + (i - org)]` is input index `i`.
#[derive(Clone, Copy)]
struct View<'a> {
    rows: &'a [f32],
    ld: usize,
    org: usize,
}

impl View<'_> {
    #[inline]
    fn row(&self, ci: usize) -> &[f32] {
        &self.rows[ci * self.ld..]
    }
}

/// Per-thread scratch.
#[derive(Default)]
struct Scratch {
    /// The current step's input and output activations.
    cur: Vec<f32>,
    next: Vec<f32>,
    /// The padded (and folded) input slab, the block's hidden rows and
    /// its shortcut output.
    slab: Vec<f32>,
    h: Vec<f32>,
    r: Vec<f32>,
    /// Needed output interval per step.
    iv: Vec<(usize, usize)>,
}

/// Fills `slab` with the padded input of `step` for outputs `a..a + w`
/// (folded to stride-1 polyphase rows for a strided conv), ELU applied when
/// `elu`; returns its row stride.
fn fill_slab(step: &Step, x: View, a: usize, w: usize, elu: bool, slab: &mut Vec<f32>) -> usize {
    let s = step.stride;
    let pad = step.pad;
    let (l, t) = (pad.left, pad.t);
    if s == 1 {
        let ew = w + step.reach - 1;
        slab.resize(step.cin * ew, 0.0);
        // Columns j with a padded position inside the signal.
        let lo = l.saturating_sub(a).min(ew);
        let hi = (l + t).saturating_sub(a).min(ew).max(lo);
        for (ci, dst) in slab.chunks_exact_mut(ew).enumerate() {
            let row = x.row(ci);
            for j in (0..lo).chain(hi..ew) {
                dst[j] = pad.src(a + j).map_or(0.0, |i| row[i - x.org]);
            }
            if hi == lo {
                if elu {
                    // SAFETY: as below.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        epilogue_avx2(dst, None, true)
                    };
                }
                continue;
            }
            let src = &row[a + lo - l - x.org..a + hi - l - x.org];
            if elu {
                // SAFETY: `Direct` (hence a chain) exists only with AVX2/FMA.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    elu_avx2(src, &mut dst[lo..hi]);
                    epilogue_avx2(&mut dst[..lo], None, true);
                    epilogue_avx2(&mut dst[hi..], None, true);
                }
            } else {
                dst[lo..hi].copy_from_slice(src);
            }
        }
        ew
    } else {
        let uw = w + step.reach / s - 1;
        slab.resize(step.cin * s * uw, 0.0);
        for (r, dst) in slab.chunks_exact_mut(uw).enumerate() {
            let (ci, ph) = (r / s, r % s);
            let row = x.row(ci);
            // u with (a + u)·s + ph in l .. min(l + t, tpad).
            let p0 = a * s + ph;
            let end = (l + t).min(pad.tpad);
            let lo = l.saturating_sub(p0).div_ceil(s).min(uw);
            let hi = end.saturating_sub(p0).div_ceil(s).min(uw).max(lo);
            for u in (0..lo).chain(hi..uw) {
                let p = p0 + u * s;
                // Past the padded input the fold reads zeros.
                dst[u] = if p >= pad.tpad {
                    0.0
                } else {
                    pad.src(p).map_or(0.0, |i| row[i - x.org])
                };
            }
            if hi > lo {
                let base = p0 + lo * s - l - x.org;
                for (k, v) in dst[lo..hi].iter_mut().enumerate() {
                    *v = row[base + k * s];
                }
            }
            if elu {
                // Past the padded input the fold's zeros stay raw: elu(0) = 0.
                // SAFETY: AVX2/FMA, as above.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    epilogue_avx2(dst, None, true)
                };
            }
        }
        uw
    }
}

/// [`Direct::block_ld`] for a folded (strided) conv too: every output
/// tile, columns `0..w`, from the stride-1 (polyphase) input `x [cin, ldx]`.
///
/// # Safety
/// `y` holds `[cout, ldy]` with `w <= ldy`.
unsafe fn kernel(d: &Direct, x: &[f32], ldx: usize, y: *mut f32, ldy: usize, w: usize) {
    if d.fold == 1 {
        return d.block_ld(x, ldx, y, ldy, w);
    }
    let span = (d.k - 1) * d.dil;
    assert!(w <= ldy && ldx >= w + span && x.len() >= (d.cin - 1) * ldx + w + span);
    let tiles = d.cout.div_ceil(super::MR);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && !super::FORCE_AVX2.with(|f| f.get()) {
        super::direct_avx512::block(d, x.as_ptr(), ldx, y, ldy, 0, tiles, 0, w)
    } else {
        super::direct_avx2::block(d, x.as_ptr(), ldx, y, ldy, 0, tiles, 0, w)
    }
}

/// One step for outputs `a..a + w` from `x` into `y` (rows `ldy` apart).
///
/// # Safety
/// `y` holds `[cout, ldy]` with `w <= ldy`, disjoint from every other
/// writer; `x` holds the step's needed input indices.
unsafe fn run_step(
    step: &Step,
    x: View,
    a: usize,
    w: usize,
    y: *mut f32,
    ldy: usize,
    sc: &mut Scratch,
) {
    match step.kind {
        Kind::Conv { d, elu_in } => {
            let ld = fill_slab(step, x, a, w, elu_in, &mut sc.slab);
            kernel(d, &sc.slab, ld, y, ldy, w);
        }
        Kind::Res {
            d1,
            d2,
            ds,
            elu_out,
        } => {
            let ld = fill_slab(step, x, a, w, true, &mut sc.slab);
            let hid = d1.cout;
            sc.h.resize(hid * w, 0.0);
            d1.block_ld(&sc.slab, ld, sc.h.as_mut_ptr(), w, w);
            #[cfg(target_arch = "x86_64")]
            for row in sc.h.chunks_exact_mut(w) {
                epilogue_avx2(row, None, true);
            }
            let xa = &x.rows[a - x.org..];
            let (res, ldr): (&[f32], usize) = match ds {
                Some(ds) => {
                    sc.r.resize(step.cin * w, 0.0);
                    ds.block_ld(xa, x.ld, sc.r.as_mut_ptr(), w, w);
                    (&sc.r, w)
                }
                None => (xa, x.ld),
            };
            d2.block_ld(&sc.h, w, y, ldy, w);
            #[cfg(target_arch = "x86_64")]
            for ci in 0..step.cout {
                let row = std::slice::from_raw_parts_mut(y.add(ci * ldy), w);
                epilogue_avx2(row, Some(&res[ci * ldr..ci * ldr + w]), elu_out);
            }
        }
    }
}

/// Runs the chain of `steps` on `x` `[b, c, t]` (contiguous) into `[b, cout, n]`.
fn run_chain(steps: &[Step], x: &[f32], b: usize, t: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let last = steps.last().expect("a chain has steps");
    let (cout, n) = (last.cout, last.t_out);
    let rate: usize = steps.iter().map(|s| s.stride).product();
    let wb = cols.div_ceil(rate).max(16).min(n);
    let nblk = n.div_ceil(wb);
    let cin = steps[0].cin;
    let mut y = vec![0f32; b * cout * n];
    let yp = SendPtr(y.as_mut_ptr());
    // With profiling: nanoseconds per step, summed over blocks and threads.
    let prof = super::profile_enabled();
    let step_ns: Vec<AtomicU64> = steps.iter().map(|_| AtomicU64::new(0)).collect();
    let go = |sc: &mut Scratch, job: usize| {
        let (bi, blk) = (job / nblk, job % nblk);
        let (a, e) = (blk * wb, ((blk + 1) * wb).min(n));
        // Needed outputs per step, last to first (`iv[i]`: step i's
        // outputs; `iv[i]` for `i < len` also step i + 1's input).
        sc.iv.clear();
        sc.iv.resize(steps.len(), (0, 0));
        let mut need = Some((a, e));
        for (i, st) in steps.iter().enumerate().rev() {
            sc.iv[i] = need.unwrap_or((0, 0));
            need = need.and_then(|(a, e)| st.need(a, e));
        }
        let xb = &x[bi * cin * t..(bi + 1) * cin * t];
        let mut cur = std::mem::take(&mut sc.cur);
        let mut next = std::mem::take(&mut sc.next);
        for (i, st) in steps.iter().enumerate() {
            let (oa, ob) = sc.iv[i];
            let view = if i == 0 {
                View {
                    rows: xb,
                    ld: t,
                    org: 0,
                }
            } else {
                let (ia, ib) = sc.iv[i - 1];
                View {
                    rows: &cur,
                    ld: ib - ia,
                    org: ia,
                }
            };
            let w = ob - oa;
            let t0 = prof.then(Instant::now);
            if w == 0 {
                // Nothing needed from this step (only constant padding
                // downstream); the next step reads no input.
                next.clear();
            } else if i + 1 == steps.len() {
                // SAFETY: blocks write disjoint columns of `y`.
                unsafe {
                    let yo = yp.get().add(bi * cout * n + oa);
                    run_step(st, view, oa, w, yo, n, sc);
                }
            } else {
                next.resize(st.cout * w, 0.0);
                // SAFETY: `next` holds `[cout, w]`.
                unsafe { run_step(st, view, oa, w, next.as_mut_ptr(), w, sc) };
            }
            if let Some(t0) = t0 {
                step_ns[i].fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            std::mem::swap(&mut cur, &mut next);
        }
        sc.cur = cur;
        sc.next = next;
    };
    let jobs = b * nblk;
    if jobs > 1 && rayon::current_num_threads() > 1 {
        (0..jobs)
            .into_par_iter()
            .for_each_init(Scratch::default, go);
    } else {
        let mut sc = Scratch::default();
        (0..jobs).for_each(|j| go(&mut sc, j));
    }
    if prof {
        for (st, ns) in steps.iter().zip(&step_ns) {
            let what = match st.kind {
                Kind::Conv { elu_in, .. } => format!("{}conv", if elu_in { "elu+" } else { "" }),
                Kind::Res { elu_out, .. } => format!("res{}", if elu_out { "+elu" } else { "" }),
            };
            eprintln!(
                "codec-profile    chain {what} {}->{} /{}: {:.3} ms (all threads, {nblk} blocks of {wb})",
                st.cin,
                st.cout,
                st.stride,
                ns.load(Ordering::Relaxed) as f64 * 1e-6
            );
        }
    }
    y
}

/// [`run_prefix`] with explicit block columns and widest channel count.
fn run_prefix_with(
    layers: &[Layer],
    xs: &Tensor,
    cols: usize,
    maxc: usize,
) -> Result<Option<(Tensor, usize)>> {
    if !fuse_enabled() || !xs.device().is_cpu() || xs.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, c, t) = xs.dims3()?;
    let Some(steps) = plan(layers, b, t, maxc) else {
        return Ok(None);
    };
    if steps[0].cin != c {
        return Ok(None);
    }
    let xs = xs.contiguous()?;
    let Some(y) = super::conv_cpu::with_f32(&xs, |x| run_chain(&steps, x, b, t, cols)) else {
        return Ok(None);
    };
    let last = steps.last().expect("a chain has steps");
    let used = steps.iter().map(|s| s.layers).sum();
    let ys = Tensor::from_vec(y, (b, last.cout, last.t_out), xs.device())?;
    Ok(Some((ys, used)))
}

/// Runs the longest supported encoder-front prefix of `layers` on `xs`
/// time block by time block (same bits as layer by layer): its output and
/// the number of layers it covered; `None` when off or not applicable.
pub fn run_prefix(layers: &[Layer], xs: &Tensor) -> Result<Option<(Tensor, usize)>> {
    let Some((cols, maxc)) = settings() else {
        return Ok(None);
    };
    let t0 = super::profile_enabled().then(Instant::now);
    let out = run_prefix_with(layers, xs, cols, maxc)?;
    if let Some((ys, used)) = &out {
        profile_line(t0, 0, || format!("chain of layers 0..{used}"), ys);
    }
    Ok(out)
}

/// `(cols, maxc)`; `None` when `VOXTOK_SEANET_CHAIN=0` (read once).
fn settings() -> Option<(usize, usize)> {
    static ON: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let var = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let on = std::env::var("VOXTOK_SEANET_CHAIN").map_or(true, |v| v != "0");
        let cols = var("VOXTOK_SEANET_CHAIN_COLS", 4096).max(1);
        let maxc = var("VOXTOK_SEANET_CHAIN_MAXC", 256);
        (on && fuse_enabled()).then_some((cols, maxc))
    })
}

#[cfg(test)]
mod tests {
    use super::super::{run_layers, Conv, Layer, PadMode, ResBlock};
    use super::*;
    use candle_core::Device;

    /// Deterministic pseudo-random values in [-scale, scale) (the codec
    /// tests' LCG, scaled).
    fn lcg(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        crate::codec::conv_cpu::tests::rand(n, seed)
            .into_iter()
            .map(|v| v * scale)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        seed: u64,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        dil: usize,
        causal: bool,
        mode: PadMode,
    ) -> Conv {
        let scale = 1.5 / ((cin * k) as f32).sqrt();
        let w = Tensor::from_vec(
            lcg(cout * cin * k, seed, scale),
            (cout, cin, k),
            &Device::Cpu,
        );
        let b = Tensor::from_vec(lcg(cout, seed + 1, 0.1), cout, &Device::Cpu);
        Conv::new(w.unwrap(), Some(b.unwrap()), stride, dil, causal, mode).unwrap()
    }

    /// A SEANet encoder list: conv(1 → c, k7), then per ratio a residual
    /// block (k3, dilation `dil`, hidden c/2, shortcut when `sc`), ELU and
    /// a strided conv (k 2·ratio) doubling the channels; then ELU + conv k3.
    fn encoder(
        c: usize,
        ratios: &[usize],
        dil: usize,
        sc: bool,
        causal: bool,
        mode: PadMode,
    ) -> Vec<Layer> {
        let mut seed = 7;
        let mut next = || {
            seed += 10;
            seed
        };
        let mut layers = vec![Layer::Conv(conv(next(), 1, c, 7, 1, 1, causal, mode))];
        let mut c = c;
        for &r in ratios {
            let h = c / 2;
            layers.push(Layer::Res(Box::new(ResBlock {
                conv1: conv(next(), c, h, 3, 1, dil, causal, mode),
                conv2: conv(next(), h, c, 1, 1, 1, causal, mode),
                shortcut: sc.then(|| conv(next(), c, c, 1, 1, 1, causal, mode)),
            })));
            layers.push(Layer::Elu);
            layers.push(Layer::Conv(conv(
                next(),
                c,
                2 * c,
                2 * r,
                r,
                1,
                causal,
                mode,
            )));
            c *= 2;
        }
        layers.push(Layer::Elu);
        layers.push(Layer::Conv(conv(next(), c, 8, 3, 1, 1, causal, mode)));
        layers
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// The chain gives the bits of `run_layers` layer by layer: EnCodec-like
    /// (reflect, centred, shortcut) and Mimi-like (constant, causal, no
    /// shortcut) and replicate stacks; batch 1 and 2; lengths from below
    /// the padding to several blocks, around the block width, with and
    /// without extra right padding; block widths of a few columns (many
    /// blocks and halos) and wide; every prefix length.
    #[test]
    fn chain_equals_layer_by_layer() {
        let stacks = [
            (
                encoder(8, &[2, 4, 5], 1, true, false, PadMode::Reflect),
                "reflect",
            ),
            (
                encoder(8, &[4, 5], 1, false, true, PadMode::Constant),
                "constant",
            ),
            (
                encoder(4, &[3, 2], 3, true, false, PadMode::Replicate),
                "replicate",
            ),
            (
                encoder(4, &[2], 1, true, true, PadMode::Reflect),
                "reflect causal",
            ),
        ];
        let mut lens: Vec<usize> = vec![1, 3, 4, 5, 6, 7, 9, 17, 40, 41, 64, 100, 333];
        lens.extend([
            479, 480, 481, 959, 960, 961, 1000, 1201, 2047, 2048, 2049, 4001,
        ]);
        let (mut ran, mut tried) = (0, 0);
        for (layers, what) in &stacks {
            let Layer::Conv(c0) = &layers[0] else {
                unreachable!()
            };
            for &t in &lens {
                for b in [1, 2] {
                    let x =
                        Tensor::from_vec(lcg(b * t, t as u64 + 3, 0.9), (b, 1, t), &Device::Cpu)
                            .unwrap();
                    // Reference: the first conv alone, then run_layers on the
                    // rest (which does not start with an audio conv: no chain).
                    let h0 = c0.forward(&x).unwrap();
                    for (cols, maxc) in [(24, 1 << 20), (100, 16), (2048, 1 << 20), (96, 32)] {
                        tried += 1;
                        let Some((ys, used)) = run_prefix_with(layers, &x, cols, maxc).unwrap()
                        else {
                            continue;
                        };
                        ran += 1;
                        let want = run_layers(&layers[1..used], &h0).unwrap();
                        assert_eq!(ys.dims(), want.dims(), "{what} t={t} b={b} cols={cols}");
                        assert!(
                            bits(&ys) == bits(&want),
                            "{what} t={t} b={b} cols={cols} maxc={maxc} used={used}"
                        );
                        // And the whole stack on after the chain.
                        let all = run_layers(&layers[used..], &ys).unwrap();
                        let want = run_layers(&layers[1..], &h0).unwrap();
                        assert!(bits(&all) == bits(&want), "{what} t={t} b={b} whole");
                    }
                }
            }
        }
        assert!(ran * 2 > tried, "only {ran} of {tried} ran the chain");
    }

    /// Where a layer would not run on the direct kernel from an index-mapped
    /// padding the chain declines (and stops before it).
    #[test]
    fn chain_declines_unsupported() {
        let layers = encoder(8, &[2, 4], 1, true, false, PadMode::Reflect);
        // A signal shorter than the first conv's reflect padding.
        let x = Tensor::from_vec(lcg(3, 1, 0.5), (1, 1, 3), &Device::Cpu).unwrap();
        assert!(run_prefix_with(&layers, &x, 64, 1 << 20).unwrap().is_none());
        // Few output frames with batch 1 (the few-frames product elsewhere).
        let x = Tensor::from_vec(lcg(12, 1, 0.5), (1, 1, 12), &Device::Cpu).unwrap();
        assert!(run_prefix_with(&layers, &x, 64, 1 << 20).unwrap().is_none());
        // A list that does not start with an audio conv.
        let x = Tensor::from_vec(lcg(8 * 500, 1, 0.5), (1, 8, 500), &Device::Cpu).unwrap();
        assert!(run_prefix_with(&layers[1..], &x, 64, 1 << 20)
            .unwrap()
            .is_none());
        // Stops before the first too-wide layer: conv 1→8, res + ELU.
        let x = Tensor::from_vec(lcg(500, 1, 0.5), (1, 1, 500), &Device::Cpu).unwrap();
        let (ys, used) = run_prefix_with(&layers, &x, 64, 8).unwrap().unwrap();
        assert_eq!((used, ys.dims()), (3, &[1, 8, 500][..]));
    }

    /// Mimi's whole-file path: the chain, then the rest of a causal stack
    /// through the streaming stack in pieces, matches `run_layers` over the
    /// whole signal within float rounding (the streaming stack's own ops,
    /// e.g. the few-frames product at piece ends, round differently: up to
    /// 5e-7 here, as the all-pieced path).
    #[test]
    fn chain_then_pieced_rest_equals_layer_by_layer() {
        use super::super::StackState;
        let layers = encoder(8, &[2, 4, 3], 1, false, true, PadMode::Constant);
        let Layer::Conv(c0) = &layers[0] else {
            unreachable!()
        };
        for t in [500, 999, 4000, 4321] {
            let x = Tensor::from_vec(lcg(t, t as u64, 0.9), (1, 1, t), &Device::Cpu).unwrap();
            let want = run_layers(&layers[1..], &c0.forward(&x).unwrap()).unwrap();
            let (ys, used) = run_prefix_with(&layers, &x, 256, 16).unwrap().unwrap();
            let rest = &layers[used..];
            let tx = ys.dim(2).unwrap();
            for piece in [7, 100, tx] {
                let mut st = StackState::new(rest);
                let mut outs = Vec::new();
                for c0 in (0..tx).step_by(piece) {
                    let xp = ys.narrow(2, c0, piece.min(tx - c0)).unwrap();
                    outs.extend(st.step(rest, Some(xp), false).unwrap());
                }
                outs.extend(st.step(rest, None, true).unwrap());
                let got = Tensor::cat(&outs, 2).unwrap();
                let d = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_scalar::<f32>().unwrap();
                assert!(d <= 2e-6, "t={t} piece={piece}: {d}");
            }
        }
    }

    /// The AVX2 kernels too (one thread, so the thread-local switch holds
    /// for the chain and the reference alike).
    #[test]
    fn chain_equals_layer_by_layer_avx2() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            super::super::FORCE_AVX2.with(|f| f.set(true));
            for (layers, t) in [
                (encoder(8, &[2, 4], 1, true, false, PadMode::Reflect), 1001),
                (encoder(8, &[4, 5], 1, false, true, PadMode::Constant), 2049),
            ] {
                let Layer::Conv(c0) = &layers[0] else {
                    unreachable!()
                };
                let x = Tensor::from_vec(lcg(t, 5, 0.9), (1, 1, t), &Device::Cpu).unwrap();
                let (ys, used) = run_prefix_with(&layers, &x, 40, 1 << 20).unwrap().unwrap();
                let want = run_layers(&layers[1..used], &c0.forward(&x).unwrap()).unwrap();
                assert!(bits(&ys) == bits(&want), "t={t}");
            }
            super::super::FORCE_AVX2.with(|f| f.set(false));
        });
    }
}
