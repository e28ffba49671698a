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
