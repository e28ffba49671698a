//! EnCodec (Défossez et al. 2022) from a Hugging Face `EncodecModel`
//! directory: SEANet encoder/decoder with causal weight-normed convs and an
//! LSTM, residual vector quantizer with Euclidean codebooks.
//!
//! Written against `transformers`' `modeling_encodec.py` (same weight names,
//! reflect padding, transposed-conv trimming). Supported: the 24 kHz family
//! (`chunk_length_s = null`, `normalize = false`), mono. Also provides an
//! incremental encoder ([`EncodecStream`]) whose codes equal whole-file
//! encoding.

use super::nn::Lstm;
use super::seanet::{
    profile_enabled, run_layers, Conv, ConvT, Layer, PadMode, ResBlock, StackState,
};
use super::{AudioTokenizer, CodecError, Result, TokenizerInfo};
use crate::runtime::{Device, ModelDir};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// The fields of `EncodecConfig` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct EncodecConfig {
    #[serde(default = "d_bw")]
    pub target_bandwidths: Vec<f64>,
    #[serde(default = "d_sr")]
    pub sampling_rate: u32,
    #[serde(default = "d_one")]
    pub audio_channels: usize,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_filters")]
    pub num_filters: usize,
    #[serde(default = "d_one")]
    pub num_residual_layers: usize,
    #[serde(default = "d_ratios")]
    pub upsampling_ratios: Vec<usize>,
    #[serde(default = "d_norm")]
    pub norm_type: String,
    #[serde(default = "d_seven")]
    pub kernel_size: usize,
    #[serde(default = "d_seven")]
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
    #[serde(default = "d_two")]
    pub num_lstm_layers: usize,
    #[serde(default = "d_trim")]
    pub trim_right_ratio: f64,
    #[serde(default = "d_cb")]
    pub codebook_size: usize,
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    #[serde(default = "d_true")]
    pub use_conv_shortcut: bool,
}

fn d_bw() -> Vec<f64> {
    vec![1.5, 3.0, 6.0, 12.0, 24.0]
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
    128
}
fn d_filters() -> usize {
    32
}
fn d_ratios() -> Vec<usize> {
    vec![8, 5, 4, 2]
}
fn d_norm() -> String {
    "weight_norm".into()
}
fn d_true() -> bool {
    true
}
fn d_pad() -> String {
    "reflect".into()
}
fn d_trim() -> f64 {
    1.0
}
fn d_cb() -> usize {
    1024
}

impl EncodecConfig {
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }
    /// `ceil(sampling_rate / hop_length)`, as transformers computes it.
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }
    fn nbits(&self) -> usize {
        (self.codebook_size as f64).log2().ceil() as usize
    }
    pub fn num_quantizers(&self) -> usize {
        let top = self.target_bandwidths.last().copied().unwrap_or(0.0);
        (1000.0 * top) as usize / (self.frame_rate() * self.nbits())
    }
    /// Codebooks used at `bandwidth` kbps (transformers'
    /// `get_num_quantizers_for_bandwidth`).
    pub fn codebooks_for_bandwidth(&self, bandwidth: f64) -> usize {
        let per_q = (self.codebook_size as f64).log2() * self.frame_rate() as f64;
        ((bandwidth * 1000.0 / per_q).floor() as usize).max(1)
    }
}

