//! Spoken words → tokens: longest phrase match against the [`Lexicon`],
//! number words folded into one number ("two hundred and five" → `205`,
//! "three point one four" → `3.14`), digits passed through.

use super::lexicon::{lexicon, Kw, Lang, Lexicon, NumClass, Tok};

/// A token and the word span it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Lexed {
    pub tok: Tok,
    /// Index of the first word.
    pub start: usize,
    /// One past the last word.
    pub end: usize,
}

/// Split `text` into words: whitespace-separated, lower-cased, with
/// surrounding punctuation (`, . ? ! ; : " '`) removed.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| ",.?!;:\"'«»()".contains(c))
                .to_lowercase()
                .replace('ё', "е")
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_digits(w: &str) -> bool {
    let mut seen = false;
    for (i, c) in w.chars().enumerate() {
        if c.is_ascii_digit() {
            seen = true;
        } else if !((c == '.' || c == ',') && i > 0) {
            return false;
        }
    }
    seen && !w.ends_with('.') && !w.ends_with(',')
}

/// Read a cardinal starting at `i`; returns (value, words used).
fn cardinal(lex: &Lexicon, ws: &[String], i: usize, lang: Lang) -> Option<(u64, usize)> {
    let mut total: u64 = 0;
    let mut cur: u64 = 0;
    let mut j = i;
    // What may follow: after a unit only multipliers; after a ten a unit.
    let mut last: Option<NumClass> = None;
    while j < ws.len() {
        let w = ws[j].as_str();
        if lang == Lang::En && w == "and" && last.is_some() {
            // "two hundred and five": only after hundred/scale and before a number
            if matches!(last, Some(NumClass::Hundred) | Some(NumClass::Scale))
                && j + 1 < ws.len()
                && lex.numbers.contains_key(ws[j + 1].as_str())
            {
                j += 1;
                continue;
            }
            break;
        }
        let Some(&(v, c)) = lex.numbers.get(w) else {
            break;
        };
        use NumClass::*;
        let ok = match (last, c) {
            (None, _) => true,
            (Some(Ten), Unit) => v != 0,
            (Some(Hundreds), Unit | Teen | Ten) => true,
            (Some(Hundred), Unit | Teen | Ten) => true,
            (Some(Scale), Unit | Teen | Ten | Hundreds) => true,
            (Some(Unit | Teen | Ten | Hundreds), Hundred) => lang == Lang::En,
            (Some(Unit | Teen | Ten | Hundreds | Hundred), Scale) => true,
            _ => false,
        };
        if !ok {
            break;
        }
        match c {
            Unit | Teen | Ten | Hundreds => cur += v,
            Hundred => cur = cur.max(1) * 100,
            Scale => {
                total += cur.max(1) * v;
                cur = 0;
            }
        }
        last = Some(c);
        j += 1;
        // "zero" / "oh" stand alone
        if v == 0 && c == Unit {
            break;
        }
    }
    if j == i {
        None
    } else {
        Some((total + cur, j - i))
    }
}

/// Lex `text` in `lang`.
pub fn lex(text: &str, lang: Lang) -> (Vec<String>, Vec<Lexed>) {
    let ws = words(text);
    let toks = lex_words(&ws, lang);
    (ws, toks)
}

/// Lex already split words.
pub fn lex_words(ws: &[String], lang: Lang) -> Vec<Lexed> {
    let lex = lexicon(lang);
    let mut out: Vec<Lexed> = Vec::with_capacity(ws.len());
    let mut i = 0;
    while i < ws.len() {
        let w = ws[i].as_str();
        if is_digits(w) {
            out.push(Lexed {
                tok: Tok::Num(w.replace(',', ".")),
                start: i,
                end: i + 1,
            });
            i += 1;
            continue;
        }
        if let Some((v, n)) = cardinal(lex, ws, i, lang) {
            let mut s = v.to_string();
            let mut end = i + n;
            // decimals: "point" + digit words
            if end + 1 < ws.len() {
                let sep = phrase_at(lex, ws, end).map(|p| p.0);
                if sep == Some(Tok::Kw(Kw::Point))
                    || (lang == Lang::Ru && sep == Some(Tok::Kw(Kw::Comma)))
                {
                    let mut digits = String::new();
                    let mut k = end + 1;
                    while k < ws.len() {
                        match lex.numbers.get(ws[k].as_str()) {
                            Some(&(d, NumClass::Unit)) => digits.push_str(&d.to_string()),
                            Some(&(d, NumClass::Teen | NumClass::Ten))
                                if digits.is_empty() && lang == Lang::Ru =>
                            {
                                digits.push_str(&d.to_string());
                                k += 1;
                                break;
                            }
                            _ => break,
                        }
                        k += 1;
                    }
                    if !digits.is_empty() {
                        s = format!("{s}.{digits}");
                        end = k;
                    }
                }
            }
            out.push(Lexed {
                tok: Tok::Num(s),
                start: i,
                end,
            });
            i = end;
            continue;
        }
        if let Some((tok, n)) = phrase_at(lex, ws, i) {
            out.push(Lexed {
                tok,
                start: i,
                end: i + n,
            });
            i += n;
            continue;
        }
        let tok = if lex.text_words.contains_key(w) {
            Tok::Text
        } else if let Some(t) = ordinal_like(w) {
            t
        } else {
            Tok::Unknown
        };
        out.push(Lexed {
            tok,
            start: i,
            end: i + 1,
        });
        i += 1;
    }
    out
}

/// "4th", "21st" → ordinal.
fn ordinal_like(w: &str) -> Option<Tok> {
    let d: String = w.chars().take_while(|c| c.is_ascii_digit()).collect();
    if d.is_empty() {
        return None;
    }
    match &w[d.len()..] {
        "st" | "nd" | "rd" | "th" | "-th" | "-й" | "-ой" | "-ей" => Some(Tok::Ordinal(d)),
        _ => None,
    }
}

fn phrase_at(lex: &Lexicon, ws: &[String], i: usize) -> Option<(Tok, usize)> {
    let cands = lex.phrases.get(ws[i].as_str())?;
    for (p, tok) in cands {
        if i + p.len() <= ws.len() && p.iter().zip(&ws[i..]).all(|(a, b)| *a == b.as_str()) {
            return Some((tok.clone(), p.len()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(s: &str, lang: Lang) -> Vec<Tok> {
        lex(s, lang).1.into_iter().map(|l| l.tok).collect()
    }

    #[test]
    fn numbers() {
        assert_eq!(
            nums("two hundred and five", Lang::En),
            vec![Tok::Num("205".into())]
        );
        assert_eq!(
            nums("three point one four", Lang::En),
            vec![Tok::Num("3.14".into())]
        );
        assert_eq!(
            nums("twenty one thousand", Lang::En),
            vec![Tok::Num("21000".into())]
        );
        assert_eq!(
            nums("two three", Lang::En),
            vec![Tok::Num("2".into()), Tok::Num("3".into())]
        );
        assert_eq!(
            nums("двести сорок два", Lang::Ru),
            vec![Tok::Num("242".into())]
        );
        assert_eq!(
            nums("три запятая один четыре", Lang::Ru),
            vec![Tok::Num("3.14".into())]
        );
        assert_eq!(nums("2.5", Lang::En), vec![Tok::Num("2.5".into())]);
    }
}
