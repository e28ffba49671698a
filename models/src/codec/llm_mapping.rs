//! Audio codes in a text LLM's vocabulary, so audio and text tokens share
//! one stream into the LLM stage.
//!
//! # The mapping
//!
//! A block of `K × C + 2` new ids is appended to the text vocabulary at
//! `base` (usually the text tokenizer's vocabulary size):
//!
//! * code `c` of codebook `k` → id `base + k·C + c` (an offset per codebook,
//!   so the same code value in different codebooks is a different token);
//!   its token string is `<|audio_{k}_{c}|>`;
//! * `<audio>` → `base + K·C`, `</audio>` → `base + K·C + 1`.
//!
//! A code matrix `[K × N]` becomes `<audio>`, then the ids in one of two
//! orders, then `</audio>`:
//!
//! * [`Order::Interleaved`] (frame-major): `f0k0 f0k1 … f0k(K-1) f1k0 …` —
//!   what delay-free multi-codebook LMs consume, frames stay contiguous;
//! * [`Order::Flattened`] (codebook-major): all of codebook 0, then all of
//!   codebook 1, … — coarse-to-fine.
//!
//! [`AudioVocab::decode`] inverts the mapping and rejects ids that do not
//! belong where they appear.

use super::{CodecError, Codes, Result};

/// Order of the `K × N` ids inside `<audio>…</audio>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Frame-major: every codebook of frame 0, then frame 1, …
    Interleaved,
    /// Codebook-major: every frame of codebook 0, then codebook 1, …
    Flattened,
}

/// The audio block appended to an LLM vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioVocab {
    /// First id of the block (normally the text vocabulary size).
    pub base: u32,
    pub codebooks: usize,
    pub codebook_size: usize,
}

impl AudioVocab {
    pub fn new(base: u32, codebooks: usize, codebook_size: usize) -> Self {
        Self {
            base,
            codebooks,
            codebook_size,
        }
    }

    /// Number of ids the block adds (codes + two markers).
    pub fn len(&self) -> usize {
        self.codebooks * self.codebook_size + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Id of `<audio>`.
    pub fn audio_start(&self) -> u32 {
        self.base + (self.codebooks * self.codebook_size) as u32
    }

    /// Id of `</audio>`.
    pub fn audio_end(&self) -> u32 {
        self.audio_start() + 1
    }

    /// LLM id of code `code` in codebook `k`.
    pub fn id(&self, k: usize, code: u32) -> u32 {
        self.base + (k * self.codebook_size) as u32 + code
    }

    /// Token strings of the block, in id order (for adding to a tokenizer).
    pub fn token_strings(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.codebooks)
            .flat_map(|k| (0..self.codebook_size).map(move |c| format!("<|audio_{k}_{c}|>")))
            .collect();
        v.push("<audio>".into());
        v.push("</audio>".into());
        v
    }

    /// `<audio>` ids… `</audio>` for `codes` in `order`.
    pub fn encode(&self, codes: &Codes, order: Order) -> Result<Vec<u32>> {
        if codes.codebooks != self.codebooks {
            return Err(CodecError::BadCodes(format!(
                "{} codebooks, but the audio vocabulary has {}",
                codes.codebooks, self.codebooks
            )));
        }
        if let Some(&c) = codes
            .ids
            .iter()
            .find(|&&c| c as usize >= self.codebook_size)
        {
            return Err(CodecError::BadCodes(format!(
                "code {c} >= codebook size {}",
                self.codebook_size
            )));
        }
        let (k_n, n) = (codes.codebooks, codes.frames);
        let mut out = Vec::with_capacity(k_n * n + 2);
        out.push(self.audio_start());
        match order {
            Order::Interleaved => {
                for t in 0..n {
                    out.extend((0..k_n).map(|k| self.id(k, codes.ids[k * n + t])));
                }
            }
            Order::Flattened => {
                for k in 0..k_n {
                    out.extend(codes.row(k).iter().map(|&c| self.id(k, c)));
                }
            }
        }
        out.push(self.audio_end());
        Ok(out)
    }

    /// Inverse of [`AudioVocab::encode`]: `ids` must be `<audio>` … `</audio>`
    /// with a multiple of K ids, each from the codebook its position implies.
    pub fn decode(&self, ids: &[u32], order: Order) -> Result<Codes> {
        let inner = match ids {
            [s, inner @ .., e] if *s == self.audio_start() && *e == self.audio_end() => inner,
            _ => {
                return Err(CodecError::BadCodes(
                    "audio ids must start with <audio> and end with </audio>".into(),
                ))
            }
        };
        let k_n = self.codebooks;
        if inner.len() % k_n != 0 {
            return Err(CodecError::BadCodes(format!(
                "{} audio ids is not a multiple of {k_n} codebooks",
                inner.len()
            )));
        }
        let n = inner.len() / k_n;
        let mut codes = vec![0u32; k_n * n];
        for (pos, &id) in inner.iter().enumerate() {
            let (k, t) = match order {
                Order::Interleaved => (pos % k_n, pos / k_n),
                Order::Flattened => (pos / n, pos % n),
            };
            let lo = self.id(k, 0);
            if id < lo || id >= lo + self.codebook_size as u32 {
                return Err(CodecError::BadCodes(format!(
                    "id {id} at position {pos} is not a codebook-{k} audio token"
                )));
            }
            codes[k * n + t] = id - lo;
        }
        Ok(Codes {
            codebooks: k_n,
            frames: n,
            ids: codes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_orders_round_trip() {
        let v = AudioVocab::new(1000, 2, 4);
        let codes = Codes {
            codebooks: 2,
            frames: 3,
            ids: vec![0, 1, 2, 3, 2, 1],
        };
        let il = v.encode(&codes, Order::Interleaved).unwrap();
        assert_eq!(il, vec![1008, 1000, 1007, 1001, 1006, 1002, 1005, 1009]);
        let fl = v.encode(&codes, Order::Flattened).unwrap();
        assert_eq!(fl, vec![1008, 1000, 1001, 1002, 1007, 1006, 1005, 1009]);
        assert_eq!(v.decode(&il, Order::Interleaved).unwrap(), codes);
        assert_eq!(v.decode(&fl, Order::Flattened).unwrap(), codes);
        assert_eq!(v.token_strings().len(), v.len());
        assert_eq!(v.token_strings()[5], "<|audio_1_1|>");
    }

    #[test]
    fn rejects_misplaced_ids() {
        let v = AudioVocab::new(1000, 2, 4);
        assert!(v
            .decode(&[1008, 1004, 1000, 1009], Order::Interleaved)
            .is_err());
        assert!(v.decode(&[1000, 1004], Order::Interleaved).is_err());
        assert!(v.decode(&[1008, 1000, 1009], Order::Interleaved).is_err());
        let bad = Codes {
            codebooks: 2,
            frames: 1,
            ids: vec![0, 4],
        };
        assert!(v.encode(&bad, Order::Flattened).is_err());
    }
}