/// `EncodecConv1d`: a padded conv with bias, weight-normed or followed by a
/// one-group GroupNorm (`time_group_norm`).
#[allow(clippy::too_many_arguments)]
fn load_conv(
    cfg: &EncodecConfig,
    pm: PadMode,
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Conv> {
    let c = Conv::load(
        cfg.use_causal_conv,
        pm,
        vb.clone(),
        cin,
        cout,
        k,
        stride,
        dilation,
        true,
    )?;
    Ok(if cfg.norm_type == "time_group_norm" {
        c.with_norm(candle_nn::group_norm(1, cout, 1e-5, vb.pp("norm"))?)
    } else {
        c
    })
}

/// `EncodecConvTranspose1d` with fixed-padding trimming.
fn load_convt(
    cfg: &EncodecConfig,
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> candle_core::Result<ConvT> {
    let c = ConvT::load(
        cfg.use_causal_conv,
        cfg.trim_right_ratio,
        vb.clone(),
        cin,
        cout,
        k,
        stride,
        1,
        true,
    )?;
    Ok(if cfg.norm_type == "time_group_norm" {
        c.with_norm(candle_nn::group_norm(1, cout, 1e-5, vb.pp("norm"))?)
    } else if winograd_enabled() && cin >= 128 {
        // Below 128 input channels (64 -> 32 /2) F(2, 2)'s short products
        // and extra passes measured slower than the two-tap form.
        c.with_winograd()?
    } else {
        c
    })
}

/// False when `VOXTOK_ENCODEC_WINOGRAD=0` (read once): the decoder's
/// transposed convs from 128 input channels (512 -> 256, 256 -> 128 layer
/// by layer, 128 -> 64 in the decoder chain) then run in the direct
/// polyphase form instead of F(2, 2) (other rounding).
fn winograd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_ENCODEC_WINOGRAD").map_or(true, |v| v != "0"))
}

/// SEANet residual block with EnCodec's convs.
fn res_block(
    cfg: &EncodecConfig,
    pm: PadMode,
    vb: VarBuilder,
    dim: usize,
    dilation: usize,
) -> candle_core::Result<ResBlock> {
    let conv = |vb: VarBuilder, cin: usize, cout: usize, k: usize, d: usize| {
        load_conv(cfg, pm, vb, cin, cout, k, 1, d)
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
    cfg: &EncodecConfig,
    pm: PadMode,
    vb: VarBuilder,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mut layers = Vec::new();
    let push = |layers: &mut Vec<Layer>, l: Layer| layers.push(l);
    let next = |layers: &Vec<Layer>| vb.pp(layers.len());
    let c = load_conv(
        cfg,
        pm,
        next(&layers),
        cfg.audio_channels,
        cfg.num_filters,
        cfg.kernel_size,
        1,
        1,
    )?;
    push(&mut layers, Layer::Conv(c));
    let mut scaling = 1;
    for &ratio in cfg.upsampling_ratios.iter().rev() {
        let dim = scaling * cfg.num_filters;
        for j in 0..cfg.num_residual_layers {
            let r = res_block(
                cfg,
                pm,
                next(&layers),
                dim,
                cfg.dilation_growth_rate.pow(j as u32),
            )?;
            push(&mut layers, Layer::Res(Box::new(r)));
        }
        push(&mut layers, Layer::Elu);
        let c = load_conv(cfg, pm, next(&layers), dim, dim * 2, ratio * 2, ratio, 1)?;
        push(&mut layers, Layer::Conv(c));
        scaling *= 2;
    }
    let dim = scaling * cfg.num_filters;
    let l = Lstm::load(&next(&layers).pp("lstm"), dim, cfg.num_lstm_layers)?;
    push(&mut layers, Layer::Lstm(l));
    push(&mut layers, Layer::Elu);
    let c = load_conv(
        cfg,
        pm,
        next(&layers),
        dim,
        cfg.hidden_size,
        cfg.last_kernel_size,
        1,
        1,
    )?;
    push(&mut layers, Layer::Conv(c));
    Ok(layers)
}

fn load_decoder(
    cfg: &EncodecConfig,
    pm: PadMode,
    vb: VarBuilder,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mut layers: Vec<Layer> = Vec::new();
    let next = |layers: &Vec<Layer>| vb.pp(layers.len());
    let mut scaling = 1usize << cfg.upsampling_ratios.len();
    let dim = scaling * cfg.num_filters;
    let c = load_conv(
        cfg,
        pm,
        next(&layers),
        cfg.hidden_size,
        dim,
        cfg.kernel_size,
        1,
        1,
    )?;
    layers.push(Layer::Conv(c));
    let l = Lstm::load(&next(&layers).pp("lstm"), dim, cfg.num_lstm_layers)?;
    layers.push(Layer::Lstm(l));
    for &ratio in cfg.upsampling_ratios.iter() {
        let dim = scaling * cfg.num_filters;
        layers.push(Layer::Elu);
        let c = load_convt(cfg, next(&layers), dim, dim / 2, ratio * 2, ratio)?;
        layers.push(Layer::ConvT(c));
        for j in 0..cfg.num_residual_layers {
            let r = res_block(
                cfg,
                pm,
                next(&layers),
                dim / 2,
                cfg.dilation_growth_rate.pow(j as u32),
            )?;
            layers.push(Layer::Res(Box::new(r)));
        }
        scaling /= 2;
    }
    layers.push(Layer::Elu);
    let c = load_conv(
        cfg,
        pm,
        next(&layers),
        cfg.num_filters,
        cfg.audio_channels,
        cfg.last_kernel_size,
        1,
        1,
    )?;
    layers.push(Layer::Conv(c));
    Ok(layers)
}

/// One Euclidean codebook of the residual quantizer.
#[derive(Debug, Clone)]
struct Codebook {
    embed: Tensor,
    embed_t: Tensor,
    /// `sum(embed^2)` per entry, `[1, C]`.
    e2: Tensor,
    /// CPU f32: `embed` `[C, D]` and `e2` `[C]` as vectors for [`rvq_cpu`].
    cpu: Option<(Vec<f32>, Vec<f32>)>,
}

impl Codebook {
    fn load(vb: VarBuilder, size: usize, dim: usize) -> candle_core::Result<Self> {
        let embed = vb.get((size, dim), "embed")?;
        let e2 = embed.sqr()?.sum_keepdim(1)?.t()?;
        let cpu = if embed.device().is_cpu() && embed.dtype() == DType::F32 {
            Some((
                embed.flatten_all()?.to_vec1::<f32>()?,
                e2.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        Ok(Self {
            embed_t: embed.t()?.contiguous()?,
            embed,
            e2,
            cpu,
        })
    }

    /// Nearest entry for each row of `xs` `[M, D]` → `[M]` u32, with the
    /// same expression as transformers (`-(x² - 2x·e + e²)`, argmax).
    fn quantize(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let x2 = xs.sqr()?.sum_keepdim(1)?;
        let xe = (xs.matmul(&self.embed_t)? * 2.0)?;
        let dist = x2.broadcast_sub(&xe)?.broadcast_add(&self.e2)?.neg()?;
        dist.argmax(D::Minus1)
    }
}

/// False when `VOXTOK_RVQ_CPU=0` (read once; A/B runs).
fn rvq_cpu_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VOXTOK_RVQ_CPU").map_or(true, |v| v != "0"))
}

/// Residual VQ on CPU: per codebook one matmul `residual · embedᵀ`, then
/// one parallel pass over the rows that finds the nearest entry with
/// [`Codebook::quantize`]'s expression (`(x² − 2x·e) + e²`, first minimum)
/// and subtracts it from the row in place. `residual` `[M, D]` →
/// ids `[K, M]`.
fn rvq_cpu(residual: &Tensor, books: &[(&Codebook, &Vec<f32>, &Vec<f32>)]) -> Result<Vec<u32>> {
    use rayon::prelude::*;
    let (m, d) = residual.dims2()?;
    let dev = residual.device();
    let mut r = residual.flatten_all()?.to_vec1::<f32>()?;
    let mut ids = vec![0u32; books.len() * m];
    for ((cb, embed, e2), ids) in books.iter().zip(ids.chunks_mut(m.max(1))) {
        let c = e2.len();
        let xe = Tensor::from_slice(&r, (m, d), dev)?
            .matmul(&cb.embed_t)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        r.par_chunks_mut(d)
            .zip(ids.par_iter_mut())
            .zip(xe.par_chunks(c))
            .for_each(|((row, id), dots)| {
                let x2: f32 = row.iter().map(|v| v * v).sum();
                let (mut best, mut bv) = (0usize, f32::INFINITY);
                for (j, (&dot, &e)) in dots.iter().zip(e2.iter()).enumerate() {
                    let v = (x2 - 2.0 * dot) + e;
                    if v < bv || j == 0 {
                        best = j;
                        bv = v;
                    }
                }
                *id = best as u32;
                for (x, q) in row.iter_mut().zip(&embed[best * d..(best + 1) * d]) {
                    *x -= q;
                }
            });
    }
    Ok(ids)
}

/// EnCodec loaded from an `EncodecModel` directory.
pub struct Encodec {
    cfg: EncodecConfig,
    info: TokenizerInfo,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    codebooks: Vec<Codebook>,
    device: Device,
}

impl Encodec {
    /// Loads `config.json` + safetensors from `dir` (float32).
    pub fn load(dir: &ModelDir, device: &Device) -> Result<Self> {
        let cfg: EncodecConfig = dir.config()?;
        let cfg_path = dir.root().join("config.json");
        let bad = |msg: String| CodecError::Config {
            path: cfg_path.clone(),
            msg,
        };
        if cfg.chunk_length_s.is_some() || cfg.normalize {
            return Err(bad(
                "chunked/normalized EnCodec (the 48 kHz model) is not supported; use a 24 kHz-style model".into(),
            ));
        }
        if cfg.audio_channels != 1 {
            return Err(bad(format!(
                "audio_channels = {} (only mono is supported)",
                cfg.audio_channels
            )));
        }
        let Some(pm) = PadMode::parse(&cfg.pad_mode) else {
            return Err(bad(format!("pad_mode `{}`", cfg.pad_mode)));
        };
        if !matches!(cfg.norm_type.as_str(), "weight_norm" | "time_group_norm") {
            return Err(bad(format!("norm_type `{}`", cfg.norm_type)));
        }
        if cfg.upsampling_ratios.is_empty() || cfg.num_quantizers() == 0 {
            return Err(bad("no upsampling ratios or no quantizers".into()));
        }
        let vb = dir.var_builder(DType::F32, device)?;
        let encoder = load_encoder(&cfg, pm, vb.pp("encoder"))?;
        let decoder = load_decoder(&cfg, pm, vb.pp("decoder"))?;
        let dim = cfg.codebook_dim.unwrap_or(cfg.hidden_size);
        let codebooks = (0..cfg.num_quantizers())
            .map(|i| {
                Codebook::load(
                    vb.pp(format!("quantizer.layers.{i}.codebook")),
                    cfg.codebook_size,
                    dim,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let info = TokenizerInfo {
            codec: "encodec",
            sample_rate: cfg.sampling_rate,
            frame_rate: cfg.frame_rate() as f64,
            codebook_size: cfg.codebook_size,
            max_codebooks: codebooks.len(),
            default_codebooks: cfg
                .codebooks_for_bandwidth(cfg.target_bandwidths.first().copied().unwrap_or(1.5))
                .min(codebooks.len()),
            has_decoder: true,
        };
        Ok(Self {
            cfg,
            info,
            encoder,
            decoder,
            codebooks,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.cfg
    }

    /// Encoder output (pre-quantization embeddings) `[B, D, N]` for audio `[B, T]`.
    pub fn embeddings(&self, audio: &Tensor) -> Result<Tensor> {
        let (_b, t) = audio.dims2()?;
        if t == 0 {
            return Err(CodecError::BadAudio("no samples".into()));
        }
        Ok(run_layers(&self.encoder, &audio.unsqueeze(1)?)?)
    }

    /// Residual vector quantization of embeddings `[B, D, N]` → `[B, K, N]`.
    fn quantize(&self, emb: &Tensor, k: usize) -> Result<Tensor> {
        let (b, d, n) = emb.dims3()?;
        let mut residual = emb.transpose(1, 2)?.reshape((b * n, d))?;
        if emb.device().is_cpu() && emb.dtype() == DType::F32 && rvq_cpu_enabled() {
            let books: Option<Vec<_>> = self.codebooks[..k]
                .iter()
                .map(|cb| cb.cpu.as_ref().map(|(e, e2)| (cb, e, e2)))
                .collect();
            if let Some(books) = books {
                let ids = rvq_cpu(&residual.contiguous()?, &books)?;
                // ids [K, B·N] → [B, K, N]
                let ids = Tensor::from_vec(ids, (k, b, n), emb.device())?;
                return Ok(ids.transpose(0, 1)?.contiguous()?);
            }
        }
        let mut out = Vec::with_capacity(k);
        for cb in &self.codebooks[..k] {
            let ids = cb.quantize(&residual)?;
            let q = cb.embed.index_select(&ids, 0)?;
            residual = (residual - q)?;
            out.push(ids.reshape((b, n))?);
        }
        Ok(Tensor::stack(&out, 1)?)
    }

    /// A fresh incremental encoder using `codebooks` codebooks.
    pub fn stream(&self, codebooks: usize) -> Result<EncodecStream<'_>> {
        self.info.check_codebooks(codebooks)?;
        Ok(EncodecStream::new(self, codebooks))
    }
}

impl AudioTokenizer for Encodec {
    fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor> {
        self.info.check_codebooks(codebooks)?;
        let emb = self.embeddings(audio)?;
        let t0 = std::time::Instant::now();
        let codes = self.quantize(&emb, codebooks)?;
        if profile_enabled() {
            eprintln!(
                "codec-profile quantize {:.3} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(codes)
    }

    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (_b, k, _n) = codes.dims3()?;
        self.info.check_codebooks(k)?;
        let mut emb: Option<Tensor> = None;
        for (i, cb) in self.codebooks[..k].iter().enumerate() {
            let ids = codes.narrow(1, i, 1)?.squeeze(1)?.to_dtype(DType::U32)?; // [B, N]
            let (b, n) = ids.dims2()?;
            let q = cb
                .embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, n, ()))?;
            emb = Some(match emb {
                None => q,
                Some(e) => (e + q)?,
            });
        }
        let emb = emb.expect("k >= 1").transpose(1, 2)?.contiguous()?;
        let audio = run_layers(&self.decoder, &emb)?;
        Ok(audio.squeeze(1)?)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

// ------------------------------------------------------------- streaming

/// Incremental EnCodec encoder: push audio chunks, get code frames as soon
/// as they are fully determined; [`EncodecStream::finish`] flushes the
/// tail. The concatenated codes equal [`AudioTokenizer::encode`] on the
/// whole signal (the convs are causal and the LSTM carries its state).
pub struct EncodecStream<'a> {
    model: &'a Encodec,
    codebooks: usize,
    seanet: StackState,
    total_in: usize,
    /// Audio held back until the first conv can apply its reflect padding.
    head: Vec<f32>,
}

impl<'a> EncodecStream<'a> {
    fn new(model: &'a Encodec, codebooks: usize) -> Self {
        Self {
            model,
            codebooks,
            seanet: StackState::new(&model.encoder),
            total_in: 0,
            head: Vec::new(),
        }
    }

    /// Feeds mono samples; returns the code frames `[K, n]` (row-major,
    /// `n` may be 0) that are now final.
    pub fn push(&mut self, samples: &[f32]) -> Result<super::Codes> {
        self.total_in += samples.len();
        self.head.extend_from_slice(samples);
        // Every layer's reflect padding needs a few input samples; waiting for
        // one hop of audio (plus the kernel) covers the whole stack.
        let need = self.model.cfg.hop_length() * 2 + self.model.cfg.kernel_size;
        if self.started() || self.head.len() >= need {
            let x = std::mem::take(&mut self.head);
            self.run(&x, false)
        } else {
            Ok(super::Codes {
                codebooks: self.codebooks,
                frames: 0,
                ids: vec![],
            })
        }
    }

    /// Flushes the remaining audio (with the end padding whole-file encoding
    /// applies) and returns the last frames.
    pub fn finish(mut self) -> Result<super::Codes> {
        if self.total_in == 0 {
            return Err(CodecError::BadAudio("no samples".into()));
        }
        if !self.started() {
            // Too short to stream: encode what there is in one go.
            let x = Tensor::from_slice(&self.head, (1, self.head.len()), &self.model.device)?;
            return super::Codes::from_tensor(&self.model.encode(&x, self.codebooks)?);
        }
        let x = std::mem::take(&mut self.head);
        self.run(&x, true)
    }

    fn started(&self) -> bool {
        self.seanet.started()
    }

    fn run(&mut self, samples: &[f32], last: bool) -> Result<super::Codes> {
        let xs = Some(Tensor::from_slice(
            samples,
            (1, 1, samples.len()),
            &self.model.device,
        )?);
        let codes = match self.seanet.step(&self.model.encoder, xs, last)? {
            Some(emb) if emb.dim(2)? > 0 => self.model.quantize(&emb, self.codebooks)?,
            _ => {
                return Ok(super::Codes {
                    codebooks: self.codebooks,
                    frames: 0,
                    ids: vec![],
                })
            }
        };
        super::Codes::from_tensor(&codes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{self, fixture_dir, max_abs, stream_rows};
    use super::*;

    #[test]
    fn bandwidth_to_codebooks_follows_transformers() {
        let cfg: EncodecConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.frame_rate(), 75);
        assert_eq!(cfg.num_quantizers(), 32);
        let k: Vec<usize> = [1.5, 3.0, 6.0, 12.0, 24.0]
            .iter()
            .map(|&b| cfg.codebooks_for_bandwidth(b))
            .collect();
        assert_eq!(k, vec![2, 4, 8, 16, 32]);
    }

    fn load_fixture() -> (Encodec, std::collections::HashMap<String, Tensor>) {
        let dir = ModelDir::open(fixture_dir("encodec")).unwrap();
        (
            Encodec::load(&dir, &Device::Cpu).unwrap(),
            test_util::refs("encodec"),
        )
    }

    /// Parity with transformers' EncodecModel on the random-weight fixture:
    /// identical codes at every bandwidth, decoded audio within 1e-4.
    #[test]
    fn parity_with_transformers() {
        let (model, refs) = load_fixture();
        assert_eq!(model.info().max_codebooks, 8);
        let bws: Vec<usize> = model
            .cfg
            .target_bandwidths
            .iter()
            .map(|&b| model.cfg.codebooks_for_bandwidth(b))
            .collect();
        assert_eq!(bws, vec![2, 4, 8]);
        for sig in ["chirp", "noise", "speech"] {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let emb = model.embeddings(&audio).unwrap();
            let emb_err = max_abs(
                &emb.squeeze(0).unwrap(),
                &refs[&format!("{sig}.embeddings")],
            );
            eprintln!("{sig}: embeddings max abs err {emb_err}");
            assert!(emb_err < 1e-4, "{sig}: embeddings max abs err {emb_err}");
            for k in [2usize, 4, 8] {
                let codes = model.encode(&audio, k).unwrap().squeeze(0).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap();
                let got = codes.to_vec2::<u32>().unwrap();
                assert_eq!(
                    got,
                    want.to_vec2::<u32>().unwrap(),
                    "{sig}: codes with {k} codebooks differ"
                );
                if let Some(dec_ref) = refs.get(&format!("{sig}.decoded_{k}")) {
                    let dec = model
                        .decode(&codes.unsqueeze(0).unwrap())
                        .unwrap()
                        .squeeze(0)
                        .unwrap();
                    assert_eq!(dec.dims(), dec_ref.dims(), "{sig}: decoded length");
                    let err = max_abs(&dec, dec_ref);
                    eprintln!("{sig}/{k}: decoded max abs err {err}");
                    assert!(err <= 1e-4, "{sig}/{k}: decoded max abs err {err}");
                }
            }
        }
    }

    /// Chunked encoding (several chunk sizes) equals whole-file encoding.
    #[test]
    fn streaming_equals_whole_file() {
        let (model, refs) = load_fixture();
        for sig in ["speech", "noise"] {
            let audio = refs[&format!("{sig}.audio")].to_vec1::<f32>().unwrap();
            let want = refs[&format!("{sig}.codes_8")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec2::<u32>()
                .unwrap();
            for chunk in [1000usize, 4096, 333] {
                let (rows, _) = stream_rows(Box::new(model.stream(8).unwrap()), &audio, chunk, 8);
                assert_eq!(
                    rows, want,
                    "{sig}: streamed codes (chunk {chunk}) differ from whole-file codes"
                );
            }
        }
    }
}
