//! End-to-end tests of `voxtok text tokenize|generate` on the fixtures of
//! tools/fixtures/gen_llm.py (tiny random Qwen2/Llama, trained BPE).

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use voxtok_tests::{fixture, voxtok};

fn run(args: &[&str]) -> Output {
    voxtok().args(args).output().expect("run voxtok")
}

fn jsonl(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn reference(kind: &str) -> Value {
    let p = fixture(&format!("llm/{kind}/reference.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Reference greedy ids up to and including the first end-of-sequence id.
fn expected_greedy(kind: &str, key: &str, i: usize) -> (Vec<u64>, Vec<u64>) {
    let r = reference(kind);
    let c = &r[key][i];
    let mut new = ids(&c["new_ids"]);
    if let Some(p) = new.iter().position(|&t| t == 0 || t == 2) {
        new.truncate(p + 1);
    }
    (ids(&c["ids"]), new)
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn copy_model(kind: &str, dst: &Path, skip: &[&str]) {
    for e in std::fs::read_dir(fixture(&format!("llm/{kind}"))).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(e.path(), dst.join(&name)).unwrap();
        }
    }
}

#[test]
fn tokenize_matches_python_and_reports_stats() {
    let enc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llm/encodings.json")).unwrap())
            .unwrap();
    let row = &enc["tok_bytelevel"][1];
    let model = fixture("llm/qwen2");
    let o = run(&[
        "text",
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        row["text"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = jsonl(&o);
    assert_eq!(out[0]["ids"], row["ids"]);
    assert_eq!(out[0]["offsets"], row["offsets"]);

    let files: Vec<String> = ["en", "ru", "math"]
        .iter()
        .map(|l| {
            fixture(&format!("llm/corpus_{l}.txt"))
                .to_string_lossy()
                .to_string()
        })
        .collect();
    let mut args = vec![
        "text",
        "tokenize",
        "--stats",
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success());
    let out = jsonl(&o);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["premium"].as_f64(), Some(1.0));
    for r in &out {
        let s = &r["stats"];
        let tokens = s["tokens"].as_f64().unwrap();
        assert!(tokens > 100.0);
        let per_byte = s["tokens_per_byte"].as_f64().unwrap();
        assert!((per_byte - tokens / s["bytes"].as_f64().unwrap()).abs() < 1e-12);
        let t0 = out[0]["stats"]["tokens"].as_f64().unwrap();
        assert!((r["premium"].as_f64().unwrap() - tokens / t0).abs() < 1e-12);
    }
    // Russian has 2-byte letters: fewer tokens per byte than per char
    assert!(
        out[1]["stats"]["tokens_per_byte"].as_f64() < out[1]["stats"]["tokens_per_char"].as_f64()
    );
}

#[test]
fn tokenize_digit_split_and_bad_utf8() {
    let model = fixture("llm/qwen2");
    let m = model.to_str().unwrap();
    let plain = jsonl(&run(&["text", "tokenize", "--model", m, "n = 9999999"]));
    let r2l3 = jsonl(&run(&[
        "text",
        "tokenize",
        "--model",
        m,
        "--split-digits",
        "r2l3",
        "n = 9999999",
    ]));
    let single = jsonl(&run(&[
        "text",
        "tokenize",
        "--model",
        m,
        "--split-digits",
        "single",
        "n = 9999999",
    ]));
    let toks = |v: &Value| -> Vec<String> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(toks(&plain[0])[2..], ["Ġ", "99", "99", "99", "9"]);
    assert_eq!(toks(&r2l3[0])[2..], ["Ġ", "9", "99", "9", "99", "9"]);
    assert_eq!(
        toks(&single[0])
            .iter()
            .filter(|t| t.as_str() == "9")
            .count(),
        7
    );
    let o = run(&[
        "text",
        "tokenize",
        "--model",
        m,
        "--split-digits",
        "left",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ok \xff\xfe bytes").unwrap();
    let o = run(&[
        "text",
        "tokenize",
        "--model",
        m,
        bad.to_str().unwrap(),
        "fine text",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.txt") && err.contains("invalid UTF-8"),
        "{err}"
    );
    let out = jsonl(&o);
    assert!(out[0]["error"].is_string());
    assert!(out[1]["error"].is_null() && !out[1]["ids"].as_array().unwrap().is_empty());
}

#[test]
fn generate_greedy_matches_transformers() {
    for kind in ["qwen2", "llama"] {
        let (prompt, want) = expected_greedy(kind, "greedy", 0);
        let model = fixture(&format!("llm/{kind}"));
        let o = run(&[
            "text",
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--input-ids",
            &join(&prompt),
            "--max-new-tokens",
            "20",
            "--greedy",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = jsonl(&o);
        assert_eq!(ids(&out[0]["ids"]), want, "{kind}");
        assert_eq!(out[0]["prompt_tokens"].as_u64(), Some(prompt.len() as u64));
        assert_eq!(out[0]["generated_tokens"].as_u64(), Some(want.len() as u64));
        assert!(out[0]["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(out[0]["text"].is_string());
    }
    // chat and prompt paths run and are deterministic with a seed
    let model = fixture("llm/qwen2");
    let m = model.to_str().unwrap();
    let args = [
        "text",
        "generate",
        "--model",
        m,
        "--chat",
        "What is 2+2?",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--max-new-tokens",
        "8",
        "--json",
    ];
    let a = jsonl(&run(&args));
    let b = jsonl(&run(&args));
    assert_eq!(a[0]["ids"], b[0]["ids"]);
    assert_eq!(
        a[0]["prompt_tokens"].as_u64(),
        Some(56),
        "chat template applied"
    );
    let o = run(&[
        "text",
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "4",
    ]);
    assert!(o.status.success());
}

#[test]
fn batch_jsonl_continuous_batching_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("reqs.jsonl");
    let mut lines = Vec::new();
    let mut want = Vec::new();
    for i in 0..3 {
        let (p, w) = expected_greedy("qwen2", "batch_greedy", i);
        lines.push(format!(
            r#"{{"input_ids": [{}], "max_new_tokens": 20}}"#,
            join(&p)
        ));
        want.push(Some(w));
    }
    lines.insert(1, "not json".to_string());
    want.insert(1, None);
    lines.push(r#"{"prompt": "x <|im_sart|> y"}"#.into());
    want.push(None);
    lines.push(r#"{"input_ids": [1, 5000]}"#.into());
    want.push(None);
    lines.push(r#"{"chat": "Кошка?", "max_new_tokens": 3}"#.into());
    want.push(Some(vec![]));
    let long: Vec<String> = (0..300).map(|_| "5".to_string()).collect();
    lines.push(format!(r#"{{"input_ids": [{}]}}"#, long.join(",")));
    want.push(None);
    std::fs::write(&reqs, lines.join("\n") + "\n").unwrap();
    let model = fixture("llm/qwen2");
    let o = run(&[
        "text",
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--batch",
        reqs.to_str().unwrap(),
        "--max-batch",
        "2",
        "--greedy",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = jsonl(&o);
    assert_eq!(out.len(), want.len());
    for (i, (r, w)) in out.iter().zip(&want).enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64));
        match w {
            Some(w) if !w.is_empty() => assert_eq!(&ids(&r["ids"]), w, "request {i}"),
            Some(_) => assert_eq!(r["generated_tokens"].as_u64(), Some(3)),
            None => assert!(r["error"].is_string(), "request {i} should fail: {r}"),
        }
    }
    let errs: Vec<&str> = out.iter().filter_map(|r| r["error"].as_str()).collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("reqs.jsonl:2") && e.contains("invalid JSON")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("<|im_sart|>")), "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("5000") && e.contains("vocabulary")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("does not fit the context")),
        "{errs:?}"
    );
}

#[test]
fn unloadable_models_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("qwen2", dir.path(), &[]);
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("Qwen2ForCausalLM", "GPT2LMHeadModel")
        .replace("\"qwen2\"", "\"gpt2\"");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&[
        "text",
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--input-ids",
        "1,2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("GPT2LMHeadModel") && err.contains("config.json"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    copy_model("llama", dir.path(), &["tokenizer.json"]);
    let d = dir.path().to_str().unwrap();
    let o = run(&["text", "generate", "--model", d, "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokenizer.json"));
    // ids still work without a tokenizer
    let o = run(&[
        "text",
        "generate",
        "--model",
        d,
        "--input-ids",
        "5,6,7",
        "--max-new-tokens",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "text",
        "generate",
        "--model",
        "/no/such/model",
        "--input-ids",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
