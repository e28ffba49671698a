//! SSL + k-means tokens (DASB's "semantic" tokenizers): a HuBERT /
//! wav2vec2 / WavLM encoder from a Hugging Face `HubertModel` /
//! `Wav2Vec2Model` / `WavLMModel` directory, features from one hidden layer, and
//! nearest-centroid assignment against a k-means centroids file. There is no
//! decoder.
//!
//! Layer numbering follows transformers' `hidden_states`: 0 is the input of
//! the first transformer layer (after the positional conv and, for the
//! post-norm variant, the encoder layer norm); `L` is the output of layer `L`.
//! WavLM adds the gated relative position bias (`model_type = "wavlm"`).

use super::{AudioTokenizer, CodecError, LoadOptions, Result, TokenizerInfo};
use crate::runtime::{Device, ModelDir};
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde::Deserialize;
use std::path::Path;

/// The `HubertConfig` / `Wav2Vec2Config` fields the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct SslConfig {
    #[serde(default)]
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub conv_dim: Vec<usize>,
    pub conv_stride: Vec<usize>,
    pub conv_kernel: Vec<usize>,
    #[serde(default)]
    pub conv_bias: bool,
    pub num_conv_pos_embeddings: usize,
    pub num_conv_pos_embedding_groups: usize,
    #[serde(default = "d_group")]
    pub feat_extract_norm: String,
    #[serde(default = "d_gelu")]
    pub feat_extract_activation: String,
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    #[serde(default = "d_true")]
    pub feat_proj_layer_norm: bool,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub conv_pos_batch_norm: bool,
    /// WavLM relative position buckets.
    #[serde(default = "d_buckets")]
    pub num_buckets: usize,
    #[serde(default = "d_max_dist")]
    pub max_bucket_distance: usize,
}

fn d_buckets() -> usize {
    320
}
fn d_max_dist() -> usize {
    800
}

fn d_group() -> String {
    "group".into()
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_true() -> bool {
    true
}
fn d_eps() -> f64 {
    1e-5
}

fn act(name: &str, xs: &Tensor) -> candle_core::Result<Tensor> {
    match name {
        "gelu" => xs.gelu_erf(),
        "gelu_new" | "gelu_pytorch_tanh" => xs.gelu(),
        "relu" => xs.relu(),
        "silu" | "swish" => xs.silu(),
        other => candle_core::bail!("unsupported activation `{other}`"),
    }
}

struct FeatConv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    /// GroupNorm(C, C) on layer 0 ("group") or LayerNorm over channels ("layer").
    norm: Option<ConvNorm>,
}

enum ConvNorm {
    Group(candle_nn::GroupNorm),
    Layer(LayerNorm),
}

struct EncoderLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    ln2: LayerNorm,
    /// WavLM: gated relative position bias.
    rel: Option<RelPos>,
}

struct RelPos {
    gru_const: Tensor,
    gru_linear: Linear,
    /// Bucket embeddings `[buckets, heads]` (first layer only).
    embed: Option<Tensor>,
}

/// WavLM's `_relative_positions_bucket` for one relative position.
fn rel_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let nb = (num_buckets / 2) as i64;
    let mut bucket = if rel > 0 { nb } else { 0 };
    let r = rel.abs();
    let max_exact = nb / 2;
    if r < max_exact {
        bucket += r;
    } else {
        // float32 arithmetic, truncated, as in transformers
        let f = ((r as f32 / max_exact as f32).ln()
            / (max_distance as f64 / max_exact as f64).ln() as f32)
            * (nb - max_exact) as f32;
        bucket += ((max_exact as f32 + f) as i64).min(nb - 1);
    }
    bucket as usize
}

/// The HuBERT / wav2vec2 encoder.
pub struct SslEncoder {
    cfg: SslConfig,
    convs: Vec<FeatConv>,
    proj_ln: Option<LayerNorm>,
    proj: Linear,
    pos_weight: Tensor,
    pos_bias: Tensor,
    enc_ln: LayerNorm,
    layers: Vec<EncoderLayer>,
}

