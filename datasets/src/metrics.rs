//! Scores for speech-to-LaTeX and sentence text: CER, WER, CER on normalized
//! LaTeX, exact match, S2L's `cer_lower`, and the S2L sentence split into
//! formula-only and text-only parts.

use crate::latex_norm;

/// Levenshtein distance between two sequences.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() {
        return b.len();
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Character edits and reference length (for pooled CER).
pub fn char_counts(reference: &str, hyp: &str) -> (usize, usize) {
    let r: Vec<char> = reference.chars().collect();
    let h: Vec<char> = hyp.chars().collect();
    (edit_distance(&r, &h), r.len())
}

/// Word edits and reference length (words split on whitespace).
pub fn word_counts(reference: &str, hyp: &str) -> (usize, usize) {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hyp.split_whitespace().collect();
    (edit_distance(&r, &h), r.len())
}

fn ratio((e, n): (usize, usize)) -> f64 {
    if n == 0 {
        if e == 0 {
            0.0
        } else {
            1.0
        }
    } else {
        e as f64 / n as f64
    }
}

/// Character error rate (fraction; 1.0 when the reference is empty and the hypothesis not).
pub fn cer(reference: &str, hyp: &str) -> f64 {
    ratio(char_counts(reference, hyp))
}

/// Word error rate (fraction).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    ratio(word_counts(reference, hyp))
}

/// CER after [`latex_norm::normalize`] on both sides.
pub fn latex_cer(reference: &str, hyp: &str) -> f64 {
    cer(
        &latex_norm::normalize(reference),
        &latex_norm::normalize(hyp),
    )
}

/// Exact match after normalization.
pub fn exact_match(reference: &str, hyp: &str) -> bool {
    latex_norm::normalize(reference) == latex_norm::normalize(hyp)
}

/// S2L's preprocessing for `cer_lower`: drop `\displaystyle` and
/// `\operatorname`, strip all whitespace, lower-case.
pub fn s2l_lower(s: &str) -> String {
    s.replace("\\displaystyle", "")
        .replace("\\operatorname", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// S2L `cer_lower`: CER after [`s2l_lower`] on both sides.
pub fn cer_lower(reference: &str, hyp: &str) -> f64 {
    cer(&s2l_lower(reference), &s2l_lower(hyp))
}

/// Split a sentence on `$`: (formula parts joined by spaces, text parts joined by spaces).
pub fn split_sentence(s: &str) -> (String, String) {
    let mut f = Vec::new();
    let mut t = Vec::new();
    for (i, part) in s.split('$').enumerate() {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        if i % 2 == 1 {
            f.push(p);
        } else {
            t.push(p);
        }
    }
    (f.join(" "), t.join(" "))
}

/// Sentence CER split into (formula-only `cer_lower`, text-only CER).
pub fn sentence_cers(reference: &str, hyp: &str) -> (f64, f64) {
    let (rf, rt) = split_sentence(reference);
    let (hf, ht) = split_sentence(hyp);
    (
        cer_lower(&rf, &hf),
        cer(&rt.to_lowercase(), &ht.to_lowercase()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basics() {
        assert_eq!(cer("abc", "abd"), 1.0 / 3.0);
        assert_eq!(wer("a b c d", "a x c"), 0.5);
        assert_eq!(latex_cer("x^2+1", "x^{2} + 1"), 0.0);
        assert!(exact_match("\\dfrac{1}{x}", "\\frac1x"));
        assert_eq!(cer_lower("\\displaystyle X + 1", "x+1"), 0.0);
        assert_eq!(
            split_sentence("the area is $\\pi r^2$ here"),
            ("\\pi r^2".to_string(), "the area is here".to_string())
        );
        let (f, t) = sentence_cers("a $x$ b", "a $y$ b");
        assert_eq!((f, t), (1.0, 0.0));
        assert_eq!(cer("", ""), 0.0);
        assert_eq!(cer("", "x"), 1.0);
    }

    proptest! {
        #[test]
        fn normalize_idempotent(s in "[a-z0-9 {}^_\\\\+=*$.()\\[\\]]{0,40}") {
            let once = latex_norm::normalize(&s);
            prop_assert_eq!(latex_norm::normalize(&once), once);
        }

        #[test]
        fn normalize_idempotent_commands(parts in proptest::collection::vec(prop_oneof![
            Just("\\frac"), Just("\\sqrt"), Just("{"), Just("}"), Just("^"), Just("_"), Just("x"),
            Just("2"), Just("\\left("), Just("\\right)"), Just("\\times"), Just(" "), Just("\\pi"),
            Just("\\operatorname"), Just("\\mathrm"), Just("["), Just("]"), Just("\\,"), Just("\\dfrac"),
            Just("sin"), Just("d"), Just("\\displaystyle"), Just("$"), Just("."),
        ], 0..24)) {
            let s: String = parts.concat();
            let once = latex_norm::normalize(&s);
            prop_assert_eq!(latex_norm::normalize(&once), once);
        }

        #[test]
        fn cer_self_zero(s in "\\PC{0,60}") {
            prop_assert_eq!(cer(&s, &s), 0.0);
            prop_assert_eq!(wer(&s, &s), 0.0);
            prop_assert_eq!(latex_cer(&s, &s), 0.0);
            prop_assert_eq!(cer_lower(&s, &s), 0.0);
        }
    }
}
