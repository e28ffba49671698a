//! Whisper from a CTranslate2 directory (`model.bin`, `config.json`,
//! `tokenizer.json`), as shipped by faster-whisper-style packages: the
//! weights are mapped onto Hugging Face names by the runtime's reader, so
//! the same network code runs either layout.

use super::{
    GenerationConfig, PreprocessorConfig, Result, Whisper, WhisperConfig, WhisperError,
    WhisperModel, WhisperTokenizer,
};
use crate::runtime::{ctranslate2, ModelDir};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

impl Whisper {
    /// Loads a CTranslate2 Whisper directory (fp32/fp16/bf16 or int8
    /// weights, all converted to `dtype` on `device`).
    pub fn load_ct2(dir: &ModelDir, device: &Device, dtype: DType) -> Result<Self> {
        let bin = dir.require("model.bin")?;
        let ct2 = ctranslate2::read_whisper_dir(dir.root())?;
        let bad = |msg: String| WhisperError::Config {
            path: bin.clone(),
            msg,
        };
        let config: WhisperConfig =
            serde_json::from_value(ct2.config).map_err(|e| bad(e.to_string()))?;
        let generation: GenerationConfig =
            serde_json::from_value(ct2.generation).map_err(|e| bad(e.to_string()))?;
        let preprocessor = PreprocessorConfig::load(dir, config.num_mel_bins)?;
        let tok_path = dir.require("tokenizer.json")?;
        let tokenizer = WhisperTokenizer::load(&tok_path, &generation, config.vocab_size)?;
        let vb = VarBuilder::from_tensors(ct2.tensors, dtype, device);
        let model = WhisperModel::load(&config, vb).map_err(|e| WhisperError::Weights {
            dir: dir.root().to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            model,
            tokenizer,
            generation,
            preprocessor,
            name: dir_name(dir),
        })
    }
}

/// The directory's own name, for the `model` field of outputs.
pub(super) fn dir_name(dir: &ModelDir) -> String {
    dir.root()
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.root().display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whisper::decoding::{DecodeOptions, Decoder};
    use crate::whisper::testutil;

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel)
    }

    /// The CTranslate2 copy (ctranslate2's own converter, float32) and the
    /// Hugging Face original: same encoder output (≤1e-5), same greedy ids,
    /// same special tokens.
    #[test]
    fn ct2_and_hf_layouts_decode_identically() {
        for (hf, ct2) in [
            ("tiny-multi", "tiny-multi-float32"),
            ("tiny-en", "tiny-en-float32"),
        ] {
            let a = testutil::load(hf);
            let dir = ModelDir::open(fixture(&format!("whisper-ct2/{ct2}"))).unwrap();
            let b = Whisper::load(&dir, &Device::Cpu, DType::F32).unwrap();
            let mel = testutil::features(80, "voiced");
            let ea = a.model.encode(&mel).unwrap();
            let eb = b.model.encode(&mel).unwrap();
            let err = crate::runtime::testing::max_abs_diff(&ea, &eb);
            assert!(err <= 1e-5, "{ct2}: encoder max abs error {err}");
            assert_eq!(a.tokenizer.multilingual, b.tokenizer.multilingual, "{ct2}");
            assert_eq!(a.tokenizer.languages, b.tokenizer.languages, "{ct2}");
            assert_eq!(
                (a.tokenizer.sot, a.tokenizer.eot),
                (b.tokenizer.sot, b.tokenizer.eot),
                "{ct2}"
            );
            let mut o = DecodeOptions::plain();
            o.sample_len = 20;
            let prompt = [a.tokenizer.language_id("en").unwrap_or(a.tokenizer.sot + 1)];
            let ra = Decoder::new(&a).decode(&ea, &prompt, &o, 0.0).unwrap();
            let rb = Decoder::new(&b).decode(&eb, &prompt, &o, 0.0).unwrap();
            assert!(!ra[0].tokens.is_empty());
            assert_eq!(ra[0].tokens, rb[0].tokens, "{ct2}: greedy ids");
        }
    }
}
