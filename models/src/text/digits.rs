//! Number tokenization control: split digit runs into groups before the
//! tokenizer sees them.
//!
//! `R2L3` splits a run of digits right to left into groups of three
//! ("1234567" → "1" "234" "567"), `Single` into single digits. The text is
//! not changed: it is cut into segments at group boundaries, each segment is
//! encoded on its own and the ids are concatenated, so no BPE merge crosses
//! a boundary. Offsets stay those of the original text. Splitting never
//! happens inside a protected range (the special tokens).

use super::TextError;

/// How digit runs are pre-split at encode time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigitSplit {
    /// Leave digits to the tokenizer.
    #[default]
    None,
    /// Right-to-left groups of three.
    R2L3,
    /// One digit per segment.
    Single,
}

impl std::str::FromStr for DigitSplit {
    type Err = TextError;
    fn from_str(s: &str) -> Result<Self, TextError> {
        match s {
            "none" => Ok(Self::None),
            "r2l3" => Ok(Self::R2L3),
            "single" => Ok(Self::Single),
            _ => Err(TextError::BadDigitSplit(s.to_string())),
        }
    }
}

/// Byte ranges that cover `text`, cut at the digit-group boundaries of
/// `split` (only ASCII digits `0-9` are grouped), never inside `protected`.
pub fn digit_segments(
    text: &str,
    split: DigitSplit,
    protected: &[(usize, usize)],
) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut cuts = Vec::new();
    if split != DigitSplit::None {
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = i - start;
            let step = if split == DigitSplit::Single { 1 } else { 3 };
            // group boundaries counted from the right end of the run
            let mut k = n % step;
            if k == 0 {
                k = step;
            }
            while k < n {
                let cut = start + k;
                if !protected.iter().any(|&(a, z)| a < cut && cut < z) {
                    cuts.push(cut);
                }
                k += step;
            }
        }
    }
    let mut segs = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for c in cuts {
        segs.push((prev, c));
        prev = c;
    }
    segs.push((prev, text.len()));
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(t: &str, s: DigitSplit) -> Vec<&str> {
        digit_segments(t, s, &[])
            .into_iter()
            .map(|(a, b)| &t[a..b])
            .collect()
    }

    #[test]
    fn right_to_left_groups() {
        assert_eq!(
            parts("x 1234567 y", DigitSplit::R2L3),
            ["x 1", "234", "567 y"]
        );
        assert_eq!(parts("123456", DigitSplit::R2L3), ["123", "456"]);
        assert_eq!(parts("12", DigitSplit::R2L3), ["12"]);
        assert_eq!(parts("a1b22c", DigitSplit::R2L3), ["a1b22c"]);
        assert_eq!(parts("3.14159", DigitSplit::R2L3), ["3.14", "159"]);
    }

    #[test]
    fn single_and_none_and_protected() {
        assert_eq!(parts("ab 123", DigitSplit::Single), ["ab 1", "2", "3"]);
        assert_eq!(parts("ab 123", DigitSplit::None), ["ab 123"]);
        let t = "<|x12|>12";
        let s: Vec<_> = digit_segments(t, DigitSplit::Single, &[(0, 7)]);
        assert_eq!(s, [(0, 8), (8, 9)]);
        assert_eq!(parts("", DigitSplit::Single), [""]);
    }
}
