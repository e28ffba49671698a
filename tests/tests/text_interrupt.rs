//! Ctrl-C in `voxtok text generate`: the first SIGINT stops generation, the
//! running request is written with what it generated so far (finish
//! "interrupted"), every line already written stays valid JSON, exit 130.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};
use voxtok_tests::{fixture, voxtok};

#[test]
fn sigint_stops_generation_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("reqs.jsonl");
    // 400 requests of 250 tokens, one at a time: far longer than the test waits.
    let line = r#"{"input_ids": [1, 2, 3], "max_new_tokens": 250}"#;
    std::fs::write(&reqs, vec![line; 400].join("\n") + "\n").unwrap();
    let model = fixture("llm/llama");
    let mut child = voxtok()
        .args(["text", "generate", "--model"])
        .arg(&model)
        .arg("--batch")
        .arg(&reqs)
        .args(["--max-batch", "1", "--greedy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voxtok");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Wait for the first finished request, then interrupt.
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "no output before the interrupt");
    let t0 = Instant::now();
    voxtok_tests::interrupt(&child);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = child.wait().unwrap().code();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took too long to stop"
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let lines: Vec<Value> = std::iter::once(first.as_str())
        .chain(rest.lines())
        .map(|l| serde_json::from_str(l).expect("every written line is valid JSON"))
        .collect();
    assert!(lines.len() < 400, "generation was not stopped");
    let mut interrupted = 0;
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["index"].as_u64(), Some(i as u64), "input order kept");
        assert!(v["error"].is_null(), "{v}");
        let n = v["generated_tokens"].as_u64().unwrap();
        assert_eq!(v["ids"].as_array().unwrap().len() as u64, n);
        match v["finish"].as_str().unwrap() {
            "interrupted" => {
                interrupted += 1;
                assert_eq!(i, lines.len() - 1, "only the last request is cut");
                assert!((1..250).contains(&n), "{v}");
            }
            "length" => assert_eq!(n, 250),
            "eos" => {}
            f => panic!("unexpected finish {f}"),
        }
    }
    assert!(interrupted <= 1);
}
