//! Word tables for the rules converter: number words, letters, Greek letters
//! and multi-word maths phrases, for English and Russian. Each phrase maps to
//! one [`Tok`]; the lexer matches the longest phrase first.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Language of the spoken input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// `en` / `ru` (also `eng`, `rus`).
    pub fn parse(s: &str) -> Option<Lang> {
        match s.to_ascii_lowercase().as_str() {
            "en" | "eng" | "english" => Some(Lang::En),
            "ru" | "rus" | "russian" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// Russian when the text has Cyrillic letters, else English.
    pub fn detect(text: &str) -> Lang {
        if text.chars().any(|c| ('\u{400}'..='\u{4ff}').contains(&c)) {
            Lang::Ru
        } else {
            Lang::En
        }
    }
}

/// Keywords: operators and structure words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kw {
    Plus,
    Minus,
    PlusMinus,
    MinusPlus,
    Times,
    Div,
    Over,
    Fraction,
    Quantity,
    EndQuantity,
    Squared,
    Cubed,
    PowerOf,
    ToThe,
    Power,
    Sqrt,
    CubeRoot,
    Root,
    Sub,
    Base,
    Of,
    From,
    To,
    Integral,
    Sum,
    Prod,
    Limit,
    As,
    By,
    Partial,
    Open(u8),
    Close,
    InBrackets,
    Abs,
    Factorial,
    Prime,
    Comma,
    Point,
}

/// One lexed unit of spoken maths.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A number (digits as written in LaTeX).
    Num(String),
    /// A single-letter variable or Greek letter, as LaTeX.
    Ident(String),
    /// A constant symbol (`\infty`, `\emptyset`, `\mathbb{R}`, `\forall`).
    Const(&'static str),
    /// A function name (`\sin`, `\log`).
    Func(&'static str),
    /// A relation or arrow (`=`, `\leq`, `\to`, `\in`).
    Rel(&'static str),
    /// A set operator (`\cup`, `\cap`, `\setminus`).
    SetOp(&'static str),
    /// An ordinal ("fourth" → `4`, "n-th" → `n`).
    Ordinal(String),
    Kw(Kw),
    /// A word that is sentence text ("is", "the", "where").
    Text,
    /// A word the converter does not know.
    Unknown,
}

/// Number words: value and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumClass {
    /// 0–9
    Unit,
    /// 10–19
    Teen,
    /// 20, 30, …, 90
    Ten,
    /// 100–900 (Russian "двести" = 200)
    Hundreds,
    /// "hundred" multiplier
    Hundred,
    /// 1000, 10^6 multipliers
    Scale,
}

/// Tables for one language.
pub struct Lexicon {
    pub numbers: HashMap<&'static str, (u64, NumClass)>,
    /// first word → phrases (word list, token), longest first
    pub phrases: HashMap<&'static str, Vec<(Vec<&'static str>, Tok)>>,
    /// words that are text in a sentence and filler in maths
    pub text_words: HashMap<&'static str, ()>,
}

const GREEK: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega",
];
const GREEK_CAP: &[&str] = &[
    "gamma", "delta", "theta", "lambda", "xi", "pi", "sigma", "upsilon", "phi", "psi", "omega",
];
const GREEK_RU: &[(&str, &str)] = &[
    ("альфа", "alpha"),
    ("бета", "beta"),
    ("гамма", "gamma"),
    ("дельта", "delta"),
    ("эпсилон", "epsilon"),
    ("дзета", "zeta"),
    ("эта", "eta"),
    ("тета", "theta"),
    ("йота", "iota"),
    ("каппа", "kappa"),
    ("лямбда", "lambda"),
    ("мю", "mu"),
    ("ню", "nu"),
    ("кси", "xi"),
    ("пи", "pi"),
    ("ро", "rho"),
    ("сигма", "sigma"),
    ("тау", "tau"),
    ("ипсилон", "upsilon"),
    ("фи", "phi"),
    ("хи", "chi"),
    ("пси", "psi"),
    ("омега", "omega"),
];
const LETTERS_RU: &[(&str, &str)] = &[
    ("а", "a"),
    ("бэ", "b"),
    ("бе", "b"),
    ("цэ", "c"),
    ("це", "c"),
    ("дэ", "d"),
    ("де", "d"),
    ("е", "e"),
    ("эф", "f"),
    ("же", "g"),
    ("жэ", "g"),
    ("джи", "g"),
    ("аш", "h"),
    ("ай", "i"),
    ("жи", "j"),
    ("джей", "j"),
    ("ка", "k"),
    ("эль", "l"),
    ("эм", "m"),
    ("эн", "n"),
    ("пэ", "p"),
    ("пе", "p"),
    ("ку", "q"),
    ("эр", "r"),
    ("эс", "s"),
    ("тэ", "t"),
    ("те", "t"),
    ("вэ", "v"),
    ("ве", "v"),
    ("икс", "x"),
    ("игрек", "y"),
    ("зет", "z"),
    ("зэт", "z"),
];
const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "max", "min", "det",
];

