//! DAC, the Descript Audio Codec (Kumar et al. 2023), from a Hugging Face
//! `DacModel` directory: Snake-activated conv encoder/decoder and a residual
//! vector quantizer with factorized, l2-normalized codebooks.
//!
//! Written against transformers' `modeling_dac.py` (same weight names; conv
//! weights may be plain or weight-normed in either spelling).

use super::nn::{conv_weight, TapConv};
use super::{AudioTokenizer, CodecError, Result, TokenizerInfo};
use crate::runtime::{Device, ModelDir};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// The fields of `DacConfig` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct DacConfig {
    #[serde(default = "d_enc")]
    pub encoder_hidden_size: usize,
    #[serde(default = "d_ratios")]
    pub downsampling_ratios: Vec<usize>,
    #[serde(default = "d_dec")]
    pub decoder_hidden_size: usize,
    #[serde(default = "d_ncb")]
    pub n_codebooks: usize,
    #[serde(default = "d_cbs")]
    pub codebook_size: usize,
    #[serde(default = "d_cbd")]
    pub codebook_dim: usize,
    #[serde(default = "d_sr")]
    pub sampling_rate: u32,
}

fn d_enc() -> usize {
    64
}
fn d_ratios() -> Vec<usize> {
    vec![2, 4, 8, 8]
}
fn d_dec() -> usize {
    1536
}
fn d_ncb() -> usize {
    9
}
fn d_cbs() -> usize {
    1024
}
fn d_cbd() -> usize {
    8
}
fn d_sr() -> u32 {
    16000
}

impl DacConfig {
    pub fn hidden_size(&self) -> usize {
        self.encoder_hidden_size << self.downsampling_ratios.len()
    }
    pub fn hop_length(&self) -> usize {
        self.downsampling_ratios.iter().product()
    }
    /// `ceil(sampling_rate / hop_length)`, as transformers computes it.
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length())
    }
}

