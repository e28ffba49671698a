//! Mimi (Kyutai 2024) from a Hugging Face `MimiModel` directory: causal
//! SEANet encoder → transformer (RoPE, causal sliding-window attention,
//! layer scale) → strided downsampling conv → split residual vector
//! quantizer (semantic + acoustic codebooks); decoding runs the inverse path
//! (depthwise transposed upsampling, transformer, SEANet decoder).
//!
//! Written against transformers' `modeling_mimi.py` (the flat checkpoint
//! layout `encoder.layers.*`, `encoder_transformer.*`, `downsample.*`,
//! `quantizer.*`, `upsample.*`, `decoder_transformer.*`, `decoder.layers.*`
//! that `save_pretrained` and the `kyutai/mimi` checkpoint use). Also provides
//! an incremental encoder ([`MimiStream`]) whose codes equal whole-file
//! encoding.

use super::seanet::{
    enc_chain_front, run_layers, step_conv, Conv, ConvState, ConvT, Layer, PadMode, ResBlock,
    StackState,
};
use super::{AudioTokenizer, CodecError, Codes, Result, TokenizerInfo};
use crate::runtime::{dot, Device, Linear, ModelDir};
use crate::whisper::fastmath::exp_f32;
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Samples per piece when whole-file SEANet encoding runs through the
/// streaming stack (1 s at 24 kHz: the deepest conv still gets 25 frames,
/// above the few-frame path, so whole-file keeps the direct kernel).
const SEANET_PIECE: usize = 24_000;

/// Samples per piece of whole-file SEANet encoding after the time-blocked
/// front (3 s at 24 kHz: the deep layers' weights are read once per piece,
/// and 3 s measured 5% faster whole-file encode than 1 s, and above 10 s in
/// one piece).
const SEANET_ENCODE_PIECE: usize = 72_000;

/// Samples per piece of whole-file SEANet encoding: `VOXTOK_MIMI_PIECE`
/// (read once) or [`SEANET_ENCODE_PIECE`]; for tuning A/B runs.
fn seanet_piece() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("VOXTOK_MIMI_PIECE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(SEANET_ENCODE_PIECE)
    })
}

/// The fields of `MimiConfig` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct MimiConfig {
    #[serde(default = "d_sr")]
    pub sampling_rate: u32,
    #[serde(default = "d_one")]
    pub audio_channels: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_filters")]
    pub num_filters: usize,
    #[serde(default = "d_one")]
    pub num_residual_layers: usize,
    #[serde(default)]
    pub upsampling_ratios: Option<Vec<usize>>,
    #[serde(default = "d_seven")]
    pub kernel_size: usize,
    #[serde(default = "d_three")]
    pub last_kernel_size: usize,
    #[serde(default = "d_three")]
    pub residual_kernel_size: usize,
    #[serde(default = "d_two")]
    pub dilation_growth_rate: usize,
    #[serde(default = "d_true")]
    pub use_causal_conv: bool,
    #[serde(default = "d_pad")]
    pub pad_mode: String,
    #[serde(default = "d_two")]
    pub compress: usize,
    #[serde(default = "d_trim")]
    pub trim_right_ratio: f64,
    #[serde(default = "d_cb")]
    pub codebook_size: usize,
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    #[serde(default = "d_nq")]
    pub num_quantizers: usize,
    #[serde(default)]
    pub use_conv_shortcut: bool,
    #[serde(default = "d_vq")]
    pub vector_quantization_hidden_dimension: usize,
    #[serde(default = "d_one")]
    pub num_semantic_quantizers: usize,
    #[serde(default = "d_groups")]
    pub upsample_groups: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub attention_bias: bool,
    /// Older configs store the frame rate (12.5); newer ones derive it.
    #[serde(default, alias = "_frame_rate")]
    pub frame_rate: Option<f64>,
}

fn d_sr() -> u32 {
    24000
}
fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}
fn d_three() -> usize {
    3
}
fn d_seven() -> usize {
    7
}
fn d_hidden() -> usize {
    512
}
fn d_filters() -> usize {
    64
}
fn d_true() -> bool {
    true
}
fn d_pad() -> String {
    "constant".into()
}
fn d_trim() -> f64 {
    1.0
}
fn d_cb() -> usize {
    2048
}
fn d_nq() -> usize {
    32
}
fn d_vq() -> usize {
    256
}
fn d_groups() -> usize {
    512
}
fn d_layers() -> usize {
    8
}
fn d_inter() -> usize {
    2048
}
fn d_heads() -> usize {
    8
}
fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

impl MimiConfig {
    pub fn ratios(&self) -> Vec<usize> {
        self.upsampling_ratios
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| vec![8, 6, 5, 4])
    }
    pub fn hop_length(&self) -> usize {
        self.ratios().iter().product()
    }
    /// `ceil(sampling_rate / hop_length)`: the SEANet frame rate.
    pub fn encodec_frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }
    /// Code frames per second (transformers: the stored `frame_rate`, else
    /// `sampling_rate / (hop_length * 2)`).
    pub fn frame_rate(&self) -> f64 {
        self.frame_rate
            .unwrap_or(self.sampling_rate as f64 / (self.hop_length() * 2) as f64)
    }
    /// Stride of the downsampling conv (`int(encodec_frame_rate / frame_rate)`).
    pub fn latent_stride(&self) -> usize {
        (self.encodec_frame_rate() as f64 / self.frame_rate()) as usize
    }
    fn has_resample(&self) -> bool {
        self.frame_rate() != self.encodec_frame_rate() as f64
    }
    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }
}

/// A residual block with Mimi's convs (bias, the model's padding).
fn res_block(
    cfg: &MimiConfig,
    mode: PadMode,
    vb: VarBuilder,
    dim: usize,
    dilation: usize,
) -> candle_core::Result<ResBlock> {
    let c = cfg.use_causal_conv;
    let conv = |vb: VarBuilder, cin: usize, cout: usize, k: usize, d: usize| {
        Conv::load(c, mode, vb, cin, cout, k, 1, d, true)
    };
    ResBlock::load(
        &conv,
        vb,
        dim,
        dim / cfg.compress,
        cfg.residual_kernel_size,
        dilation,
        cfg.use_conv_shortcut,
    )
}

fn load_encoder(
    cfg: &MimiConfig,
    mode: PadMode,
    vb: VarBuilder,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let c = cfg.use_causal_conv;
    let mut layers: Vec<Layer> = Vec::new();
    let next = |layers: &Vec<Layer>| vb.pp(layers.len());
    let first = Conv::load(
        c,
        mode,
        next(&layers),
        cfg.audio_channels,
        cfg.num_filters,
        cfg.kernel_size,
        1,
        1,
        true,
    )?;
    layers.push(Layer::Conv(first));
    let mut scaling = 1;
    for &ratio in cfg.ratios().iter().rev() {
        let dim = scaling * cfg.num_filters;
        for j in 0..cfg.num_residual_layers {
            let d = cfg.dilation_growth_rate.pow(j as u32);
            let r = res_block(cfg, mode, next(&layers), dim, d)?;
            layers.push(Layer::Res(Box::new(r)));
        }
        layers.push(Layer::Elu);
        let down = Conv::load(
            c,
            mode,
            next(&layers),
            dim,
            dim * 2,
            ratio * 2,
            ratio,
            1,
            true,
        )?;
        layers.push(Layer::Conv(down));
        scaling *= 2;
    }
    layers.push(Layer::Elu);
    let last = Conv::load(
        c,
        mode,
        next(&layers),
        scaling * cfg.num_filters,
        cfg.hidden_size,
        cfg.last_kernel_size,
        1,
        1,
        true,
    )?;
    layers.push(Layer::Conv(last));
    Ok(layers)
}

fn load_decoder(
    cfg: &MimiConfig,
    mode: PadMode,
    vb: VarBuilder,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let c = cfg.use_causal_conv;
    let ratios = cfg.ratios();
    let mut layers: Vec<Layer> = Vec::new();
    let next = |layers: &Vec<Layer>| vb.pp(layers.len());
    let mut scaling = 1usize << ratios.len();
    let first = Conv::load(
        c,
        mode,
        next(&layers),
        cfg.hidden_size,
        scaling * cfg.num_filters,
        cfg.kernel_size,
        1,
        1,
        true,
    )?;
    layers.push(Layer::Conv(first));
    for &ratio in &ratios {
        let dim = scaling * cfg.num_filters;
        layers.push(Layer::Elu);
        let up = ConvT::load(
            c,
            cfg.trim_right_ratio,
            next(&layers),
            dim,
            dim / 2,
            ratio * 2,
            ratio,
            1,
            true,
        )?;
        layers.push(Layer::ConvT(up));
        for j in 0..cfg.num_residual_layers {
            let d = cfg.dilation_growth_rate.pow(j as u32);
            let r = res_block(cfg, mode, next(&layers), dim / 2, d)?;
            layers.push(Layer::Res(Box::new(r)));
        }
        scaling /= 2;
    }
    layers.push(Layer::Elu);
    let last = Conv::load(
        c,
        mode,
        next(&layers),
        cfg.num_filters,
        cfg.audio_channels,
        cfg.last_kernel_size,
        1,
        1,
        true,
    )?;
    layers.push(Layer::Conv(last));
    Ok(layers)
}

// ------------------------------------------------------------ transformer

/// Keys and values of the past positions of one layer, for streaming:
/// tensors (any batch or device), or a ring (one stream on CPU).
#[derive(Debug, Clone, Default)]
struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    ring: KvRing,
}

/// Spare slots at the end of each transposed key row (one register block of
/// keys), so that score blocks never need a scalar tail.
const KT_PAD: usize = 64;

/// The last frames' keys and values, `[cap][kv_heads·head_dim]` each,
/// frame `p` at slot `p % cap`; the keys also transposed,
/// `[kv_heads][head_dim][cap + KT_PAD]`, so that a query's scores over many
/// keys vectorize across the keys.
#[derive(Debug, Clone, Default)]
struct KvRing {
    cap: usize,
    width: usize,
    hd: usize,
    k: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    /// Frames pushed so far.
    total: usize,
}

impl KvRing {
    /// Appends `t` frames of `k`, `v` `[kv_heads, t, hd]`, keeping room for
    /// the `window - 1` frames before them that their queries see.
    fn push(&mut self, k: &[f32], v: &[f32], kv_heads: usize, t: usize, hd: usize, window: usize) {
        let width = kv_heads * hd;
        let need = window + t;
        if self.cap < need || self.width != width || self.hd != hd {
            let mut nk = vec![0f32; need * width];
            let mut nkt = vec![0f32; (need + KT_PAD) * width];
            let mut nv = vec![0f32; need * width];
            if self.width == width && self.hd == hd {
                for p in self.total - self.total.min(self.cap)..self.total {
                    let (os, ns) = (p % self.cap, p % need);
                    let (a, b) = (os * width, ns * width);
                    nk[b..b + width].copy_from_slice(&self.k[a..a + width]);
                    nv[b..b + width].copy_from_slice(&self.v[a..a + width]);
                    for r in 0..width {
                        nkt[r * (need + KT_PAD) + ns] = self.kt[r * (self.cap + KT_PAD) + os];
                    }
                }
            }
            (self.cap, self.width, self.hd) = (need, width, hd);
            (self.k, self.kt, self.v) = (nk, nkt, nv);
        }
        for i in 0..t {
            let s = (self.total + i) % self.cap;
            let slot = s * width;
            for g in 0..kv_heads {
                let src = (g * t + i) * hd;
                let dst = slot + g * hd;
                self.k[dst..dst + hd].copy_from_slice(&k[src..src + hd]);
                self.v[dst..dst + hd].copy_from_slice(&v[src..src + hd]);
                for (d, &kv) in k[src..src + hd].iter().enumerate() {
                    self.kt[(g * hd + d) * (self.cap + KT_PAD) + s] = kv;
                }
            }
        }
        self.total += t;
    }

    /// Causal sliding-window attention of `q` `[heads, t, hd]` (positions
    /// `base..base + t`, already pushed) → `out` `[t, heads·hd]`; heads in
    /// parallel when the pool has threads and the work is large.
    #[allow(clippy::too_many_arguments)]
    fn attend_into(
        &self,
        q: &[f32],
        base: usize,
        heads: usize,
        kv_heads: usize,
        t: usize,
        hd: usize,
        window: usize,
        out: &mut [f32],
    ) {
        use rayon::prelude::*;
        let mut per_head = vec![0f32; heads * t * hd];
        let old = attn_old();
        let run = |(h, o): (usize, &mut [f32])| {
            let g = h / (heads / kv_heads);
            let qh = &q[h * t * hd..(h + 1) * t * hd];
            #[cfg(target_arch = "x86_64")]
            {
                if !old && std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the feature is present.
                    return unsafe { self.keys_avx512(qh, g, base, t, hd, window, o) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features are present.
                    return unsafe { self.head_avx2(qh, g, base, t, hd, window, o, old) };
                }
            }
            if old {
                self.head_any(qh, g, base, t, hd, window, o)
            } else {
                self.keys_any(qh, g, base, t, hd, window, o)
            }
        };
        if rayon::current_num_threads() > 1 && t * window >= 4096 {
            per_head.par_chunks_mut(t * hd).enumerate().for_each(run);
        } else {
            per_head.chunks_mut(t * hd).enumerate().for_each(run);
        }
        for (h, ph) in per_head.chunks_exact(t * hd).enumerate() {
            for (i, row) in ph.chunks_exact(hd).enumerate() {
                out[(i * heads + h) * hd..][..hd].copy_from_slice(row);
            }
        }
    }