fn func_latex(name: &str) -> &'static str {
    match name {
        "sin" => "\\sin",
        "cos" => "\\cos",
        "tan" => "\\tan",
        "cot" => "\\cot",
        "sec" => "\\sec",
        "csc" => "\\csc",
        "log" => "\\log",
        "ln" => "\\ln",
        "exp" => "\\exp",
        "arcsin" => "\\arcsin",
        "arccos" => "\\arccos",
        "arctan" => "\\arctan",
        "sinh" => "\\sinh",
        "cosh" => "\\cosh",
        "tanh" => "\\tanh",
        "max" => "\\max",
        "min" => "\\min",
        _ => "\\det",
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

struct Builder {
    lex: Lexicon,
}

impl Builder {
    fn new() -> Self {
        Builder {
            lex: Lexicon {
                numbers: HashMap::new(),
                phrases: HashMap::new(),
                text_words: HashMap::new(),
            },
        }
    }
    fn p(&mut self, phrase: &'static str, tok: Tok) {
        let words: Vec<&'static str> = phrase.split(' ').collect();
        let v = self.lex.phrases.entry(words[0]).or_default();
        v.push((words, tok));
    }
    fn kw(&mut self, phrases: &[&'static str], k: Kw) {
        for p in phrases {
            self.p(p, Tok::Kw(k));
        }
    }
    fn rel(&mut self, phrases: &[&'static str], r: &'static str) {
        for p in phrases {
            self.p(p, Tok::Rel(r));
        }
    }
    fn n(&mut self, words: &[&'static str], v: u64, c: NumClass) {
        for w in words {
            self.lex.numbers.insert(w, (v, c));
        }
    }
    fn finish(mut self) -> Lexicon {
        for v in self.lex.phrases.values_mut() {
            v.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        }
        self.lex
    }
}

fn english() -> Lexicon {
    use NumClass::*;
    let mut b = Builder::new();
    let units = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    for (i, w) in units.iter().enumerate() {
        b.n(&[w], i as u64, Unit);
    }
    b.n(&["oh"], 0, Unit);
    let teens = [
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
    for (i, w) in teens.iter().enumerate() {
        b.n(&[w], 10 + i as u64, Teen);
    }
    let tens = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    for (i, w) in tens.iter().enumerate() {
        b.n(&[w], 20 + 10 * i as u64, Ten);
    }
    b.n(&["hundred"], 100, Hundred);
    b.n(&["thousand"], 1000, Scale);
    b.n(&["million"], 1_000_000, Scale);
    // letters
    for c in 'a'..='z' {
        let s = leak(c.to_string());
        b.p(s, Tok::Ident(s.to_string()));
        let up = c.to_ascii_uppercase().to_string();
        b.p(leak(format!("capital {c}")), Tok::Ident(up.clone()));
        b.p(leak(format!("big {c}")), Tok::Ident(up));
    }
    b.p("ex", Tok::Ident("x".into()));
    for g in GREEK {
        b.p(g, Tok::Ident(format!("\\{g}")));
    }
    for g in GREEK_CAP {
        let cap = format!("\\{}{}", g[..1].to_ascii_uppercase(), &g[1..]);
        b.p(leak(format!("capital {g}")), Tok::Ident(cap.clone()));
        b.p(leak(format!("big {g}")), Tok::Ident(cap));
    }
    b.p("varepsilon", Tok::Ident("\\varepsilon".into()));
    b.p("varphi", Tok::Ident("\\varphi".into()));
    for f in FUNCS {
        b.p(f, Tok::Func(func_latex(f)));
    }
    for (p, f) in [
        ("sine", "sin"),
        ("cosine", "cos"),
        ("tangent", "tan"),
        ("cotangent", "cot"),
        ("secant", "sec"),
        ("cosecant", "csc"),
        ("logarithm", "log"),
        ("the logarithm", "log"),
        ("the log", "log"),
        ("natural log", "ln"),
        ("natural logarithm", "ln"),
        ("the natural log", "ln"),
        ("the natural logarithm", "ln"),
        ("log natural", "ln"),
        ("exponential", "exp"),
        ("the exponential", "exp"),
        ("arc sine", "arcsin"),
        ("arc cosine", "arccos"),
        ("arc tangent", "arctan"),
        ("the sine", "sin"),
        ("the cosine", "cos"),
        ("the tangent", "tan"),
        ("the maximum", "max"),
        ("the minimum", "min"),
        ("the determinant", "det"),
    ] {
        b.p(p, Tok::Func(func_latex(f)));
    }
    use Kw::*;
    b.kw(&["plus"], Plus);
    b.kw(&["minus", "negative"], Minus);
    b.kw(&["plus or minus", "plus minus"], PlusMinus);
    b.kw(&["minus or plus", "minus plus"], MinusPlus);
    b.kw(&["times", "multiplied by", "cross"], Times);
    b.kw(&["divide", "division sign", "obelus"], Div);
    b.kw(&["over", "divided by"], Over);
    b.kw(&["the fraction", "fraction"], Fraction);
    b.kw(&["the quantity", "quantity"], Quantity);
    b.kw(
        &["end quantity", "close quantity", "end of quantity"],
        EndQuantity,
    );
    b.kw(&["squared"], Squared);
    b.kw(&["cubed"], Cubed);
    b.kw(
        &[
            "to the power of",
            "to the power",
            "raised to the power of",
            "raised to",
            "to the exponent",
            "superscript",
            "sup",
        ],
        PowerOf,
    );
    b.kw(&["power"], Power);
    b.kw(&["to the"], ToThe);
    b.kw(
        &[
            "square root of",
            "the square root of",
            "square root",
            "root of",
            "the root of",
        ],
        Sqrt,
    );
    b.kw(&["cube root of", "the cube root of", "cube root"], CubeRoot);
    b.kw(&["root"], Root);
    b.kw(&["sub", "subscript", "underscore", "index"], Sub);
    b.kw(&["base"], Base);
    b.kw(&["of"], Of);
    b.kw(&["from"], From);
    b.kw(&["to", "up to", "until"], To);
    b.kw(
        &["the integral", "integral", "the integral of", "integral of"],
        Integral,
    );
    b.kw(
        &[
            "the sum",
            "sum",
            "the summation",
            "summation",
            "sum of",
            "the sum of",
        ],
        Sum,
    );
    b.kw(
        &["the product", "product", "product of", "the product of"],
        Prod,
    );
    b.kw(
        &["the limit", "limit", "lim", "the limit of", "limit of"],
        Limit,
    );
    b.kw(&["as"], As);
    b.kw(&["by", "with respect to"], By);
    b.kw(&["partial", "the partial"], Partial);
    b.kw(
        &[
            "open bracket",
            "open parenthesis",
            "open paren",
            "left parenthesis",
            "left bracket",
            "open round bracket",
        ],
        Open(b'('),
    );
    b.kw(&["open square bracket", "left square bracket"], Open(b'['));
    b.kw(
        &[
            "open brace",
            "open curly bracket",
            "open curly brace",
            "left brace",
        ],
        Open(b'{'),
    );
    b.kw(
        &[
            "close bracket",
            "close parenthesis",
            "close paren",
            "right parenthesis",
            "right bracket",
            "close round bracket",
            "close square bracket",
            "right square bracket",
            "close brace",
            "close curly bracket",
            "close curly brace",
            "right brace",
            "end bracket",
            "end brackets",
        ],
        Close,
    );
    b.kw(&["in brackets", "in parentheses", "bracket"], InBrackets);
    b.kw(
        &[
            "the absolute value of",
            "absolute value of",
            "the absolute value",
            "absolute value",
            "the modulus of",
            "modulus of",
            "modulus",
            "abs",
        ],
        Abs,
    );
    b.kw(&["factorial"], Factorial);
    b.kw(&["prime", "dash"], Prime);
    b.kw(&["comma"], Comma);
    b.kw(&["point", "dot"], Point);
    b.rel(
        &["equals", "equal", "is equal to", "equal to", "equals to"],
        "=",
    );
    b.rel(
        &[
            "is not equal to",
            "not equal to",
            "not equals",
            "does not equal",
            "not equal",
        ],
        "\\neq",
    );
    b.rel(&["is less than", "less than"], "<");
    b.rel(&["is greater than", "greater than", "more than"], ">");
    b.rel(
        &[
            "is less than or equal to",
            "less than or equal to",
            "less or equal",
            "less than or equals",
        ],
        "\\leq",
    );
    b.rel(
        &[
            "is greater than or equal to",
            "greater than or equal to",
            "greater or equal",
            "greater than or equals",
        ],
        "\\geq",
    );
    b.rel(
        &[
            "is approximately equal to",
            "is approximately equal",
            "approximately equals",
            "is approximately",
            "approximately equal to",
            "approximately",
        ],
        "\\approx",
    );
    b.rel(
        &["is equivalent to", "equivalent to", "is congruent to"],
        "\\equiv",
    );
    b.rel(
        &[
            "tends to",
            "tend to",
            "tending to",
            "approaches",
            "goes to",
            "arrow",
            "right arrow",
            "maps into",
        ],
        "\\to",
    );
    b.rel(&["maps to"], "\\mapsto");
    b.rel(&["implies", "therefore"], "\\Rightarrow");
    b.rel(&["if and only if", "is equivalent"], "\\Leftrightarrow");
    b.rel(
        &[
            "is in",
            "in",
            "belongs to",
            "is an element of",
            "element of",
            "is a member of",
        ],
        "\\in",
    );
    b.rel(
        &[
            "is not in",
            "not in",
            "does not belong to",
            "is not an element of",
        ],
        "\\notin",
    );
    b.rel(&["is a subset of", "subset of", "subset"], "\\subset");
    b.rel(
        &[
            "is a subset of or equal to",
            "subset or equal to",
            "subset or equal",
        ],
        "\\subseteq",
    );
    b.rel(&["is proportional to", "proportional to"], "\\propto");
    b.p("union", Tok::SetOp("\\cup"));
    b.p("intersection", Tok::SetOp("\\cap"));
    b.p("intersect", Tok::SetOp("\\cap"));
    b.p("set minus", Tok::SetOp("\\setminus"));
    for (p, c) in [
        ("infinity", "\\infty"),
        ("the empty set", "\\emptyset"),
        ("empty set", "\\emptyset"),
        ("for all", "\\forall"),
        ("for every", "\\forall"),
        ("there exists", "\\exists"),
        ("there is", "\\exists"),
        ("the reals", "\\mathbb{R}"),
        ("the real numbers", "\\mathbb{R}"),
        ("real numbers", "\\mathbb{R}"),
        ("the integers", "\\mathbb{Z}"),
        ("the natural numbers", "\\mathbb{N}"),
        ("natural numbers", "\\mathbb{N}"),
        ("the rationals", "\\mathbb{Q}"),
        ("the complex numbers", "\\mathbb{C}"),
        ("nabla", "\\nabla"),
        ("h bar", "\\hbar"),
    ] {
        b.p(p, Tok::Const(c));
    }
    // ordinals
    for (w, v) in [
        ("second", "2"),
        ("third", "3"),
        ("fourth", "4"),
        ("fifth", "5"),
        ("sixth", "6"),
        ("seventh", "7"),
        ("eighth", "8"),
        ("ninth", "9"),
        ("tenth", "10"),
        ("n-th", "n"),
        ("nth", "n"),
        ("enth", "n"),
        ("k-th", "k"),
        ("kth", "k"),
        ("m-th", "m"),
        ("mth", "m"),
        ("i-th", "i"),
        ("ith", "i"),
        ("p-th", "p"),
        ("pth", "p"),
    ] {
        b.p(w, Tok::Ordinal(v.to_string()));
        b.p(leak(format!("the {w}")), Tok::Ordinal(v.to_string()));
    }
    for w in [
        "the", "is", "are", "where", "and", "then", "let", "be", "we", "have", "so", "that",
        "this", "with", "which", "when", "for", "gives", "get", "write",
    ] {
        b.lex.text_words.insert(w, ());
    }
    b.finish()
}

fn russian() -> Lexicon {
    use NumClass::*;
    let mut b = Builder::new();
    let units: [&[&'static str]; 10] = [
        &["ноль", "нуль", "нуля", "нулю", "нулём", "нулем"],
        &[
            "один",
            "одна",
            "одно",
            "одного",
            "одному",
            "единица",
            "единицы",
            "единице",
            "единицу",
            "одной",
        ],
        &["два", "две", "двух", "двум", "двойка"],
        &["три", "трёх", "трех", "трём", "трем", "тройка"],
        &["четыре", "четырёх", "четырех", "четырём", "четырем"],
        &["пять", "пяти"],
        &["шесть", "шести"],
        &["семь", "семи"],
        &["восемь", "восьми"],
        &["девять", "девяти"],
    ];
    for (i, ws) in units.iter().enumerate() {
        b.n(ws, i as u64, Unit);
    }
    let teens: [&[&'static str]; 10] = [
        &["десять", "десяти"],
        &["одиннадцать", "одиннадцати"],
        &["двенадцать", "двенадцати"],
        &["тринадцать", "тринадцати"],
        &["четырнадцать", "четырнадцати"],
        &["пятнадцать", "пятнадцати"],
        &["шестнадцать", "шестнадцати"],
        &["семнадцать", "семнадцати"],
        &["восемнадцать", "восемнадцати"],
        &["девятнадцать", "девятнадцати"],
    ];
    for (i, ws) in teens.iter().enumerate() {
        b.n(ws, 10 + i as u64, Teen);
    }
    let tens: [&[&'static str]; 8] = [
        &["двадцать", "двадцати"],
        &["тридцать", "тридцати"],
        &["сорок", "сорока"],
        &["пятьдесят", "пятидесяти"],
        &["шестьдесят", "шестидесяти"],
        &["семьдесят", "семидесяти"],
        &["восемьдесят", "восьмидесяти"],
        &["девяносто", "девяноста"],
    ];
    for (i, ws) in tens.iter().enumerate() {
        b.n(ws, 20 + 10 * i as u64, Ten);
    }
    let hundreds: [&[&'static str]; 9] = [
        &["сто", "ста"],
        &["двести", "двухсот"],
        &["триста", "трёхсот", "трехсот"],
        &["четыреста"],
        &["пятьсот"],
        &["шестьсот"],
        &["семьсот"],
        &["восемьсот"],
        &["девятьсот"],
    ];
    for (i, ws) in hundreds.iter().enumerate() {
        b.n(ws, 100 * (i as u64 + 1), Hundreds);
    }
    b.n(&["тысяча", "тысячи", "тысяч", "тысячу"], 1000, Scale);
    b.n(&["миллион", "миллиона", "миллионов"], 1_000_000, Scale);
    for c in 'a'..='z' {
        let s = leak(c.to_string());
        b.p(s, Tok::Ident(s.to_string()));
        let up = c.to_ascii_uppercase().to_string();
        b.p(leak(format!("большое {c}")), Tok::Ident(up.clone()));
        b.p(leak(format!("заглавная {c}")), Tok::Ident(up));
    }
    for (w, l) in LETTERS_RU {
        b.p(w, Tok::Ident(l.to_string()));
        let up = l.to_ascii_uppercase();
        b.p(leak(format!("большое {w}")), Tok::Ident(up.clone()));
        b.p(leak(format!("большая {w}")), Tok::Ident(up.clone()));
        b.p(leak(format!("заглавная {w}")), Tok::Ident(up));
    }
    for (w, g) in GREEK_RU {
        b.p(w, Tok::Ident(format!("\\{g}")));
        if GREEK_CAP.contains(g) {
            let cap = format!("\\{}{}", g[..1].to_ascii_uppercase(), &g[1..]);
            b.p(leak(format!("большая {w}")), Tok::Ident(cap.clone()));
            b.p(leak(format!("заглавная {w}")), Tok::Ident(cap));
        }
    }
    for f in FUNCS {
        b.p(f, Tok::Func(func_latex(f)));
    }
    for (p, f) in [
        ("синус", "sin"),
        ("синуса", "sin"),
        ("косинус", "cos"),
        ("косинуса", "cos"),
        ("тангенс", "tan"),
        ("тангенса", "tan"),
        ("котангенс", "cot"),
        ("котангенса", "cot"),
        ("логарифм", "log"),
        ("логарифма", "log"),
        ("натуральный логарифм", "ln"),
        ("натурального логарифма", "ln"),
        ("экспонента", "exp"),
        ("экспоненты", "exp"),
        ("экспонента от", "exp"),
        ("арксинус", "arcsin"),
        ("арккосинус", "arccos"),
        ("арктангенс", "arctan"),
        ("максимум", "max"),
        ("минимум", "min"),
        ("определитель", "det"),
    ] {
        b.p(p, Tok::Func(func_latex(f)));
    }
    use Kw::*;
    b.kw(&["плюс"], Plus);
    b.kw(&["минус"], Minus);
    b.kw(&["плюс минус", "плюс-минус"], PlusMinus);
    b.kw(&["минус плюс", "минус-плюс"], MinusPlus);
    b.kw(
        &[
            "умножить на",
            "умноженное на",
            "умножено на",
            "помножить на",
            "на",
            "крест",
        ],
        Times,
    );
    b.kw(&["знак деления"], Div);
    b.kw(
        &[
            "делить на",
            "деленное на",
            "делённое на",
            "разделить на",
            "разделённое на",
            "разделенное на",
            "поделить на",
            "дробь на",
            "делённый на",
            "деленный на",
        ],
        Over,
    );
    b.kw(&["дробь"], Fraction);
    b.kw(&["величина", "выражение"], Quantity);
    b.kw(&["конец выражения"], EndQuantity);
    b.kw(&["в квадрате", "квадрат"], Squared);
    b.kw(&["в кубе", "куб"], Cubed);
    b.kw(&["в степени", "степени", "в степень"], PowerOf);
    b.kw(&["в"], ToThe);
    b.kw(&["степени", "степень"], Power);
    b.kw(
        &[
            "квадратный корень из",
            "корень квадратный из",
            "корень из",
            "квадратный корень",
            "корень",
        ],
        Sqrt,
    );
    b.kw(
        &[
            "кубический корень из",
            "корень кубический из",
            "кубический корень",
        ],
        CubeRoot,
    );
    b.kw(&["корень степени"], Root);
    b.kw(&["индекс", "с индексом", "нижний индекс"], Sub);
    b.kw(&["по основанию"], Base);
    b.kw(&["от", "из"], Of);
    b.kw(&["с"], From);
    b.kw(&["до", "по"], To);
    b.kw(&["интеграл", "интеграла"], Integral);
    b.kw(&["сумма", "суммы", "сумма по"], Sum);
    b.kw(&["произведение", "произведения"], Prod);
    b.kw(&["предел", "предела", "лимит"], Limit);
    b.kw(&["при"], As);
    b.kw(&["по переменной"], By);
    b.kw(&["частная производная", "частное", "партиал"], Partial);
    b.kw(
        &[
            "открыть скобку",
            "открыть скобки",
            "открывается скобка",
            "скобка открывается",
            "открывающая скобка",
            "левая скобка",
        ],
        Open(b'('),
    );
    b.kw(
        &["открыть квадратную скобку", "открывающая квадратная скобка"],
        Open(b'['),
    );
    b.kw(
        &["открыть фигурную скобку", "открывающая фигурная скобка"],
        Open(b'{'),
    );
    b.kw(
        &[
            "закрыть скобку",
            "закрыть скобки",
            "закрывается скобка",
            "скобка закрывается",
            "закрывающая скобка",
            "правая скобка",
            "закрыть квадратную скобку",
            "закрыть фигурную скобку",
            "закрывающая квадратная скобка",
            "закрывающая фигурная скобка",
        ],
        Close,
    );
    b.kw(&["в скобках", "скобка"], InBrackets);
    b.kw(
        &["модуль", "модуля", "модуль от", "абсолютная величина"],
        Abs,
    );
    b.kw(&["факториал"], Factorial);
    b.kw(&["штрих"], Prime);
    b.kw(&["запятая"], Comma);
    b.kw(&["точка", "целых"], Point);
    b.rel(&["равно", "равен", "равна", "равняется", "равны"], "=");
    b.rel(
        &["не равно", "не равен", "не равна", "не равняется"],
        "\\neq",
    );
    b.rel(&["меньше", "меньше чем"], "<");
    b.rel(&["больше", "больше чем"], ">");
    b.rel(
        &["меньше или равно", "меньше либо равно", "не больше"],
        "\\leq",
    );
    b.rel(
        &["больше или равно", "больше либо равно", "не меньше"],
        "\\geq",
    );
    b.rel(
        &[
            "приблизительно равно",
            "примерно равно",
            "приближённо равно",
        ],
        "\\approx",
    );
    b.rel(
        &["тождественно равно", "эквивалентно", "сравнимо с"],
        "\\equiv",
    );
    b.rel(
        &[
            "стремится к",
            "стремящемся к",
            "стремящимся к",
            "стремящийся к",
            "стремление к",
            "стрелка",
            "стремится",
            "стремящемся",
        ],
        "\\to",
    );
    b.rel(&["отображается в"], "\\mapsto");
    b.rel(
        &["следует", "влечёт", "влечет", "следовательно"],
        "\\Rightarrow",
    );
    b.rel(&["тогда и только тогда", "равносильно"], "\\Leftrightarrow");
    b.rel(
        &["принадлежит", "принадлежащий", "принадлежит множеству"],
        "\\in",
    );
    b.rel(&["не принадлежит"], "\\notin");
    b.rel(
        &["подмножество", "является подмножеством", "содержится в"],
        "\\subset",
    );
    b.rel(&["пропорционально"], "\\propto");
    b.p("объединение", Tok::SetOp("\\cup"));
    b.p("объединить", Tok::SetOp("\\cup"));
    b.p("пересечение", Tok::SetOp("\\cap"));
    b.p("пересечь", Tok::SetOp("\\cap"));
    b.p("без", Tok::SetOp("\\setminus"));
    for (p, c) in [
        ("бесконечность", "\\infty"),
        ("бесконечности", "\\infty"),
        ("бесконечностью", "\\infty"),
        ("пустое множество", "\\emptyset"),
        ("для любого", "\\forall"),
        ("для всех", "\\forall"),
        ("для всякого", "\\forall"),
        ("существует", "\\exists"),
        ("множество действительных чисел", "\\mathbb{R}"),
        ("действительные числа", "\\mathbb{R}"),
        ("множество целых чисел", "\\mathbb{Z}"),
        ("множество натуральных чисел", "\\mathbb{N}"),
        ("натуральные числа", "\\mathbb{N}"),
        ("набла", "\\nabla"),
    ] {
        b.p(p, Tok::Const(c));
    }
    for (w, v) in [
        ("второй", "2"),
        ("третьей", "3"),
        ("третий", "3"),
        ("четвёртой", "4"),
        ("четвертой", "4"),
        ("пятой", "5"),
        ("шестой", "6"),
        ("седьмой", "7"),
        ("восьмой", "8"),
        ("девятой", "9"),
        ("десятой", "10"),
        ("энной", "n"),
        ("n-ной", "n"),
        ("n-й", "n"),
        ("катой", "k"),
        ("эмной", "m"),
    ] {
        b.p(w, Tok::Ordinal(v.to_string()));
    }
    for w in [
        "и",
        "где",
        "это",
        "есть",
        "тогда",
        "пусть",
        "имеем",
        "получаем",
        "если",
        "что",
        "так",
        "как",
        "а",
        "также",
        "то",
    ] {
        b.lex.text_words.insert(w, ());
    }
    b.finish()
}

/// The tables for `lang`, built once.
pub fn lexicon(lang: Lang) -> &'static Lexicon {
    static EN: OnceLock<Lexicon> = OnceLock::new();
    static RU: OnceLock<Lexicon> = OnceLock::new();
    match lang {
        Lang::En => EN.get_or_init(english),
        Lang::Ru => RU.get_or_init(russian),
    }
}