fn ln(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(
        dim,
        candle_nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
        vb,
    )
}

impl SslEncoder {
    fn load(cfg: SslConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let n = cfg.conv_dim.len();
        if cfg.conv_stride.len() != n || cfg.conv_kernel.len() != n {
            candle_core::bail!("conv_dim, conv_stride and conv_kernel differ in length");
        }
        let mut convs = Vec::with_capacity(n);
        for i in 0..n {
            let cin = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
            let cout = cfg.conv_dim[i];
            let vbl = vb.pp(format!("feature_extractor.conv_layers.{i}"));
            let weight = vbl.get((cout, cin, cfg.conv_kernel[i]), "conv.weight")?;
            let bias = if cfg.conv_bias {
                Some(vbl.get(cout, "conv.bias")?)
            } else {
                None
            };
            let norm = match (cfg.feat_extract_norm.as_str(), i) {
                ("group", 0) => Some(ConvNorm::Group(candle_nn::group_norm(
                    cout,
                    cout,
                    1e-5,
                    vbl.pp("layer_norm"),
                )?)),
                ("layer", _) => Some(ConvNorm::Layer(ln(vbl.pp("layer_norm"), cout, 1e-5)?)),
                ("group", _) => None,
                (other, _) => candle_core::bail!("unsupported feat_extract_norm `{other}`"),
            };
            convs.push(FeatConv {
                weight,
                bias,
                stride: cfg.conv_stride[i],
                norm,
            });
        }
        let last = cfg.conv_dim[n - 1];
        let h = cfg.hidden_size;
        let proj_ln = if cfg.feat_proj_layer_norm {
            Some(ln(
                vb.pp("feature_projection.layer_norm"),
                last,
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        let proj = candle_nn::linear(last, h, vb.pp("feature_projection.projection"))?;
        if cfg.conv_pos_batch_norm {
            candle_core::bail!("conv_pos_batch_norm = true is not supported");
        }
        // Positional conv, weight-normed over dim 2 (g: [1, 1, K]).
        let pvb = vb.pp("encoder.pos_conv_embed.conv");
        let k = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        let (gname, vname) = if pvb.contains_tensor("parametrizations.weight.original0") {
            (
                "parametrizations.weight.original0",
                "parametrizations.weight.original1",
            )
        } else {
            ("weight_g", "weight_v")
        };
        let g = pvb.get((1, 1, k), gname)?;
        let v = pvb.get((h, h / groups, k), vname)?;
        let norm = v.sqr()?.sum_keepdim((0, 1))?.sqrt()?;
        let pos_weight = v.broadcast_mul(&g)?.broadcast_div(&norm)?;
        let pos_bias = pvb.get(h, "bias")?;
        let enc_ln = ln(vb.pp("encoder.layer_norm"), h, cfg.layer_norm_eps)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                Ok(EncoderLayer {
                    q: candle_nn::linear(h, h, l.pp("attention.q_proj"))?,
                    k: candle_nn::linear(h, h, l.pp("attention.k_proj"))?,
                    v: candle_nn::linear(h, h, l.pp("attention.v_proj"))?,
                    o: candle_nn::linear(h, h, l.pp("attention.out_proj"))?,
                    ln1: ln(l.pp("layer_norm"), h, cfg.layer_norm_eps)?,
                    ff_in: candle_nn::linear(
                        h,
                        cfg.intermediate_size,
                        l.pp("feed_forward.intermediate_dense"),
                    )?,
                    ff_out: candle_nn::linear(
                        cfg.intermediate_size,
                        h,
                        l.pp("feed_forward.output_dense"),
                    )?,
                    ln2: ln(l.pp("final_layer_norm"), h, cfg.layer_norm_eps)?,
                    rel: if cfg.model_type == "wavlm" {
                        let a = l.pp("attention");
                        let nh = cfg.num_attention_heads;
                        Some(RelPos {
                            gru_const: a.get((1, nh, 1, 1), "gru_rel_pos_const")?,
                            gru_linear: candle_nn::linear(h / nh, 8, a.pp("gru_rel_pos_linear"))?,
                            embed: if i == 0 {
                                Some(a.get((cfg.num_buckets, nh), "rel_attn_embed.weight")?)
                            } else {
                                None
                            },
                        })
                    } else {
                        None
                    },
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            convs,
            proj_ln,
            proj,
            pos_weight,
            pos_bias,
            enc_ln,
            layers,
        })
    }

    /// Total stride of the feature encoder (samples per frame).
    pub fn hop(&self) -> usize {
        self.cfg.conv_stride.iter().product()
    }

    /// Minimum number of samples that yields one frame.
    pub fn min_samples(&self) -> usize {
        // Receptive field of the conv stack.
        let mut rf = 1;
        for (k, s) in self.cfg.conv_kernel.iter().zip(&self.cfg.conv_stride).rev() {
            rf = (rf - 1) * s + k;
        }
        rf
    }

    /// WavLM position bias `[1, H, T, T]` from the first layer's buckets.
    fn position_bias(&self, t: usize) -> candle_core::Result<Option<Tensor>> {
        let Some(embed) = self
            .layers
            .first()
            .and_then(|l| l.rel.as_ref())
            .and_then(|r| r.embed.as_ref())
        else {
            return Ok(None);
        };
        let idx: Vec<u32> = (0..t)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    rel_bucket(
                        j as i64 - i as i64,
                        self.cfg.num_buckets,
                        self.cfg.max_bucket_distance,
                    ) as u32
                })
            })
            .collect();
        let idx = Tensor::from_vec(idx, t * t, embed.device())?;
        let v = embed
            .index_select(&idx, 0)?
            .reshape((t, t, ()))?
            .permute((2, 0, 1))?;
        Ok(Some(v.unsqueeze(0)?.contiguous()?))
    }

    fn attention(
        &self,
        l: &EncoderLayer,
        xs: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = xs.dims3()?;
        let nh = self.cfg.num_attention_heads;
        let hd = h / nh;
        let split = |x: Tensor| x.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous();
        let q = split(l.q.forward(xs)?)?;
        let k = split(l.k.forward(xs)?)?;
        let v = split(l.v.forward(xs)?)?;
        let mut scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        if let (Some(rel), Some(bias)) = (&l.rel, bias) {
            // Gate per head and query: a * (b * const - 1) + 2, from the
            // layer input split into heads.
            let g = xs.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
            let p = rel
                .gru_linear
                .forward(&g)?
                .reshape((b, nh, t, 2, 4))?
                .sum(D::Minus1)?;
            let p = candle_nn::ops::sigmoid(&p)?;
            let (ga, gb) = (p.narrow(3, 0, 1)?, p.narrow(3, 1, 1)?);
            let gate = ((ga * (gb.broadcast_mul(&rel.gru_const)? - 1.0)?)? + 2.0)?;
            scores = (scores + gate.broadcast_mul(bias)?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        l.o.forward(&out)
    }

    fn feed_forward(&self, l: &EncoderLayer, xs: &Tensor) -> candle_core::Result<Tensor> {
        l.ff_out
            .forward(&act(&self.cfg.hidden_act, &l.ff_in.forward(xs)?)?)
    }

    /// Hidden states `0..=upto` for audio `[B, T]`, each `[B, N, H]`.
    pub fn hidden_states(&self, audio: &Tensor, upto: usize) -> candle_core::Result<Vec<Tensor>> {
        let mut xs = audio.unsqueeze(1)?;
        for c in &self.convs {
            xs = xs.conv1d(&c.weight, 0, c.stride, 1, 1)?;
            if let Some(b) = &c.bias {
                xs = xs.broadcast_add(&b.reshape((1, (), 1))?)?;
            }
            xs = match &c.norm {
                Some(ConvNorm::Group(g)) => g.forward(&xs)?,
                Some(ConvNorm::Layer(l)) => l.forward(&xs.transpose(1, 2)?)?.transpose(1, 2)?,
                None => xs,
            };
            xs = act(&self.cfg.feat_extract_activation, &xs)?;
        }
        let mut xs = xs.transpose(1, 2)?.contiguous()?; // [B, N, C]
        if let Some(l) = &self.proj_ln {
            xs = l.forward(&xs)?;
        }
        xs = self.proj.forward(&xs)?;
        // Positional conv (padding K/2, drop the last frame for even K), GELU.
        let k = self.cfg.num_conv_pos_embeddings;
        let n = xs.dim(1)?;
        let pos = xs.transpose(1, 2)?.contiguous()?.conv1d(
            &self.pos_weight,
            k / 2,
            1,
            1,
            self.cfg.num_conv_pos_embedding_groups,
        )?;
        let pos = pos
            .broadcast_add(&self.pos_bias.reshape((1, (), 1))?)?
            .narrow(2, 0, n)?;
        let pos = act(&self.cfg.feat_extract_activation, &pos)?.transpose(1, 2)?;
        xs = (xs + pos)?;
        let stable = self.cfg.do_stable_layer_norm;
        if !stable {
            xs = self.enc_ln.forward(&xs)?;
        }
        let mut out = vec![xs.clone()];
        let bias = self.position_bias(xs.dim(1)?)?;
        let bias = bias.as_ref();
        for l in self.layers.iter().take(upto) {
            xs = if stable {
                let a = (&xs + self.attention(l, &l.ln1.forward(&xs)?, bias)?)?;
                (&a + self.feed_forward(l, &l.ln2.forward(&a)?)?)?
            } else {
                let a = l.ln1.forward(&(&xs + self.attention(l, &xs, bias)?)?)?;
                l.ln2.forward(&(&a + self.feed_forward(l, &a)?)?)?
            };
            out.push(xs.clone());
        }
        Ok(out)
    }
}

/// Reads k-means centroids `[K × D]` from `.npy` or `.safetensors` (tensor
/// `centroids`, `cluster_centers`, or the only tensor of the file).
pub fn read_centroids(path: &Path, device: &Device) -> Result<Tensor> {
    let bad = |msg: String| CodecError::BadFile {
        path: path.to_path_buf(),
        msg,
    };
    let t = if path.extension().is_some_and(|e| e == "safetensors") {
        let mut map =
            candle_core::safetensors::load(path, device).map_err(|e| bad(e.to_string()))?;
        let key = ["centroids", "cluster_centers"]
            .into_iter()
            .find(|k| map.contains_key(*k))
            .map(str::to_string);
        match key {
            Some(k) => map.remove(&k).expect("present"),
            None if map.len() == 1 => map.into_values().next().expect("one tensor"),
            None => {
                return Err(bad(
                    "no `centroids` tensor (and more than one tensor in the file)".into(),
                ))
            }
        }
    } else {
        let a = super::npy::read_f32(path).map_err(|e| bad(e.to_string()))?;
        Tensor::from_vec(a.data, a.shape, device)?
    };
    if t.rank() != 2 || t.dim(0)? == 0 || t.dim(1)? == 0 {
        return Err(bad(format!(
            "centroids must be a non-empty [K x D] matrix, got shape {:?}",
            t.dims()
        )));
    }
    Ok(t.to_dtype(DType::F32)?)
}

/// HuBERT/wav2vec2 features of one layer + nearest-centroid ids.
pub struct SslTokenizer {
    encoder: SslEncoder,
    layer: usize,
    centroids: Tensor,
    c2: Tensor,
    dedup: bool,
    info: TokenizerInfo,
    device: Device,
}

impl SslTokenizer {
    /// Loads the encoder from `dir`, the centroids from `opts.kmeans`, and
    /// checks that the centroid dimension matches the hidden size.
    pub fn load(dir: &ModelDir, opts: &LoadOptions, device: &Device) -> Result<Self> {
        let cfg: SslConfig = dir.config()?;
        let cfg_path = dir.root().join("config.json");
        match cfg.model_type.as_str() {
            "hubert" | "wav2vec2" | "wavlm" | "" => {}
            other => {
                return Err(CodecError::Config {
                    path: cfg_path,
                    msg: format!("model_type `{other}` (supported: hubert, wav2vec2, wavlm)"),
                })
            }
        }
        let layer = opts
            .layer
            .ok_or_else(|| CodecError::BadOption("the ssl tokenizer needs --layer L".into()))?;
        if layer > cfg.num_hidden_layers {
            return Err(CodecError::BadOption(format!(
                "--layer {layer}: the model has hidden states 0..={}",
                cfg.num_hidden_layers
            )));
        }
        let kpath = opts.kmeans.as_ref().ok_or_else(|| {
            CodecError::BadOption("the ssl tokenizer needs --kmeans FILE (centroids)".into())
        })?;
        let centroids = read_centroids(kpath, device)?;
        let (k, d) = centroids.dims2()?;
        if d != cfg.hidden_size {
            return Err(CodecError::BadFile {
                path: kpath.clone(),
                msg: format!(
                    "centroids have dimension {d}, but layer features have {}",
                    cfg.hidden_size
                ),
            });
        }
        let mut vb = dir.var_builder(DType::F32, device)?;
        for prefix in ["hubert", "wav2vec2", "wavlm"] {
            if vb.contains_tensor(&format!("{prefix}.feature_projection.projection.weight")) {
                vb = vb.pp(prefix);
            }
        }
        let encoder = SslEncoder::load(cfg, vb).map_err(|e| CodecError::Config {
            path: cfg_path,
            msg: e.to_string(),
        })?;
        let c2 = centroids.sqr()?.sum_keepdim(1)?.t()?;
        let info = TokenizerInfo {
            codec: "ssl",
            sample_rate: 16000,
            frame_rate: 16000.0 / encoder.hop() as f64,
            codebook_size: k,
            max_codebooks: 1,
            default_codebooks: 1,
            has_decoder: false,
        };
        Ok(Self {
            encoder,
            layer,
            centroids,
            c2,
            dedup: opts.dedup,
            info,
            device: device.clone(),
        })
    }

    /// `hidden_states[layer]` for audio `[B, T]` → `[B, N, H]`.
    pub fn features(&self, audio: &Tensor) -> Result<Tensor> {
        let (_b, t) = audio.dims2()?;
        if t < self.encoder.min_samples() {
            return Err(CodecError::BadAudio(format!(
                "{t} samples is shorter than the encoder's receptive field ({} samples)",
                self.encoder.min_samples()
            )));
        }
        let mut hs = self.encoder.hidden_states(audio, self.layer)?;
        Ok(hs.pop().expect("at least one hidden state"))
    }

    /// Nearest centroid (squared Euclidean) for features `[B, N, D]` → `[B, N]`.
    pub fn assign(&self, feats: &Tensor) -> Result<Tensor> {
        let (b, n, d) = feats.dims3()?;
        let x = feats.reshape((b * n, d))?;
        let dist = (x
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_sub(&(x.matmul(&self.centroids.t()?)? * 2.0)?)?)
        .broadcast_add(&self.c2)?;
        Ok(dist.argmin(D::Minus1)?.reshape((b, n))?)
    }
}

/// Collapses runs of equal ids (`1 1 2 2 2 1` → `1 2 1`).
pub fn dedup(ids: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(ids.len());
    for &i in ids {
        if out.last() != Some(&i) {
            out.push(i);
        }
    }
    out
}

impl AudioTokenizer for SslTokenizer {
    fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    fn encode(&self, audio: &Tensor, codebooks: usize) -> Result<Tensor> {
        if codebooks != 1 {
            return Err(CodecError::BadOption(format!(
                "the ssl tokenizer has 1 codebook (asked for {codebooks})"
            )));
        }
        let ids = self.assign(&self.features(audio)?)?;
        if !self.dedup {
            return Ok(ids.unsqueeze(1)?);
        }
        let (b, _) = ids.dims2()?;
        if b != 1 {
            return Err(CodecError::BadOption(
                "de-duplication needs batch size 1".into(),
            ));
        }
        let d = dedup(&ids.squeeze(0)?.to_vec1::<u32>()?);
        let n = d.len();
        Ok(Tensor::from_vec(d, (1, 1, n), &self.device)?)
    }

    fn decode(&self, _codes: &Tensor) -> Result<Tensor> {
        Err(CodecError::NoDecoder("ssl"))
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/codecs/hubert")
            .join(rel)
    }

    #[test]
    fn dedup_collapses_runs() {
        assert_eq!(dedup(&[1, 1, 2, 2, 2, 1]), vec![1, 2, 1]);
        assert!(dedup(&[]).is_empty());
    }

    /// Parity with transformers (`name` fixture: HubertModel or
    /// Wav2Vec2Model): every hidden state within 1e-4, identical k-means ids
    /// at layer 2.
    fn check_parity(name: &str, centroids: &str, layers: usize) {
        let fixture = |rel: &str| fixture("").join("..").join(name).join(rel);
        let dir = ModelDir::open(fixture("")).unwrap();
        let opts = LoadOptions {
            layer: Some(2),
            kmeans: Some(fixture(centroids)),
            dedup: false,
        };
        let tok = SslTokenizer::load(&dir, &opts, &Device::Cpu).unwrap();
        let refs =
            candle_core::safetensors::load(fixture("reference.safetensors"), &Device::Cpu).unwrap();
        for sig in ["chirp", "noise", "speech"] {
            let audio = refs[&format!("{sig}.audio")].unsqueeze(0).unwrap();
            let hs = tok.encoder.hidden_states(&audio, layers).unwrap();
            assert_eq!(hs.len(), layers + 1);
            for (i, h) in hs.iter().enumerate() {
                let want = &refs[&format!("{sig}.hidden_{i}")];
                let err = (h.squeeze(0).unwrap() - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap();
                let err = err.to_scalar::<f32>().unwrap();
                eprintln!("{name} {sig}: hidden state {i} max abs err {err}");
                assert!(err <= 1e-4, "{sig}: hidden state {i} max abs err {err}");
            }
            let ids = tok
                .encode(&audio, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u32>()
                .unwrap();
            let want: Vec<u32> = refs[&format!("{sig}.ids_2")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(ids, want, "{sig}: k-means ids differ");
        }
    }

    #[test]
    fn hubert_parity_with_transformers() {
        check_parity("hubert", "centroids.npy", 3);
    }

    /// WavLM: gated relative position bias (small bucket count so the
    /// logarithmic buckets are exercised).
    #[test]
    fn wavlm_parity_with_transformers() {
        check_parity("wavlm", "centroids.npy", 2);
    }

    #[test]
    fn wavlm_buckets_match_transformers_formula() {
        // num_buckets 320, max_distance 800: exact below 80, log above.
        assert_eq!(rel_bucket(0, 320, 800), 0);
        assert_eq!(rel_bucket(5, 320, 800), 165);
        assert_eq!(rel_bucket(-5, 320, 800), 5);
        assert_eq!(rel_bucket(-100, 320, 800), 87);
        assert_eq!(rel_bucket(10_000, 320, 800), 319);
    }

    /// Pre-norm ("stable layer norm") encoder, LayerNorm conv features,
    /// conv bias, centroids from safetensors.
    #[test]
    fn wav2vec2_parity_with_transformers() {
        check_parity("wav2vec2", "centroids.safetensors", 2);
    }

    #[test]
    fn wrong_centroid_dimension_is_named() {
        let dir = std::env::temp_dir().join(format!("voxtok-ssl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.npy");
        super::super::npy::write_f32(&p, &[2, 5], &[0.0; 10]).unwrap();
        let md = ModelDir::open(fixture("")).unwrap();
        let opts = LoadOptions {
            layer: Some(1),
            kmeans: Some(p.clone()),
            dedup: false,
        };
        let err = SslTokenizer::load(&md, &opts, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad.npy") && err.contains("dimension 5"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
