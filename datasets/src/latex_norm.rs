//! LaTeX normalization for scoring (S2L-style), so that spellings of the same
//! formula compare equal. Rules, applied in one pass over a brace tree:
//!
//! | rule | example |
//! |---|---|
//! | outer math delimiters removed | `$x$`, `$$x$$`, `\[x\]`, `\(x\)` → `x` |
//! | whitespace removed (one space kept between a control word and a letter) | `x + 1` → `x+1`, `\pi r` stays |
//! | spacing commands removed | `\,` `\;` `\:` `\!` `\ ` `~` `\quad` `\qquad` |
//! | style and sizing commands removed | `\displaystyle`, `\textstyle`, `\left`, `\right` (and a `.` after them), `\big…`/`\Big…`, `\limits`, `\nolimits` |
//! | fraction variants | `\dfrac`, `\tfrac`, `\cfrac` → `\frac` |
//! | multiplication signs | `\times`, `*` → `\cdot` |
//! | relation and symbol aliases | `\le`/`\leqslant` → `\leq`, `\ge`/`\geqslant` → `\geq`, `\ne` → `\neq`, `\rightarrow` → `\to`, `\implies` → `\Rightarrow`, `\iff` → `\Leftrightarrow`, `\lbrace`/`\rbrace` → `\{`/`\}`, `\vert`/`\lvert`/`\rvert` → `|`, `\ldots`/`\cdots` → `\dots`, `\varnothing` → `\emptyset` |
//! | differential | `\mathrm{d}` → `d` |
//! | function names | `\operatorname{sin}` / `\mathrm{sin}` → `\sin` for known functions, `\operatorname{foo}` → `foo` |
//! | argument braces made explicit | `x^2` → `x^{2}`, `\frac12` → `\frac{1}{2}`, `\sqrt x` → `\sqrt{x}` |
//! | redundant braces removed | `{x}+1` → `x+1`, `{{a}}` → `a` (braces that are a command's or `^`/`_`'s argument stay) |
//! | unbalanced braces | a stray `}` is dropped, an unclosed `{` is closed at the end ([`check`] reports both) |

use thiserror::Error;

/// A LaTeX string that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LatexError {
    #[error("unbalanced braces: {0} unmatched `}}`, {1} unclosed `{{`")]
    Unbalanced(usize, usize),
}

#[derive(Clone, Debug, PartialEq)]
enum T {
    Ctrl(String),
    Ch(char),
    Group(Vec<T>),
}

const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "lim", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "tanh", "coth", "max", "min", "sup", "inf", "det", "deg", "dim",
    "gcd", "ker", "lg", "arg", "Pr", "limsup", "liminf",
];

fn alias(w: &str) -> Option<&'static str> {
    Some(match w {
        "\\dfrac" | "\\tfrac" | "\\cfrac" => "\\frac",
        "\\times" => "\\cdot",
        "\\le" | "\\leqslant" => "\\leq",
        "\\ge" | "\\geqslant" => "\\geq",
        "\\ne" => "\\neq",
        "\\rightarrow" => "\\to",
        "\\implies" => "\\Rightarrow",
        "\\iff" => "\\Leftrightarrow",
        "\\lbrace" => "\\{",
        "\\rbrace" => "\\}",
        "\\vert" | "\\lvert" | "\\rvert" => "|",
        "\\ldots" | "\\cdots" => "\\dots",
        "\\varnothing" => "\\emptyset",
        "\\lbrack" => "[",
        "\\rbrack" => "]",
        _ => return None,
    })
}

fn dropped(w: &str) -> bool {
    matches!(
        w,
        "\\displaystyle"
            | "\\textstyle"
            | "\\scriptstyle"
            | "\\left"
            | "\\right"
            | "\\big"
            | "\\Big"
            | "\\bigg"
            | "\\Bigg"
            | "\\bigl"
            | "\\bigr"
            | "\\Bigl"
            | "\\Bigr"
            | "\\biggl"
            | "\\biggr"
            | "\\Biggl"
            | "\\Biggr"
            | "\\limits"
            | "\\nolimits"
            | "\\,"
            | "\\;"
            | "\\:"
            | "\\!"
            | "\\ "
            | "\\quad"
            | "\\qquad"
    )
}