    /// [`Self::attend_into`] into a fresh `[t, heads·hd]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        q: &[f32],
        base: usize,
        heads: usize,
        kv_heads: usize,
        t: usize,
        hd: usize,
        window: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; t * heads * hd];
        self.attend_into(q, base, heads, kv_heads, t, hd, window, &mut out);
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn head_avx2(
        &self,
        q: &[f32],
        g: usize,
        base: usize,
        t: usize,
        hd: usize,
        window: usize,
        out: &mut [f32],
        old: bool,
    ) {
        if old {
            self.head_any(q, g, base, t, hd, window, out)
        } else {
            self.keys_any(q, g, base, t, hd, window, out)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn keys_avx512(
        &self,
        q: &[f32],
        g: usize,
        base: usize,
        t: usize,
        hd: usize,
        window: usize,
        out: &mut [f32],
    ) {
        self.keys_any(q, g, base, t, hd, window, out)
    }

    /// Ring slots of positions `lo..=p`: at most two contiguous runs
    /// `(first slot, count)`.
    fn runs(&self, lo: usize, p: usize) -> [(usize, usize); 2] {
        let (s0, len) = (lo % self.cap, p + 1 - lo);
        let first = len.min(self.cap - s0);
        [(s0, first), (0, len - first)]
    }

    /// One head's attention, vectorized across the keys: `q` `[t, hd]`
    /// against key/value group `g` → `out` `[t, hd]`. Each score is
    /// `Σ_d q[d]·k[d]` in order `d = 0..hd` with fused multiply-adds, the
    /// softmax sum runs in 16 lanes over the keys in position order, and the
    /// output sums the keys in position order with fused multiply-adds: the
    /// same bits whatever the ring's layout, the number of frames per push
    /// or the vector width.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn keys_any(
        &self,
        q: &[f32],
        g: usize,
        base: usize,
        t: usize,
        hd: usize,
        window: usize,
        out: &mut [f32],
    ) {
        const L: usize = 16;
        const K64: usize = 64;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let mut w = vec![0f32; window.min(base + t).next_multiple_of(L)];
        for i in 0..t {
            let qv = &q[i * hd..(i + 1) * hd];
            let p = base + i;
            let lo = (p + 1).saturating_sub(window);
            let len = p + 1 - lo;
            let runs = self.runs(lo, p);
            let s = &mut w[..len];
            let mut j0 = 0;
            for &(s0, n) in &runs {
                let dst = &mut s[j0..j0 + n];
                // 64 keys at a time in registers (a row has `KT_PAD` spare
                // slots, so the last block may run past the run's end).
                let kst = self.cap + KT_PAD;
                for j in (0..n).step_by(K64) {
                    let mut acc = [0f32; K64];
                    for (d, &qd) in qv.iter().enumerate() {
                        let row = &self.kt[(g * hd + d) * kst + s0 + j..][..K64];
                        for (a, &kv) in acc.iter_mut().zip(row) {
                            *a = qd.mul_add(kv, *a);
                        }
                    }
                    let w = K64.min(n - j);
                    dst[j..j + w].copy_from_slice(&acc[..w]);
                }
                j0 += n;
            }
            let mut mx = [f32::NEG_INFINITY; L];
            let chunks = s.chunks_exact(L);
            let rest = chunks.remainder();
            for c in chunks {
                for (m, &v) in mx.iter_mut().zip(c) {
                    *m = m.max(v);
                }
            }
            for (m, &v) in mx.iter_mut().zip(rest) {
                *m = m.max(v);
            }
            let m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
            let mut sum = [0f32; L];
            let mut chunks = s.chunks_exact_mut(L);
            for c in &mut chunks {
                for (a, v) in sum.iter_mut().zip(c.iter_mut()) {
                    *v = exp_f32(*v * scale - m);
                    *a += *v;
                }
            }
            for (a, v) in sum.iter_mut().zip(chunks.into_remainder()) {
                *v = exp_f32(*v * scale - m);
                *a += *v;
            }
            let total = sum.iter().sum::<f32>();
            for v in s.iter_mut() {
                *v /= total;
            }
            // 64 output columns at a time in registers.
            let dst = &mut out[i * hd..(i + 1) * hd];
            for c0 in (0..hd).step_by(K64) {
                let cw = K64.min(hd - c0);
                let mut acc = [0f32; K64];
                let mut e = s.iter();
                for &(s0, n) in &runs {
                    for slot in s0..s0 + n {
                        let o = slot * self.width + g * hd + c0;
                        let wj = *e.next().expect("one weight per key");
                        if cw == K64 {
                            let row = &self.v[o..o + K64];
                            for (a, &vv) in acc.iter_mut().zip(row) {
                                *a = wj.mul_add(vv, *a);
                            }
                        } else {
                            for (a, &vv) in acc.iter_mut().zip(&self.v[o..o + cw]) {
                                *a = wj.mul_add(vv, *a);
                            }
                        }
                    }
                }
                dst[c0..c0 + cw].copy_from_slice(&acc[..cw]);
            }
        }
    }

    /// One head's attention, a dot per key (the session-6 kernel, for
    /// `VOXTOK_MIMI_ATTN=old`): `q` `[t, hd]` against key/value group `g` →
    /// `out` `[t, hd]`. Softmax with the vectorizable exp (relative error
    /// below 2e-7).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn head_any(
        &self,
        q: &[f32],
        g: usize,
        base: usize,
        t: usize,
        hd: usize,
        window: usize,
        out: &mut [f32],
    ) {
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let mut w = Vec::with_capacity(window);
        for i in 0..t {
            let qv = &q[i * hd..(i + 1) * hd];
            let p = base + i;
            let lo = (p + 1).saturating_sub(window);
            let runs = self.runs(lo, p);
            w.clear();
            for &(s, n) in &runs {
                for slot in s..s + n {
                    let o = slot * self.width + g * hd;
                    w.push(dot(qv, &self.k[o..o + hd]) * scale);
                }
            }
            let m = w.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            for s in w.iter_mut() {
                *s = exp_f32(*s - m);
            }
            let sum: f32 = w.iter().sum();
            let dst = &mut out[i * hd..(i + 1) * hd];
            dst.fill(0.0);
            let mut e = w.iter();
            for &(s, n) in &runs {
                for slot in s..s + n {
                    let o = slot * self.width + g * hd;
                    let wj = e.next().expect("one weight per key") / sum;
                    for (d, &vv) in dst.iter_mut().zip(&self.v[o..o + hd]) {
                        *d += wj * vv;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct TransformerLayer {
    attn: Attention,
    fc1: Linear,
    fc2: Linear,
    ln1: LayerNorm,
    ln2: LayerNorm,
    attn_scale: Tensor,
    mlp_scale: Tensor,
}

#[derive(Debug, Clone, Copy)]
enum Act {
    GeluErf,
    GeluTanh,
}

/// `MimiTransformerModel`: pre-norm layers with RoPE and causal
/// sliding-window attention.
#[derive(Debug, Clone)]
struct Transformer {
    layers: Vec<TransformerLayer>,
    inv_freq: Vec<f32>,
    window: Option<usize>,
    act: Act,
    /// The fused step's packed weights, built on the first streaming step
    /// (`None` when a layer cannot take it).
    fast: std::sync::OnceLock<Option<Vec<FastLayer>>>,
}

/// Loads `weight` `[dout, din]` (and `bias`): the shared linear, whose few-row
/// kernel streams the weight once per call (a streaming push sees a frame or
/// two) and whose larger calls run one 2-D GEMM without copying the weight.
fn linear(vb: VarBuilder, din: usize, dout: usize, bias: bool) -> candle_core::Result<Linear> {
    Ok(Linear::new(
        vb.get((dout, din), "weight")?,
        if bias {
            Some(vb.get(dout, "bias")?)
        } else {
            None
        },
    ))
}

impl Transformer {
    fn load(cfg: &MimiConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let heads = cfg.num_attention_heads;
        let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
        let ab = cfg.attention_bias;
        let ln_cfg = candle_nn::LayerNormConfig {
            eps: cfg.norm_eps,
            ..Default::default()
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                let a = vb.pp("self_attn");
                Ok(TransformerLayer {
                    attn: Attention {
                        q: linear(a.pp("q_proj"), h, heads * hd, ab)?,
                        k: linear(a.pp("k_proj"), h, kv_heads * hd, ab)?,
                        v: linear(a.pp("v_proj"), h, kv_heads * hd, ab)?,
                        o: linear(a.pp("o_proj"), heads * hd, h, ab)?,
                        heads,
                        kv_heads,
                        head_dim: hd,
                    },
                    fc1: linear(vb.pp("mlp.fc1"), h, cfg.intermediate_size, false)?,
                    fc2: linear(vb.pp("mlp.fc2"), cfg.intermediate_size, h, false)?,
                    ln1: candle_nn::layer_norm(h, ln_cfg, vb.pp("input_layernorm"))?,
                    ln2: candle_nn::layer_norm(h, ln_cfg, vb.pp("post_attention_layernorm"))?,
                    attn_scale: vb.get(h, "self_attn_layer_scale.scale")?,
                    mlp_scale: vb.get(h, "mlp_layer_scale.scale")?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // As torch computes it: base ** (arange(0, d, 2) / d) in float32.
        let theta = cfg.rope_theta() as f32;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        let act = match cfg.hidden_act.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Act::GeluTanh,
            _ => Act::GeluErf,
        };
        Ok(Self {
            layers,
            inv_freq,
            window: cfg.sliding_window,
            act,
            fast: std::sync::OnceLock::new(),
        })
    }

    /// cos/sin rows `[t · D/2]` for positions `offset..offset + t`.
    fn rope_tables(&self, offset: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in offset..offset + t {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// cos/sin `[T, D/2]` for positions `offset..offset + t`.
    fn rope(&self, offset: usize, t: usize, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = self.rope_tables(offset, t);
        Ok((
            Tensor::from_vec(cos, (t, half), dev)?,
            Tensor::from_vec(sin, (t, half), dev)?,
        ))
    }

    /// The streaming step of one stream on CPU for `x` `[t, C]` (rows) at
    /// positions `offset..`, in place: packed products, norms, RoPE and
    /// layer scales in plain loops, keys/values through the rings (the
    /// candle path's arithmetic apart from the products' summation order).
    /// `caches` holds one ring per layer, or a single scratch ring that a
    /// whole sequence (no past) reuses for every layer.
    fn forward_fused(
        &self,
        fast: &[FastLayer],
        x: &mut [f32],
        t: usize,
        offset: usize,
        caches: &mut [KvCache],
        window: usize,
    ) -> candle_core::Result<()> {
        let c = x.len() / t;
        let half = self.inv_freq.len();
        let (cos, sin) = self.rope_tables(offset, t);
        let par = rows_parallel() && t >= packed::ROW_SPLIT && rayon::current_num_threads() > 1;
        let mut prof = SubStages::new(t > FUSED_MAX_T);
        let width = |f: fn(&FastLayer) -> usize| fast.iter().map(f).max().unwrap_or(0);
        let (nq, nf) = (width(|f| f.qkv.n), width(|f| f.fc1.n));
        let (mut h, mut tmp) = (vec![0f32; t * c], vec![0f32; t * c]);
        let mut qkv = vec![0f32; t * nq];
        let mut f = vec![0f32; t * nf];
        let (mut q, mut k, mut v, mut y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let shared = caches.len() == 1 && self.layers.len() > 1;
        for (li, (layer, fl)) in self.layers.iter().zip(fast).enumerate() {
            let cache = if shared {
                caches[0].ring.total = 0;
                &mut caches[0]
            } else {
                &mut caches[li]
            };
            let a = &layer.attn;
            let (heads, kvh, hd) = (a.heads, a.kv_heads, a.head_dim);
            for_rows(par, x, &mut h, c, c, |src, dst| {
                layer_norm_row(src, dst, &fl.ln1)
            });
            prof.mark(0);
            let nq = fl.qkv.n;
            fl.qkv.forward(&h, t, &mut qkv[..t * nq]);
            prof.mark(1);
            // RoPE into the `[heads, t, hd]` layouts the ring takes (heads
            // in parallel when `par`).
            q.resize(heads * t * hd, 0.0);
            k.resize(kvh * t * hd, 0.0);
            v.resize(kvh * t * hd, 0.0);
            {
                use rayon::prelude::*;
                let (qkv, cos, sin) = (&qkv, &cos, &sin);
                let fill = |col: usize, rotate: bool| {
                    move |(hh, out): (usize, &mut [f32])| {
                        for (i, dst) in out.chunks_exact_mut(hd).enumerate() {
                            let src = &qkv[i * nq + col + hh * hd..][..hd];
                            if rotate {
                                let (cs, sn) = (&cos[i * half..][..half], &sin[i * half..][..half]);
                                rope_into(src, cs, sn, dst);
                            } else {
                                dst.copy_from_slice(src);
                            }
                        }
                    }
                };
                let parts = [
                    (&mut q, 0, true),
                    (&mut k, heads * hd, true),
                    (&mut v, (heads + kvh) * hd, false),
                ];
                for (buf, col, rotate) in parts {
                    if par {
                        buf.par_chunks_mut(t * hd)
                            .enumerate()
                            .for_each(fill(col, rotate));
                    } else {
                        buf.chunks_mut(t * hd)
                            .enumerate()
                            .for_each(fill(col, rotate));
                    }
                }
            }
            prof.mark(2);
            let ring = &mut cache.ring;
            let base = ring.total;
            ring.push(&k, &v, kvh, t, hd, window);
            y.resize(t * heads * hd, 0.0);
            ring.attend_into(&q, base, heads, kvh, t, hd, window, &mut y);
            prof.mark(3);
            fl.o.forward(&y, t, &mut tmp);
            prof.mark(4);
            add_scaled(par, x, &tmp, &fl.attn_scale);
            for_rows(par, x, &mut h, c, c, |src, dst| {
                layer_norm_row(src, dst, &fl.ln2)
            });
            prof.mark(0);
            let nf = fl.fc1.n;
            let f = &mut f[..t * nf];
            fl.fc1.forward(&h, t, f);
            prof.mark(5);
            match self.act {
                Act::GeluErf if rows_parallel() => gelu_erf_in_place(par, f),
                act => {
                    let g = Tensor::from_slice(f, f.len(), &Device::Cpu)?;
                    let g = match act {
                        Act::GeluErf => g.gelu_erf()?,
                        Act::GeluTanh => g.gelu()?,
                    };
                    f.copy_from_slice(&g.to_vec1::<f32>()?);
                }
            }
            prof.mark(6);
            fl.fc2.forward(f, t, &mut tmp);
            prof.mark(7);
            add_scaled(par, x, &tmp, &fl.mlp_scale);
            prof.mark(0);
        }
        prof.report();
        Ok(())
    }

    /// Additive mask `[t, past + t]`: query `past + i` sees keys `j <= past + i`
    /// within the sliding window.
    fn mask(&self, past: usize, t: usize, dev: &Device) -> candle_core::Result<Option<Tensor>> {
        let tk = past + t;
        let mut m = vec![0f32; t * tk];
        let mut any = false;
        for i in 0..t {
            let q = past + i;
            for j in 0..tk {
                let visible = j <= q && self.window.is_none_or(|w| q - j < w);
                if !visible {
                    m[i * tk + j] = f32::NEG_INFINITY;
                    any = true;
                }
            }
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(m, (t, tk), dev)?))
    }

    /// Runs `[B, T, C]` at positions `offset..`; with `caches`, attends to and
    /// extends the past keys/values (trimmed to the window).
    fn forward(
        &self,
        xs: &Tensor,
        offset: usize,
        caches: Option<&mut Vec<KvCache>>,
    ) -> candle_core::Result<Tensor> {
        self.forward_with(xs, offset, caches, fused_enabled())
    }

    /// The packed layers, built on first use.
    fn fast(&self) -> Option<&[FastLayer]> {
        self.fast
            .get_or_init(|| {
                self.layers
                    .iter()
                    .map(FastLayer::new)
                    .collect::<candle_core::Result<Option<Vec<_>>>>()
                    .ok()
                    .flatten()
            })
            .as_deref()
    }

    /// [`Self::forward`]; `fused` lets a streaming step of one stream on CPU
    /// with few frames take [`Self::forward_fused`].
    fn forward_with(
        &self,
        xs: &Tensor,
        offset: usize,
        mut caches: Option<&mut Vec<KvCache>>,
        fused: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        if t == 0 {
            return Ok(xs.clone());
        }
        if let Some(window) = self.window {
            let few = caches.is_some() && t <= FUSED_MAX_T;
            if fused
                && (few || fused_whole())
                && b == 1
                && xs.device().is_cpu()
                && xs.dtype() == DType::F32
            {
                if let Some(fast) = self.fast() {
                    let mut x = xs.flatten_all()?.to_vec1::<f32>()?;
                    let mut own;
                    let kv = match caches.as_deref_mut() {
                        Some(kv) => kv,
                        // A whole sequence keeps no keys: one scratch ring,
                        // emptied before each layer.
                        None => {
                            own = vec![KvCache::default(); 1];
                            &mut own
                        }
                    };
                    self.forward_fused(fast, &mut x, t, offset, kv, window)?;
                    return Tensor::from_vec(x, (1, t, c), xs.device());
                }
            }
        }
        let dev = xs.device();
        let (cos, sin) = self.rope(offset, t, dev)?;
        let mut xs = xs.clone();
        for (li, layer) in self.layers.iter().enumerate() {
            let a = &layer.attn;
            let hd = a.head_dim;
            let h = layer.ln1.forward(&xs)?;
            let q =
                a.q.forward(&h)?
                    .reshape((b, t, a.heads, hd))?
                    .transpose(1, 2)?;
            let k =
                a.k.forward(&h)?
                    .reshape((b, t, a.kv_heads, hd))?
                    .transpose(1, 2)?;
            let v =
                a.v.forward(&h)?
                    .reshape((b, t, a.kv_heads, hd))?
                    .transpose(1, 2)?;
            let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
            let mut k = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
            let ring = match (caches.as_deref_mut(), self.window) {
                (Some(c), Some(w)) if b == 1 && k.device().is_cpu() && k.dtype() == DType::F32 => {
                    Some((&mut c[li].ring, w))
                }
                _ => None,
            };
            let y = if let Some((ring, window)) = ring {
                // One stream on CPU: keys/values in a ring, attention in
                // plain loops (no per-push cache copies or small matmuls).
                let (q, k, v) = (
                    q.flatten_all()?.to_vec1::<f32>()?,
                    k.flatten_all()?,
                    v.flatten_all()?,
                );
                let base = ring.total;
                ring.push(
                    &k.to_vec1::<f32>()?,
                    &v.to_vec1::<f32>()?,
                    a.kv_heads,
                    t,
                    hd,
                    window,
                );
                let y = ring.attend(&q, base, a.heads, a.kv_heads, t, hd, window);
                Tensor::from_vec(y, (1, t, a.heads * hd), dev)?
            } else {
                let mut v = v.contiguous()?;
                let mut past = 0;
                if let Some(caches) = caches.as_deref_mut() {
                    let cache = &mut caches[li];
                    if let (Some(pk), Some(pv)) = (&cache.k, &cache.v) {
                        past = pk.dim(2)?;
                        k = Tensor::cat(&[pk, &k], 2)?;
                        v = Tensor::cat(&[pv, &v], 2)?;
                    }
                    // Keep what the next queries can still see.
                    let n = k.dim(2)?;
                    let keep = self.window.map_or(n, |w| n.min(w));
                    cache.k = Some(k.narrow(2, n - keep, keep)?.contiguous()?);
                    cache.v = Some(v.narrow(2, n - keep, keep)?.contiguous()?);
                }
                if a.kv_heads != a.heads {
                    let rep = a.heads / a.kv_heads;
                    let n = k.dim(2)?;
                    k = k
                        .unsqueeze(2)?
                        .expand((b, a.kv_heads, rep, n, hd))?
                        .reshape((b, a.heads, n, hd))?;
                    v = v
                        .unsqueeze(2)?
                        .expand((b, a.kv_heads, rep, n, hd))?
                        .reshape((b, a.heads, n, hd))?;
                }
                let scale = 1.0 / (hd as f64).sqrt();
                let mut w = (q.matmul(&k.t()?)? * scale)?;
                // Positions of the cached keys start at `offset - past`; the mask
                // is relative, so build it for `past` earlier keys.
                if let Some(m) = self.mask(past, t, dev)? {
                    w = w.broadcast_add(&m)?;
                }
                let w = candle_nn::ops::softmax_last_dim(&w)?;
                w.matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((b, t, a.heads * hd))?
            };
            let y = a.o.forward(&y)?;
            xs = (xs + y.broadcast_mul(&layer.attn_scale)?)?;
            let h = layer.fc1.forward(&layer.ln2.forward(&xs)?)?;
            let h = match self.act {
                Act::GeluErf => h.gelu_erf()?,
                Act::GeluTanh => h.gelu()?,
            };
            let h = layer.fc2.forward(&h)?;
            xs = (xs + h.broadcast_mul(&layer.mlp_scale)?)?;
        }
        Ok(xs)
    }
}

// ------------------------------------------------- fused few-frame step

/// Few-row products against weights packed in column panels, for the
/// transformer's streaming step (a push brings a frame or two).
///
/// A weight `[n, k]` is stored as `n/64` panels of `[k][64]`, so one pass
/// reads it as a single sequential stream (about 2.5x the rate of dotting
/// rows against the input here) and each output is `Σ_p x[p]·w[p]` summed in
/// order `p = 0..k` with fused multiply-adds, then `+ bias`: the same bits on
/// AVX-512, AVX2 and the portable path, whatever the number of rows.
mod packed {
    use rayon::prelude::*;

    /// Output columns per panel (four AVX-512 vectors).
    pub const PANEL: usize = 64;
    /// Input rows per pass over the weights (4·MR accumulators).
    pub const MR: usize = 6;

    /// `y = x·Wᵀ (+ b)` with `W` packed for few rows.
    #[derive(Clone)]
    pub struct Packed {
        pub k: usize,
        pub n: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    }

    impl std::fmt::Debug for Packed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Packed({}x{})", self.n, self.k)
        }
    }

    impl Packed {
        /// Packs row-major `w` `[n, k]` (several weights stacked along `n`
        /// give one product for all of them).
        pub fn new(w: &[f32], bias: Option<Vec<f32>>, n: usize, k: usize) -> Self {
            assert_eq!(w.len(), n * k);
            assert!(bias.as_ref().is_none_or(|b| b.len() == n));
            let panels = n.div_ceil(PANEL);
            let mut p = vec![0f32; panels * k * PANEL];
            for j in 0..n {
                let (pi, c) = (j / PANEL, j % PANEL);
                let dst = &mut p[pi * k * PANEL..(pi + 1) * k * PANEL];
                for (q, &v) in w[j * k..(j + 1) * k].iter().enumerate() {
                    dst[q * PANEL + c] = v;
                }
            }
            Self { k, n, w: p, bias }
        }

        /// `y[m, n] = x[m, k] · Wᵀ (+ b)`, row-major; parallel over panels
        /// when the pool has more than one thread and the product is large.
        pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
            self.forward_with(x, m, y, kernel());
        }

        pub(super) fn forward_with(&self, x: &[f32], m: usize, y: &mut [f32], kern: Kernel) {
            let (k, n) = (self.k, self.n);
            assert!(x.len() >= m * k && y.len() >= m * n);
            if m == 0 {
                return;
            }
            let threads = rayon::current_num_threads();
            if m >= ROW_SPLIT && super::rows_parallel() {
                // Many rows (a whole file): row blocks in parallel, each
                // writing its rows of `y` straight from the kernel's tile
                // (same sums, no scatter buffer); a panel stays in L2 while
                // the block's row groups pass over it.
                // `4 · threads` blocks of whole 6-row groups, as equal as the
                // groups allow (equal-size chunks would leave e.g. 7 blocks
                // for 2 threads at 250 rows: one thread doing 4).
                let groups = m.div_ceil(MR);
                let tasks = (threads * 4).min(groups);
                let mut parts = Vec::with_capacity(tasks);
                let (mut xr, mut yr) = (&x[..m * k], &mut y[..m * n]);
                let mut done = 0;
                for i in 0..tasks {
                    let end = groups * (i + 1) / tasks;
                    let rows = ((end - done) * MR).min(xr.len() / k);
                    let (xa, xb) = xr.split_at(rows * k);
                    let (ya, yb) = std::mem::take(&mut yr).split_at_mut(rows * n);
                    parts.push((xa, ya));
                    (xr, yr, done) = (xb, yb, end);
                }
                let run = |(xb, yb): (&[f32], &mut [f32])| self.rows_into(xb, yb, kern);
                if threads > 1 {
                    parts.into_par_iter().for_each(run);
                } else {
                    parts.into_iter().for_each(run);
                }
                return;
            }
            let panels = n.div_ceil(PANEL);
            // Each panel's `m × 64` outputs, then scattered into y. Panels
            // outermost: a panel's weights (k·256 bytes) stay in L2 while
            // every 6-row group of the input passes over them.
            let mut out = vec![0f32; panels * m * PANEL];
            let run = |(pi, o): (usize, &mut [f32])| {
                let w = &self.w[pi * k * PANEL..(pi + 1) * k * PANEL];
                for r0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - r0);
                    panel(
                        kern,
                        rows,
                        &x[r0 * k..(r0 + rows) * k],
                        w,
                        k,
                        &mut o[r0 * PANEL..],
                    );
                }
            };
            if rayon::current_num_threads() > 1 && m * n * k >= 1 << 18 {
                out.par_chunks_mut(m * PANEL).enumerate().for_each(run);
            } else {
                out.chunks_mut(m * PANEL).enumerate().for_each(run);
            }
            for r in 0..m {
                let yr = &mut y[r * n..(r + 1) * n];
                for (pi, yc) in yr.chunks_mut(PANEL).enumerate() {
                    yc.copy_from_slice(&out[(pi * m + r) * PANEL..][..yc.len()]);
                }
                if let Some(b) = &self.bias {
                    for (v, b) in yr.iter_mut().zip(b) {
                        *v += b;
                    }
                }
            }
        }
    }

    impl Packed {
        /// `y = x·Wᵀ (+ b)` for the rows of `x` (one thread): panel by
        /// panel, 6-row groups through a stack tile, bias added after the
        /// sum (the bits of [`Packed::forward`]'s other path).
        pub(super) fn rows_into(&self, x: &[f32], y: &mut [f32], kern: Kernel) {
            let (k, n) = (self.k, self.n);
            let m = x.len() / k;
            let mut tile = [0f32; MR * PANEL];
            for pi in 0..n.div_ceil(PANEL) {
                let w = &self.w[pi * k * PANEL..(pi + 1) * k * PANEL];
                let (c0, cols) = (pi * PANEL, PANEL.min(n - pi * PANEL));
                let b = self.bias.as_ref().map(|b| &b[c0..c0 + cols]);
                for r0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - r0);
                    panel(kern, rows, &x[r0 * k..(r0 + rows) * k], w, k, &mut tile);
                    for r in 0..rows {
                        let dst = &mut y[(r0 + r) * n + c0..][..cols];
                        let src = &tile[r * PANEL..][..cols];
                        match b {
                            Some(b) => {
                                for ((d, &s), &bb) in dst.iter_mut().zip(src).zip(b) {
                                    *d = s + bb;
                                }
                            }
                            None => dst.copy_from_slice(src),
                        }
                    }
                }
            }
        }
    }

    /// Rows from which [`Packed::forward`] splits the rows among threads
    /// (fewer: the panels).
    pub const ROW_SPLIT: usize = 48;

    /// Which kernel runs (the portable ones exist for CPUs without AVX-512
    /// and for the equality test).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kernel {
        Avx512,
        Avx2,
        Portable,
    }

    pub fn kernel() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// `o[r·64 + c] = Σ_p x[r·k + p] · w[p·64 + c]` for `r < rows`.
    fn panel(kern: Kernel, rows: usize, x: &[f32], w: &[f32], k: usize, o: &mut [f32]) {
        macro_rules! each {
            ($f:ident) => {
                match rows {
                    1 => $f::<1>(x, w, k, o),
                    2 => $f::<2>(x, w, k, o),
                    3 => $f::<3>(x, w, k, o),
                    4 => $f::<4>(x, w, k, o),
                    5 => $f::<5>(x, w, k, o),
                    _ => $f::<6>(x, w, k, o),
                }
            };
        }
        assert!(
            rows <= MR && x.len() >= rows * k && w.len() >= k * PANEL && o.len() >= rows * PANEL
        );
        match kern {
            // SAFETY: the kernels are only chosen when the CPU has them;
            // the bounds are checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { each!(panel_avx512) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { each!(panel_fma) },
            _ => each!(panel_any),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn panel_avx512<const M: usize>(x: &[f32], w: &[f32], k: usize, o: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for p in 0..k {
            let wv = [
                _mm512_loadu_ps(wp.add(p * 64)),
                _mm512_loadu_ps(wp.add(p * 64 + 16)),
                _mm512_loadu_ps(wp.add(p * 64 + 32)),
                _mm512_loadu_ps(wp.add(p * 64 + 48)),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xp.add(r * k + p));
                for c in 0..4 {
                    a[c] = _mm512_fmadd_ps(b, wv[c], a[c]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (c, v) in a.iter().enumerate() {
                _mm512_storeu_ps(o.as_mut_ptr().add(r * 64 + c * 16), *v);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel_fma<const M: usize>(x: &[f32], w: &[f32], k: usize, o: &mut [f32]) {
        panel_any::<M>(x, w, k, o)
    }

    #[inline(always)]
    fn panel_any<const M: usize>(x: &[f32], w: &[f32], k: usize, o: &mut [f32]) {
        let mut acc = [[0f32; PANEL]; M];
        for (p, wr) in w[..k * PANEL].chunks_exact(PANEL).enumerate() {
            for (r, a) in acc.iter_mut().enumerate() {
                let b = x[r * k + p];
                for (a, &wv) in a.iter_mut().zip(wr) {
                    *a = b.mul_add(wv, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            o[r * PANEL..(r + 1) * PANEL].copy_from_slice(a);
        }
    }
}

/// Most frames a push may bring for the fused step; more take the candle
/// path (its GEMM is the better kernel for many rows).
const FUSED_MAX_T: usize = 16;

/// `VOXTOK_MIMI_FUSED` (read once): `0` sends everything through the candle
/// path, `stream` fuses only streaming steps of few frames, anything else
/// (the default) also whole files; for same-binary A/B runs.
fn fused_mode() -> &'static str {
    static MODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MODE.get_or_init(|| std::env::var("VOXTOK_MIMI_FUSED").unwrap_or_default())
}

/// False when `VOXTOK_MIMI_FUSED=0`.
fn fused_enabled() -> bool {
    fused_mode() != "0"
}

/// Whether whole files (many frames) take the fused path too.
fn fused_whole() -> bool {
    !matches!(fused_mode(), "0" | "stream")
}

/// A layer norm's weight, bias and epsilon.
type LnParts = (Vec<f32>, Vec<f32>, f32);

/// One layer's weights for the fused step: q, k, v stacked into one packed
/// product, the norms' and layer scales' vectors.
#[derive(Debug, Clone)]
struct FastLayer {
    qkv: packed::Packed,
    o: packed::Packed,
    fc1: packed::Packed,
    fc2: packed::Packed,
    ln1: LnParts,
    ln2: LnParts,
    attn_scale: Vec<f32>,
    mlp_scale: Vec<f32>,
}

fn vec1(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// Packs linears that read the same input into one product.
fn pack(ls: &[&Linear]) -> candle_core::Result<packed::Packed> {
    let k = ls[0].weight().dim(1)?;
    let (mut w, mut b, mut n) = (Vec::new(), Vec::new(), 0);
    let has_bias = ls.iter().any(|l| l.bias().is_some());
    for l in ls {
        let (ni, ki) = l.weight().dims2()?;
        if ki != k {
            candle_core::bail!("packed linears disagree on the input width");
        }
        w.extend(vec1(l.weight())?);
        match l.bias() {
            Some(t) => b.extend(vec1(t)?),
            None => b.extend(std::iter::repeat_n(0f32, ni)),
        }
        n += ni;
    }
    Ok(packed::Packed::new(&w, has_bias.then_some(b), n, k))
}

/// The norm's (weight, bias, eps) when it takes candle's fused layer-norm
/// path (bias present), whose arithmetic [`layer_norm_row`] repeats.
fn ln_parts(ln: &LayerNorm) -> candle_core::Result<Option<LnParts>> {
    Ok(match ln.bias() {
        Some(b) => Some((vec1(ln.weight())?, vec1(b)?, ln.eps() as f32)),
        None => None,
    })
}

impl FastLayer {
    fn new(l: &TransformerLayer) -> candle_core::Result<Option<Self>> {
        let (Some(ln1), Some(ln2)) = (ln_parts(&l.ln1)?, ln_parts(&l.ln2)?) else {
            return Ok(None);
        };
        let a = &l.attn;
        Ok(Some(Self {
            qkv: pack(&[&a.q, &a.k, &a.v])?,
            o: pack(&[&a.o])?,
            fc1: pack(&[&l.fc1])?,
            fc2: pack(&[&l.fc2])?,
            ln1,
            ln2,
            attn_scale: vec1(&l.attn_scale)?,
            mlp_scale: vec1(&l.mlp_scale)?,
        }))
    }
}

/// RoPE of one head's `hd` values (halves rotated), as candle's `rope`.
fn rope_into(src: &[f32], cos: &[f32], sin: &[f32], dst: &mut [f32]) {
    let d2 = src.len() / 2;
    for i in 0..d2 {
        let (a, b) = (src[i], src[i + d2]);
        dst[i] = a * cos[i] - b * sin[i];
        dst[i + d2] = a * sin[i] + b * cos[i];
    }
}

/// Layer norm of one row `src` into `dst`, in the order of candle's CPU
/// layer norm (so the same bits).
fn layer_norm_row(src: &[f32], dst: &mut [f32], (w, b, eps): &LnParts) {
    let c = src.len();
    let (mut sum, mut sum2) = (0f32, 0f32);
    for &v in src {
        sum += v;
        sum2 += v * v;
    }
    let mean = sum / c as f32;
    let var = sum2 / c as f32 - mean * mean;
    let inv_std = (var + eps).sqrt().recip();
    for ((d, &s), (&a, &bb)) in dst.iter_mut().zip(src).zip(w.iter().zip(b)) {
        *d = (s - mean) * inv_std * a + bb;
    }
}

/// `f(row of x, row of y)` for each `cx`-wide row of `x` and `cy`-wide row
/// of `y`, row blocks in parallel when `par` (per-row work: the same bits).
fn for_rows<F>(par: bool, x: &[f32], y: &mut [f32], cx: usize, cy: usize, f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    const BLOCK: usize = 16;
    let each = |(xb, yb): (&[f32], &mut [f32])| {
        for (src, dst) in xb.chunks_exact(cx).zip(yb.chunks_exact_mut(cy)) {
            f(src, dst);
        }
    };
    if par {
        x.par_chunks(BLOCK * cx)
            .zip(y.par_chunks_mut(BLOCK * cy))
            .for_each(each);
    } else {
        each((x, y));
    }
}

/// `x += y · scale` per `c`-wide row (as `x + (y * scale)`, two roundings,
/// like the candle path); row blocks in parallel when `par`.
fn add_scaled(par: bool, x: &mut [f32], y: &[f32], scale: &[f32]) {
    let c = scale.len();
    for_rows(par, y, x, c, c, |yr, xr| {
        for ((a, &b), &s) in xr.iter_mut().zip(yr).zip(scale) {
            *a += b * s;
        }
    });
}

/// candle's `gelu_erf` on f32 (`(erf(v/√2) + 1) · 0.5 · v` with candle's
/// `erf`, libm's `erff`): the same bits, 16 values at a time through
/// [`erff_near`] where `|v/√2| < 1.25` and libm's `erff` elsewhere; blocks in
/// parallel when `par`.
fn gelu_erf_in_place(par: bool, f: &mut [f32]) {
    use rayon::prelude::*;
    let each = |b: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature is present.
            return unsafe { gelu_avx512(b) };
        }
        gelu_any(b)
    };
    if par {
        f.par_chunks_mut(8192).for_each(each);
    } else {
        each(f);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(f: &mut [f32]) {
    gelu_any(f)
}

#[inline(always)]
fn gelu_any(f: &mut [f32]) {
    const L: usize = 16;
    let exact = |v: f32| {
        (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * v
    };
    let mut chunks = f.chunks_exact_mut(L);
    for c in &mut chunks {
        let mut e = [0f32; L];
        let mut far = false;
        for (e, &v) in e.iter_mut().zip(c.iter()) {
            let (y, near) = erff_near(v * std::f32::consts::FRAC_1_SQRT_2);
            *e = y;
            far |= !near;
        }
        if far {
            for (e, &v) in e.iter_mut().zip(c.iter()) {
                if !erff_near(v * std::f32::consts::FRAC_1_SQRT_2).1 {
                    *e = candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2);
                }
            }
        }
        for (v, &e) in c.iter_mut().zip(&e) {
            // (e + 1) · 0.5 · v, the product in that order.
            *v *= (e + 1.) * 0.5;
        }
    }
    for v in chunks.into_remainder() {
        *v = exact(*v);
    }
}

/// libm's `erff` (FreeBSD `s_erff.c`) for `|x| < 1.25`, branch-free: the
/// same operations in the same order (so the same bits); the flag is false
/// where `|x| ≥ 1.25` or `x` is not finite (the value is then unused).
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn erff_near(x: f32) -> (f32, bool) {
    const ERX: f32 = 8.450_629_115_1e-1;
    const EFX8: f32 = 1.027_033_329;
    const PP: [f32; 5] = [
        1.283_791_661_3e-1,
        -3.250_420_987_6e-1,
        -2.848_174_981_8e-2,
        -5.770_270_247e-3,
        -2.376_301_745_2e-5,
    ];
    const QQ: [f32; 5] = [
        3.979_172_110_6e-1,
        6.502_225_25e-2,
        5.081_306_211_7e-3,
        1.324_947_370_4e-4,
        -3.960_228_241_3e-6,
    ];
    const PA: [f32; 7] = [
        -2.362_118_568_3e-3,
        4.148_561_060_4e-1,
        -3.722_078_800_2e-1,
        3.183_466_196_1e-1,
        -1.108_946_949_2e-1,
        3.547_830_507_2e-2,
        -2.166_375_517_8e-3,
    ];
    const QA: [f32; 6] = [
        1.064_208_820_5e-1,
        5.403_979_420_7e-1,
        7.182_865_589_9e-2,
        1.261_712_163_7e-1,
        1.363_708_358_3e-2,
        1.198_450_010_3e-2,
    ];
    let ix = x.to_bits() & 0x7fff_ffff;
    // |x| < 0.84375
    let z = x * x;
    let r = PP[0] + z * (PP[1] + z * (PP[2] + z * (PP[3] + z * PP[4])));
    let s = 1.0 + z * (QQ[0] + z * (QQ[1] + z * (QQ[2] + z * (QQ[3] + z * QQ[4]))));
    let y = r / s;
    let small = x + x * y;
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    // 0.84375 <= |x| < 1.25: 1 - erfc1(x), signed
    let s = f32::from_bits(ix) - 1.0;
    let p = PA[0] + s * (PA[1] + s * (PA[2] + s * (PA[3] + s * (PA[4] + s * (PA[5] + s * PA[6])))));
    let q = 1.0 + s * (QA[0] + s * (QA[1] + s * (QA[2] + s * (QA[3] + s * (QA[4] + s * QA[5])))));
    let mid = 1.0 - (1.0 - ERX - p / q);
    let mid = if x.to_bits() >> 31 != 0 { -mid } else { mid };
    let y = if ix < 0x3180_0000 {
        tiny
    } else if ix < 0x3f58_0000 {
        small
    } else {
        mid
    };
    (y, ix < 0x3fa0_0000)
}

/// Thread time per part of one whole-file fused transformer call, printed
/// with `VOXTOK_MIMI_PROFILE=1`.
struct SubStages {
    t: Option<Instant>,
    ms: [f64; 8],
}

impl SubStages {
    const NAMES: [&'static str; 8] = [
        "norms+residual",
        "qkv",
        "rope",
        "attention",
        "o",
        "fc1",
        "gelu",
        "fc2",
    ];

    fn new(on: bool) -> Self {
        Self {
            t: (on && profile_enabled()).then(Instant::now),
            ms: [0.0; 8],
        }
    }

    fn mark(&mut self, part: usize) {
        if let Some(t) = self.t {
            let now = Instant::now();
            self.ms[part] += (now - t).as_secs_f64() * 1e3;
            self.t = Some(now);
        }
    }

    fn report(&self) {
        if self.t.is_some() {
            let parts: Vec<String> = Self::NAMES
                .iter()
                .zip(self.ms)
                .map(|(n, ms)| format!("{n} {ms:.1}"))
                .collect();
            eprintln!("mimi transformer ms: {}", parts.join(", "));
        }
    }
}

/// `VOXTOK_MIMI_ATTN=old`: the session-6 attention (a dot per key) instead
/// of the kernel vectorized across keys (read once; for A/B).
fn attn_old() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_MIMI_ATTN").is_ok_and(|v| v == "old"))
}

/// `VOXTOK_MIMI_ROWPAR=0`: the fused transformer's many-row work runs as in
/// session 6 (products parallel over panels through a scatter buffer,
/// norms, residuals and GELU on one thread) instead of row blocks in
/// parallel (read once; for A/B).
fn rows_parallel() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_MIMI_ROWPAR").map_or(true, |v| v != "0"))
}

// -------------------------------------------------------------- quantizer

/// One Euclidean codebook (`embed_sum / max(cluster_usage, 1e-5)`).
#[derive(Debug, Clone)]
struct Codebook {
    embed: Tensor,
    /// `x · embedᵀ` (the few-row kernel for a streamed frame or two).
    scores: Linear,
    /// `sum(embed^2)` per entry, `[1, C]`.
    e2: Tensor,
}

impl Codebook {
    fn load(vb: VarBuilder, size: usize, dim: usize) -> candle_core::Result<Self> {
        let sum = vb.get((size, dim), "embed_sum")?;
        let usage = vb.get(size, "cluster_usage")?.clamp(1e-5f32, f32::MAX)?;
        let embed = sum.broadcast_div(&usage.unsqueeze(1)?)?.contiguous()?;
        let e2 = embed.sqr()?.sum_keepdim(1)?.t()?;
        Ok(Self {
            scores: Linear::new(embed.clone(), None),
            embed,
            e2,
        })
    }

    /// Nearest entry for each row of `xs` `[M, D]` → `[M]` u32.
    fn quantize(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let x2 = xs.sqr()?.sum_keepdim(1)?;
        let xe = (self.scores.forward(xs)? * 2.0)?;
        let dist = x2.broadcast_sub(&xe)?.broadcast_add(&self.e2)?;
        dist.argmin(D::Minus1)
    }
}

/// `MimiResidualVectorQuantizer`: optional 1x1 projections around an RVQ.
#[derive(Debug, Clone)]
struct Rvq {
    input_proj: Option<Tensor>,
    output_proj: Option<Tensor>,
    codebooks: Vec<Codebook>,
    /// Packed projection and codebooks for few rows on CPU, built on first
    /// use (`None` when the weights do not fit the path).
    fast: std::sync::OnceLock<Option<FastRvq>>,
}

/// [`Rvq`]'s weights for the fused few-row path.
#[derive(Debug, Clone)]
struct FastRvq {
    proj: Option<packed::Packed>,
    /// Per codebook: `x · embedᵀ` packed, the entries `[C, D]`, `|e|²`.
    books: Vec<(packed::Packed, Vec<f32>, Vec<f32>)>,
}

impl FastRvq {
    fn new(r: &Rvq) -> candle_core::Result<Self> {
        let proj = match &r.input_proj {
            Some(w) => Some(pack(&[&Linear::new(w.clone(), None)])?),
            None => None,
        };
        let books = r
            .codebooks
            .iter()
            .map(|cb| Ok((pack(&[&cb.scores])?, vec1(&cb.embed)?, vec1(&cb.e2)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { proj, books })
    }

    /// Ids `[k][m]` for rows `xs` `[m, H]`: the candle path's arithmetic
    /// (`dist = (|x|² - 2·x·e) + |e|²`, first minimum) apart from the
    /// products' summation order.
    fn encode(&self, xs: &[f32], m: usize, k: usize) -> Vec<Vec<u32>> {
        let mut r = match &self.proj {
            Some(p) => {
                let mut y = vec![0f32; m * p.n];
                p.forward(xs, m, &mut y);
                y
            }
            None => xs.to_vec(),
        };
        let d = r.len() / m;
        let mut out = Vec::with_capacity(k);
        for (scores, embed, e2) in &self.books[..k] {
            let mut s = vec![0f32; m * scores.n];
            scores.forward(&r, m, &mut s);
            let mut ids = Vec::with_capacity(m);
            for (row, sr) in r.chunks_exact_mut(d).zip(s.chunks_exact(scores.n)) {
                let x2: f32 = row.iter().map(|v| v * v).sum();
                let (mut best, mut arg) = (f32::INFINITY, 0usize);
                for (j, (&sj, &ej)) in sr.iter().zip(e2).enumerate() {
                    let dist = (x2 - sj * 2.0) + ej;
                    if dist < best {
                        (best, arg) = (dist, j);
                    }
                }
                for (v, &e) in row.iter_mut().zip(&embed[arg * d..(arg + 1) * d]) {
                    *v -= e;
                }
                ids.push(arg as u32);
            }
            out.push(ids);
        }
        out
    }
}

impl Rvq {
    fn load(cfg: &MimiConfig, vb: VarBuilder, n: usize) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let d = cfg.vector_quantization_hidden_dimension;
        let (input_proj, output_proj) = if d != h {
            (
                Some(vb.get((d, h, 1), "input_proj.weight")?.squeeze(2)?),
                Some(vb.get((h, d, 1), "output_proj.weight")?.squeeze(2)?),
            )
        } else {
            (None, None)
        };
        let dim = cfg.codebook_dim.unwrap_or(h);
        let codebooks = (0..n)
            .map(|i| {
                Codebook::load(
                    vb.pp(format!("layers.{i}.codebook")),
                    cfg.codebook_size,
                    dim,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            input_proj,
            output_proj,
            codebooks,
            fast: std::sync::OnceLock::new(),
        })
    }

    /// Latents `[M, H]` (frames as rows) → ids `[k][M]`.
    fn encode(&self, xs: &Tensor, k: usize) -> candle_core::Result<Vec<Tensor>> {
        self.encode_with(xs, k, fused_enabled())
    }

    /// [`Self::encode`]; `fused` lets few rows on CPU take [`FastRvq`].
    fn encode_with(&self, xs: &Tensor, k: usize, fused: bool) -> candle_core::Result<Vec<Tensor>> {
        let m = xs.dim(0)?;
        if fused
            && (m <= FUSED_MAX_T || fused_whole())
            && xs.device().is_cpu()
            && xs.dtype() == DType::F32
        {
            let fast = self.fast.get_or_init(|| FastRvq::new(self).ok()).as_ref();
            if let Some(f) = fast {
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                return f
                    .encode(&x, m, k)
                    .into_iter()
                    .map(|ids| Tensor::from_vec(ids, m, xs.device()))
                    .collect();
            }
        }
        let mut residual = match &self.input_proj {
            Some(w) => xs.matmul(&w.t()?)?,
            None => xs.clone(),
        };
        let mut out = Vec::with_capacity(k);
        for cb in &self.codebooks[..k] {
            let ids = cb.quantize(&residual)?;
            let q = cb.embed.index_select(&ids, 0)?;
            residual = (residual - q)?;
            out.push(ids);
        }
        Ok(out)
    }

    /// Ids `[k][M]` → latents `[M, H]`.
    fn decode(&self, ids: &[Tensor]) -> candle_core::Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for (cb, ids) in self.codebooks.iter().zip(ids) {
            let q = cb.embed.index_select(ids, 0)?;
            acc = Some(match acc {
                None => q,
                Some(a) => (a + q)?,
            });
        }
        let acc = acc.expect("at least one codebook");
        match &self.output_proj {
            Some(w) => acc.matmul(&w.t()?),
            None => Ok(acc),
        }
    }
}

// ------------------------------------------------------------------ model

/// Mimi loaded from a `MimiModel` directory.
pub struct Mimi {
    cfg: MimiConfig,
    info: TokenizerInfo,
    encoder: Vec<Layer>,
    encoder_transformer: Transformer,
    downsample: Option<Conv>,
    semantic: Rvq,
    acoustic: Rvq,
    upsample: Option<ConvT>,
    decoder_transformer: Transformer,
    decoder: Vec<Layer>,
    device: Device,
}

impl Mimi {
    /// Loads `config.json` + safetensors from `dir` (float32).
    pub fn load(dir: &ModelDir, device: &Device) -> Result<Self> {
        let cfg: MimiConfig = dir.config()?;
        let cfg_path = dir.root().join("config.json");
        let bad = |msg: String| CodecError::Config {
            path: cfg_path.clone(),
            msg,
        };
        if cfg.audio_channels != 1 {
            return Err(bad(format!(
                "audio_channels = {} (only mono is supported)",
                cfg.audio_channels
            )));
        }
        let Some(mode) = PadMode::parse(&cfg.pad_mode) else {
            return Err(bad(format!("pad_mode `{}`", cfg.pad_mode)));
        };
        if cfg.num_semantic_quantizers == 0 || cfg.num_semantic_quantizers >= cfg.num_quantizers {
            return Err(bad(format!(
                "num_semantic_quantizers = {} must be in 1..num_quantizers ({})",
                cfg.num_semantic_quantizers, cfg.num_quantizers
            )));
        }
        let kv_heads = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
        if cfg.num_attention_heads == 0
            || kv_heads == 0
            || !cfg.num_attention_heads.is_multiple_of(kv_heads)
            || !cfg.head_dim().is_multiple_of(2)
        {
            return Err(bad("attention heads / head_dim do not fit".into()));
        }
        if cfg.has_resample() && cfg.latent_stride() == 0 {
            return Err(bad(format!(
                "frame_rate {} is above the SEANet frame rate {}",
                cfg.frame_rate(),
                cfg.encodec_frame_rate()
            )));
        }
        let vb = dir.var_builder(DType::F32, device)?;
        let h = cfg.hidden_size;
        let (downsample, upsample) = if cfg.has_resample() {
            let s = cfg.latent_stride();
            let down = Conv::load(
                cfg.use_causal_conv,
                PadMode::Replicate,
                vb.pp("downsample"),
                h,
                h,
                2 * s,
                s,
                1,
                false,
            )?;
            let groups = cfg.upsample_groups;
            if groups == 0 || !h.is_multiple_of(groups) {
                return Err(bad(format!(
                    "upsample_groups = {groups} does not divide {h}"
                )));
            }
            let up = ConvT::load(
                cfg.use_causal_conv,
                cfg.trim_right_ratio,
                vb.pp("upsample"),
                h,
                h,
                2 * s,
                s,
                groups,
                false,
            )?;
            (Some(down), Some(up))
        } else {
            (None, None)
        };
        let ns = cfg.num_semantic_quantizers;
        let q = vb.pp("quantizer");
        let semantic = Rvq::load(&cfg, q.pp("semantic_residual_vector_quantizer"), ns)?;
        let acoustic = Rvq::load(
            &cfg,
            q.pp("acoustic_residual_vector_quantizer"),
            cfg.num_quantizers - ns,
        )?;
        let info = TokenizerInfo {
            codec: "mimi",
            sample_rate: cfg.sampling_rate,
            frame_rate: cfg.frame_rate(),
            codebook_size: cfg.codebook_size,
            max_codebooks: cfg.num_quantizers,
            default_codebooks: cfg.num_quantizers,
            has_decoder: true,
        };
        Ok(Self {
            encoder: load_encoder(&cfg, mode, vb.pp("encoder"))?,
            encoder_transformer: Transformer::load(&cfg, vb.pp("encoder_transformer"))?,
            decoder_transformer: Transformer::load(&cfg, vb.pp("decoder_transformer"))?,
            decoder: load_decoder(&cfg, mode, vb.pp("decoder"))?,
            downsample,
            upsample,
            semantic,
            acoustic,
            info,
            cfg,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &MimiConfig {
        &self.cfg
    }

    /// Bytes of the weights one encoder pass reads with `codebooks`
    /// codebooks: (SEANet encoder, transformer, downsampling, RVQ). A
    /// streaming push reads the deep layers' share of them once.
    pub fn encoder_weight_bytes(&self, codebooks: usize) -> [usize; 4] {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        let lin = |l: &Linear| t(l.weight()) + l.bias().map_or(0, t);
        let seanet = self.encoder.iter().map(|l| l.weight_bytes()).sum();
        let transformer = self
            .encoder_transformer
            .layers
            .iter()
            .map(|l| {
                let a = &l.attn;
                lin(&a.q) + lin(&a.k) + lin(&a.v) + lin(&a.o) + lin(&l.fc1) + lin(&l.fc2)
            })
            .sum();
        let down = self.downsample.as_ref().map_or(0, |d| d.weight_bytes());
        let ns = self.semantic.codebooks.len();
        let books = |r: &Rvq, n: usize| {
            r.input_proj.as_ref().map_or(0, t)
                + r.codebooks[..n.min(r.codebooks.len())]
                    .iter()
                    .map(|c| t(&c.embed))
                    .sum::<usize>()
        };
        let mut rvq = books(&self.semantic, codebooks.min(ns));
        if codebooks > ns {
            rvq += books(&self.acoustic, codebooks - ns);
        }
        [seanet, transformer, down, rvq]
    }

    /// SEANet encoder output `[B, H, T/hop]` for audio `[B, T]`.
    pub fn seanet(&self, audio: &Tensor) -> Result<Tensor> {
        self.seanet_pieced(audio, seanet_piece())
    }

    /// [`Self::seanet`] with `piece` samples per piece.
    fn seanet_pieced(&self, audio: &Tensor, piece: usize) -> Result<Tensor> {
        let (b, t) = audio.dims2()?;
        if t == 0 {
            return Err(CodecError::BadAudio("no samples".into()));
        }
        let xs = audio.unsqueeze(1)?;
        // One causal stream on CPU: through the streaming stack in pieces,
        // which gives the same frames (every conv is causal; the direct conv
        // kernel's results do not depend on the chunking) while each layer's
        // activations stay a few MB instead of tens of fresh MB per layer.
        // By default the high-rate front runs time-blocked over the whole
        // signal first (same bits as layer by layer) and only the rest goes
        // through the stack in pieces (see `pieced_encode`).
        let piece = piece.max(self.cfg.hop_length());
        let mode = pieced_encode();
        if b == 1
            && t > piece
            && self.cfg.use_causal_conv
            && xs.device().is_cpu()
            && xs.dtype() == DType::F32
            && mode != Some(false)
        {
            let (xs, layers) = match mode {
                None => match enc_chain_front(&self.encoder, &xs)? {
                    Some((ys, used)) => (ys, &self.encoder[used..]),
                    None => (xs, &self.encoder[..]),
                },
                _ => (xs, &self.encoder[..]),
            };
            if layers.is_empty() {
                return Ok(xs);
            }
            let tx = xs.dim(2)?;
            let piece = (piece * tx / t).max(1);
            let mut st = StackState::new(layers);
            let mut outs = Vec::new();
            for c0 in (0..tx).step_by(piece) {
                let x = xs.narrow(2, c0, piece.min(tx - c0))?;
                outs.extend(st.step(layers, Some(x), false)?);
            }
            outs.extend(st.step(layers, None, true)?);
            if profile_enabled() {
                let parts: Vec<String> = layers
                    .iter()
                    .zip(st.layer_times())
                    .map(|(l, d)| format!("{} {:.1}", l.describe(), d.as_secs_f64() * 1e3))
                    .collect();
                eprintln!("mimi SEANet pieced ms: {}", parts.join(", "));
            }
            return Ok(Tensor::cat(&outs, 2)?);
        }
        Ok(run_layers(&self.encoder, &xs)?)
    }

    /// SEANet decoder output `[B, 1, T]` for transformer output `[B, H, n]`.
    /// One causal stream on CPU runs through the streaming stack in pieces
    /// (1 s of output each), as [`Self::seanet`] does: the same samples
    /// within float rounding, while each layer's activations stay a few MB
    /// instead of tens of fresh MB per layer. `VOXTOK_MIMI_PIECED_DECODE=0`
    /// runs the layers over the whole signal, for A/B.
    fn seanet_decode(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, _, n) = xs.dims3()?;
        let piece = (SEANET_PIECE / self.cfg.hop_length()).max(1);
        if b == 1
            && n > piece
            && self.cfg.use_causal_conv
            && xs.device().is_cpu()
            && xs.dtype() == DType::F32
            && pieced_decode_enabled()
        {
            let mut st = StackState::new(&self.decoder);
            let mut outs = Vec::new();
            for f0 in (0..n).step_by(piece) {
                let x = xs.narrow(2, f0, piece.min(n - f0))?;
                outs.extend(st.step(&self.decoder, Some(x), false)?);
            }
            return Ok(Tensor::cat(&outs, 2)?);
        }
        Ok(run_layers(&self.decoder, xs)?)
    }

    /// Latents before quantization `[B, H, N]` (SEANet, transformer,
    /// downsampling) for audio `[B, T]`.
    pub fn latents(&self, audio: &Tensor) -> Result<Tensor> {
        self.latents_timed(audio, &mut Stages::new("encode"))
    }

    fn latents_timed(&self, audio: &Tensor, st: &mut Stages) -> Result<Tensor> {
        let xs = self.seanet(audio)?;
        st.mark("SEANet");
        let xs = self
            .encoder_transformer
            .forward(&xs.transpose(1, 2)?.contiguous()?, 0, None)?
            .transpose(1, 2)?
            .contiguous()?;
        st.mark("transformer");
        let xs = match &self.downsample {
            Some(d) => d.forward(&xs)?,
            None => xs,
        };
        st.mark("downsample");
        Ok(xs)
    }

    /// Split RVQ of latents `[B, H, N]` → codes `[B, k, N]` (semantic first).
    fn quantize(&self, lat: &Tensor, k: usize) -> Result<Tensor> {
        let ns = self.semantic.codebooks.len();
        if k < ns {
            return Err(CodecError::BadOption(format!(
                "{k} codebooks requested; this mimi model needs at least its {ns} semantic codebooks"
            )));
        }
        let (b, h, n) = lat.dims3()?;
        let rows = lat.transpose(1, 2)?.reshape((b * n, h))?;
        let mut ids = self.semantic.encode(&rows, ns)?;
        if k > ns {
            ids.extend(self.acoustic.encode(&rows, k - ns)?);
        }
        let ids = ids
            .iter()
            .map(|t| t.reshape((b, n)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&ids, 1)?)
    }

    /// Codes `[B, K, N]` → quantized latents `[B, H, N]` (semantic plus
    /// acoustic sums, output projections).
    fn dequantize(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, k, n) = codes.dims3()?;
        self.info.check_codebooks(k)?;
        let ns = self.semantic.codebooks.len();
        let rows: Vec<Tensor> = (0..k)
            .map(|i| codes.narrow(1, i, 1)?.to_dtype(DType::U32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let mut lat = self.semantic.decode(&rows[..k.min(ns)])?;
        if k > ns {
            lat = (lat + self.acoustic.decode(&rows[ns..])?)?;
        }
        let h = lat.dim(1)?;
        Ok(lat.reshape((b, n, h))?.transpose(1, 2)?.contiguous()?)
    }

    /// Packs the fused path's weights now (CPU only), so that a stream's
    /// first push does not pay for it: the encoder side (transformer, RVQ)
    /// or the decoder transformer.
    fn prepare_fused(&self, encoder: bool) {
        if !fused_enabled() || !self.device.is_cpu() {
            return;
        }
        if encoder {
            self.encoder_transformer.fast();
            for r in [&self.semantic, &self.acoustic] {
                r.fast.get_or_init(|| FastRvq::new(r).ok());
            }
        } else {
            self.decoder_transformer.fast();
        }
    }

    /// A fresh incremental decoder (causal models only).
    pub fn decode_stream(&self) -> Result<MimiDecodeStream<'_>> {
        if !self.cfg.use_causal_conv {
            return Err(CodecError::BadOption(
                "streaming decode needs a causal Mimi (use_causal_conv)".into(),
            ));
        }
        self.prepare_fused(false);
        Ok(MimiDecodeStream {
            model: self,
            up_tail: None,
            kv: vec![KvCache::default(); self.decoder_transformer.layers.len()],
            pos: 0,
            seanet: StackState::new(&self.decoder),
        })
    }

    /// A fresh incremental encoder using `codebooks` codebooks.
    pub fn stream(&self, codebooks: usize) -> Result<MimiStream<'_>> {
        self.info.check_codebooks(codebooks)?;
        if codebooks < self.semantic.codebooks.len() {
            return Err(CodecError::BadOption(format!(
                "{codebooks} codebooks requested; this mimi model needs at least its {} semantic codebooks",
                self.semantic.codebooks.len()
            )));
        }
        Ok(MimiStream::new(self, codebooks))
    }
}

impl AudioTokenizer for Mimi {
    fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor> {
        self.info.check_codebooks(codebooks)?;
        let mut st = Stages::new("encode");
        let lat = self.latents_timed(audio, &mut st)?;
        let codes = self.quantize(&lat, codebooks)?;
        st.mark("RVQ");
        st.report();
        Ok(codes)
    }

    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let mut st = Stages::new("decode");
        let mut xs = self.dequantize(codes)?;
        st.mark("RVQ");
        if let Some(up) = &self.upsample {
            xs = up.forward(&xs)?;
        }
        st.mark("upsample");
        let xs = self
            .decoder_transformer
            .forward(&xs.transpose(1, 2)?.contiguous()?, 0, None)?
            .transpose(1, 2)?
            .contiguous()?;
        st.mark("transformer");
        let audio = self.seanet_decode(&xs)?;
        st.mark("SEANet");
        st.report();
        Ok(audio.squeeze(1)?)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// Wall time per stage of one whole-file call, printed to stderr when
/// `VOXTOK_MIMI_PROFILE=1` (streams print their per-push averages at
/// `finish`).
struct Stages {
    what: &'static str,
    t: Option<Instant>,
    parts: Vec<(&'static str, f64)>,
}

/// Whole-file decode runs the SEANet decoder in pieces when
/// `VOXTOK_MIMI_PIECED_DECODE=1`, or by default where the decoder's
/// time-blocked tail ([`super::seanet::dec_chain_enabled`]) is off; never with
/// `=0` (read once).
fn pieced_decode_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(
        || match std::env::var("VOXTOK_MIMI_PIECED_DECODE").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => !super::seanet::dec_chain_enabled(),
        },
    )
}

/// How a whole-file encode runs the SEANet encoder on one causal stream:
/// `VOXTOK_MIMI_PIECED_ENCODE=1`: all of it in pieces through the streaming
/// stack (`Some(true)`); `=0`: layer by layer over the whole signal
/// (`Some(false)`, the time-blocked front included); by default (`None`)
/// the time-blocked front ([`super::seanet::enc_chain_front`]) over the whole
/// signal, then the rest in pieces (read once).
fn pieced_encode() -> Option<bool> {
    static ON: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("VOXTOK_MIMI_PIECED_ENCODE");
        match v.as_deref() {
            Ok("0") => Some(false),
            Ok("1") => Some(true),
            _ => None,
        }
    })
}

fn profile_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_MIMI_PROFILE").is_ok_and(|v| v == "1"))
}

impl Stages {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            t: profile_enabled().then(Instant::now),
            parts: Vec::new(),
        }
    }

    /// Ends stage `name` (the time since the previous mark).
    fn mark(&mut self, name: &'static str) {
        if let Some(t) = self.t {
            let now = Instant::now();
            self.parts.push((name, (now - t).as_secs_f64() * 1e3));
            self.t = Some(now);
        }
    }

    fn report(&self) {
        if self.t.is_some() {
            let parts: Vec<String> = self
                .parts
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.1}"))
                .collect();
            eprintln!("mimi {} ms: {}", self.what, parts.join(", "));
        }
    }
}

// ------------------------------------------------------------- streaming

/// Incremental Mimi encoder: push audio chunks, get code frames as soon as
/// they are final; [`MimiStream::finish`] flushes the tail. The
/// concatenated codes equal [`AudioTokenizer::encode`] on the whole signal
/// (every conv is causal, the transformer's attention is causal and its
/// keys/values are cached within the sliding window).
pub struct MimiStream<'a> {
    model: &'a Mimi,
    codebooks: usize,
    seanet: StackState,
    kv: Vec<KvCache>,
    /// SEANet frames already through the transformer (RoPE position).
    pos: usize,
    down: ConvState,
    total_in: usize,
    /// Pushes, then time in the transformer, downsampling and RVQ.
    calls: usize,
    times: [Duration; 3],
}

/// Where a [`MimiStream`]'s time went, cumulative over its pushes.
#[derive(Debug, Clone, Default)]
pub struct StreamProfile {
    /// `push` and `finish` calls.
    pub calls: usize,
    /// Each SEANet encoder layer (description, time).
    pub seanet: Vec<(String, Duration)>,
    pub transformer: Duration,
    pub downsample: Duration,
    pub rvq: Duration,
}

impl<'a> MimiStream<'a> {
    fn new(model: &'a Mimi, codebooks: usize) -> Self {
        model.prepare_fused(true);
        Self {
            model,
            codebooks,
            seanet: StackState::new(&model.encoder),
            kv: vec![KvCache::default(); model.encoder_transformer.layers.len()],
            pos: 0,
            down: ConvState::default(),
            total_in: 0,
            calls: 0,
            times: [Duration::ZERO; 3],
        }
    }

    /// Time per stage (and per SEANet layer) so far.
    pub fn profile(&self) -> StreamProfile {
        let m = self.model;
        StreamProfile {
            calls: self.calls,
            seanet: m
                .encoder
                .iter()
                .zip(self.seanet.layer_times())
                .map(|(l, &t)| (l.describe(), t))
                .collect(),
            transformer: self.times[0],
            downsample: self.times[1],
            rvq: self.times[2],
        }
    }

    /// Feeds mono samples; returns the code frames `[K, n]` (row-major, `n`
    /// may be 0) that are now final.
    pub fn push(&mut self, samples: &[f32]) -> Result<Codes> {
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            return Err(CodecError::BadAudio(format!(
                "non-finite sample at index {}",
                self.total_in + i
            )));
        }
        self.total_in += samples.len();
        if samples.is_empty() {
            return Ok(self.empty());
        }
        let x = Tensor::from_slice(samples, (1, 1, samples.len()), &self.model.device)?;
        self.run(Some(x), false)
    }

    /// Flushes the remaining audio (with the end padding whole-file encoding
    /// applies) and returns the last frames.
    pub fn finish(mut self) -> Result<Codes> {
        if self.total_in == 0 {
            return Err(CodecError::BadAudio("no samples".into()));
        }
        let out = self.run(None, true);
        if profile_enabled() {
            let p = self.profile();
            let n = p.calls.max(1) as f64;
            let per = |d: Duration| d.as_secs_f64() * 1e3 / n;
            let sea: Duration = p.seanet.iter().map(|(_, t)| *t).sum();
            eprintln!(
                "mimi stream ms per push ({} pushes): SEANet {:.2}, transformer {:.2}, downsample {:.2}, RVQ {:.2}",
                p.calls,
                per(sea),
                per(p.transformer),
                per(p.downsample),
                per(p.rvq)
            );
        }
        out
    }

    /// Samples pushed so far.
    pub fn samples_in(&self) -> usize {
        self.total_in
    }

    fn empty(&self) -> Codes {
        Codes {
            codebooks: self.codebooks,
            frames: 0,
            ids: vec![],
        }
    }

    fn run(&mut self, xs: Option<Tensor>, last: bool) -> Result<Codes> {
        let m = self.model;
        self.calls += 1;
        let xs = self.seanet.step(&m.encoder, xs, last)?;
        let t0 = Instant::now();
        let xs = match xs {
            Some(x) if x.dim(2)? > 0 => {
                let t = x.dim(2)?;
                let y = m.encoder_transformer.forward(
                    &x.transpose(1, 2)?.contiguous()?,
                    self.pos,
                    Some(&mut self.kv),
                )?;
                self.pos += t;
                Some(y.transpose(1, 2)?.contiguous()?)
            }
            _ => None,
        };
        let t1 = Instant::now();
        let lat = match &m.downsample {
            Some(d) => step_conv(d, &mut self.down, xs, last)?,
            None => xs,
        };
        let t2 = Instant::now();
        let out = match lat {
            Some(l) if l.dim(2)? > 0 => Codes::from_tensor(&m.quantize(&l, self.codebooks)?),
            _ => Ok(self.empty()),
        };
        let t3 = Instant::now();
        self.times[0] += t1 - t0;
        self.times[1] += t2 - t1;
        self.times[2] += t3 - t2;
        out
    }
}

/// Incremental Mimi decoder: push code frames, get the audio they complete
/// (`frames × hop` samples per push). The concatenated audio equals
/// [`AudioTokenizer::decode`] of all frames within float rounding: the
/// upsampling and SEANet convs are causal and the transformer caches its
/// keys/values within the sliding window.
pub struct MimiDecodeStream<'a> {
    model: &'a Mimi,
    up_tail: Option<Tensor>,
    kv: Vec<KvCache>,
    /// Upsampled frames already through the transformer (RoPE position).
    pos: usize,
    seanet: StackState,
}

impl MimiDecodeStream<'_> {
    /// Decodes code frames `[1, K, n]` (integer ids); returns the mono
    /// samples that are now final.
    pub fn push(&mut self, codes: &Tensor) -> Result<Vec<f32>> {
        let m = self.model;
        let (b, _, n) = codes.dims3()?;
        if b != 1 {
            return Err(CodecError::BadOption(format!(
                "streaming decode takes one stream, got batch {b}"
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let lat = m.dequantize(codes)?;
        let xs = match &m.upsample {
            Some(up) => up.step(&mut self.up_tail, Some(lat))?,
            None => Some(lat),
        };
        let Some(xs) = xs else {
            return Ok(Vec::new());
        };
        let t = xs.dim(2)?;
        let xs = m
            .decoder_transformer
            .forward(
                &xs.transpose(1, 2)?.contiguous()?,
                self.pos,
                Some(&mut self.kv),
            )?
            .transpose(1, 2)?
            .contiguous()?;
        self.pos += t;
        Ok(match self.seanet.step(&m.decoder, Some(xs), false)? {
            Some(a) => a.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{self, fixture_dir, max_abs, stream_rows};
    use super::*;
    use std::collections::HashMap;

    fn load_fixture() -> (Mimi, HashMap<String, Tensor>) {
        let dir = ModelDir::open(fixture_dir("mimi")).unwrap();
        (
            Mimi::load(&dir, &Device::Cpu).unwrap(),
            test_util::refs("mimi"),
        )
    }

    const SIGNALS: [&str; 4] = ["chirp", "noise", "speech", "long"];

    #[test]
    fn config_facts() {
        let cfg: MimiConfig = serde_json::from_str(r#"{"frame_rate": 12.5}"#).unwrap();
        assert_eq!(cfg.hop_length(), 960);
        assert_eq!(cfg.encodec_frame_rate(), 25);
        assert_eq!(cfg.latent_stride(), 2);
        let cfg: MimiConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.frame_rate(), 12.5);
    }

    /// Parity with transformers' MimiModel on the random-weight fixture:
    /// SEANet output and latents within 1e-4, identical codes with 1, 2 and 4
    /// codebooks, decoded audio within 1e-4.
    #[test]
    fn parity_with_transformers() {
        let (model, refs) = load_fixture();
        assert_eq!(model.info().max_codebooks, 4);
        assert_eq!(model.info().frame_rate, 12.5);
        for sig in SIGNALS {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let sea = model.seanet(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&sea, &refs[&format!("{sig}.seanet")]);
            eprintln!("{sig}: seanet max abs err {err}");
            assert!(err < 1e-4, "{sig}: seanet max abs err {err}");
            let lat = model.latents(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&lat, &refs[&format!("{sig}.latents")]);
            eprintln!("{sig}: latents max abs err {err}");
            assert!(err < 1e-4, "{sig}: latents max abs err {err}");
            for k in [1usize, 2, 4] {
                let codes = model.encode(&audio, k).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap()
                    .to_vec2::<u32>()
                    .unwrap();
                assert_eq!(
                    codes.squeeze(0).unwrap().to_vec2::<u32>().unwrap(),
                    want,
                    "{sig}: codes with {k} codebooks differ"
                );
                if let Some(dec_ref) = refs.get(&format!("{sig}.decoded_{k}")) {
                    let dec = model.decode(&codes).unwrap().squeeze(0).unwrap();
                    assert_eq!(dec.dims(), dec_ref.dims(), "{sig}: decoded length");
                    let err = max_abs(&dec, dec_ref);
                    eprintln!("{sig}/{k}: decoded max abs err {err}");
                    assert!(err <= 1e-4, "{sig}/{k}: decoded max abs err {err}");
                }
            }
        }
    }

    /// Whole-file SEANet encoding through the streaming stack in pieces
    /// (1 s, 0.4 s and the default 3 s, which on this fixture is one pass)
    /// equals one pass of the layers over the whole signal (1e-5; the
    /// fixture's deep convs see few frames per piece, so they take the
    /// few-frame product instead of the direct kernel).
    #[test]
    fn pieced_seanet_equals_one_pass() {
        let (model, refs) = load_fixture();
        let audio = refs["long.audio"].unsqueeze(0).unwrap();
        assert!(
            audio.dim(1).unwrap() > SEANET_PIECE,
            "the fixture must span pieces"
        );
        let whole = run_layers(&model.encoder, &audio.unsqueeze(1).unwrap()).unwrap();
        for piece in [SEANET_PIECE, 9600, SEANET_ENCODE_PIECE] {
            let pieced = model.seanet_pieced(&audio, piece).unwrap();
            assert_eq!(pieced.dims(), whole.dims());
            let err = max_abs(&pieced, &whole);
            assert!(err < 1e-5, "piece {piece}: SEANet max abs err {err}");
        }
    }

    /// Whole-file SEANet decoding through the streaming stack in pieces
    /// equals one pass of the layers (1e-5), on 2.4 pieces of frames.
    #[test]
    fn pieced_seanet_decode_equals_one_pass() {
        use super::super::conv_cpu::tests::rand;
        let (model, _) = load_fixture();
        let h = model.config().hidden_size;
        let piece = SEANET_PIECE / model.config().hop_length();
        let n = 2 * piece + piece / 2 + 1;
        let xs = Tensor::from_vec(rand(h * n, 9), (1, h, n), &Device::Cpu).unwrap();
        let pieced = model.seanet_decode(&xs).unwrap();
        let whole = run_layers(&model.decoder, &xs).unwrap();
        assert_eq!(pieced.dims(), whole.dims());
        let err = max_abs(&pieced, &whole);
        assert!(
            err < 1e-5,
            "pieced vs one-pass SEANet decode max abs err {err}"
        );
    }

    /// Chunked encoding (several chunk sizes, including ones smaller than a
    /// hop) equals whole-file encoding.
    #[test]
    fn streaming_equals_whole_file() {
        let (model, refs) = load_fixture();
        for sig in ["long", "noise"] {
            let audio = refs[&format!("{sig}.audio")].to_vec1::<f32>().unwrap();
            let want = refs[&format!("{sig}.codes_4")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec2::<u32>()
                .unwrap();
            for chunk in [1920usize, 4096, 333, 24000] {
                let (rows, before_finish) =
                    stream_rows(Box::new(model.stream(4).unwrap()), &audio, chunk, 4);
                assert!(
                    before_finish + 1 >= want[0].len(),
                    "{sig}/{chunk}: only {before_finish} frames before finish"
                );
                assert_eq!(
                    rows, want,
                    "{sig}: streamed codes (chunk {chunk}) differ from whole-file codes"
                );
            }
        }
    }

    /// The packed few-row product equals candle's matmul (1e-5 relative) on
    /// odd shapes (k = 1, n not a multiple of the 64-column panel, rows
    /// beyond one 6-row pass), with and without bias; every kernel gives the
    /// same bits.
    #[test]
    fn packed_equals_matmul() {
        use super::super::conv_cpu::tests::rand;
        use packed::{Kernel, Packed};
        let dev = Device::Cpu;
        for (k, n) in [(1usize, 5usize), (7, 64), (37, 65), (300, 130), (512, 1)] {
            for bias in [false, true] {
                let w = rand(n * k, (k * n) as u64);
                let b = bias.then(|| rand(n, 7));
                let p = Packed::new(&w, b.clone(), n, k);
                let wt = Tensor::from_vec(w.clone(), (n, k), &dev).unwrap();
                for m in [1usize, 2, 5, 6, 7, 13, 50, 61] {
                    let x = rand(m * k, m as u64 + 3);
                    let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
                    let mut want = xt.matmul(&wt.t().unwrap()).unwrap();
                    if let Some(b) = &b {
                        let bt = Tensor::from_vec(b.clone(), n, &dev).unwrap();
                        want = want.broadcast_add(&bt).unwrap();
                    }
                    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
                    let mut got = vec![f32::NAN; m * n];
                    p.forward(&x, m, &mut got);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(err <= 1e-5 * scale, "k={k} n={n} m={m}: err {err}");
                    for kern in [Kernel::Avx512, Kernel::Avx2, Kernel::Portable] {
                        if kern as u8 >= packed::kernel() as u8 {
                            let mut other = vec![f32::NAN; m * n];
                            p.forward_with(&x, m, &mut other, kern);
                            assert_eq!(got, other, "k={k} n={n} m={m}: {kern:?} bits differ");
                            // The many-row path (row blocks) gives the same
                            // bits as the few-row one (panels), any rows.
                            let mut rows = vec![f32::NAN; m * n];
                            p.rows_into(&x, &mut rows, kern);
                            assert_eq!(got, rows, "k={k} n={n} m={m}: {kern:?} row path");
                        }
                    }
                }
            }
        }
    }

    /// The fused few-row RVQ gives the candle path's ids on the fixture's
    /// latents (1, 2, 5 and 13 rows; semantic and acoustic quantizers).
    #[test]
    fn fused_rvq_equals_candle_path() {
        let (model, refs) = load_fixture();
        let rows = refs["long.latents"].t().unwrap().contiguous().unwrap();
        let n = rows.dim(0).unwrap();
        assert!(n >= 20, "the fixture has {n} frames");
        for m in [1usize, 2, 5, 13] {
            for f0 in (0..n.saturating_sub(m)).step_by(7) {
                let x = rows.narrow(0, f0, m).unwrap();
                for (rvq, k) in [(&model.semantic, 1usize), (&model.acoustic, 3)] {
                    let ids = |fused| {
                        rvq.encode_with(&x, k, fused)
                            .unwrap()
                            .iter()
                            .map(|t| t.to_vec1::<u32>().unwrap())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(ids(true), ids(false), "rows {f0}..+{m}, {k} codebooks");
                }
            }
        }
        assert!(model.semantic.fast.get().is_some_and(|f| f.is_some()));
    }

    /// A small random transformer (grouped-query attention, attention bias,
    /// an MLP width that is not a multiple of the panel, window 5).
    fn small_transformer() -> Transformer {
        small_transformer_window(5, 8)
    }

    /// [`small_transformer`] with sliding window `window` and head dim `hd`
    /// (4 heads, 2 key/value groups).
    fn small_transformer_window(window: usize, hd: usize) -> Transformer {
        use super::super::conv_cpu::tests::rand;
        let cfg: MimiConfig = serde_json::from_str(&format!(
            r#"{{"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                "intermediate_size": 40, "sliding_window": {window}, "num_hidden_layers": 2,
                "attention_bias": true, "head_dim": {hd}}}"#
        ))
        .unwrap();
        let (qn, kn) = (4 * hd, 2 * hd);
        let mut ts = HashMap::new();
        let mut seed = 11u64;
        let mut put = |name: String, shape: &[usize], scale: f32, shift: f32| {
            seed += 1;
            let n = shape.iter().product();
            let v = rand(n, seed).iter().map(|x| x * scale + shift).collect();
            ts.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
        };
        for l in 0..2 {
            let p = format!("layers.{l}");
            for (name, o, i) in [
                ("self_attn.q_proj", qn, 32),
                ("self_attn.k_proj", kn, 32),
                ("self_attn.v_proj", kn, 32),
                ("self_attn.o_proj", 32, qn),
            ] {
                put(format!("{p}.{name}.weight"), &[o, i], 0.3, 0.0);
                put(format!("{p}.{name}.bias"), &[o], 0.1, 0.0);
            }
            put(format!("{p}.mlp.fc1.weight"), &[40, 32], 0.3, 0.0);
            put(format!("{p}.mlp.fc2.weight"), &[32, 40], 0.3, 0.0);
            for ln in ["input_layernorm", "post_attention_layernorm"] {
                put(format!("{p}.{ln}.weight"), &[32], 0.2, 1.0);
                put(format!("{p}.{ln}.bias"), &[32], 0.1, 0.0);
            }
            put(format!("{p}.self_attn_layer_scale.scale"), &[32], 0.2, 0.5);
            put(format!("{p}.mlp_layer_scale.scale"), &[32], 0.2, 0.5);
        }
        let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
        Transformer::load(&cfg, vb).unwrap()
    }

    /// The fused streaming step equals the candle path (whole sequence with
    /// its mask, and streaming through the rings) within 1e-5, for pushes of
    /// 1, 2, 3 and 7 frames past the window; batch 2 (not fused) still
    /// streams equal to whole-sequence.
    #[test]
    fn fused_step_equals_candle_path() {
        use super::super::conv_cpu::tests::rand;
        let tr = small_transformer();
        let n = 23;
        let xs = Tensor::from_vec(rand(2 * n * 32, 5), (2, n, 32), &Device::Cpu).unwrap();
        let one = xs.narrow(0, 0, 1).unwrap();
        let whole = tr.forward_with(&one, 0, None, false).unwrap();
        let stream = |x: &Tensor, chunk: usize, fused: bool| {
            let mut kv = vec![KvCache::default(); 2];
            let mut outs = Vec::new();
            for t0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - t0);
                let piece = x.narrow(1, t0, c).unwrap();
                outs.push(tr.forward_with(&piece, t0, Some(&mut kv), fused).unwrap());
            }
            Tensor::cat(&outs, 1).unwrap()
        };
        for chunk in [1usize, 2, 3, 7] {
            let fused = stream(&one, chunk, true);
            let plain = stream(&one, chunk, false);
            let e1 = max_abs(&fused, &whole);
            let e2 = max_abs(&fused, &plain);
            assert!(e1 < 1e-5 && e2 < 1e-5, "chunk {chunk}: {e1} {e2}");
        }
        assert!(tr.fast().is_some(), "the fused step was not built");
        // Whole sequence through the fused path (fresh rings, all rows at once).
        let e = max_abs(&tr.forward_with(&one, 0, None, true).unwrap(), &whole);
        assert!(e < 1e-5, "whole sequence fused: {e}");
        let both = tr.forward_with(&xs, 0, None, false).unwrap();
        let e = max_abs(&stream(&xs, 3, true), &both);
        assert!(e < 1e-5, "batch 2: {e}");
    }

    /// The fused transformer over a whole sequence (fresh rings, many rows:
    /// row-parallel products, norms and GELU) gives exactly the bits of
    /// streaming it through the fused step in pushes of 1, 2, 3, 7 and 16
    /// frames, with windows longer and shorter than the keys' 64-wide
    /// register blocks and head dims 8, 64 and 80 (the property that keeps
    /// streaming codes identical to whole-file codes); and stays within 1e-5
    /// of the candle path.
    #[test]
    fn fused_whole_equals_fused_stream_bits() {
        use super::super::conv_cpu::tests::rand;
        let n = 150;
        for (window, hd) in [(5usize, 8usize), (80, 64), (150, 80), (100, 8)] {
            let tr = small_transformer_window(window, hd);
            let xs = Tensor::from_vec(rand(n * 32, 21), (1, n, 32), &Device::Cpu).unwrap();
            let whole = tr.forward_with(&xs, 0, None, true).unwrap();
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for chunk in [1usize, 2, 3, 7, 16] {
                let mut kv = vec![KvCache::default(); 2];
                let mut outs = Vec::new();
                for t0 in (0..n).step_by(chunk) {
                    let c = chunk.min(n - t0);
                    let piece = xs.narrow(1, t0, c).unwrap();
                    outs.push(tr.forward_with(&piece, t0, Some(&mut kv), true).unwrap());
                }
                let streamed = Tensor::cat(&outs, 1).unwrap();
                assert_eq!(
                    bits(&streamed),
                    bits(&whole),
                    "window {window} hd {hd} chunk {chunk}: streamed bits differ"
                );
            }
            let plain = tr.forward_with(&xs, 0, None, false).unwrap();
            let e = max_abs(&whole, &plain);
            assert!(e < 1e-5, "window {window} hd {hd}: fused vs candle {e}");
        }
    }

    /// The attention kernel gives the same bits on AVX-512, AVX2+FMA and the
    /// portable build (pushes that wrap the ring, windows shorter and longer
    /// than a 64-key block, head dims 8 and 64).
    #[test]
    fn attention_kernels_same_bits() {
        use super::super::conv_cpu::tests::rand;
        for (window, hd, heads, kvh) in [(5usize, 8usize, 4usize, 2usize), (150, 64, 4, 4)] {
            let mut ring = KvRing::default();
            let mut seed = 40;
            for t in [3usize, 70, 1, 130, 7] {
                seed += 1;
                let k = rand(kvh * t * hd, seed);
                let v = rand(kvh * t * hd, seed + 100);
                let q = rand(heads * t * hd, seed + 200);
                let base = ring.total;
                ring.push(&k, &v, kvh, t, hd, window);
                for h in 0..heads {
                    let g = h / (heads / kvh);
                    let qh = &q[h * t * hd..(h + 1) * t * hd];
                    let mut want = vec![0f32; t * hd];
                    ring.keys_any(qh, g, base, t, hd, window, &mut want);
                    #[cfg(target_arch = "x86_64")]
                    {
                        if std::is_x86_feature_detected!("avx512f") {
                            let mut got = vec![f32::NAN; t * hd];
                            // SAFETY: the feature is present.
                            unsafe { ring.keys_avx512(qh, g, base, t, hd, window, &mut got) };
                            assert_eq!(got, want, "avx512 window {window} t {t} head {h}");
                        }
                        if std::is_x86_feature_detected!("avx2")
                            && std::is_x86_feature_detected!("fma")
                        {
                            let mut got = vec![f32::NAN; t * hd];
                            // SAFETY: the features are present.
                            unsafe { ring.head_avx2(qh, g, base, t, hd, window, &mut got, false) };
                            assert_eq!(got, want, "avx2 window {window} t {t} head {h}");
                        }
                    }
                }
            }
        }
    }

    /// The fused GELU gives candle's `gelu_erf` bits: a dense grid, every
    /// branch edge of libm's `erff` (±1 ulp, both signs), tiny, huge and
    /// non-finite values, in blocks of 16 and a remainder.
    #[test]
    fn gelu_equals_candle_bits() {
        let mut x: Vec<f32> = (0..20_000).map(|i| (i as f32 - 10_000.0) * 1e-3).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e5, -1e5]);
        x.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ]);
        for edge in [
            0x3180_0000u32,
            0x3f58_0000,
            0x3fa0_0000,
            0x4036_db6d,
            0x40c0_0000,
        ] {
            for d in -2i32..=2 {
                let e = f32::from_bits((edge as i32 + d) as u32) * std::f32::consts::SQRT_2;
                for v in [e, -e, e.next_up(), e.next_down()] {
                    x.push(v);
                }
            }
        }
        x.push(0.3);
        let want = Tensor::from_slice(&x, x.len(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for par in ["one thread", "parallel", "portable"] {
            let mut got = x.clone();
            match par {
                "portable" => gelu_any(&mut got),
                p => gelu_erf_in_place(p == "parallel", &mut got),
            }
            for ((a, b), v) in got.iter().zip(&want).zip(&x) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "par {par}: gelu({v:e}) = {a:e}, candle {b:e}"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (model, _) = load_fixture();
        assert!(model.stream(0).is_err());
        assert!(model.stream(5).is_err());
        let st = model.stream(2).unwrap();
        assert!(st.finish().is_err());
        let mut st = model.stream(2).unwrap();
        assert!(st.push(&[0.0, f32::NAN]).is_err());
        let codes = Tensor::zeros((1, 5, 3), DType::U32, &Device::Cpu).unwrap();
        assert!(model.decode(&codes).is_err());
    }

    /// Streaming decode in chunks of 1, 3 and 7 frames gives each push's
    /// `frames × hop` samples at once and equals whole-file decoding (1e-4).
    #[test]
    fn streaming_decode_equals_whole_file() {
        let (model, refs) = load_fixture();
        // Samples per code frame (SEANet hop times the latent stride).
        let hop = (model.info().sample_rate as f64 / model.info().frame_rate).round() as usize;
        assert_eq!(hop, 1920);
        for sig in ["long", "noise"] {
            let codes = refs[&format!("{sig}.codes_4")]
                .to_dtype(DType::U32)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let whole = model.decode(&codes).unwrap().flatten_all().unwrap();
            let n = codes.dim(2).unwrap();
            for chunk in [1usize, 3, 7] {
                let mut st = model.decode_stream().unwrap();
                let mut audio = Vec::new();
                for f0 in (0..n).step_by(chunk) {
                    let c = chunk.min(n - f0);
                    let got = st.push(&codes.narrow(2, f0, c).unwrap()).unwrap();
                    assert_eq!(got.len(), c * hop, "{sig}/{chunk}: samples per push");
                    audio.extend(got);
                }
                let len = audio.len();
                let streamed = Tensor::from_vec(audio, len, &Device::Cpu).unwrap();
                assert_eq!(len, whole.dim(0).unwrap(), "{sig}/{chunk}: length");
                let err = max_abs(&streamed, &whole);
                eprintln!("{sig}/{chunk}: streaming decode max abs err {err}");
                assert!(
                    err <= 1e-4,
                    "{sig}/{chunk}: streaming decode max abs err {err}"
                );
            }
        }
    }
}
