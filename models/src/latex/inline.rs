//! Inline maths inside a sentence: "the area is pi r squared" →
//! `the area is $\pi r^{2}$`.
//!
//! Rules: an utterance reads as a sentence when it has at least one unknown
//! word and unknown plus sentence words ("is", "the", "where", …) number two
//! or more. In a sentence, maximal runs of maths tokens become formulas once
//! weak tokens at their edges ("of", "to", "in", "a", "I", Russian "в", "на",
//! "с", …) are given back to the text; a run needs one strong token (a number,
//! a letter other than a/i, an operator, a function, …) to be maths.
//! An utterance that starts with a sentence word ("where n is …") is a sentence too.

use super::lexer::Lexed;
use super::lexicon::{Kw, Lang, Tok};

/// Whether the tokens read as a sentence rather than one formula.
pub fn is_sentence(toks: &[Lexed], _lang: Lang) -> bool {
    let u = toks.iter().filter(|t| t.tok == Tok::Unknown).count();
    let t = toks.iter().filter(|t| t.tok == Tok::Text).count();
    let starts_text = matches!(toks.first(), Some(l) if l.tok == Tok::Text);
    let has_math = toks.iter().any(|l| !is_text(&l.tok));
    (u >= 1 && u + t >= 2) || (starts_text && has_math)
}

fn is_text(t: &Tok) -> bool {
    matches!(t, Tok::Text | Tok::Unknown)
}

fn is_weak(t: &Tok) -> bool {
    match t {
        Tok::Ident(s) => s == "a" || s == "i" || s == "A" || s == "I",
        Tok::Rel(_) => true,
        Tok::Kw(k) => matches!(
            k,
            Kw::Of
                | Kw::To
                | Kw::From
                | Kw::As
                | Kw::Comma
                | Kw::By
                | Kw::ToThe
                | Kw::Times
                | Kw::Power
                | Kw::Point
                | Kw::Root
                | Kw::Prime
                | Kw::Sub
                | Kw::Base
                | Kw::Fraction
                | Kw::InBrackets
                | Kw::Open(_)
                | Kw::Close
        ),
        _ => false,
    }
}

/// Rebuild the sentence: text words as written (`original`, same split as
/// `words`), maths runs converted and wrapped in `$…$`.
pub fn sentence(original: &[&str], words: &[String], toks: &[Lexed], lang: Lang) -> String {
    // original words aligned with `words` (drop tokens that were only punctuation)
    let orig: Vec<&str> = original
        .iter()
        .copied()
        .filter(|w| !super::lexer::words(w).is_empty())
        .collect();
    let word = |i: usize| -> String {
        orig.get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| words[i].clone())
    };
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if is_text(&toks[i].tok) {
            parts.extend((toks[i].start..toks[i].end).map(word));
            i += 1;
            continue;
        }
        let mut j = i;
        while j < toks.len() && !is_text(&toks[j].tok) {
            j += 1;
        }
        // trim weak edges
        let (mut a, mut b) = (i, j);
        while a < b && is_weak(&toks[a].tok) {
            a += 1;
        }
        while b > a && is_weak(&toks[b - 1].tok) {
            b -= 1;
        }
        for t in &toks[i..a] {
            parts.extend((t.start..t.end).map(word));
        }
        if a < b {
            let (latex, _) = super::math(&toks[a..b], lang);
            if latex.is_empty() {
                for t in &toks[a..b] {
                    parts.extend((t.start..t.end).map(word));
                }
            } else {
                // keep trailing punctuation of the last maths word
                let last = orig.get(toks[b - 1].end - 1).copied().unwrap_or("");
                let punct: String = last
                    .chars()
                    .rev()
                    .take_while(|c| ",.?!;:".contains(*c))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                parts.push(format!("${latex}${punct}"));
            }
        }
        for t in &toks[b..j] {
            parts.extend((t.start..t.end).map(word));
        }
        i = j;
    }
    parts.join(" ")
}
