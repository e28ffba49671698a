//! Ctrl-C in `voxtok latex --model`: the first SIGINT stops the LLM, every
//! input line still gets exactly one output line (cut or empty), exit 130.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};
use voxtok_tests::{fixture, voxtok};

#[test]
fn sigint_stops_the_llm_and_keeps_one_line_per_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("spoken.txt");
    // far more work than the test waits for: 3000 lines of up to 200 tokens
    let mut lines = vec!["x squared plus two x plus one equals zero"; 3000];
    lines[1] = "";
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut child = voxtok()
        .args(["latex", "--max-new-tokens", "200", "--model"])
        .arg(fixture("llm/qwen2"))
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voxtok");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the interrupt: the test needs more work"
    );
    let t0 = Instant::now();
    voxtok_tests::interrupt(&child);
    // stderr on its own thread, so a full pipe cannot block the child
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut e = String::new();
        stderr.read_to_string(&mut e).unwrap();
        e
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let err = err.join().unwrap();
    let code = child.wait().unwrap().code();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took too long to stop"
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(out.lines().count(), lines.len(), "one line per input line");
    assert_eq!(out.lines().nth(1), Some(""), "a blank input stays blank");
}
