//! End-to-end tests of `voxtok transcribe` with a model whose window is not
//! 30 s: `tiny-6s` has `max_source_positions` 300 (600 mel frames, 6 s
//! windows), from tools/fixtures/gen_whisper.py.
//!
//! Tolerance: with every heuristic off, each 6 s window's token ids are
//! identical to `transformers`' greedy `generate` on `WhisperFeatureExtractor`
//! (chunk_length 6) features of the same samples.

use serde_json::Value;
use voxtok_tests::{fixture, run};

const PLAIN: &[&str] = &[
    "--language",
    "en",
    "--temperature",
    "0",
    "--without-timestamps",
    "--no-speech-threshold",
    "none",
    "--compression-ratio-threshold",
    "none",
    "--logprob-threshold",
    "none",
    "--suppress-tokens",
    "none",
    "--no-suppress-blank",
    "--condition-on-previous-text",
    "false",
    "--max-new-tokens",
    "24",
];

fn path(rel: &str) -> String {
    fixture(&format!("whisper/{rel}")).display().to_string()
}

fn reference() -> Value {
    let p = fixture("whisper/tiny-6s/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

const EOT: u64 = 588;

#[test]
fn six_second_windows_match_transformers_per_window() {
    let r = reference();
    let (f, m) = (path("audio/long.wav"), path("tiny-6s"));
    let mut args = vec!["transcribe", &f, "--model", &m, "--format", "json"];
    args.extend_from_slice(PLAIN);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!((v["duration_s"].as_f64().unwrap() - 13.0).abs() < 1e-3);
    // Without timestamps: one segment per window, windows at 0, 6 and 12 s.
    let wins = r["long_windows"].as_array().unwrap();
    assert_eq!(wins.len(), 3);
    let segs = v["segments"].as_array().unwrap();
    let kept: Vec<(usize, &Value)> = wins
        .iter()
        .enumerate()
        .filter(|(_, w)| !w["text"].as_str().unwrap().trim().is_empty())
        .collect();
    assert_eq!(segs.len(), kept.len(), "{out}");
    for (s, (k, w)) in segs.iter().zip(kept) {
        let want: Vec<u64> = ids(&w["plain"]).into_iter().filter(|&t| t != EOT).collect();
        assert_eq!(
            ids(&s["tokens"]),
            want,
            "window {k}: ids differ from transformers"
        );
        let start = s["start"].as_f64().unwrap();
        assert!(
            (start - 6.0 * k as f64).abs() < 1e-9,
            "window {k} starts at {start}"
        );
        let end = s["end"].as_f64().unwrap();
        assert!((end - (6.0 * (k + 1) as f64).min(13.0)).abs() < 1e-9, "{s}");
    }
}

#[test]
fn six_second_model_short_file_and_timestamps() {
    let r = reference();
    let (f, m) = (path("audio/voiced.wav"), path("tiny-6s"));
    let mut args = vec!["transcribe", &f, "--model", &m, "--format", "json"];
    args.extend_from_slice(PLAIN);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<u64> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| ids(&s["tokens"]))
        .collect();
    let want: Vec<u64> = ids(&r["wav"]["voiced"]["plain"])
        .into_iter()
        .filter(|&t| t != EOT)
        .collect();
    assert_eq!(got, want);

    // Default decoding (timestamps, fallback, no-speech) over the 13 s file:
    // segments ordered, inside the audio, and past the first 6 s window;
    // every timestamp token is inside its window.
    let f = path("audio/long.wav");
    let (code, out, err) = run(&[
        "transcribe",
        &f,
        "--model",
        &m,
        "--format",
        "json",
        "--language",
        "en",
        "--no-speech-threshold",
        "none",
        "--max-new-tokens",
        "30",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty(), "{out}");
    let mut last = 0.0;
    for s in segs {
        let (st, en) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(st >= last - 1e-9 && en > st && en <= 13.0 + 6.0, "{s}");
        last = st;
        for t in ids(&s["tokens"]) {
            // <|0.00|> is 604; a 6 s window ends at <|6.00|> = 604 + 300.
            assert!(t < 604 + 301, "timestamp past the window: {t}");
        }
    }
    assert!(segs.last().unwrap()["end"].as_f64().unwrap() > 6.0, "{out}");
}

/// `--initial-prompt`: the first window is decoded after `<|startofprev|>`
/// + the prompt, with ids identical to transformers on the same sequence.
#[test]
fn initial_prompt_matches_transformers() {
    let r = reference();
    let pr = &r["prompt"];
    let (f, m) = (path("audio/voiced.wav"), path("tiny-6s"));
    let text = pr["text"].as_str().unwrap();
    let mut args = vec!["transcribe", &f, "--model", &m, "--format", "json"];
    args.extend_from_slice(PLAIN);
    args.extend_from_slice(&["--initial-prompt", text]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<u64> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| ids(&s["tokens"]))
        .collect();
    let want: Vec<u64> = ids(&pr["wav_plain"])
        .into_iter()
        .filter(|&t| t != EOT)
        .collect();
    assert_eq!(got, want, "prompted ids differ from transformers");
    let unprompted: Vec<u64> = ids(&r["wav"]["voiced"]["plain"]).into_iter().collect();
    assert_ne!(got, unprompted, "the prompt changed nothing");
}

/// Conditioning on previous text changes later windows only; with
/// `--condition-on-previous-text false` every window equals transformers.
#[test]
fn condition_on_previous_text_changes_later_windows() {
    let r = reference();
    let (f, m) = (path("audio/long.wav"), path("tiny-6s"));
    let plain: Vec<&str> = PLAIN
        .iter()
        .copied()
        .filter(|a| *a != "--condition-on-previous-text" && *a != "false")
        .collect();
    let mut args = vec!["transcribe", &f, "--model", &m, "--format", "json"];
    args.extend_from_slice(&plain);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let segs = v["segments"].as_array().unwrap();
    let wins = r["long_windows"].as_array().unwrap();
    // Window 0 has no previous text: identical to transformers.
    let w0: Vec<u64> = ids(&wins[0]["plain"])
        .into_iter()
        .filter(|&t| t != EOT)
        .collect();
    assert_eq!(ids(&segs[0]["tokens"]), w0);
    let later: Vec<Vec<u64>> = segs[1..].iter().map(|s| ids(&s["tokens"])).collect();
    let unconditioned: Vec<Vec<u64>> = wins[1..]
        .iter()
        .map(|w| ids(&w["plain"]).into_iter().filter(|&t| t != EOT).collect())
        .collect();
    assert_ne!(later, unconditioned, "previous text changed nothing");
}

/// `--word-timestamps`: JSON segments carry words whose text joins into the
/// segment text, with times ordered inside the segment.
#[test]
fn word_timestamps_in_json() {
    let (f, m) = (path("audio/long.wav"), path("tiny-6s"));
    let (code, out, err) = run(&[
        "transcribe",
        &f,
        "--model",
        &m,
        "--format",
        "json",
        "--language",
        "en",
        "--no-speech-threshold",
        "none",
        "--max-new-tokens",
        "30",
        "--word-timestamps",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty(), "{out}");
    let mut n = 0;
    for s in segs {
        let words = s["words"].as_array().expect("words");
        let joined: String = words.iter().map(|w| w["word"].as_str().unwrap()).collect();
        assert_eq!(joined.trim(), s["text"].as_str().unwrap(), "{s}");
        for w in words {
            let (a, b) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(a <= b && a >= 0.0 && b <= 13.0 + 6.0, "{w}");
            let p = w["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{w}");
            n += 1;
        }
    }
    assert!(n > 0);
    // Without the flag there are no words; with --without-timestamps it is a usage error.
    let (code, _, err) = run(&[
        "transcribe",
        &f,
        "--model",
        &m,
        "--word-timestamps",
        "--without-timestamps",
    ]);
    assert_eq!(code, 2, "{err}");
}
