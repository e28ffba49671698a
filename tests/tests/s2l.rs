//! End-to-end tests of speech-to-LaTeX: `voxtok bench s2l` on the synthetic
//! parquet set (tests/fixtures/s2l/synthetic, built by tools/s2l/make_synthetic.py),
//! `voxtok transcribe --task latex` on each route, and `voxtok latex --model`.
//! The Whisper and LLM fixtures are random-weight models: their outputs are
//! junk, so these tests check that every route runs and reports, and hold
//! real accuracy only for the rules route on the reference text.

use serde_json::Value;
use std::path::{Path, PathBuf};
use voxtok_tests::{fixture, voxtok};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = voxtok();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `voxtok ARGS` with `input` on stdin to completion.
fn voxtok_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = voxtok()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `voxtok ARGS` with `input` on stdin; returns stdout.
fn latex_stdin(args: &[&str], input: &str) -> String {
    String::from_utf8(voxtok_stdin(args, input).stdout).unwrap()
}

/// A copy of the random multilingual Whisper fixture whose generation config
/// maps the `latex` task to an id (here the translate token's), so the
/// latex-task (e2e) route runs with the prompt `<|sot|><|lang|><|latex|><|notimestamps|>`.
fn latex_task_model(dir: &Path) -> PathBuf {
    let src = fixture("whisper/tiny-multi");
    let dst = dir.join("tiny-multi-latex");
    std::fs::create_dir_all(&dst).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
    }
    let p = dst.join("generation_config.json");
    let mut g: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    g["task_to_id"]["latex"] = Value::from(598);
    std::fs::write(&p, serde_json::to_string_pretty(&g).unwrap()).unwrap();
    dst
}

