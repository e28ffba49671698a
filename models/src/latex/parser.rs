//! Tokens → expression tree, by recursive descent. Precedence, loosest first:
//! relations (`=`, `<`, `\in`, `\to`) → `+ − ±` and set operators →
//! `× ÷` → "over" (fraction) → juxtaposition (implicit product) → postfix
//! (squared, to the power of, sub, factorial, "of" application) → atoms.
//!
//! Scope rules (documented, deterministic):
//! - "over" / "divided by" take the nearest product on each side:
//!   "one over x plus one" → `\frac{1}{x} + 1`; "two x over three" → `\frac{2x}{3}`.
//! - "the quantity …" groups everything up to "end quantity", a closing word,
//!   a relation or the end: "one over the quantity x plus one" → `\frac{1}{x + 1}`.
//!   Outside braces a quantity is printed in parentheses.
//! - "the fraction A over B": A runs up to "over", B is one product.
//! - Exponents ("to the power of"), subscripts ("sub") and roots take one
//!   product of atoms: "e to the power of two x" → `e^{2x}`,
//!   "x to the power of n plus one" → `x^{n} + 1`.
//! - "f of x" applies a letter to the next postfix term: `f(x)`; functions
//!   (sin, log, …) take the following product: "sine two x" → `\sin 2x`.
//! - Integrals run to "d <var>"; sums, products and limits take one product.
//! - A letter directly followed by a number word is subscripted: "x one" → `x_{1}`.

use super::lexer::Lexed;
use super::lexicon::{Kw, Lang, Tok};

