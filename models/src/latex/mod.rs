//! Speech-to-LaTeX, rules route: spoken maths (English, Russian) → LaTeX with
//! no model. [`convert`] lexes words ([`lexer`], tables in [`lexicon`]),
//! parses them by documented precedence and scope rules ([`parser`]), prints
//! LaTeX ([`emit`]), and wraps maths found inside a sentence in `$…$`
//! ([`inline`]). It never fails: words it cannot place are dropped and listed.

pub mod correct;
pub mod emit;
pub mod inline;
pub mod lexer;
pub mod lexicon;
pub mod parser;

pub use lexicon::Lang;

/// Result of a conversion.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Conversion {
    /// The LaTeX (empty when nothing could be made).
    pub latex: String,
    /// Words that could not be placed (dropped from the output).
    pub unplaced: Vec<String>,
    /// True when the input read as a sentence with inline maths in `$…$`.
    pub sentence: bool,
}

/// Convert spoken maths (or a sentence with inline maths) into LaTeX.
pub fn convert(text: &str, lang: Lang) -> Conversion {
    let (words, toks) = lexer::lex(text, lang);
    if inline::is_sentence(&toks, lang) {
        let original: Vec<&str> = text.split_whitespace().collect();
        return Conversion {
            latex: inline::sentence(&original, &words, &toks, lang),
            unplaced: Vec::new(),
            sentence: true,
        };
    }
    let (latex, skipped) = math(&toks, lang);
    let unplaced = skipped
        .into_iter()
        .flat_map(|i| words[toks[i].start..toks[i].end].to_vec())
        .collect();
    Conversion {
        latex,
        unplaced,
        sentence: false,
    }
}

/// Convert a token run as one formula; returns LaTeX and skipped token indices.
pub fn math(toks: &[lexer::Lexed], lang: Lang) -> (String, Vec<usize>) {
    // Unknown words are dropped first so the formula around them still parses.
    let mut skipped: Vec<usize> = Vec::new();
    let mut kept: Vec<lexer::Lexed> = Vec::with_capacity(toks.len());
    let mut index: Vec<usize> = Vec::with_capacity(toks.len());
    for (i, t) in toks.iter().enumerate() {
        if t.tok == lexicon::Tok::Unknown {
            skipped.push(i);
        } else {
            kept.push(t.clone());
            index.push(i);
        }
    }
    let mut p = parser::Parser::new(&kept, lang);
    let nodes = p.parse_all();
    skipped.extend(p.skipped.iter().map(|&k| index[k]));
    skipped.sort_unstable();
    let mut out = String::new();
    for n in &nodes {
        let s = emit::emit(n, false);
        if s.is_empty() {
            continue;
        }
        if s == "," {
            out.push(',');
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s);
    }
    (out, skipped)
}

#[cfg(test)]
mod tests;
