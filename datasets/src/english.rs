//! An English text normalizer for WER, after Whisper's `EnglishTextNormalizer`
//! (openai-whisper `whisper/normalizers/english.py`), reduced to the rules
//! that matter for short prompts and applied identically to reference and
//! hypothesis:
//!
//! | rule | example |
//! |---|---|
//! | lower-case | `Added.` → `added` |
//! | drop `[...]`, `(...)` and `<...>` spans | `at [@]` → `at` |
//! | drop fillers `hmm mm mhm mmm uh um` | |
//! | symbols spoken: `%` → percent, `&` → and, `@` → at, `#` → pound, `*` → star, `+` → plus | |
//! | common contractions expanded | `won't` → `will not`, `it's` → `it is` |
//! | punctuation → space (apostrophes dropped after expansion) | |
//! | number words → digits | `twenty one` → `21`, `one hundred five` → `105`, `three point five` → `3.5` |
//! | `oh` between digits is zero | `one oh one` → `101` |
//! | digit runs keep their separators out | `1,000` → `1000` |
//! | whitespace squeezed | |

/// Normalizes `s` for WER scoring.
pub fn normalize(s: &str) -> String {
    let lower = strip_spans(&s.to_lowercase());
    let mut t = String::with_capacity(lower.len());
    let mut prev_digit = false;
    for c in lower.chars() {
        let rep = match c {
            '%' => Some(" percent "),
            '&' => Some(" and "),
            '@' => Some(" at "),
            '#' => Some(" pound "),
            '*' => Some(" star "),
            '+' => Some(" plus "),
            _ => None,
        };
        if let Some(r) = rep {
            t.push_str(r);
            prev_digit = false;
            continue;
        }
        if c == ',' && prev_digit {
            continue; // 1,000 → 1000 (a following non-digit is handled below)
        }
        t.push(c);
        prev_digit = c.is_ascii_digit();
    }
    let mut words: Vec<String> = Vec::new();
    for raw in t.split_whitespace() {
        for w in expand_contraction(raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')) {
            let cleaned: String = w
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '.' {
                        c
                    } else {
                        ' '
                    }
                })
                .collect();
            for part in cleaned.split_whitespace() {
                // Keep decimal points only between digits.
                let part = part.trim_matches('.');
                if part.is_empty() {
                    continue;
                }
                if part.contains('.') && !is_decimal(part) {
                    words.extend(
                        part.split('.')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string),
                    );
                } else {
                    words.push(part.to_string());
                }
            }
        }
    }
    words.retain(|w| !matches!(w.as_str(), "hmm" | "mm" | "mhm" | "mmm" | "uh" | "um"));
    numbers_to_digits(&words).join(" ")
}

fn is_decimal(s: &str) -> bool {
    let mut parts = s.split('.');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()))
}