/// Expression tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Atom(String),
    /// Implicit product (juxtaposition).
    Seq(Vec<Node>),
    /// Binary operator or relation, printed spaced.
    Bin(Box<Node>, &'static str, Box<Node>),
    /// Unary prefix (`-`, `\pm`).
    Unary(&'static str, Box<Node>),
    Frac(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Sub(Box<Node>, Box<Node>),
    Root(Option<Box<Node>>, Box<Node>),
    /// "the quantity …": parentheses unless inside braces.
    Group(Box<Node>),
    Paren(u8, Box<Node>),
    Abs(Box<Node>),
    Postfix(Box<Node>, &'static str),
    /// `f(x)`
    Apply(Box<Node>, Box<Node>),
    Func {
        name: &'static str,
        sub: Option<Box<Node>>,
        sup: Option<Box<Node>>,
        arg: Option<Box<Node>>,
    },
    BigOp {
        op: &'static str,
        lower: Option<Box<Node>>,
        upper: Option<Box<Node>>,
        body: Option<Box<Node>>,
        dx: Option<String>,
    },
    Deriv {
        d: &'static str,
        order: Option<Box<Node>>,
        num: Option<Box<Node>>,
        var: Box<Node>,
    },
    List(Vec<Node>),
}

#[derive(Clone, Copy, Default)]
struct Stops {
    of: bool,
    to: bool,
    over: bool,
    times: bool,
    dx: bool,
    rel: bool,
    func: bool,
}

/// The parser: walks `toks`, records words it could not place.
pub struct Parser<'a> {
    toks: &'a [Lexed],
    pos: usize,
    lang: Lang,
    /// Token indices that were skipped.
    pub skipped: Vec<usize>,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl<'a> Parser<'a> {
    pub fn new(toks: &'a [Lexed], lang: Lang) -> Self {
        Parser {
            toks,
            pos: 0,
            lang,
            skipped: Vec::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|l| &l.tok)
    }
    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|l| &l.tok)
    }
    fn is_kw(&self, k: Kw) -> bool {
        matches!(self.peek(), Some(Tok::Kw(x)) if *x == k)
    }
    fn eat_kw(&mut self, k: Kw) -> bool {
        if self.is_kw(k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn skip_text(&mut self) {
        while matches!(self.peek(), Some(Tok::Text)) {
            self.pos += 1;
        }
    }

    /// Parse everything: a list of top-level expressions (separated by commas
    /// or by words that could not be placed).
    pub fn parse_all(&mut self) -> Vec<Node> {
        let mut out = Vec::new();
        while self.pos < self.toks.len() {
            let start = self.pos;
            if let Some(n) = self.relation(Stops::default()) {
                out.push(n);
            }
            if self.pos == start {
                match self.peek() {
                    Some(Tok::Kw(Kw::Comma)) => out.push(Node::Atom(",".into())),
                    Some(Tok::Text) => {}
                    _ => self.skipped.push(self.pos),
                }
                self.pos += 1;
            }
        }
        out
    }

    fn relation(&mut self, st: Stops) -> Option<Node> {
        self.skip_text();
        let mut lhs = self.additive(st);
        loop {
            self.skip_text();
            let Some(Tok::Rel(r)) = self.peek() else {
                break;
            };
            if st.rel && *r != "=" || st.rel && st.to && *r == "\\to" {
                break;
            }
            let r = *r;
            self.pos += 1;
            let rhs = self.additive(st);
            let l = lhs.unwrap_or(Node::Atom(String::new()));
            let rr = rhs.unwrap_or(Node::Atom(String::new()));
            lhs = Some(Node::Bin(Box::new(l), r, Box::new(rr)));
        }
        lhs
    }

    fn additive(&mut self, st: Stops) -> Option<Node> {
        self.skip_text();
        let mut lhs = match self.peek() {
            Some(Tok::Kw(Kw::Minus)) => {
                self.pos += 1;
                let t = self.mult(st)?;
                Some(Node::Unary("-", Box::new(t)))
            }
            Some(Tok::Kw(Kw::PlusMinus)) => {
                self.pos += 1;
                let t = self.mult(st)?;
                Some(Node::Unary("\\pm", Box::new(t)))
            }
            _ => self.mult(st),
        }?;
        loop {
            let op = match self.peek() {
                Some(Tok::Kw(Kw::Plus)) => "+",
                Some(Tok::Kw(Kw::Minus)) => "-",
                Some(Tok::Kw(Kw::PlusMinus)) => "\\pm",
                Some(Tok::Kw(Kw::MinusPlus)) => "\\mp",
                Some(Tok::SetOp(s)) => s,
                _ => break,
            };
            let save = self.pos;
            self.pos += 1;
            match self.mult(st) {
                Some(rhs) => lhs = Node::Bin(Box::new(lhs), op, Box::new(rhs)),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        Some(lhs)
    }

    fn mult(&mut self, st: Stops) -> Option<Node> {
        let mut lhs = self.frac(st)?;
        loop {
            let op = match self.peek() {
                Some(Tok::Kw(Kw::Times)) if !st.times => "\\times",
                Some(Tok::Kw(Kw::Div)) => "\\div",
                _ => break,
            };
            let save = self.pos;
            self.pos += 1;
            match self.frac(st) {
                Some(rhs) => lhs = Node::Bin(Box::new(lhs), op, Box::new(rhs)),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        Some(lhs)
    }

    fn frac(&mut self, st: Stops) -> Option<Node> {
        let mut lhs = self.juxt(st)?;
        while !st.over && self.is_kw(Kw::Over) {
            let save = self.pos;
            self.pos += 1;
            match self.juxt(st) {
                Some(rhs) => lhs = Node::Frac(Box::new(lhs), Box::new(rhs)),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        Some(lhs)
    }

    fn starts_primary(&self, st: Stops) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Const(_)) => true,
            Some(Tok::Ident(s)) => {
                !(st.dx && s == "d" && matches!(self.peek_at(1), Some(Tok::Ident(_))))
            }
            Some(Tok::Func(_)) => !st.func,
            Some(Tok::Ordinal(_)) => matches!(self.peek_at(1), Some(Tok::Kw(Kw::Root | Kw::Sqrt))),
            Some(Tok::Kw(k)) => matches!(
                k,
                Kw::Fraction
                    | Kw::Quantity
                    | Kw::Sqrt
                    | Kw::CubeRoot
                    | Kw::Open(_)
                    | Kw::InBrackets
                    | Kw::Abs
                    | Kw::Integral
                    | Kw::Sum
                    | Kw::Prod
                    | Kw::Limit
                    | Kw::Partial
            ),
            _ => false,
        }
    }

    fn juxt(&mut self, st: Stops) -> Option<Node> {
        let mut items = Vec::new();
        if matches!(self.peek(), Some(Tok::Kw(Kw::Minus)))
            && matches!(
                self.peek_at(1),
                Some(Tok::Num(_) | Tok::Ident(_) | Tok::Const(_))
            )
        {
            // unary minus inside a product: "x times minus two"
            self.pos += 1;
            let t = self.postfix(st)?;
            items.push(Node::Unary("-", Box::new(t)));
        }
        while self.starts_primary(st) {
            let save = self.pos;
            match self.postfix(st) {
                Some(n) => items.push(n),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        match items.len() {
            0 => None,
            1 => items.pop(),
            _ => Some(Node::Seq(items)),
        }
    }

    /// One product of atoms for an exponent, subscript or root index.
    fn small(&mut self, st: Stops) -> Option<Node> {
        if self.eat_kw(Kw::Quantity) {
            let inner = self.additive(st)?;
            self.eat_kw(Kw::EndQuantity);
            return Some(Node::Group(Box::new(inner)));
        }
        let neg = self.eat_kw(Kw::Minus);
        let mut items = Vec::new();
        while matches!(
            self.peek(),
            Some(Tok::Num(_) | Tok::Ident(_) | Tok::Const(_))
        ) {
            if st.dx && matches!(self.peek(), Some(Tok::Ident(s)) if s == "d") {
                break;
            }
            items.push(self.atom_only());
            if matches!(items.last(), Some(Node::Atom(a)) if a.chars().all(|c| c.is_ascii_digit()))
                && matches!(self.peek(), Some(Tok::Num(_)))
            {
                break;
            }
        }
        let n = match items.len() {
            0 => return None,
            1 => items.pop().unwrap(),
            _ => Node::Seq(items),
        };
        Some(if neg {
            Node::Unary("-", Box::new(n))
        } else {
            n
        })
    }

    fn atom_only(&mut self) -> Node {
        let t = self.peek().cloned();
        self.pos += 1;
        match t {
            Some(Tok::Num(s)) | Some(Tok::Ident(s)) => Node::Atom(s),
            Some(Tok::Const(c)) => Node::Atom(c.to_string()),
            _ => Node::Atom(String::new()),
        }
    }

    fn postfix(&mut self, st: Stops) -> Option<Node> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return None;
        }
        let r = self.postfix_inner(st);
        self.depth -= 1;
        r
    }

    fn exponent_after(&mut self, base: Node, st: Stops) -> Node {
        // after "to the power of" / "to the" / "в степени"
        if let Some(Tok::Ordinal(o)) = self.peek().cloned() {
            self.pos += 1;
            self.eat_kw(Kw::Power);
            return Node::Pow(Box::new(base), Box::new(Node::Atom(o)));
        }
        match self.small(st) {
            Some(e) => {
                self.eat_kw(Kw::Power);
                Node::Pow(Box::new(base), Box::new(e))
            }
            None => base,
        }
    }

    fn postfix_inner(&mut self, st: Stops) -> Option<Node> {
        let was_letter = matches!(self.peek(), Some(Tok::Ident(_)));
        let mut n = self.primary(st)?;
        loop {
            match self.peek().cloned() {
                Some(Tok::Kw(Kw::Squared)) => {
                    self.pos += 1;
                    n = Node::Pow(Box::new(n), Box::new(Node::Atom("2".into())));
                }
                Some(Tok::Kw(Kw::Cubed)) => {
                    self.pos += 1;
                    n = Node::Pow(Box::new(n), Box::new(Node::Atom("3".into())));
                }
                Some(Tok::Kw(Kw::PowerOf)) => {
                    self.pos += 1;
                    n = self.exponent_after(n, st);
                }
                Some(Tok::Kw(Kw::ToThe)) => {
                    let ok = matches!(
                        self.peek_at(1),
                        Some(
                            Tok::Ordinal(_)
                                | Tok::Num(_)
                                | Tok::Ident(_)
                                | Tok::Kw(Kw::Minus | Kw::Quantity)
                        )
                    );
                    if !ok {
                        break;
                    }
                    self.pos += 1;
                    n = self.exponent_after(n, st);
                }
                Some(Tok::Kw(Kw::Sub)) => {
                    self.pos += 1;
                    if let Some(s) = self.small(st) {
                        n = Node::Sub(Box::new(n), Box::new(s));
                    }
                }
                Some(Tok::Kw(Kw::Factorial)) => {
                    self.pos += 1;
                    n = Node::Postfix(Box::new(n), "!");
                }
                Some(Tok::Kw(Kw::Prime)) => {
                    self.pos += 1;
                    n = Node::Postfix(Box::new(n), "'");
                }
                Some(Tok::Num(s))
                    if was_letter && matches!(n, Node::Atom(_)) && !s.contains('.') =>
                {
                    // "x one" → x_{1}
                    self.pos += 1;
                    n = Node::Sub(Box::new(n), Box::new(Node::Atom(s)));
                }
                Some(Tok::Kw(Kw::Of)) if !st.of && was_letter && is_applicable(&n) => {
                    let save = self.pos;
                    self.pos += 1;
                    match self.postfix(Stops { func: false, ..st }) {
                        Some(arg) => n = Node::Apply(Box::new(n), Box::new(arg)),
                        None => {
                            self.pos = save;
                            break;
                        }
                    }
                }
                _ => break,
            }
        }
        Some(n)
    }

    fn primary(&mut self, st: Stops) -> Option<Node> {
        let t = self.peek()?.clone();
        match t {
            Tok::Num(_) | Tok::Const(_) => Some(self.atom_only()),
            Tok::Ident(ref s) if s == "d" => {
                if let Some(d) = self.derivative("d") {
                    return Some(d);
                }
                Some(self.atom_only())
            }
            Tok::Ident(_) => Some(self.atom_only()),
            Tok::Kw(Kw::Partial) => {
                if let Some(d) = self.derivative("\\partial") {
                    return Some(d);
                }
                self.pos += 1;
                Some(Node::Atom("\\partial".into()))
            }
            Tok::Kw(Kw::Quantity) => {
                self.pos += 1;
                let inner = self.additive(Stops::default())?;
                self.eat_kw(Kw::EndQuantity);
                Some(Node::Group(Box::new(inner)))
            }
            Tok::Kw(Kw::Fraction) => {
                self.pos += 1;
                let ru = self.lang == Lang::Ru;
                let num = self.additive(Stops {
                    over: true,
                    times: ru,
                    ..st
                })?;
                if self.eat_kw(Kw::Over) || (ru && self.eat_kw(Kw::Times)) {
                    let den = self.juxt(st).unwrap_or(Node::Atom(String::new()));
                    Some(Node::Frac(Box::new(num), Box::new(den)))
                } else {
                    Some(num)
                }
            }
            Tok::Kw(Kw::Sqrt) => {
                self.pos += 1;
                let mut idx = None;
                if let Some(Tok::Ordinal(o)) = self.peek().cloned() {
                    // "корень энной степени из икс"
                    self.pos += 1;
                    if !self.eat_kw(Kw::Power) {
                        self.eat_kw(Kw::PowerOf);
                    }
                    idx = Some(Box::new(Node::Atom(o)));
                }
                self.eat_kw(Kw::Of);
                let a = self.radicand(st)?;
                Some(Node::Root(idx, Box::new(a)))
            }
            Tok::Kw(Kw::CubeRoot) => {
                self.pos += 1;
                self.eat_kw(Kw::Of);
                let a = self.radicand(st)?;
                Some(Node::Root(
                    Some(Box::new(Node::Atom("3".into()))),
                    Box::new(a),
                ))
            }
            Tok::Ordinal(o) => {
                // "n-th root of x", "fifth root of x"
                self.pos += 1;
                self.eat_kw(Kw::Root);
                self.eat_kw(Kw::Sqrt);
                self.eat_kw(Kw::Of);
                let a = self.radicand(st)?;
                Some(Node::Root(Some(Box::new(Node::Atom(o))), Box::new(a)))
            }
            Tok::Kw(Kw::Open(c)) => {
                self.pos += 1;
                let inner = self
                    .relation(Stops::default())
                    .unwrap_or(Node::Atom(String::new()));
                let inner = self.list_tail(inner);
                self.eat_kw(Kw::Close);
                Some(Node::Paren(c, Box::new(inner)))
            }
            Tok::Kw(Kw::InBrackets) => {
                self.pos += 1;
                let inner = self.additive(st)?;
                self.eat_kw(Kw::Close);
                Some(Node::Paren(b'(', Box::new(inner)))
            }
            Tok::Kw(Kw::Abs) => {
                self.pos += 1;
                self.eat_kw(Kw::Of);
                let a = self.juxt(Stops { func: true, ..st })?;
                Some(Node::Abs(Box::new(a)))
            }
            Tok::Func(name) => {
                self.pos += 1;
                let mut sub = None;
                let mut sup = None;
                loop {
                    if self.eat_kw(Kw::Base) || self.is_kw(Kw::Sub) {
                        self.eat_kw(Kw::Sub);
                        sub = self.small(st).map(Box::new);
                    } else if self.eat_kw(Kw::Squared) {
                        sup = Some(Box::new(Node::Atom("2".into())));
                    } else if self.eat_kw(Kw::Cubed) {
                        sup = Some(Box::new(Node::Atom("3".into())));
                    } else if self.eat_kw(Kw::PowerOf) {
                        sup = self.small(st).map(Box::new);
                    } else {
                        break;
                    }
                }
                if name == "\\log" && sub.is_none() && self.is_kw(Kw::Sub) {
                    self.pos += 1;
                }
                self.eat_kw(Kw::Of);
                let arg = self.juxt(Stops { func: true, ..st }).map(Box::new);
                Some(Node::Func {
                    name,
                    sub,
                    sup,
                    arg,
                })
            }
            Tok::Kw(Kw::Integral) => {
                self.pos += 1;
                Some(self.bigop("\\int", st))
            }
            Tok::Kw(Kw::Sum) => {
                self.pos += 1;
                Some(self.bigop("\\sum", st))
            }
            Tok::Kw(Kw::Prod) => {
                self.pos += 1;
                Some(self.bigop("\\prod", st))
            }
            Tok::Kw(Kw::Limit) => {
                self.pos += 1;
                self.eat_kw(Kw::As);
                let save = self.pos;
                let simple = if let (Some(Tok::Ident(_)), Some(Tok::Rel("\\to"))) =
                    (self.peek(), self.peek_at(1))
                {
                    let v = self.atom_only();
                    self.pos += 1;
                    self.bound()
                        .map(|t| Node::Bin(Box::new(v), "\\to", Box::new(t)))
                } else {
                    None
                };
                let lower = match simple {
                    Some(n) => Some(Box::new(n)),
                    None => {
                        self.pos = save;
                        self.relation(Stops {
                            of: true,
                            ..Stops::default()
                        })
                        .map(Box::new)
                    }
                };
                self.eat_kw(Kw::Of);
                let body = self.mult(st).map(Box::new);
                Some(Node::BigOp {
                    op: "\\lim",
                    lower,
                    upper: None,
                    body,
                    dx: None,
                })
            }
            _ => None,
        }
    }

    /// An upper bound or limit target: one atom (with an optional minus) or a quantity.
    fn bound(&mut self) -> Option<Node> {
        if self.is_kw(Kw::Quantity) {
            return self.small(Stops::default());
        }
        let neg = self.eat_kw(Kw::Minus);
        if !matches!(
            self.peek(),
            Some(Tok::Num(_) | Tok::Ident(_) | Tok::Const(_))
        ) {
            return None;
        }
        let a = self.atom_only();
        Some(if neg {
            Node::Unary("-", Box::new(a))
        } else {
            a
        })
    }

    fn radicand(&mut self, st: Stops) -> Option<Node> {
        self.juxt(Stops { func: false, ..st })
    }

    /// `a, b, c` inside brackets.
    fn list_tail(&mut self, first: Node) -> Node {
        if !self.is_kw(Kw::Comma) {
            return first;
        }
        let mut items = vec![first];
        while self.eat_kw(Kw::Comma) {
            match self.relation(Stops::default()) {
                Some(n) => items.push(n),
                None => break,
            }
        }
        Node::List(items)
    }

    /// True when a "to" bound comes before the body's end.
    fn has_to_ahead(&self) -> bool {
        for (k, l) in self.toks[self.pos..].iter().enumerate() {
            match &l.tok {
                Tok::Kw(Kw::To) => return true,
                Tok::Ident(s)
                    if s == "d"
                        && matches!(
                            self.toks.get(self.pos + k + 1).map(|l| &l.tok),
                            Some(Tok::Ident(_))
                        ) =>
                {
                    return false
                }
                Tok::Kw(Kw::Integral | Kw::Sum | Kw::Prod) => return false,
                _ => {}
            }
        }
        false
    }

    fn bigop(&mut self, op: &'static str, st: Stops) -> BigOpNode {
        let mut lower = None;
        let mut upper = None;
        let from = self.is_kw(Kw::From)
            || self.is_kw(Kw::Over)
            || (self.is_kw(Kw::Of) && self.has_to_ahead());
        if from {
            self.pos += 1;
            lower = self
                .relation(Stops {
                    to: true,
                    of: true,
                    rel: true,
                    ..Stops::default()
                })
                .map(Box::new);
            if self.eat_kw(Kw::To) {
                upper = self.bound().map(Box::new);
            }
        }
        self.eat_kw(Kw::Of);
        let is_int = op == "\\int";
        let body = if is_int {
            self.additive(Stops {
                dx: true,
                ..Stops::default()
            })
        } else {
            self.mult(st)
        }
        .map(Box::new);
        let mut dx = None;
        if is_int {
            if let (Some(Tok::Ident(d)), Some(Tok::Ident(v))) = (self.peek(), self.peek_at(1)) {
                if d == "d" {
                    dx = Some(v.clone());
                    self.pos += 2;
                }
            }
        }
        Node::BigOp {
            op,
            lower,
            upper,
            body,
            dx,
        }
    }

    /// "d y by d x", "d by d x", "d squared y by d x squared", "partial f by partial x".
    fn derivative(&mut self, d: &'static str) -> Option<Node> {
        let save = self.pos;
        let dtok = self.peek()?.clone();
        self.pos += 1;
        let mut order = None;
        if self.eat_kw(Kw::Squared) {
            order = Some(Box::new(Node::Atom("2".into())));
        }
        let num = match self.peek() {
            Some(Tok::Ident(_)) => Some(Box::new(self.atom_only())),
            _ => None,
        };
        if !(self.eat_kw(Kw::By) || self.eat_kw(Kw::Over) || self.eat_kw(Kw::To)) {
            self.pos = save;
            return None;
        }
        if self.peek() != Some(&dtok) {
            self.pos = save;
            return None;
        }
        self.pos += 1;
        let Some(Tok::Ident(_)) = self.peek() else {
            self.pos = save;
            return None;
        };
        let var = self.atom_only();
        if order.is_some() {
            self.eat_kw(Kw::Squared);
        }
        Some(Node::Deriv {
            d,
            order,
            num,
            var: Box::new(var),
        })
    }
}

type BigOpNode = Node;

fn is_applicable(n: &Node) -> bool {
    matches!(n, Node::Atom(_) | Node::Sub(..) | Node::Postfix(..))
}
