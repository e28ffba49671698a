//! `voxtok latex` end to end: one LaTeX line per input line, warnings on stderr.

use voxtok_tests::{fixture, voxtok};

#[test]
fn headline_equation() {
    let out = voxtok()
        .args(["latex", "x squared plus two x plus one equals zero"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x^{2} + 2x + 1 = 0\n");
}

#[test]
fn stdin_lines_map_one_to_one_with_warnings() {
    use std::io::Write;
    let mut child = voxtok()
        .args(["latex", "--lang", "en", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one over x plus one\n\nx squared banana plus one\nbanana\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.split('\n').collect();
    assert_eq!(lines, ["\\frac{1}{x} + 1", "", "x^{2} + 1", "", ""]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: could not place: banana"),
        "{stderr}"
    );
    // "banana" alone gives nothing: counted as a failure (exit 1)
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn russian_file_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, "икс в квадрате плюс один\nкорень из двух\n").unwrap();
    let out = voxtok().args(["latex"]).arg(&f).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "x^{2} + 1\n\\sqrt{2}\n"
    );
    assert!(fixture("s2l/rules_en.tsv").is_file());
}

#[test]
fn bad_lang_is_usage_error() {
    let out = voxtok()
        .args(["latex", "--lang", "fr", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
