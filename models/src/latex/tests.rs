use super::*;

fn en(s: &str) -> String {
    convert(s, Lang::En).latex
}
fn ru(s: &str) -> String {
    convert(s, Lang::Ru).latex
}

#[test]
fn headline() {
    assert_eq!(
        en("x squared plus two x plus one equals zero"),
        "x^{2} + 2x + 1 = 0"
    );
}

#[test]
fn scope_rules() {
    assert_eq!(en("one over x plus one"), "\\frac{1}{x} + 1");
    assert_eq!(en("one over the quantity x plus one"), "\\frac{1}{x + 1}");
}

#[test]
fn inline_sentence() {
    assert_eq!(en("the area is pi r squared"), "the area is $\\pi r^{2}$");
}

#[test]
fn unplaced_words_reported() {
    let c = convert("x squared banana plus one", Lang::En);
    assert_eq!(c.unplaced, vec!["banana".to_string()]);
    assert!(c.latex.contains("x^{2}"));
}

#[test]
fn russian_basic() {
    assert_eq!(
        ru("икс в квадрате плюс два икс плюс один равно нулю"),
        "x^{2} + 2x + 1 = 0"
    );
}

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "x",
        "two",
        "plus",
        "over",
        "the",
        "quantity",
        "squared",
        "to",
        "power",
        "of",
        "sub",
        "integral",
        "from",
        "d",
        "sum",
        "limit",
        "as",
        "tends",
        "open",
        "bracket",
        "close",
        "minus",
        "sine",
        "root",
        "square",
        "fraction",
        "equals",
        "by",
        "factorial",
        "in",
        "brackets",
        "end",
        "point",
        "comma",
        "banana",
        "икс",
        "в",
        "квадрате",
        "от",
        "до",
        "на",
        "корень",
        "из",
        "степени",
        "энной",
        "дэ",
        "по",
        "интеграл",
        "предел",
        "при",
        "and",
        "is",
    ];

    proptest! {
        #[test]
        fn never_panics(idx in proptest::collection::vec(0..WORDS.len(), 0..30), ru in any::<bool>()) {
            let text: Vec<&str> = idx.iter().map(|&i| WORDS[i]).collect();
            let lang = if ru { Lang::Ru } else { Lang::En };
            let c = convert(&text.join(" "), lang);
            prop_assert!(c.latex.len() < 10_000);
        }

        #[test]
        fn never_panics_any_text(s in "\\PC{0,80}") {
            let _ = convert(&s, Lang::En);
            let _ = convert(&s, Lang::Ru);
        }
    }
}

#[test]
fn approximately_equal_is_one_relation() {
    assert_eq!(en("x is approximately equal to two"), "x \\approx 2");
    assert_eq!(en("x approximately equals two"), "x \\approx 2");
    assert_eq!(en("x is approximately two"), "x \\approx 2");
    assert_eq!(ru("икс приблизительно равно двум"), "x \\approx 2");
}
