//! The Qwen2 / Llama decoder on candle: RMSNorm, RoPE, grouped-query
//! attention over per-sequence [`KvCache`]s, SwiGLU MLP, tied or separate
//! LM head.
//!
//! One forward call takes a *ragged* batch: any number of sequences, each
//! with any number of new tokens (a whole prompt in prefill, one token in
//! decode). The matmuls run over all new tokens at once; attention runs per
//! sequence against that sequence's cache, so sequences of different
//! lengths batch without padding.

use super::attention::cached_attention;
use super::config::{Arch, LlmConfig};
use super::kv_cache::KvCache;
use super::rope::{inv_freq, Rope};
use super::{LlmError, Result};
use crate::runtime::{Linear, ModelDir};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

fn linear_b(i: usize, o: usize, bias: bool, vb: VarBuilder) -> candle_core::Result<Linear> {
    candle_nn::linear_b(i, o, bias, vb).map(Linear::from)
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    attn: Attention,
    mlp: Mlp,
    in_norm: Tensor,
    post_norm: Tensor,
}

/// A loaded decoder-only LLM.
pub struct Decoder {
    cfg: LlmConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("cfg", &self.cfg)
            .field("dtype", &self.dtype)
            .finish()
    }
}

/// New tokens of one sequence in a ragged batch.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
}

impl Decoder {
    /// Loads `config.json` and the safetensors of a model directory.
    pub fn load(dir: &ModelDir, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = LlmConfig::from_file(&dir.require("config.json")?)?;
        let vb = dir.var_builder(dtype, device)?;
        Self::from_var_builder(cfg, vb)
    }

