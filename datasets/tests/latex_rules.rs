//! The rules converter on the hand-written (spoken, LaTeX) pairs in
//! tests/fixtures/s2l/rules_{en,ru}.tsv, compared after LaTeX normalization.

use std::path::PathBuf;
use voxtok_datasets::latex_norm::normalize;
use voxtok_models::latex::{convert, Lang};

fn pairs(name: &str) -> Vec<(String, String)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/s2l")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap_or_else(|| panic!("no tab: {l}"));
            (a.to_string(), b.to_string())
        })
        .collect()
}

fn check(name: &str, lang: Lang, min_pairs: usize) {
    let ps = pairs(name);
    assert!(ps.len() >= min_pairs, "{name}: only {} pairs", ps.len());
    let mut bad = Vec::new();
    for (spoken, want) in &ps {
        let got = convert(spoken, lang).latex;
        if normalize(&got) != normalize(want) {
            bad.push(format!("{spoken}\n   want {want}\n    got {got}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} pairs differ:\n{}",
        bad.len(),
        ps.len(),
        bad.join("\n")
    );
}

#[test]
fn english_pairs() {
    check("rules_en.tsv", Lang::En, 150);
}

#[test]
fn russian_pairs() {
    check("rules_ru.tsv", Lang::Ru, 100);
}

#[test]
fn headline_exact() {
    assert_eq!(
        convert("x squared plus two x plus one equals zero", Lang::En).latex,
        "x^{2} + 2x + 1 = 0"
    );
}