/// A (possibly strided / dilated / transposed) conv with symmetric padding.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    taps: Option<TapConv>,
    bias: Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        transposed: bool,
    ) -> candle_core::Result<Self> {
        let shape = if transposed {
            (cin, cout, k)
        } else {
            (cout, cin, k)
        };
        let weight = conv_weight(&vb, shape)?;
        Ok(Self {
            taps: if transposed {
                None
            } else {
                Some(TapConv::new(weight.clone(), stride)?)
            },
            weight,
            bias: vb.get(cout, "bias")?,
            stride,
            padding,
            dilation,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = match &self.taps {
            None => {
                // Unpadded (candle's fast col2im path), then crop the padding:
                // the same as ConvTranspose1d(padding = p).
                let full =
                    xs.conv_transpose1d(&self.weight, 0, 0, self.stride, self.dilation, 1)?;
                let len = full.dim(D::Minus1)?;
                full.narrow(D::Minus1, self.padding, len - 2 * self.padding)?
            }
            Some(t) => t.forward(
                &xs.pad_with_zeros(D::Minus1, self.padding, self.padding)?,
                self.stride,
                self.dilation,
            )?,
        };
        ys.broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// Snake activation `x + 1/(α + 1e-9) · sin²(αx)` with per-channel α.
#[derive(Debug, Clone)]
struct Snake {
    alpha: Tensor,
    inv: Tensor,
}

impl Snake {
    fn load(vb: VarBuilder, dim: usize) -> candle_core::Result<Self> {
        let alpha = vb.get((1, dim, 1), "alpha")?;
        let inv = (&alpha + 1e-9)?.recip()?;
        Ok(Self { alpha, inv })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let s = xs.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        xs + s.broadcast_mul(&self.inv)?
    }
}

#[derive(Debug, Clone)]
struct ResUnit {
    snake1: Snake,
    conv1: Conv,
    snake2: Snake,
    conv2: Conv,
}

impl ResUnit {
    fn load(vb: VarBuilder, dim: usize, dilation: usize) -> candle_core::Result<Self> {
        Ok(Self {
            snake1: Snake::load(vb.pp("snake1"), dim)?,
            conv1: Conv::load(
                vb.pp("conv1"),
                dim,
                dim,
                7,
                1,
                3 * dilation,
                dilation,
                false,
            )?,
            snake2: Snake::load(vb.pp("snake2"), dim)?,
            conv2: Conv::load(vb.pp("conv2"), dim, dim, 1, 1, 0, 1, false)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.conv1.forward(&self.snake1.forward(xs)?)?;
        let ys = self.conv2.forward(&self.snake2.forward(&ys)?)?;
        let pad = (xs.dim(D::Minus1)? - ys.dim(D::Minus1)?) / 2;
        let xs = if pad > 0 {
            xs.narrow(D::Minus1, pad, ys.dim(D::Minus1)?)?
        } else {
            xs.clone()
        };
        xs + ys
    }
}

/// Encoder block: three residual units, Snake, strided conv (or, in the
/// decoder: Snake, transposed conv, three residual units).
#[derive(Debug, Clone)]
struct Block {
    units: [ResUnit; 3],
    snake: Snake,
    conv: Conv,
    decoder: bool,
}

impl Block {
    fn load_enc(vb: VarBuilder, dim: usize, stride: usize) -> candle_core::Result<Self> {
        let h = dim / 2;
        Ok(Self {
            units: [
                ResUnit::load(vb.pp("res_unit1"), h, 1)?,
                ResUnit::load(vb.pp("res_unit2"), h, 3)?,
                ResUnit::load(vb.pp("res_unit3"), h, 9)?,
            ],
            snake: Snake::load(vb.pp("snake1"), h)?,
            conv: Conv::load(
                vb.pp("conv1"),
                h,
                dim,
                2 * stride,
                stride,
                stride.div_ceil(2),
                1,
                false,
            )?,
            decoder: false,
        })
    }

    fn load_dec(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            snake: Snake::load(vb.pp("snake1"), cin)?,
            conv: Conv::load(
                vb.pp("conv_t1"),
                cin,
                cout,
                2 * stride,
                stride,
                stride.div_ceil(2),
                1,
                true,
            )?,
            units: [
                ResUnit::load(vb.pp("res_unit1"), cout, 1)?,
                ResUnit::load(vb.pp("res_unit2"), cout, 3)?,
                ResUnit::load(vb.pp("res_unit3"), cout, 9)?,
            ],
            decoder: true,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.decoder {
            let mut xs = self.conv.forward(&self.snake.forward(xs)?)?;
            for u in &self.units {
                xs = u.forward(&xs)?;
            }
            Ok(xs)
        } else {
            let mut xs = xs.clone();
            for u in &self.units {
                xs = u.forward(&xs)?;
            }
            self.conv.forward(&self.snake.forward(&xs)?)
        }
    }
}

/// One factorized quantizer: `in_proj` to `codebook_dim`, cosine nearest
/// neighbour, `out_proj` back.
#[derive(Debug, Clone)]
struct Quantizer {
    in_proj: Conv,
    out_proj: Conv,
    codebook: Tensor,
    /// l2-normalized codebook, transposed `[d, C]`, and its squared norms `[1, C]`.
    cb_norm_t: Tensor,
    cb_norm2: Tensor,
}

fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    // F.normalize: x / max(||x||, 1e-12) over dim 1.
    let n = xs.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    xs.broadcast_div(&n)
}

impl Quantizer {
    fn load(vb: VarBuilder, cfg: &DacConfig) -> candle_core::Result<Self> {
        let (h, d) = (cfg.hidden_size(), cfg.codebook_dim);
        let codebook = vb.get((cfg.codebook_size, d), "codebook.weight")?;
        let cn = l2_normalize(&codebook)?;
        Ok(Self {
            in_proj: Conv::load(vb.pp("in_proj"), h, d, 1, 1, 0, 1, false)?,
            out_proj: Conv::load(vb.pp("out_proj"), d, h, 1, 1, 0, 1, false)?,
            cb_norm2: cn.sqr()?.sum_keepdim(1)?.t()?,
            cb_norm_t: cn.t()?.contiguous()?,
            codebook,
        })
    }

    /// Codes `[B, N]` for the residual `[B, H, N]` (transformers' expression:
    /// `-(|e|² - 2 e·c) + |c|²`, argmax).
    fn encode(&self, residual: &Tensor) -> candle_core::Result<Tensor> {
        let lat = self.in_proj.forward(residual)?;
        let (b, d, n) = lat.dims3()?;
        let e = l2_normalize(&lat.transpose(1, 2)?.reshape((b * n, d))?)?;
        let l2 = e.sqr()?.sum_keepdim(1)?;
        let dist = (l2
            .broadcast_sub(&(e.matmul(&self.cb_norm_t)? * 2.0)?)?
            .neg()?)
        .broadcast_add(&self.cb_norm2)?;
        dist.argmax(D::Minus1)?.reshape((b, n))
    }

    /// `out_proj(codebook[codes])` → `[B, H, N]`.
    fn decode(&self, codes: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = codes.dims2()?;
        let q = self
            .codebook
            .index_select(&codes.flatten_all()?, 0)?
            .reshape((b, n, ()))?;
        self.out_proj.forward(&q.transpose(1, 2)?.contiguous()?)
    }
}

/// DAC loaded from a `DacModel` directory.
pub struct Dac {
    cfg: DacConfig,
    info: TokenizerInfo,
    enc_conv1: Conv,
    enc_blocks: Vec<Block>,
    enc_snake: Snake,
    enc_conv2: Conv,
    quantizers: Vec<Quantizer>,
    dec_conv1: Conv,
    dec_blocks: Vec<Block>,
    dec_snake: Snake,
    dec_conv2: Conv,
    device: Device,
}

impl Dac {
    /// Loads `config.json` + safetensors from `dir` (float32).
    pub fn load(dir: &ModelDir, device: &Device) -> Result<Self> {
        let cfg: DacConfig = dir.config()?;
        if cfg.downsampling_ratios.is_empty() || cfg.n_codebooks == 0 {
            return Err(CodecError::Config {
                path: dir.root().join("config.json"),
                msg: "no downsampling ratios or no codebooks".into(),
            });
        }
        let vb = dir.var_builder(DType::F32, device)?;
        let (e, h) = (cfg.encoder_hidden_size, cfg.hidden_size());
        let ev = vb.pp("encoder");
        let enc_conv1 = Conv::load(ev.pp("conv1"), 1, e, 7, 1, 3, 1, false)?;
        let enc_blocks = cfg
            .downsampling_ratios
            .iter()
            .enumerate()
            .map(|(i, &s)| Block::load_enc(ev.pp(format!("block.{i}")), e << (i + 1), s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let enc_snake = Snake::load(ev.pp("snake1"), h)?;
        let enc_conv2 = Conv::load(ev.pp("conv2"), h, h, 3, 1, 1, 1, false)?;
        let quantizers = (0..cfg.n_codebooks)
            .map(|i| Quantizer::load(vb.pp(format!("quantizer.quantizers.{i}")), &cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dv = vb.pp("decoder");
        let dh = cfg.decoder_hidden_size;
        let dec_conv1 = Conv::load(dv.pp("conv1"), h, dh, 7, 1, 3, 1, false)?;
        let ups: Vec<usize> = cfg.downsampling_ratios.iter().rev().copied().collect();
        let dec_blocks = ups
            .iter()
            .enumerate()
            .map(|(i, &s)| Block::load_dec(dv.pp(format!("block.{i}")), dh >> i, dh >> (i + 1), s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let out_dim = dh >> ups.len();
        let dec_snake = Snake::load(dv.pp("snake1"), out_dim)?;
        let dec_conv2 = Conv::load(dv.pp("conv2"), out_dim, 1, 7, 1, 3, 1, false)?;
        let info = TokenizerInfo {
            codec: "dac",
            sample_rate: cfg.sampling_rate,
            frame_rate: cfg.frame_rate() as f64,
            codebook_size: cfg.codebook_size,
            max_codebooks: cfg.n_codebooks,
            default_codebooks: cfg.n_codebooks,
            has_decoder: true,
        };
        Ok(Self {
            cfg,
            info,
            enc_conv1,
            enc_blocks,
            enc_snake,
            enc_conv2,
            quantizers,
            dec_conv1,
            dec_blocks,
            dec_snake,
            dec_conv2,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &DacConfig {
        &self.cfg
    }

    /// Encoder output `[B, H, N]` for audio `[B, T]`.
    pub fn embeddings(&self, audio: &Tensor) -> Result<Tensor> {
        let (_b, t) = audio.dims2()?;
        if t < self.cfg.hop_length() {
            return Err(CodecError::BadAudio(format!(
                "{t} samples is shorter than one DAC frame ({} samples)",
                self.cfg.hop_length()
            )));
        }
        let mut xs = self.enc_conv1.forward(&audio.unsqueeze(1)?)?;
        for b in &self.enc_blocks {
            xs = b.forward(&xs)?;
        }
        Ok(self.enc_conv2.forward(&self.enc_snake.forward(&xs)?)?)
    }
}

impl AudioTokenizer for Dac {
    fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor> {
        self.info.check_codebooks(codebooks)?;
        let mut residual = self.embeddings(audio)?;
        let mut out = Vec::with_capacity(codebooks);
        for q in &self.quantizers[..codebooks] {
            let ids = q.encode(&residual)?;
            residual = (residual - q.decode(&ids)?)?;
            out.push(ids);
        }
        Ok(Tensor::stack(&out, 1)?)
    }

    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (_b, k, _n) = codes.dims3()?;
        self.info.check_codebooks(k)?;
        let mut z: Option<Tensor> = None;
        for (i, q) in self.quantizers[..k].iter().enumerate() {
            let part = q.decode(&codes.narrow(1, i, 1)?.squeeze(1)?.to_dtype(DType::U32)?)?;
            z = Some(match z {
                None => part,
                Some(z) => (z + part)?,
            });
        }
        let mut xs = self.dec_conv1.forward(&z.expect("k >= 1"))?;
        for b in &self.dec_blocks {
            xs = b.forward(&xs)?;
        }
        let xs = self
            .dec_conv2
            .forward(&self.dec_snake.forward(&xs)?)?
            .tanh()?;
        Ok(xs.squeeze(1)?)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{self, max_abs};
    use super::*;

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/codecs/dac")
    }

    /// Parity on fixture `name`: encoder output and decoded audio (where the
    /// reference has it) within 1e-4, identical codes with 2 and 4 codebooks.
    fn check_parity(name: &str, sigs: &[&str], frame_rate: f64) {
        let dir = test_util::fixture_dir(name);
        let model = Dac::load(&ModelDir::open(&dir).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(model.info().frame_rate, frame_rate);
        let refs = test_util::refs(name);
        for sig in sigs {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let emb = model.embeddings(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&emb, &refs[&format!("{sig}.embeddings")]);
            eprintln!("{name} {sig}: embeddings max abs err {err}");
            assert!(err <= 1e-4, "{name} {sig}: embeddings max abs err {err}");
            for k in [2usize, 4] {
                let codes = model.encode(&audio, k).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap();
                assert_eq!(
                    codes.squeeze(0).unwrap().to_vec2::<u32>().unwrap(),
                    want.to_vec2::<u32>().unwrap(),
                    "{name} {sig}: codes with {k} codebooks differ"
                );
                if let Some(want) = refs.get(&format!("{sig}.decoded_{k}")) {
                    let dec = model.decode(&codes).unwrap().squeeze(0).unwrap();
                    assert_eq!(dec.dims(), want.dims());
                    let err = max_abs(&dec, want);
                    eprintln!("{name} {sig}/{k}: decoded max abs err {err}");
                    assert!(err <= 1e-4, "{name} {sig}/{k}: decoded max abs err {err}");
                }
            }
        }
    }

    /// The 24 kHz configuration (ratios 2, 4, 5, 8: hop 320, an odd stride).
    #[test]
    fn parity_24khz() {
        check_parity("dac24", &["chirp", "speech"], 75.0);
    }

    /// The 44.1 kHz configuration (hop 512: frame rate ceil(44100 / 512) = 87).
    #[test]
    fn parity_44khz() {
        check_parity("dac44", &["chirp", "speech"], 87.0);
    }

    /// Parity with transformers' DacModel on the random-weight fixture:
    /// encoder output and decoded audio within 1e-4, identical codes.
    #[test]
    fn parity_with_transformers() {
        let model = Dac::load(&ModelDir::open(fixture_dir()).unwrap(), &Device::Cpu).unwrap();
        assert_eq!(model.info().frame_rate, 32.0);
        let refs = candle_core::safetensors::load(
            fixture_dir().join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let max_abs = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        for sig in ["chirp", "noise", "speech"] {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let emb = model.embeddings(&audio).unwrap().squeeze(0).unwrap();
            let err = max_abs(&emb, &refs[&format!("{sig}.embeddings")]);
            eprintln!("{sig}: embeddings max abs err {err}");
            assert!(err <= 1e-4, "{sig}: embeddings max abs err {err}");
            for k in [2usize, 4] {
                let codes = model.encode(&audio, k).unwrap();
                let want = refs[&format!("{sig}.codes_{k}")]
                    .to_dtype(DType::U32)
                    .unwrap();
                assert_eq!(
                    codes.squeeze(0).unwrap().to_vec2::<u32>().unwrap(),
                    want.to_vec2::<u32>().unwrap(),
                    "{sig}: codes with {k} codebooks differ"
                );
                let dec = model.decode(&codes).unwrap().squeeze(0).unwrap();
                let want = &refs[&format!("{sig}.decoded_{k}")];
                assert_eq!(dec.dims(), want.dims());
                let err = max_abs(&dec, want);
                eprintln!("{sig}/{k}: decoded max abs err {err}");
                assert!(err <= 1e-4, "{sig}/{k}: decoded max abs err {err}");
            }
        }
    }
}