fn arity(w: &str) -> usize {
    match w {
        "\\frac" | "\\binom" => 2,
        "\\sqrt" | "\\mathbb" | "\\mathrm" | "\\mathbf" | "\\mathcal" | "\\mathit" | "\\text"
        | "\\textrm" | "\\hat" | "\\bar" | "\\vec" | "\\tilde" | "\\overline" | "\\underline"
        | "\\dot" | "\\ddot" | "\\widehat" | "\\widetilde" | "\\boldsymbol" => 1,
        _ => 0,
    }
}

/// Tokenize into a brace tree; returns (tree, unmatched `}`, unclosed `{`).
fn parse(s: &str) -> (Vec<T>, usize, usize) {
    let chars: Vec<char> = s.chars().collect();
    let mut stack: Vec<Vec<T>> = vec![Vec::new()];
    let mut stray = 0;
    let mut i = 0;
    let mut drop_dot = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let mut j = i + 1;
            if chars[j].is_ascii_alphabetic() {
                while j < chars.len() && chars[j].is_ascii_alphabetic() {
                    j += 1;
                }
                // \operatorname*
                if j < chars.len()
                    && chars[j] == '*'
                    && chars[i + 1..j].iter().collect::<String>() == "operatorname"
                {
                    j += 1;
                }
            } else {
                j += 1;
            }
            let w: String = chars[i..j].iter().collect();
            let w = if w == "\\operatorname*" {
                "\\operatorname".to_string()
            } else {
                w
            };
            i = j;
            if dropped(&w) {
                drop_dot = w == "\\left" || w == "\\right";
                continue;
            }
            drop_dot = false;
            let w = alias(&w).map(str::to_string).unwrap_or(w);
            let t = if w.len() == 1 {
                T::Ch(w.chars().next().unwrap())
            } else {
                T::Ctrl(w)
            };
            stack.last_mut().unwrap().push(t);
            continue;
        }
        i += 1;
        if c.is_whitespace() || c == '~' || c == '\\' {
            continue;
        }
        if drop_dot && c == '.' {
            drop_dot = false;
            continue;
        }
        drop_dot = false;
        match c {
            '{' => stack.push(Vec::new()),
            '}' => {
                if stack.len() > 1 {
                    let g = stack.pop().unwrap();
                    stack.last_mut().unwrap().push(T::Group(g));
                } else {
                    stray += 1;
                }
            }
            '*' => stack.last_mut().unwrap().push(T::Ctrl("\\cdot".into())),
            _ => stack.last_mut().unwrap().push(T::Ch(c)),
        }
    }
    let unclosed = stack.len() - 1;
    while stack.len() > 1 {
        let g = stack.pop().unwrap();
        stack.last_mut().unwrap().push(T::Group(g));
    }
    (stack.pop().unwrap(), stray, unclosed)
}

fn flat_text(items: &[T]) -> String {
    let mut s = String::new();
    for t in items {
        match t {
            T::Ch(c) => s.push(*c),
            T::Ctrl(w) => s.push_str(w),
            T::Group(g) => s.push_str(&flat_text(g)),
        }
    }
    s
}

fn push(out: &mut String, piece: &str) {
    if piece.is_empty() {
        return;
    }
    let b = out.as_bytes();
    let mut k = b.len();
    while k > 0 && b[k - 1].is_ascii_alphabetic() {
        k -= 1;
    }
    let ctrl_end = k < b.len() && k > 0 && b[k - 1] == b'\\';
    if ctrl_end && piece.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.push(' ');
    }
    out.push_str(piece);
}

/// Emit `items[i]` as a braced argument; returns the next index.
fn arg(items: &[T], i: usize, out: &mut String) -> usize {
    match items.get(i) {
        None => {
            out.push_str("{}");
            i
        }
        Some(T::Group(g)) => {
            out.push('{');
            let mut inner = String::new();
            emit(g, &mut inner);
            out.push_str(&inner);
            out.push('}');
            i + 1
        }
        Some(t) => {
            out.push('{');
            let mut inner = String::new();
            emit(std::slice::from_ref(t), &mut inner);
            out.push_str(&inner);
            out.push('}');
            i + 1
        }
    }
}

