//! Reader for CTranslate2 `model.bin` checkpoints (binary format version
//! 3–6), and the mapping of CTranslate2 Whisper variables onto the Hugging
//! Face names our Whisper code loads, so `--model DIR` accepts either layout.
//!
//! The format (ctranslate2/specs/model_spec.py `_serialize`): `u32 version`,
//! `string spec_name`, `u32 revision`, `u32 n`, then n variables
//! (`string name`, `u8 rank`, `u32 dims[rank]`, `u8 dtype`, `u32 nbytes`,
//! bytes), then `u32 n_aliases` × (`string alias`, `string target`).
//! Strings are `u16 len` (including a trailing NUL) + UTF-8 bytes.

use super::{Result, RuntimeError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// CTranslate2's `DataType` enum order (include/ctranslate2/types.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One stored variable: shape, dtype and raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2Dtype,
    pub data: Vec<u8>,
}

impl Ct2Variable {
    /// The variable as an f32 tensor on the CPU (ints are converted too).
    pub fn to_f32_tensor(&self) -> candle_core::Result<Tensor> {
        let dev = Device::Cpu;
        let shape = self.shape.clone();
        match self.dtype {
            Ct2Dtype::F32 => Tensor::from_raw_buffer(&self.data, DType::F32, &shape, &dev),
            Ct2Dtype::F16 => {
                Tensor::from_raw_buffer(&self.data, DType::F16, &shape, &dev)?.to_dtype(DType::F32)
            }
            Ct2Dtype::BF16 => {
                Tensor::from_raw_buffer(&self.data, DType::BF16, &shape, &dev)?.to_dtype(DType::F32)
            }
            Ct2Dtype::I8 => {
                let v: Vec<f32> = self.data.iter().map(|&b| b as i8 as f32).collect();
                Tensor::from_vec(v, shape, &dev)
            }
            Ct2Dtype::I16 => {
                let v: Vec<f32> = self
                    .data
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                    .collect();
                Tensor::from_vec(v, shape, &dev)
            }
            Ct2Dtype::I32 => {
                let v: Vec<f32> = self
                    .data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                    .collect();
                Tensor::from_vec(v, shape, &dev)
            }
        }
    }

    /// A scalar integer variable (e.g. `encoder/num_heads`).
    pub fn as_int(&self) -> Option<i64> {
        if self.shape.iter().product::<usize>() != 1 {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            Ct2Dtype::I8 => d[0] as i8 as i64,
            Ct2Dtype::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            Ct2Dtype::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return None,
        })
    }
}

/// A parsed `model.bin`: spec name, revision, variables (aliases resolved).
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub path: PathBuf,
    pub spec: String,
    pub revision: u32,
    pub variables: HashMap<String, Ct2Variable>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).ok()
    }
}