#[test]
fn bench_s2l_scores_every_route_on_the_synthetic_set() {
    let tmp = tempfile::tempdir().unwrap();
    let model = latex_task_model(tmp.path());
    let out = tmp.path().join("report");
    let (code, stdout, err) = run(
        &[
            "bench",
            "s2l",
            "--dataset",
            &s(&fixture("s2l/synthetic")),
            "--split",
            "test",
            "--model",
            &s(&model),
            "--latex-model",
            &s(&fixture("llm/qwen2")),
            "--max-new-tokens",
            "8",
            "--out-dir",
            &s(&out),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("s2l.json")).unwrap()).unwrap();
    assert_eq!(report["items"], 20);
    assert_eq!(report["failed_items"], 0);
    assert_eq!(
        report["routes"],
        serde_json::json!(["rules", "asr+rules", "asr+llm", "e2e"])
    );
    let results = report["results"].as_array().unwrap();
    let get = |route: &str, lang: &str| {
        results
            .iter()
            .find(|r| r["route"] == route && r["language"] == lang)
            .unwrap_or_else(|| panic!("no {route}/{lang} row"))
    };
    for route in ["rules", "asr+rules", "asr+llm", "e2e"] {
        for lang in ["en", "ru", "all"] {
            let r = get(route, lang);
            assert!(r["latex_cer"].is_number(), "{route}/{lang}: {r}");
            assert!(r["exact_match"].is_number(), "{route}/{lang}: {r}");
        }
        assert_eq!(get(route, "en")["n"], 12);
        assert_eq!(get(route, "ru")["n"], 8);
        // 2 English + 2 Russian sentences carry sentence WER/CER
        assert_eq!(get(route, "all")["sentences"], 4);
        assert!(get(route, "all")["sentence_wer"].is_number());
    }
    // The targets come from the rules tables: rules on the reference spoken
    // text reproduces them (normalized exact match ≥ 95%, CER ≤ 2%).
    for lang in ["en", "ru"] {
        let r = get("rules", lang);
        assert!(r["exact_match"].as_f64().unwrap() >= 0.95, "{r}");
        assert!(r["latex_cer"].as_f64().unwrap() <= 0.02, "{r}");
    }
    let md = std::fs::read_to_string(out.join("s2l.md")).unwrap();
    assert_eq!(md, stdout);
    for route in [
        "| rules | en |",
        "| asr+rules | ru |",
        "| asr+llm | all |",
        "| e2e | en |",
    ] {
        assert!(md.contains(route), "{md}");
    }
    let svg = std::fs::read_to_string(out.join("s2l.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<rect").count() == 2 * results.len());
    let items = std::fs::read_to_string(out.join("s2l-items.jsonl")).unwrap();
    assert_eq!(items.lines().count(), 4 * 20);
    let t = &report["timing"];
    assert!(t["overhead_fraction"].as_f64().unwrap() < 1.0);
    assert!(t["asr_s"].as_f64().unwrap() > 0.0 && t["e2e_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_s2l_counts_bad_items_and_rejects_a_set_without_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let (code, _, err) = run(
        &[
            "bench",
            "s2l",
            "--dataset",
            &s(&fixture("s2l/bad/broken_items.parquet")),
            "--model",
            &s(&fixture("whisper/tiny-multi")),
            "--max-new-tokens",
            "4",
            "--out-dir",
            &s(&out),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("audio does not decode"), "{err}");
    assert!(err.contains("bad LaTeX reference"), "{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("s2l.json")).unwrap()).unwrap();
    assert_eq!(report["failed_items"], 2);
    assert_eq!(report["scored"], 1);
    let rules = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "rules")
        .unwrap();
    assert_eq!(rules["n"], 1);
    assert_eq!(rules["exact_match"], 1.0);

    let (code, _, err) = run(
        &[
            "bench",
            "s2l",
            "--dataset",
            &s(&fixture("s2l/bad/no_audio.parquet")),
            "--rules-only",
            "--out-dir",
            &s(&out),
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no audio column") && err.contains("--audio-column"),
        "{err}"
    );
}

#[test]
fn transcribe_task_latex_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let wav = s(&fixture("whisper/audio/voiced.wav"));
    let multi = s(&fixture("whisper/tiny-multi"));
    let json = |stdout: &str| -> Value { serde_json::from_str(stdout).unwrap() };
    // rules after Whisper
    let (code, out, err) = run(
        &[
            "transcribe",
            &wav,
            "--model",
            &multi,
            "--task",
            "latex",
            "--language",
            "en",
            "--format",
            "json",
            "--max-new-tokens",
            "8",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["model"], "tiny-multi+rules");
    assert!(v["latex"].is_string(), "{v}");
    assert!(v["text"].is_string());
    // the rules route is exactly the converter applied to the transcript
    let conv = latex_stdin(&["latex", "--lang", "en", "-"], v["text"].as_str().unwrap());
    assert_eq!(v["latex"].as_str().unwrap(), conv.trim_end_matches('\n'));
    // the LLM route
    let (code, out, err) = run(
        &[
            "transcribe",
            &wav,
            "--model",
            &multi,
            "--task",
            "latex",
            "--latex-model",
            &s(&fixture("llm/qwen2")),
            "--format",
            "json",
            "--max-new-tokens",
            "8",
        ],
        &[],
    );
    assert!(code == 0 || code == 1, "{err}");
    let v = json(&out);
    assert_eq!(v["model"], "tiny-multi+qwen2");
    assert!(v.get("latex").is_some(), "{v}");
    // a model with a latex task token, found as the default through $VOXTOK_S2L_MODEL:
    // its text is the LaTeX
    let m = latex_task_model(tmp.path());
    let (code, out, err) = run(
        &[
            "transcribe",
            &wav,
            "--task",
            "latex",
            "--format",
            "json",
            "--max-new-tokens",
            "8",
        ],
        &[("VOXTOK_S2L_MODEL", &s(&m))],
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["model"], "tiny-multi-latex");
    assert_eq!(v["latex"], v["text"]);
    // text output prints the LaTeX
    let (code, out, _) = run(
        &[
            "transcribe",
            &wav,
            "--task",
            "latex",
            "--max-new-tokens",
            "8",
        ],
        &[("VOXTOK_S2L_MODEL", &s(&m))],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim_end(), v["latex"].as_str().unwrap());
    // the rules converter speaks en and ru only
    let (code, _, err) = run(
        &[
            "transcribe",
            &wav,
            "--model",
            &multi,
            "--task",
            "latex",
            "--language",
            "de",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("en and ru"), "{err}");
}

#[test]
fn latex_with_an_llm_keeps_one_line_per_input_line() {
    let model = s(&fixture("llm/qwen2"));
    let o = voxtok_stdin(
        &["latex", "--model", &model, "--max-new-tokens", "12", "-"],
        "x squared\n\none over x plus one\nикс в квадрате\n",
    );
    let code = o.status.code().unwrap();
    // random weights: junk text (an empty answer counts as a failure → exit 1), never a usage error
    assert!(
        code == 0 || code == 1,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(lines.len(), 5, "{out:?}"); // 4 lines + trailing newline
    assert_eq!(lines[1], "", "the empty input line stays empty");
    assert_eq!(lines[4], "");
    // examples file errors and a missing model are usage errors
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "no tab here\n").unwrap();
    let (code, _, err) = run(
        &[
            "latex",
            "--model",
            &s(&fixture("llm/qwen2")),
            "--examples",
            &s(bad.path()),
            "x",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 1"), "{err}");
    let (code, _, _) = run(&["latex", "--model", "/nonexistent/model", "x"], &[]);
    assert_eq!(code, 2);
}
