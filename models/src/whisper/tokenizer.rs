//! Whisper's text tokenizer: the model's `tokenizer.json` (through the
//! `tokenizers` crate) plus the ids of Whisper's special tokens, taken from
//! the vocabulary and `generation_config.json`.

use super::config::GenerationConfig;
use super::{Result, WhisperError};
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// Seconds per timestamp token.
pub const TIME_PRECISION: f64 = 0.02;

/// A `tokenizer.json` with Whisper's special token ids resolved.
#[derive(Clone)]
pub struct WhisperTokenizer {
    inner: Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub sot_prev: Option<u32>,
    pub sot_lm: Option<u32>,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every id at or above it is a timestamp.
    pub timestamp_begin: u32,
    /// Language code (`en`) → token id, in vocabulary order.
    pub languages: BTreeMap<String, u32>,
    pub multilingual: bool,
}

impl std::fmt::Debug for WhisperTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTokenizer")
            .field("eot", &self.eot)
            .field("sot", &self.sot)
            .field("timestamp_begin", &self.timestamp_begin)
            .field("languages", &self.languages.len())
            .field("multilingual", &self.multilingual)
            .finish()
    }
}

impl WhisperTokenizer {
    /// Loads `path` and resolves the special tokens; `gen` overrides ids
    /// where the generation config names them.
    pub fn load(path: &Path, gen: &GenerationConfig, vocab_size: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| WhisperError::Tokenizer {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::new(inner, gen, vocab_size).map_err(|msg| WhisperError::Tokenizer {
            path: path.to_path_buf(),
            msg,
        })
    }

    fn new(
        inner: Tokenizer,
        gen: &GenerationConfig,
        vocab_size: usize,
    ) -> std::result::Result<Self, String> {
        let id = |t: &str| inner.token_to_id(t);
        let need = |t: &str| id(t).ok_or_else(|| format!("no `{t}` token in the vocabulary"));
        let eot = gen.eos_token_id.map_or_else(|| need("<|endoftext|>"), Ok)?;
        let sot = gen
            .decoder_start_token_id
            .map_or_else(|| need("<|startoftranscript|>"), Ok)?;
        let no_timestamps = gen
            .no_timestamps_token_id
            .map_or_else(|| need("<|notimestamps|>"), Ok)?;
        let timestamp_begin = id("<|0.00|>").unwrap_or(no_timestamps + 1);
        let mut languages = BTreeMap::new();
        if let Some(map) = &gen.lang_to_id {
            for (tok, &i) in map {
                languages.insert(
                    tok.trim_start_matches("<|")
                        .trim_end_matches("|>")
                        .to_string(),
                    i,
                );
            }
        } else {
            // Language tokens sit between <|startoftranscript|> and <|translate|>.
            let end = id("<|translate|>").unwrap_or(sot + 1);
            for i in sot + 1..end {
                if let Some(t) = inner.id_to_token(i) {
                    if let Some(code) = t.strip_prefix("<|").and_then(|s| s.strip_suffix("|>")) {
                        languages.insert(code.to_string(), i);
                    }
                }
            }
        }
        let multilingual = gen.is_multilingual.unwrap_or(
            gen.lang_to_id.as_ref().is_some_and(|m| !m.is_empty()) || vocab_size >= 51865,
        );
        let task = |name: &str, tok: &str| {
            gen.task_to_id
                .as_ref()
                .and_then(|m| m.get(name).copied())
                .or_else(|| id(tok))
        };
        let transcribe = task("transcribe", "<|transcribe|>")
            .ok_or_else(|| "no `<|transcribe|>` token in the vocabulary".to_string())?;
        let translate = task("translate", "<|translate|>")
            .ok_or_else(|| "no `<|translate|>` token in the vocabulary".to_string())?;
        if (timestamp_begin as usize) > vocab_size || (eot as usize) >= vocab_size {
            return Err(format!(
                "special token ids (eot {eot}, timestamps from {timestamp_begin}) do not fit the \
                 model's vocabulary of {vocab_size}: tokenizer and model do not match"
            ));
        }
        Ok(Self {
            eot,
            sot,
            transcribe,
            translate,
            sot_prev: id("<|startofprev|>"),
            sot_lm: id("<|startoflm|>"),
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            no_timestamps,
            timestamp_begin,
            languages,
            multilingual,
            inner,
        })
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes plain text (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| WhisperError::Decode(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes text tokens; special and timestamp tokens (ids ≥ eot) are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text: Vec<u32> = ids.iter().copied().filter(|&i| i < self.eot).collect();
        self.inner
            .decode(&text, false)
            .map_err(|e| WhisperError::Decode(format!("tokenizer: {e}")))
    }

    /// Decodes every token, special and timestamp tokens as their text
    /// (openai-whisper's `decode_with_timestamps`).
    pub fn decode_with_specials(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| WhisperError::Decode(format!("tokenizer: {e}")))
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// Seconds of a timestamp token.
    pub fn timestamp_seconds(&self, id: u32) -> f64 {
        (id - self.timestamp_begin) as f64 * TIME_PRECISION
    }

    /// Token id of a language code or name (`en`, `english`).
    pub fn language_id(&self, lang: &str) -> Option<u32> {
        let l = lang.trim().to_ascii_lowercase();
        let code = super::languages::code_of(&l).unwrap_or(&l);
        self.languages.get(code).copied()
    }

    /// Language code of a language token id.
    pub fn language_code(&self, id: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, &i)| i == id)
            .map(|(c, _)| c.as_str())
    }

    /// The decoder prompt: `<|startoftranscript|>[<|lang|><|task|>][<|notimestamps|>]`
    /// (language and task only for multilingual models).
    pub fn prompt(&self, language: Option<u32>, task: Task, timestamps: bool) -> Vec<u32> {
        let mut p = vec![self.sot];
        if self.multilingual {
            p.push(language.unwrap_or_else(|| self.language_id("en").unwrap_or(self.sot + 1)));
            p.push(match task {
                Task::Transcribe => self.transcribe,
                Task::Translate => self.translate,
            });
        }
        if !timestamps {
            p.push(self.no_timestamps);
        }
        p
    }

    /// The " " token and the non-speech symbols openai-whisper suppresses
    /// with `suppress_tokens="-1"` (when the generation config has no list).
    pub fn non_speech_tokens(&self) -> Vec<u32> {
        let symbols = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』";
        let multi = "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪";
        let misc = "♩♪♫♬♭♮♯";
        let mut out = Vec::new();
        let mut add = |s: &str, first_ok: bool| {
            if let Ok(e) = self.inner.encode(s, false) {
                if e.get_ids().len() == 1 || (first_ok && !e.get_ids().is_empty()) {
                    out.push(e.get_ids()[0]);
                }
            }
        };
        add(" -", true);
        add(" '", true);
        let syms = symbols
            .chars()
            .map(String::from)
            .chain(multi.split(' ').map(String::from));
        for s in syms {
            add(&s, false);
            add(&format!(" {s}"), false);
        }
        for c in misc.chars() {
            add(&c.to_string(), true);
            add(&format!(" {c}"), true);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What the decoder is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

impl std::str::FromStr for Task {
    type Err = WhisperError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "transcribe" => Ok(Self::Transcribe),
            "translate" => Ok(Self::Translate),
            _ => Err(WhisperError::Options(format!(
                "unknown task `{s}` (transcribe or translate)"
            ))),
        }
    }
}