impl Ct2Model {
    /// Reads and parses a `model.bin` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::BadFile {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the bytes of a `model.bin`; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |msg: &str| RuntimeError::BadFile {
            path: path.to_path_buf(),
            msg: format!("not a readable CTranslate2 model: {msg}"),
        };
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u32().ok_or_else(|| bad("file too short"))?;
        if !(3..=6).contains(&version) {
            return Err(bad(&format!(
                "unsupported binary version {version} (expected 3 to 6)"
            )));
        }
        let spec = r.string().ok_or_else(|| bad("truncated header"))?;
        let revision = r.u32().ok_or_else(|| bad("truncated header"))?;
        let n = r.u32().ok_or_else(|| bad("truncated header"))? as usize;
        let mut variables = HashMap::with_capacity(n.min(100_000));
        for i in 0..n {
            let trunc = || bad(&format!("truncated at variable {i} of {n}"));
            let name = r.string().ok_or_else(trunc)?;
            let rank = r.u8().ok_or_else(trunc)? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(r.u32().ok_or_else(trunc)? as usize);
            }
            let dtype_id = r.u8().ok_or_else(trunc)?;
            let dtype = Ct2Dtype::from_id(dtype_id)
                .ok_or_else(|| bad(&format!("variable {name}: unknown dtype id {dtype_id}")))?;
            let nbytes = r.u32().ok_or_else(trunc)? as usize;
            let numel: usize = shape.iter().product();
            if numel.checked_mul(dtype.size()) != Some(nbytes) {
                return Err(bad(&format!(
                    "variable {name}: {nbytes} bytes do not fit shape {shape:?}"
                )));
            }
            let data = r.take(nbytes).ok_or_else(trunc)?.to_vec();
            variables.insert(name, Ct2Variable { shape, dtype, data });
        }
        if version >= 2 {
            if let Some(n_alias) = r.u32() {
                for _ in 0..n_alias {
                    let (Some(alias), Some(target)) = (r.string(), r.string()) else {
                        return Err(bad("truncated alias table"));
                    };
                    if let Some(v) = variables.get(&target).cloned() {
                        variables.insert(alias, v);
                    }
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            revision,
            variables,
        })
    }

    fn get(&self, name: &str) -> Result<&Ct2Variable> {
        self.variables
            .get(name)
            .ok_or_else(|| RuntimeError::BadFile {
                path: self.path.clone(),
                msg: format!("missing variable `{name}`"),
            })
    }

    /// A weight as f32, dequantizing int8/int16 weights with their
    /// `<name>_scale` companion (CTranslate2 stores `w_q = w * scale` per row).
    fn weight(&self, name: &str) -> Result<Tensor> {
        let v = self.get(name)?;
        let t = v.to_f32_tensor()?;
        if matches!(v.dtype, Ct2Dtype::I8 | Ct2Dtype::I16) {
            let scale = self.get(&format!("{name}_scale"))?.to_f32_tensor()?;
            let scale = if scale.rank() == 0 {
                scale.reshape(1)?
            } else {
                scale
            };
            let rows = t.dim(0)?;
            let scale = if scale.dim(0)? == 1 {
                scale.broadcast_as(rows)?.contiguous()?
            } else {
                scale
            };
            return Ok(t.broadcast_div(&scale.reshape((rows, 1))?)?);
        }
        Ok(t)
    }

    fn int(&self, name: &str) -> Result<i64> {
        self.get(name)?
            .as_int()
            .ok_or_else(|| RuntimeError::BadFile {
                path: self.path.clone(),
                msg: format!("variable `{name}` is not an integer scalar"),
            })
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .keys()
                    .any(|k| k.starts_with(&format!("{prefix}/layer_{i}/")))
            })
            .count()
    }

    /// Copies `<src>/weight` and `<src>/bias` (a linear or conv layer) to
    /// `<dst>.weight` and `<dst>.bias`.
    fn copy_linear(&self, out: &mut HashMap<String, Tensor>, src: &str, dst: &str) -> Result<()> {
        out.insert(
            format!("{dst}.weight"),
            self.weight(&format!("{src}/weight"))?,
        );
        out.insert(format!("{dst}.bias"), self.weight(&format!("{src}/bias"))?);
        Ok(())
    }

    /// Copies a layer norm's `<src>/gamma` and `<src>/beta` to
    /// `<dst>.weight` and `<dst>.bias`.
    fn copy_norm(&self, out: &mut HashMap<String, Tensor>, src: &str, dst: &str) -> Result<()> {
        out.insert(
            format!("{dst}.weight"),
            self.weight(&format!("{src}/gamma"))?,
        );
        out.insert(format!("{dst}.bias"), self.weight(&format!("{src}/beta"))?);
        Ok(())
    }

    /// Converts a `WhisperSpec` model into Hugging Face-named f32 tensors and
    /// a `WhisperConfig`-style `config.json` value derived from the shapes.
    pub fn whisper_to_hf(&self) -> Result<(HashMap<String, Tensor>, serde_json::Value)> {
        if self.spec != "WhisperSpec" {
            return Err(RuntimeError::Unsupported {
                path: self.path.clone(),
                msg: format!("CTranslate2 spec `{}` is not a Whisper model", self.spec),
            });
        }
        let mut out = HashMap::new();
        let enc_layers = self.count_layers("encoder");
        let dec_layers = self.count_layers("decoder");
        let conv1 = self.get("encoder/conv1/weight")?;
        let (d_model, n_mels) = (conv1.shape[0], conv1.shape[1]);
        let emb = self.get("decoder/embeddings/weight")?;
        let vocab = emb.shape[0];
        let ffn = self.get("encoder/layer_0/ffn/linear_0/weight")?.shape[0];
        let dec_ffn = self.get("decoder/layer_0/ffn/linear_0/weight")?.shape[0];
        let src_pos = self.get("encoder/position_encodings/encodings")?.shape[0];
        let tgt_pos = self.get("decoder/position_encodings/encodings")?.shape[0];

        // Splits a fused [k*d, d] weight (and [k*d] bias) into k parts.
        let split = |name: &str, k: usize| -> Result<Vec<Tensor>> {
            let t = self.weight(name)?;
            let n = t.dim(0)? / k;
            (0..k)
                .map(|i| Ok(t.narrow(0, i * n, n)?.contiguous()?))
                .collect()
        };
        for (side, n_layers) in [("encoder", enc_layers), ("decoder", dec_layers)] {
            let hf = format!("model.{side}");
            for i in 0..n_layers {
                let c = format!("{side}/layer_{i}");
                let h = format!("{hf}.layers.{i}");
                // Self-attention: fused QKV (linear_0), output (linear_1).
                let sa = format!("{c}/self_attention");
                let w = split(&format!("{sa}/linear_0/weight"), 3)?;
                let b = split(&format!("{sa}/linear_0/bias"), 3)?;
                for (j, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    out.insert(format!("{h}.self_attn.{p}.weight"), w[j].clone());
                    // Whisper's key projection has no bias (CTranslate2 stores zeros).
                    if *p != "k_proj" {
                        out.insert(format!("{h}.self_attn.{p}.bias"), b[j].clone());
                    }
                }
                self.copy_linear(
                    &mut out,
                    &format!("{sa}/linear_1"),
                    &format!("{h}.self_attn.out_proj"),
                )?;
                self.copy_norm(
                    &mut out,
                    &format!("{sa}/layer_norm"),
                    &format!("{h}.self_attn_layer_norm"),
                )?;
                if side == "decoder" {
                    // Cross-attention: Q (linear_0), fused KV (linear_1), output (linear_2).
                    let a = format!("{c}/attention");
                    let x = format!("{h}.encoder_attn");
                    self.copy_linear(&mut out, &format!("{a}/linear_0"), &format!("{x}.q_proj"))?;
                    let w = split(&format!("{a}/linear_1/weight"), 2)?;
                    let b = split(&format!("{a}/linear_1/bias"), 2)?;
                    out.insert(format!("{x}.k_proj.weight"), w[0].clone());
                    out.insert(format!("{x}.v_proj.weight"), w[1].clone());
                    out.insert(format!("{x}.v_proj.bias"), b[1].clone());
                    self.copy_linear(&mut out, &format!("{a}/linear_2"), &format!("{x}.out_proj"))?;
                    self.copy_norm(
                        &mut out,
                        &format!("{a}/layer_norm"),
                        &format!("{x}_layer_norm"),
                    )?;
                }
                self.copy_linear(&mut out, &format!("{c}/ffn/linear_0"), &format!("{h}.fc1"))?;
                self.copy_linear(&mut out, &format!("{c}/ffn/linear_1"), &format!("{h}.fc2"))?;
                self.copy_norm(
                    &mut out,
                    &format!("{c}/ffn/layer_norm"),
                    &format!("{h}.final_layer_norm"),
                )?;
            }
            self.copy_norm(
                &mut out,
                &format!("{side}/layer_norm"),
                &format!("{hf}.layer_norm"),
            )?;
            out.insert(
                format!("{hf}.embed_positions.weight"),
                self.weight(&format!("{side}/position_encodings/encodings"))?,
            );
        }
        for conv in ["conv1", "conv2"] {
            self.copy_linear(
                &mut out,
                &format!("encoder/{conv}"),
                &format!("model.encoder.{conv}"),
            )?;
        }
        let emb = self.weight("decoder/embeddings/weight")?;
        out.insert("model.decoder.embed_tokens.weight".into(), emb.clone());
        out.insert("proj_out.weight".into(), emb);

        let config = serde_json::json!({
            "model_type": "whisper",
            "architectures": ["WhisperForConditionalGeneration"],
            "d_model": d_model,
            "num_mel_bins": n_mels,
            "vocab_size": vocab,
            "encoder_layers": enc_layers,
            "decoder_layers": dec_layers,
            "encoder_attention_heads": self.int("encoder/num_heads")?,
            "decoder_attention_heads": self.int("decoder/num_heads")?,
            "encoder_ffn_dim": ffn,
            "decoder_ffn_dim": dec_ffn,
            "max_source_positions": src_pos,
            "max_target_positions": tgt_pos,
            "activation_function": "gelu",
            "scale_embedding": false,
            "tie_word_embeddings": true,
        });
        Ok((out, config))
    }
}

