//! Expression tree → LaTeX text. Binary operators and relations are spaced
//! (`x^{2} + 2x + 1 = 0`), implicit products are juxtaposed (`2x`), exponents,
//! subscripts and fraction parts are always braced (`x^{2}`, `\frac{1}{x}`).

use super::parser::Node;

/// Append `piece` to `out`, with a space where a control word would
/// otherwise run into a letter (`\pi r`), or two numbers would merge.
fn push_joined(out: &mut String, piece: &str) {
    if piece.is_empty() {
        return;
    }
    let last_ctrl = ends_with_control_word(out);
    let first = piece.chars().next().unwrap();
    if last_ctrl && first.is_ascii_alphabetic() {
        out.push(' ');
    } else if out.ends_with(|c: char| c.is_ascii_digit())
        && (first.is_ascii_digit() || first == '.')
    {
        out.push_str(" \\cdot ");
    }
    out.push_str(piece);
}

fn ends_with_control_word(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_alphabetic() {
        i -= 1;
    }
    i < b.len() && i > 0 && b[i - 1] == b'\\'
}

/// LaTeX for a node; `braced` is true inside `{…}` (quantities print bare).
pub fn emit(n: &Node, braced: bool) -> String {
    let mut out = String::new();
    write(n, braced, &mut out);
    out
}

fn needs_parens_as_base(n: &Node) -> bool {
    matches!(
        n,
        Node::Seq(_)
            | Node::Bin(..)
            | Node::Unary(..)
            | Node::Frac(..)
            | Node::Group(_)
            | Node::Func { .. }
            | Node::BigOp { .. }
            | Node::Pow(..)
    )
}

fn write(n: &Node, braced: bool, out: &mut String) {
    match n {
        Node::Atom(s) => push_joined(out, s),
        Node::Seq(items) => {
            for it in items {
                let s = match it {
                    Node::Bin(..) | Node::Unary(..) => format!("({})", emit(it, true)),
                    _ => emit(it, false),
                };
                push_joined(out, &s);
            }
        }
        Node::Bin(l, op, r) => {
            let ls = emit(l, braced);
            let rs = emit(r, braced);
            let s = match (ls.is_empty(), rs.is_empty()) {
                (true, _) => format!("{op} {rs}"),
                (_, true) => format!("{ls} {op}"),
                _ => format!("{ls} {op} {rs}"),
            };
            push_joined(out, &s);
        }
        Node::Unary(op, x) => {
            let xs = match **x {
                Node::Bin(..) => format!("({})", emit(x, true)),
                _ => emit(x, braced),
            };
            let sep = if op.starts_with('\\') && xs.starts_with(|c: char| c.is_ascii_alphabetic()) {
                " "
            } else {
                ""
            };
            push_joined(out, &format!("{op}{sep}{xs}"));
        }
        Node::Frac(a, b) => {
            push_joined(
                out,
                &format!("\\frac{{{}}}{{{}}}", emit(a, true), emit(b, true)),
            );
        }
        Node::Pow(b, e) => {
            let bs = base(b);
            push_joined(out, &format!("{bs}^{{{}}}", emit(e, true)));
        }
        Node::Sub(b, s) => {
            let bs = base(b);
            push_joined(out, &format!("{bs}_{{{}}}", emit(s, true)));
        }
        Node::Root(idx, a) => {
            let s = match idx {
                Some(i) => format!("\\sqrt[{}]{{{}}}", emit(i, true), emit(a, true)),
                None => format!("\\sqrt{{{}}}", emit(a, true)),
            };
            push_joined(out, &s);
        }
        Node::Group(x) => {
            if braced {
                write(x, true, out)
            } else {
                push_joined(out, &format!("({})", emit(x, true)))
            }
        }
        Node::Paren(c, x) => {
            let (o, cl) = match c {
                b'[' => ("[", "]"),
                b'{' => ("\\{", "\\}"),
                _ => ("(", ")"),
            };
            push_joined(out, &format!("{o}{}{cl}", emit(x, true)));
        }
        Node::Abs(x) => push_joined(out, &format!("|{}|", emit(x, true))),
        Node::Postfix(x, p) => {
            let xs = base(x);
            push_joined(out, &format!("{xs}{p}"));
        }
        Node::Apply(f, a) => {
            let fs = emit(f, false);
            push_joined(out, &format!("{fs}({})", emit(a, true)));
        }
        Node::Func {
            name,
            sub,
            sup,
            arg,
        } => {
            let mut s = name.to_string();
            if let Some(b) = sub {
                s.push_str(&format!("_{{{}}}", emit(b, true)));
            }
            if let Some(p) = sup {
                s.push_str(&format!("^{{{}}}", emit(p, true)));
            }
            if let Some(a) = arg {
                match **a {
                    Node::Atom(_)
                    | Node::Seq(_)
                    | Node::Pow(..)
                    | Node::Sub(..)
                    | Node::Frac(..)
                    | Node::Postfix(..)
                    | Node::Apply(..)
                    | Node::Root(..) => {
                        let a = emit(a, false);
                        if a.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '\\') {
                            s.push(' ');
                        }
                        s.push_str(&a);
                    }
                    Node::Paren(..) | Node::Abs(..) => s.push_str(&emit(a, false)),
                    _ => s.push_str(&format!("({})", emit(a, true))),
                }
            }
            push_joined(out, &s);
        }
        Node::BigOp {
            op,
            lower,
            upper,
            body,
            dx,
        } => {
            let mut s = op.to_string();
            if let Some(l) = lower {
                s.push_str(&format!("_{{{}}}", emit(l, true)));
            }
            if let Some(u) = upper {
                s.push_str(&format!("^{{{}}}", emit(u, true)));
            }
            if let Some(b) = body {
                let bs = match **b {
                    Node::Bin(..) if *op != "\\int" => format!("({})", emit(b, true)),
                    _ => emit(b, *op == "\\int"),
                };
                s.push(' ');
                s.push_str(&bs);
            }
            if let Some(v) = dx {
                s.push_str(&format!(" \\, d{v}"));
            }
            push_joined(out, &s);
        }
        Node::Deriv { d, order, num, var } => {
            let sp = if d.starts_with('\\') { " " } else { "" };
            let (top, bot) = match order {
                Some(o) => {
                    let o = emit(o, true);
                    (
                        format!("{d}^{{{o}}}"),
                        format!("{d}{sp}{}^{{{o}}}", emit(var, true)),
                    )
                }
                None => (d.to_string(), format!("{d}{sp}{}", emit(var, true))),
            };
            let top = match num {
                Some(n) => format!("{top}{sp}{}", emit(n, true)),
                None => top,
            };
            push_joined(out, &format!("\\frac{{{top}}}{{{bot}}}"));
        }
        Node::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| emit(i, true)).collect();
            push_joined(out, &parts.join(", "));
        }
    }
}

fn base(b: &Node) -> String {
    if needs_parens_as_base(b) {
        format!("({})", emit(b, true))
    } else {
        emit(b, false)
    }
}