fn emit(items: &[T], out: &mut String) {
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            T::Ch(c) if *c == '^' || *c == '_' => {
                out.push(*c);
                i = arg(items, i + 1, out);
            }
            T::Ch(c) => {
                push(out, &c.to_string());
                i += 1;
            }
            T::Group(g) => {
                // redundant braces: not an argument here
                emit(g, out);
                i += 1;
            }
            T::Ctrl(w) if w == "\\operatorname" || w == "\\mathrm" => {
                let text = match items.get(i + 1) {
                    Some(T::Group(g))
                        if g.iter()
                            .all(|t| matches!(t, T::Ch(c) if c.is_alphanumeric())) =>
                    {
                        flat_text(g)
                    }
                    Some(T::Ch(c)) if c.is_alphanumeric() => c.to_string(),
                    _ => {
                        // no argument, or a command: drop the wrapper
                        i += 1;
                        continue;
                    }
                };
                let next = (i + 2).min(items.len());
                if FUNCS.contains(&text.as_str()) {
                    push(out, &format!("\\{text}"));
                } else if w == "\\operatorname" || text == "d" {
                    push(out, &text);
                } else {
                    push(out, w);
                    arg(items, i + 1, out);
                }
                i = next;
            }
            T::Ctrl(w) => {
                push(out, w);
                i += 1;
                if w == "\\sqrt" && matches!(items.get(i), Some(T::Ch('['))) {
                    if let Some(k) = items[i..].iter().position(|t| *t == T::Ch(']')) {
                        out.push('[');
                        emit(&items[i + 1..i + k], out);
                        out.push(']');
                        i += k + 1;
                    }
                }
                for _ in 0..arity(w) {
                    i = arg(items, i, out);
                }
            }
        }
    }
}

fn strip_delims(s: &str) -> &str {
    let t = s.trim();
    for (a, b) in [("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)")] {
        if t.len() >= a.len() + b.len() && t.starts_with(a) && t.ends_with(b) {
            let inner = &t[a.len()..t.len() - b.len()];
            if !inner.contains('$') {
                return inner;
            }
        }
    }
    t
}

/// Normalize a LaTeX formula by the rules in the module table (best effort:
/// never fails; see [`check`] for whether the input parsed).
pub fn normalize(latex: &str) -> String {
    // One pass can expose more to normalize (repairing `$$}` leaves `$$`,
    // whose delimiters the next pass strips), so apply passes until nothing
    // changes; every pass shortens or keeps the text, so this ends quickly.
    let mut cur = normalize_once(latex);
    for _ in 0..8 {
        let next = normalize_once(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

fn normalize_once(latex: &str) -> String {
    let (tree, _, _) = parse(strip_delims(latex));
    let mut out = String::new();
    emit(&tree, &mut out);
    out
}

/// Whether a LaTeX string parses (balanced braces).
pub fn check(latex: &str) -> Result<(), LatexError> {
    let (_, stray, unclosed) = parse(latex);
    if stray > 0 || unclosed > 0 {
        Err(LatexError::Unbalanced(stray, unclosed))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        for (a, b) in [
            ("x^2 + 2x + 1 = 0", "x^{2}+2x+1=0"),
            ("$x^{2}$", "x^{2}"),
            ("\\left( a \\right)", "(a)"),
            ("\\left. f \\right|", "f|"),
            ("\\dfrac{1}{2}", "\\frac{1}{2}"),
            ("\\frac12", "\\frac{1}{2}"),
            ("a \\times b", "a\\cdot b"),
            ("a*b", "a\\cdot b"),
            ("\\int_0^1 f(x) \\, \\mathrm{d}x", "\\int_{0}^{1}f(x)dx"),
            ("\\displaystyle \\sum_{i=1}^n i", "\\sum_{i=1}^{n}i"),
            ("\\operatorname{sin} x", "\\sin x"),
            ("\\operatorname*{argmax} x", "argmaxx"),
            ("{x}+{{1}}", "x+1"),
            ("\\pi r^2", "\\pi r^{2}"),
            ("\\sqrt[3]{x}", "\\sqrt[3]{x}"),
            ("\\sqrt x", "\\sqrt{x}"),
            ("a \\le b", "a\\leq b"),
            ("\\mathbb R", "\\mathbb{R}"),
            ("x_{i}", "x_{i}"),
            ("$$}", ""),
        ] {
            assert_eq!(normalize(a), b, "{a}");
            assert_eq!(normalize(b), b, "idempotent {b}");
        }
    }

    #[test]
    fn unbalanced() {
        assert_eq!(check("\\frac{1}{2"), Err(LatexError::Unbalanced(0, 1)));
        assert_eq!(check("x}"), Err(LatexError::Unbalanced(1, 0)));
        assert!(check("x^{2}").is_ok());
        assert_eq!(normalize("\\frac{1}{2"), "\\frac{1}{2}");
    }
}