/// A CTranslate2 Whisper directory (`model.bin`, `config.json`,
/// `tokenizer.json`) converted to what the Hugging Face loader expects.
#[derive(Debug, Clone)]
pub struct Ct2Whisper {
    /// f32 tensors under Hugging Face names.
    pub tensors: HashMap<String, Tensor>,
    /// A `WhisperConfig`-style `config.json` value.
    pub config: serde_json::Value,
    /// A `generation_config.json`-style value: `suppress_tokens`,
    /// `begin_suppress_tokens`, `lang_to_id`, `is_multilingual`.
    pub generation: serde_json::Value,
}

/// True when `dir` looks like a CTranslate2 model (has `model.bin`, no
/// safetensors).
pub fn is_ct2_dir(dir: &Path) -> bool {
    dir.join("model.bin").is_file()
        && !dir.join("model.safetensors").is_file()
        && !dir.join("model.safetensors.index.json").is_file()
}

/// Reads a CTranslate2 Whisper directory.
pub fn read_whisper_dir(dir: &Path) -> Result<Ct2Whisper> {
    let model = Ct2Model::read(&dir.join("model.bin"))?;
    let (tensors, config) = model.whisper_to_hf()?;
    // CTranslate2's config.json: suppress_ids, suppress_ids_begin, lang_ids.
    let ct2_cfg: serde_json::Value = match dir.join("config.json") {
        p if p.is_file() => super::read_json(&p)?,
        _ => serde_json::json!({}),
    };
    let ids = |k: &str| -> Vec<u64> {
        ct2_cfg
            .get(k)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default()
    };
    // Language ids → their token strings, from tokenizer.json's added tokens.
    let mut lang_to_id = serde_json::Map::new();
    let lang_ids = ids("lang_ids");
    if !lang_ids.is_empty() {
        let tok_path = dir.join("tokenizer.json");
        if tok_path.is_file() {
            let tok: serde_json::Value = super::read_json(&tok_path)?;
            if let Some(added) = tok.get("added_tokens").and_then(|a| a.as_array()) {
                for t in added {
                    let (Some(id), Some(content)) = (
                        t.get("id").and_then(|x| x.as_u64()),
                        t.get("content").and_then(|x| x.as_str()),
                    ) else {
                        continue;
                    };
                    if lang_ids.contains(&id) {
                        lang_to_id.insert(content.to_string(), id.into());
                    }
                }
            }
        }
    }
    let vocab = config["vocab_size"].as_u64().unwrap_or(0);
    let mut generation = serde_json::json!({
        "suppress_tokens": ids("suppress_ids"),
        "begin_suppress_tokens": ids("suppress_ids_begin"),
    });
    if vocab >= 51864 {
        // Released vocabularies: English-only checkpoints have 51864 tokens
        // (as transformers decides); the tokenizer finds the language tokens.
        generation["is_multilingual"] = (vocab >= 51865).into();
    } else {
        // Other vocabularies (our fixtures): trust the converter's lang_ids.
        // Empty: leave it to the tokenizer, as transformers does.
        if !lang_to_id.is_empty() {
            generation["lang_to_id"] = lang_to_id.into();
        }
    }
    Ok(Ct2Whisper {
        tensors,
        config,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn var(out: &mut Vec<u8>, name: &str, shape: &[u32], dtype: u8, data: &[u8]) {
        string(out, name);
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(dtype);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        let f16: Vec<u8> = [1.5f32, -2.0, 0.25, 4.0]
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        var(&mut b, "w", &[2, 2], 4, &f16);
        var(&mut b, "heads", &[], 2, &6i16.to_le_bytes());
        var(&mut b, "q", &[2], 1, &[10u8, 246u8]); // int8 10, -10
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "alias_w");
        string(&mut b, "w");
        b
    }

    #[test]
    fn parses_variables_aliases_and_dtypes() {
        let m = Ct2Model::parse(&sample(), Path::new("model.bin")).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        let w = m.variables["alias_w"].to_f32_tensor().unwrap();
        assert_eq!(
            w.to_vec2::<f32>().unwrap(),
            vec![vec![1.5, -2.0], vec![0.25, 4.0]]
        );
        assert_eq!(m.variables["heads"].as_int(), Some(6));
        assert_eq!(
            m.variables["q"]
                .to_f32_tensor()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![10.0, -10.0]
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let full = sample();
        for cut in [0, 3, 10, 30, full.len() - 5] {
            let err = Ct2Model::parse(&full[..cut], Path::new("x/model.bin"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("x/model.bin"), "{err}");
        }
        let err =
            Ct2Model::parse(b"PK\x03\x04 zip file, not a model", Path::new("m.bin")).unwrap_err();
        assert!(err.to_string().contains("binary version"), "{err}");
        let m = Ct2Model::parse(&full, Path::new("m.bin")).unwrap();
        let err = m.whisper_to_hf().unwrap_err().to_string();
        assert!(err.contains("missing variable"), "{err}");
    }

    fn fixture(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel)
    }

    /// The converter's own output (tools/fixtures/gen_ct2.py) maps back onto
    /// exactly the Hugging Face tensors it was made from (f32: bit-exact;
    /// f16: within f16 rounding), and the derived config matches.
    #[test]
    fn converter_output_maps_back_to_hf_weights() {
        for (name, ct2, tol) in [
            ("tiny-multi", "tiny-multi-float32", 0.0f32),
            ("tiny-en", "tiny-en-float32", 0.0),
            ("tiny-en", "tiny-en-float16", 2e-3),
        ] {
            let hf_dir = fixture(&format!("whisper/{name}"));
            let hf = candle_core::safetensors::load(hf_dir.join("model.safetensors"), &Device::Cpu)
                .unwrap();
            let m = Ct2Model::read(&fixture(&format!("whisper-ct2/{ct2}/model.bin"))).unwrap();
            let (mapped, config) = m.whisper_to_hf().unwrap();
            for (k, want) in &hf {
                let got = mapped
                    .get(k)
                    .unwrap_or_else(|| panic!("{ct2}: `{k}` not mapped"));
                assert_eq!(got.dims(), want.dims(), "{ct2}: {k}");
                let err =
                    crate::runtime::testing::max_abs_diff(got, &want.to_dtype(DType::F32).unwrap());
                assert!(
                    err <= tol
                        * (1.0
                            + want
                                .abs()
                                .unwrap()
                                .flatten_all()
                                .unwrap()
                                .max(0)
                                .unwrap()
                                .to_scalar::<f32>()
                                .unwrap()),
                    "{ct2}: {k} max abs err {err}"
                );
            }
            let hf_config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(hf_dir.join("config.json")).unwrap())
                    .unwrap();
            for key in [
                "d_model",
                "num_mel_bins",
                "vocab_size",
                "encoder_layers",
                "decoder_layers",
                "encoder_attention_heads",
                "decoder_attention_heads",
                "encoder_ffn_dim",
                "decoder_ffn_dim",
                "max_source_positions",
                "max_target_positions",
            ] {
                assert_eq!(config[key], hf_config[key], "{ct2}: config key {key}");
            }
            let dir = fixture(&format!("whisper-ct2/{ct2}"));
            assert!(is_ct2_dir(&dir) && !is_ct2_dir(&hf_dir));
            let w = read_whisper_dir(&dir).unwrap();
            let hf_gen: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(hf_dir.join("generation_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                w.generation["suppress_tokens"], hf_gen["suppress_tokens"],
                "{ct2}"
            );
            assert_eq!(
                w.generation["begin_suppress_tokens"], hf_gen["begin_suppress_tokens"],
                "{ct2}"
            );
            let empty = serde_json::Map::new();
            let langs = w
                .generation
                .get("lang_to_id")
                .and_then(|v| v.as_object())
                .unwrap_or(&empty);
            assert!(w.generation.get("is_multilingual").is_none());
            let hf_langs = hf_gen.get("lang_to_id").and_then(|v| v.as_object());
            assert_eq!(
                langs.len(),
                hf_langs.map_or(0, |m| m.len()),
                "{ct2}: languages"
            );
            for (k, v) in langs {
                assert_eq!(Some(v), hf_langs.and_then(|m| m.get(k)), "{ct2}: {k}");
            }
        }
    }
}