fn strip_spans(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '[' | '(' | '<' => depth += 1,
            ']' | ')' | '>' if depth > 0 => {
                depth -= 1;
                out.push(' ');
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn expand_contraction(w: &str) -> Vec<String> {
    let w = w.replace('’', "'");
    let fixed: &[&str] = match w.as_str() {
        "won't" => &["will", "not"],
        "can't" => &["can", "not"],
        "let's" => &["let", "us"],
        "ain't" => &["is", "not"],
        "it's" => &["it", "is"],
        "that's" => &["that", "is"],
        "there's" => &["there", "is"],
        "what's" => &["what", "is"],
        _ => &[],
    };
    if !fixed.is_empty() {
        return fixed.iter().map(|s| s.to_string()).collect();
    }
    for (suf, rep) in [
        ("n't", "not"),
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'m", "am"),
        ("'d", "would"),
    ] {
        if let Some(stem) = w.strip_suffix(suf) {
            if !stem.is_empty() {
                return vec![stem.to_string(), rep.to_string()];
            }
        }
    }
    vec![w.replace('\'', "")]
}

fn small(w: &str) -> Option<u64> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = ONES.iter().position(|x| *x == w) {
        return Some(i as u64);
    }
    TENS.iter()
        .position(|x| *x == w)
        .map(|i| (i as u64 + 2) * 10)
}

fn scale(w: &str) -> Option<u64> {
    match w {
        "hundred" => Some(100),
        "thousand" => Some(1_000),
        "million" => Some(1_000_000),
        "billion" => Some(1_000_000_000),
        _ => None,
    }
}

/// Replaces runs of number words with digits; other words pass through.
fn numbers_to_digits(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        if small(w).is_none() {
            out.push(words[i].clone());
            i += 1;
            continue;
        }
        // Digit-by-digit sequences ("one oh one", "five five five") read as digits.
        let mut j = i;
        let mut digits = String::new();
        while j < words.len() {
            match words[j].as_str() {
                "oh" | "o" if !digits.is_empty() => digits.push('0'),
                x => match small(x) {
                    Some(d) if d < 10 => digits.push(char::from(b'0' + d as u8)),
                    _ => break,
                },
            }
            j += 1;
        }
        if digits.len() >= 2
            && (j == words.len() || (small(&words[j]).is_none() && scale(&words[j]).is_none()))
        {
            out.push(digits);
            i = j;
            continue;
        }
        // Cardinal: (small | small hundred | ... thousand ...)+ with optional "and".
        let (mut total, mut cur) = (0u64, 0u64);
        let mut last_small: Option<u64> = None;
        let mut j = i;
        while j < words.len() {
            let x = words[j].as_str();
            if let Some(v) = small(x) {
                // "twenty one": a unit may follow a ten; two units in a row end the number.
                match last_small {
                    Some(p) if !(p >= 20 && p % 10 == 0 && v < 10) => break,
                    _ => {}
                }
                cur += v;
                last_small = Some(v);
            } else if let Some(s) = scale(x) {
                if s == 100 {
                    cur = cur.max(1) * 100;
                } else {
                    total += cur.max(1) * s;
                    cur = 0;
                }
                last_small = None;
            } else if x == "and"
                && j + 1 < words.len()
                && small(&words[j + 1]).is_some()
                && last_small.is_none()
            {
                // "one hundred and five"
            } else {
                break;
            }
            j += 1;
        }
        let mut num = (total + cur).to_string();
        // "three point five"
        if j + 1 < words.len()
            && words[j] == "point"
            && small(&words[j + 1]).is_some_and(|d| d < 10)
        {
            num.push('.');
            j += 1;
            while j < words.len() {
                match small(&words[j]) {
                    Some(d) if d < 10 => num.push(char::from(b'0' + d as u8)),
                    _ => break,
                }
                j += 1;
            }
        }
        out.push(num);
        i = j;
    }
    out
}

/// Word error rate of `hyp` against `reference` after [`normalize`]:
/// (substitutions + deletions + insertions) / reference words, and the
/// counts behind it so rates over a corpus can be pooled.
pub fn wer_counts(reference: &str, hyp: &str) -> (usize, usize) {
    let r: Vec<String> = normalize(reference)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let h: Vec<String> = normalize(hyp)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (edit_distance(&r, &h), r.len())
}

fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_whisper_for_prompts() {
        for (input, want) in [
            ("Added.", "added"),
            ("at [@]", "at"),
            (
                "Please enter your password, followed by the pound key.",
                "please enter your password followed by the pound key",
            ),
            (
                "Press * to toggle pause, press # to enter",
                "press star to toggle pause press pound to enter",
            ),
            ("It's twenty one degrees", "it is 21 degrees"),
            ("one hundred and five", "105"),
            ("Two thousand twenty-six", "2026"),
            ("call one oh one", "call 101"),
            ("five five five one two one two", "5551212"),
            ("three point five percent", "3.5 percent"),
            ("1,000 people. Um, hmm", "1000 people"),
            ("We won't go; you're late", "we will not go you are late"),
            ("one two", "12"),
            ("(music) Hello <noise> there", "hello there"),
        ] {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn wer_counts_edits_after_normalization() {
        assert_eq!(wer_counts("Agent logged in.", "agent logged in"), (0, 3));
        assert_eq!(wer_counts("Agent logged in.", "agent locked in"), (1, 3));
        assert_eq!(wer_counts("One.", "1"), (0, 1));
        assert_eq!(wer_counts("a b c", ""), (3, 3));
        assert_eq!(wer_counts("", "x"), (1, 0));
    }
}
