//! `tokenizer.json` loading, encoding with offsets, decoding.

use super::digits::{digit_segments, DigitSplit};
use super::{Result, TextError};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer};

/// One encoded text: ids, token strings and character offsets into the
/// input (like Python `tokenizers`; special tokens added by the
/// post-processor get `(0, 0)`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub offsets: Vec<(usize, usize)>,
}

/// A text tokenizer from `tokenizer.json` with an optional digit-split pre-step.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    split: DigitSplit,
    /// Contents of the added tokens (special or not), never split inside.
    added: Vec<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("split", &self.split)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`. Truncation and padding configured in the
    /// file are switched off: voxtok never cuts a prompt silently.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(TextError::MissingTokenizer(path.to_path_buf()));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| TextError::Load {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        inner.with_truncation(None).map_err(|e| TextError::Load {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        inner.with_padding(None);
        let mut added: Vec<String> = inner
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.clone())
            .collect();
        added.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            split: DigitSplit::None,
            added,
            vocab_size,
        })
    }

    /// Loads `tokenizer.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let p = dir.join("tokenizer.json");
        if !p.is_file() {
            return Err(TextError::MissingTokenizer(dir.to_path_buf()));
        }
        Self::from_file(&p)
    }

    /// Sets the digit-split pre-step used by every later encode.
    pub fn with_digit_split(mut self, split: DigitSplit) -> Self {
        self.split = split;
        self
    }

    pub fn digit_split(&self) -> DigitSplit {
        self.split
    }

    /// Vocabulary size including added tokens (ids are `< vocab_size`
    /// except for holes in sparse added-token ids).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Encodes one text; `add_special` runs the post-processor (BOS etc.).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Encoded> {
        let enc = if self.split == DigitSplit::None {
            self.inner
                .encode_char_offsets(text, add_special)
                .map_err(|e| TextError::Encode(e.to_string()))?
        } else {
            self.encode_split(text, add_special)?
        };
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Encodes many texts (in parallel).
    pub fn encode_batch(&self, texts: &[&str], add_special: bool) -> Result<Vec<Encoded>> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|t| self.encode(t, add_special))
            .collect()
    }

    /// Ids only, the fast path (byte offsets are not tracked).
    pub fn encode_ids(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        if self.split != DigitSplit::None {
            return Ok(self.encode(text, add_special)?.ids);
        }
        let enc = self
            .inner
            .encode_fast(text, add_special)
            .map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn encode_split(&self, text: &str, add_special: bool) -> Result<Encoding> {
        let protected = self.added_ranges(text);
        let segs = digit_segments(text, self.split, &protected);
        let mut parts = Vec::with_capacity(segs.len());
        let mut char_pos = 0usize;
        let mut byte_pos = 0usize;
        for (a, z) in segs {
            char_pos += text[byte_pos..a].chars().count();
            byte_pos = a;
            let mut e = self
                .inner
                .encode_char_offsets(&text[a..z], false)
                .map_err(|e| TextError::Encode(e.to_string()))?;
            for o in e.get_offsets_mut() {
                o.0 += char_pos;
                o.1 += char_pos;
            }
            parts.push(e);
        }
        let merged = Encoding::merge(parts, false);
        self.inner
            .post_process(merged, None, add_special)
            .map_err(|e| TextError::Encode(e.to_string()))
    }

    /// Byte ranges of added-token occurrences in `text` (longest first).
    fn added_ranges(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for tok in &self.added {
            if tok.is_empty() {
                continue;
            }
            for (i, _) in text.match_indices(tok.as_str()) {
                let r = (i, i + tok.len());
                if !out.iter().any(|&(a, z)| r.0 < z && a < r.1) {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Fails on text that looks like a special token (`<|name|>`) but is not
    /// one of this tokenizer's added tokens: such a prompt would silently be
    /// encoded as plain characters.
    pub fn check_specials(&self, text: &str) -> Result<()> {
        let mut rest = text;
        while let Some(i) = rest.find("<|") {
            let tail = &rest[i..];
            if let Some(j) = tail[2..].find("|>") {
                let cand = &tail[..j + 4];
                let inner = &cand[2..cand.len() - 2];
                let plausible = !inner.is_empty()
                    && inner.len() <= 64
                    && !inner
                        .chars()
                        .any(|c| c.is_whitespace() || c == '<' || c == '>');
                if plausible && !self.added.iter().any(|a| a == cand) {
                    return Err(TextError::UnknownSpecial(cand.to_string()));
                }
            }
            rest = &tail[2..];
        }
        Ok(())
    }

    /// Checks that every id is inside the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            if self.inner.id_to_token(id).is_none() {
                return Err(TextError::IdOutOfVocab {
                    id,
                    vocab: self.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// Decodes ids to text; ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TextError::Decode(e.to_string()))
    }
}
