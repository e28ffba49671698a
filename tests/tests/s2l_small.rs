//! The shipped spoken-maths model (`assets/s2l-small`, trained by
//! `tools/s2l/train.py`): voxtok runs it exactly as `transformers` does
//! (identical greedy ids on the bundled examples, `tests/fixtures/s2l/small_ref.json`
//! from `tools/s2l/ref_examples.py`), and it is the default of `transcribe --task latex`.

use serde_json::Value;
use voxtok_tests::{fixture, voxtok, workspace_root};

fn refs() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("s2l/small_ref.json")).expect("small_ref.json");
    serde_json::from_str(&text).expect("small_ref.json is JSON")
}

/// Runs `voxtok transcribe ARGS --format json` on one file; the parsed record.
fn transcribe(args: &[&str]) -> Value {
    let out = voxtok()
        .arg("transcribe")
        .args(args)
        .args(["--format", "json", "--temperature", "0"])
        .output()
        .expect("run voxtok");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "voxtok transcribe {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn token_ids(v: &Value) -> Vec<u64> {
    v["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .flat_map(|s| s["tokens"].as_array().expect("tokens").clone())
        .map(|t| t.as_u64().expect("token id"))
        .collect()
}

#[test]
fn shipped_model_matches_transformers_on_the_bundled_examples() {
    let model = workspace_root().join("assets/s2l-small");
    let model = model.to_str().unwrap();
    let refs = refs();
    assert_eq!(refs.len(), 3, "one reference per bundled example");
    for r in &refs {
        let file = format!("assets/examples/{}", r["file"].as_str().unwrap());
        let lang = r["language"].as_str().unwrap();
        for (task, extra) in [
            ("latex", None),
            ("transcribe", Some("--without-timestamps")),
        ] {
            let mut args = vec!["--model", model, "--task", task, "--language", lang, &file];
            args.extend(extra);
            let v = transcribe(&args);
            let want: Vec<u64> = r[task]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            assert!(!want.is_empty(), "{file} {task}: empty reference");
            assert_eq!(
                token_ids(&v),
                want,
                "{file} {task}: ids differ from transformers"
            );
            assert_eq!(
                v["text"].as_str().unwrap().trim(),
                r[task]["text"].as_str().unwrap(),
                "{file} {task}"
            );
        }
    }
}

#[test]
fn task_latex_uses_the_shipped_model_by_default() {
    // No --model: the shipped model, its language detection and its <|latex|> task.
    // What it should print is transformers' output (small_ref.json); how often that
    // is the right LaTeX is measured by `tools/s2l/eval.sh`, not asserted here.
    for r in refs() {
        let file = format!("assets/examples/{}", r["file"].as_str().unwrap());
        let v = transcribe(&["--task", "latex", &file]);
        assert_eq!(v["model"], "s2l-small", "{v}");
        assert_eq!(v["language"], r["language"], "language detection: {v}");
        assert_eq!(v["latex"], r["latex"]["text"], "{v}");
    }
}