    /// Builds the decoder from a config and weights in transformers naming.
    pub fn from_var_builder(cfg: LlmConfig, vb: VarBuilder) -> Result<Self> {
        let wrap = |e: candle_core::Error| LlmError::Weights(e.to_string());
        let h = cfg.hidden_size;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let m = vb.pp("model");
        let embed = candle_nn::embedding(cfg.vocab_size, h, m.pp("embed_tokens")).map_err(wrap)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let l = m.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let attn = Attention {
                q: linear_b(h, nh * hd, cfg.qkv_bias, a.pp("q_proj")).map_err(wrap)?,
                k: linear_b(h, nkv * hd, cfg.qkv_bias, a.pp("k_proj")).map_err(wrap)?,
                v: linear_b(h, nkv * hd, cfg.qkv_bias, a.pp("v_proj")).map_err(wrap)?,
                o: linear_b(nh * hd, h, cfg.o_bias, a.pp("o_proj")).map_err(wrap)?,
            };
            let p = l.pp("mlp");
            let i_sz = cfg.intermediate_size;
            let mlp = Mlp {
                gate: linear_b(h, i_sz, cfg.mlp_bias, p.pp("gate_proj")).map_err(wrap)?,
                up: linear_b(h, i_sz, cfg.mlp_bias, p.pp("up_proj")).map_err(wrap)?,
                down: linear_b(i_sz, h, cfg.mlp_bias, p.pp("down_proj")).map_err(wrap)?,
            };
            let in_norm = l.get(h, "input_layernorm.weight").map_err(wrap)?;
            let post_norm = l.get(h, "post_attention_layernorm.weight").map_err(wrap)?;
            layers.push(Layer {
                attn,
                mlp,
                in_norm,
                post_norm,
            });
        }
        let norm = m.get(h, "norm.weight").map_err(wrap)?;
        let lm_head = if cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Linear::new(embed.embeddings().clone(), None)
        } else {
            linear_b(h, cfg.vocab_size, false, vb.pp("lm_head")).map_err(wrap)?
        };
        let _ = Arch::Qwen2; // both families share this layout; biases come from the config
        let freqs = inv_freq(hd, cfg.rope_theta, &cfg.rope_scaling);
        let rope = Rope::new(&freqs, cfg.max_position_embeddings, vb.dtype(), vb.device())?;
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            rope,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A cache for one sequence of up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let c = &self.cfg;
        let cap = capacity.min(c.max_position_embeddings);
        Ok(KvCache::new(
            c.num_layers,
            c.num_kv_heads,
            c.head_dim,
            cap,
            self.dtype,
            &self.device,
        )?)
    }

    /// Runs new tokens of several sequences; `caches[i]` belongs to
    /// `seqs[i]` and grows by its token count. Returns f32 logits `[n_seqs,
    /// vocab]` for the last new token of each sequence, or `[total_tokens,
    /// vocab]` for every new token when `all_logits`.
    pub fn forward(
        &self,
        seqs: &[SeqInput],
        caches: &mut [&mut KvCache],
        all_logits: bool,
    ) -> Result<Tensor> {
        if seqs.len() != caches.len() || seqs.is_empty() {
            return Err(LlmError::Input(format!(
                "{} sequences but {} caches",
                seqs.len(),
                caches.len()
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        for (s, c) in seqs.iter().zip(caches.iter()) {
            if s.tokens.is_empty() {
                return Err(LlmError::Input("a sequence with no new tokens".into()));
            }
            if c.len() + s.tokens.len() > c.capacity() {
                return Err(LlmError::ContextFull {
                    needed: c.len() + s.tokens.len(),
                    capacity: c.capacity(),
                });
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t >= vocab) {
                return Err(LlmError::IdOutOfVocab {
                    id: bad,
                    vocab: vocab as usize,
                });
            }
            ids.extend_from_slice(s.tokens);
            pos.extend((c.len() as u32)..(c.len() + s.tokens.len()) as u32);
        }
        let t_all = ids.len();
        let ids = Tensor::from_vec(ids, t_all, &self.device)?;
        let pos = Tensor::from_vec(pos, t_all, &self.device)?;
        let (cos, sin) = self.rope.tables(&pos)?;
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let eps = self.cfg.rms_norm_eps as f32;

        let mut x = self.embed.forward(&ids)?; // [T, hidden]
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.in_norm, eps)?;
            let heads = |lin: &Linear, n: usize| -> candle_core::Result<Tensor> {
                lin.forward(&h)?
                    .reshape((t_all, n, hd))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let q = Rope::apply(&heads(&layer.attn.q, nh)?, &cos, &sin)?; // [nh, T, hd]
            let k = Rope::apply(&heads(&layer.attn.k, nkv)?, &cos, &sin)?;
            let v = heads(&layer.attn.v, nkv)?;
            let mut outs = Vec::with_capacity(seqs.len());
            let mut off = 0;
            for (s, cache) in seqs.iter().zip(caches.iter_mut()) {
                let n = s.tokens.len();
                let (kk, vv) = cache.append(li, &k.narrow(1, off, n)?, &v.narrow(1, off, n)?)?;
                outs.push(cached_attention(&q.narrow(1, off, n)?, &kk, &vv, true)?);
                off += n;
            }
            let att = if outs.len() == 1 {
                outs.pop().unwrap()
            } else {
                Tensor::cat(&outs, 0)?
            };
            x = (x + layer.attn.o.forward(&att)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.post_norm, eps)?;
            let g = candle_nn::ops::silu(&layer.mlp.gate.forward(&h)?)?;
            let u = layer.mlp.up.forward(&h)?;
            x = (x + layer.mlp.down.forward(&(g * u)?)?)?;
        }
        for (s, c) in seqs.iter().zip(caches.iter_mut()) {
            c.advance(s.tokens.len());
        }
        let x = if all_logits {
            x
        } else {
            let mut last = Vec::with_capacity(seqs.len());
            let mut off = 0u32;
            for s in seqs {
                off += s.tokens.len() as u32;
                last.push(off - 1);
            }
            let n = last.len();
            x.index_select(&Tensor::from_vec(last, n, &self.device)?, 0)?
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        let logits = self.lm_head.forward(&x)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Argmax of each row of `[n, vocab]` logits.
    pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }
}
