//! Token statistics: tokens per character, byte and word, and the token
//! premium of parallel texts in several languages relative to a reference.

use serde::Serialize;

/// Counts for one input text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TextStats {
    pub tokens: usize,
    pub chars: usize,
    pub bytes: usize,
    /// Whitespace-separated words.
    pub words: usize,
    pub tokens_per_char: f64,
    pub tokens_per_byte: f64,
    pub tokens_per_word: f64,
}

impl TextStats {
    /// Stats of `text` encoded into `tokens` ids (ratios are 0 for empty text).
    pub fn new(text: &str, tokens: usize) -> Self {
        let chars = text.chars().count();
        let bytes = text.len();
        let words = text.split_whitespace().count();
        let r = |d: usize| {
            if d == 0 {
                0.0
            } else {
                tokens as f64 / d as f64
            }
        };
        Self {
            tokens,
            chars,
            bytes,
            words,
            tokens_per_char: r(chars),
            tokens_per_byte: r(bytes),
            tokens_per_word: r(words),
        }
    }
}

/// Token premium of one input against the reference input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LanguagePremium {
    pub tokens: usize,
    /// `tokens / reference tokens` (1.0 for the reference itself).
    pub premium: f64,
}

/// Premium of each of `stats` (parallel texts: the same content in different
/// languages) relative to `stats[reference]`.
pub fn premiums(stats: &[TextStats], reference: usize) -> Vec<LanguagePremium> {
    let base = stats.get(reference).map_or(0, |s| s.tokens);
    stats
        .iter()
        .map(|s| LanguagePremium {
            tokens: s.tokens,
            premium: if base == 0 {
                0.0
            } else {
                s.tokens as f64 / base as f64
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_premium() {
        let s = TextStats::new("ab cd", 4);
        assert_eq!((s.chars, s.bytes, s.words), (5, 5, 2));
        assert_eq!(s.tokens_per_word, 2.0);
        let r = TextStats::new("жж", 3);
        assert_eq!((r.chars, r.bytes), (2, 4));
        let p = premiums(&[s, r], 0);
        assert_eq!(p[0].premium, 1.0);
        assert_eq!(p[1].premium, 0.75);
        assert_eq!(TextStats::new("", 0).tokens_per_char, 0.0);
    }
}
