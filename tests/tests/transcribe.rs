//! End-to-end tests of `voxtok transcribe` on the random-weight Whisper
//! fixtures (tests/fixtures/whisper, from tools/fixtures/gen_whisper.py).
//!
//! Tolerance: with every heuristic off, the token ids of each file are
//! identical to `transformers`' greedy `generate` on the features of
//! `WhisperFeatureExtractor` (audio decode + log-mel are voxtok's own).

use serde_json::Value;
use std::path::{Path, PathBuf};
use voxtok_tests::{fixture, run, voxtok, WHISPER_PLAIN as PLAIN};

fn wav(name: &str) -> String {
    fixture(&format!("whisper/audio/{name}.wav"))
        .display()
        .to_string()
}

fn model(name: &str) -> String {
    fixture(&format!("whisper/{name}")).display().to_string()
}

fn reference(name: &str) -> Value {
    let p = fixture(&format!("whisper/{name}/reference.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn jsonl(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

/// Writes a 16-bit PCM mono WAV.
fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let mut b = Vec::new();
    let data = (samples.len() * 2) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for &s in samples {
        b.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Token ids of all segments of one JSON result.
fn all_tokens(v: &Value) -> Vec<u64> {
    v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| ids(&s["tokens"]))
        .collect()
}

#[test]
fn plain_greedy_equals_transformers_batched() {
    let r = reference("tiny-multi");
    let files = [wav("voiced"), wav("chirp"), wav("bursts")];
    let m = model("tiny-multi");
    let mut args = vec!["transcribe", &files[0], &files[1], &files[2], "--model", &m];
    args.extend_from_slice(&["--format", "jsonl", "--batch-size", "2"]);
    args.extend_from_slice(PLAIN);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let res = jsonl(&out);
    assert_eq!(res.len(), 3);
    for (v, sig) in res.iter().zip(["voiced", "chirp", "bursts"]) {
        assert!(
            v["path"].as_str().unwrap().ends_with(&format!("{sig}.wav")),
            "order kept"
        );
        assert!(v["error"].is_null());
        let want: Vec<u64> = ids(&r["wav"][sig]["plain"])
            .into_iter()
            .filter(|&t| t != 588)
            .collect();
        assert_eq!(all_tokens(v), want, "{sig}: ids differ from transformers");
        assert_eq!(
            v["text"].as_str().unwrap(),
            r["wav"][sig]["plain_text"].as_str().unwrap().trim()
        );
        assert_eq!(v["model"], "tiny-multi");
        assert_eq!(v["language"], "en");
    }
    assert!((res[0]["duration_s"].as_f64().unwrap() - 4.0).abs() < 1e-3);
}

#[test]
fn other_configs_match_transformers() {
    // English-only (decoder layers != encoder layers) and 128 mel bins.
    for name in ["tiny-en", "tiny-128"] {
        let r = reference(name);
        let (f, m) = (wav("voiced"), model(name));
        let mut args = vec!["transcribe", &f, "--model", &m, "--format", "json"];
        args.extend_from_slice(PLAIN);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let want: Vec<u64> = ids(&r["wav"]["voiced"]["plain"])
            .into_iter()
            .filter(|&t| t != 588)
            .collect();
        assert_eq!(all_tokens(&v), want, "{name}");
    }
}

#[test]
fn mixed_directory_reports_each_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(wav("voiced"), d.join("a_voiced.wav")).unwrap();
    std::fs::write(d.join("b_not_audio.wav"), b"this is not a wav file at all").unwrap();
    write_wav(&d.join("c_short.wav"), 16000, &vec![0.1; 800]); // 0.05 s
    write_wav(&d.join("d_silence.wav"), 8000, &vec![0.0; 16000]); // 2 s at 8 kHz
    std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
    let out_path = d.join("out.jsonl");
    let m = model("tiny-multi");
    let (code, _, err) = run(&[
        "transcribe",
        d.to_str().unwrap(),
        "--model",
        &m,
        "--format",
        "jsonl",
        "-o",
        out_path.to_str().unwrap(),
        "--batch-size",
        "3",
        "--max-new-tokens",
        "16",
    ]);
    assert_eq!(code, 1, "one input failed: exit 1\n{err}");
    let res = jsonl(&std::fs::read_to_string(&out_path).unwrap());
    let names: Vec<String> = res
        .iter()
        .map(|v| {
            Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "a_voiced.wav",
            "b_not_audio.wav",
            "c_short.wav",
            "d_silence.wav"
        ]
    );
    assert!(res[0]["error"].is_null());
    let e = res[1]["error"].as_str().unwrap();
    assert!(e.contains("b_not_audio.wav"), "error names the file: {e}");
    assert!(err.contains("b_not_audio.wav"));
    assert!(res[2]["error"].is_null());
    assert_eq!(
        res[2]["text"], "",
        "audio under 0.1 s gives an empty transcript"
    );
    assert!(res[3]["error"].is_null(), "silence is not an error");
    assert!((res[3]["duration_s"].as_f64().unwrap() - 2.0).abs() < 1e-3);
    assert!(!err.contains("panicked"));
}

#[test]
fn broken_model_dirs_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("whisper/tiny-en");
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in [
            "config.json",
            "generation_config.json",
            "preprocessor_config.json",
            "model.safetensors",
        ] {
            std::fs::copy(src.join(f), to.join(f)).unwrap();
        }
        std::fs::copy(fixture("whisper/tokenizer.json"), to.join("tokenizer.json")).unwrap();
    };
    let f = wav("voiced");
    // Missing weights.
    let a: PathBuf = dir.path().join("no_weights");
    copy(&a);
    std::fs::remove_file(a.join("model.safetensors")).unwrap();
    let (code, _, err) = run(&["transcribe", &f, "--model", a.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    // Weights of another size than config.json says.
    let b = dir.path().join("mismatch");
    copy(&b);
    let cfg = std::fs::read_to_string(b.join("config.json"))
        .unwrap()
        .replace("\"d_model\": 32", "\"d_model\": 64");
    std::fs::write(b.join("config.json"), cfg).unwrap();
    let (code, _, err) = run(&["transcribe", &f, "--model", b.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("do not match"), "{err}");
    // Missing tokenizer.
    let c = dir.path().join("no_tokenizer");
    copy(&c);
    std::fs::remove_file(c.join("tokenizer.json")).unwrap();
    let (code, _, err) = run(&["transcribe", &f, "--model", c.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn long_form_segments_are_ordered_and_inside_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    // 75 s: the chirp, voiced and burst signals repeated (not a multiple of 30 s).
    let mut x: Vec<f32> = Vec::new();
    let read = |n: &str| {
        let b = std::fs::read(wav(n)).unwrap();
        b[44..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
            .collect::<Vec<f32>>()
    };
    let (a, b, c) = (read("chirp"), read("voiced"), read("bursts"));
    while x.len() < 75 * 16000 {
        x.extend(&a);
        x.extend(&b);
        x.extend(&c);
    }
    x.truncate(75 * 16000);
    let p = dir.path().join("long.wav");
    write_wav(&p, 16000, &x);
    let m = model("tiny-multi");
    let (code, out, err) = run(&[
        "transcribe",
        p.to_str().unwrap(),
        "--model",
        &m,
        "--format",
        "json",
        "--max-new-tokens",
        "40",
        "--no-speech-threshold",
        "none",
        "--temperature",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!((v["duration_s"].as_f64().unwrap() - 75.0).abs() < 1e-3);
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    let mut last_start = 0.0;
    for s in segs {
        let (st, en) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(st >= last_start - 1e-6 && en >= st, "{s}");
        // segment times are clipped to the audio (the last window is padded)
        assert!(en <= 75.0 + 1e-6, "{s}");
        last_start = st;
    }
    // More than one window was decoded.
    assert!(
        segs.last().unwrap()["start"].as_f64().unwrap() >= 30.0,
        "{out}"
    );
    // SRT of the same run parses into numbered cues.
    let (code, srt, err) = run(&[
        "transcribe",
        p.to_str().unwrap(),
        "--model",
        &m,
        "--format",
        "srt",
        "--max-new-tokens",
        "40",
        "--no-speech-threshold",
        "none",
        "--temperature",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(srt.starts_with("1\n00:00:"), "{srt}");
    assert_eq!(srt.matches(" --> ").count(), segs.len());
}

#[test]
fn stdin_language_detection_and_translate() {
    use std::io::Write;
    use std::process::Stdio;
    let r = reference("tiny-multi");
    let m = model("tiny-multi");
    // stdin input, plain decoding: same ids as from the file.
    let mut args = vec!["transcribe", "-", "--model", &m, "--format", "jsonl"];
    args.extend_from_slice(PLAIN);
    let mut child = voxtok()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(wav("voiced")).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = &jsonl(&String::from_utf8_lossy(&out.stdout))[0];
    assert_eq!(v["path"], "-");
    let want: Vec<u64> = ids(&r["wav"]["voiced"]["plain"])
        .into_iter()
        .filter(|&t| t != 588)
        .collect();
    assert_eq!(all_tokens(v), want);
    // No --language: detected from the audio; translate task accepted.
    let f = wav("chirp");
    let (code, out, err) = run(&[
        "transcribe",
        &f,
        "--model",
        &m,
        "--format",
        "json",
        "--task",
        "translate",
        "--max-new-tokens",
        "8",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let lang = v["language"].as_str().unwrap();
    assert!(
        ["en", "zh", "de", "es", "ru", "fr", "ja", "uk"].contains(&lang),
        "{lang}"
    );
    // An unknown language is a usage error.
    let (code, _, err) = run(&["transcribe", &f, "--model", &m, "--language", "klingon"]);
    assert_eq!(code, 2);
    assert!(err.contains("klingon"), "{err}");
}

/// `--vad` drops the silence around speech, and segment times stay those
/// of the original file (2 s of silence, 1.5 s voiced, 2 s of silence).
#[test]
fn vad_skips_silence_and_keeps_original_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("padded.wav");
    let voiced = (0..24000).map(|i| {
        let t = i as f32 / 16000.0;
        0.3 * (1..6)
            .map(|k| (2.0 * std::f32::consts::PI * 150.0 * k as f32 * t).sin() / k as f32)
            .sum::<f32>()
    });
    let samples: Vec<f32> = std::iter::repeat_n(0.0, 32000)
        .chain(voiced)
        .chain(std::iter::repeat_n(0.0, 32000))
        .collect();
    write_wav(&path, 16000, &samples);
    let p = path.display().to_string();
    let m = model("tiny-en");
    let mut args = vec![
        "transcribe",
        p.as_str(),
        "--model",
        m.as_str(),
        "--format",
        "json",
        "--vad",
    ];
    args.extend_from_slice(PLAIN);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        (v["duration_s"].as_f64().unwrap() - 5.5).abs() < 0.01,
        "{v}"
    );
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty(), "{v}");
    // Speech starts at 2.0 s; the VAD pads regions by 0.4 s.
    let start = segs[0]["start"].as_f64().unwrap();
    assert!(
        (1.4..=2.0).contains(&start),
        "first segment starts at {start}"
    );
    for s in segs {
        assert!(s["end"].as_f64().unwrap() <= 5.5 + 1e-6, "{s}");
    }
    // A VAD model that is not a safetensors file is a usage error naming it.
    let bad = dir.path().join("vad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let b = bad.display().to_string();
    let (code, _, err) = run(&[
        "transcribe",
        p.as_str(),
        "--model",
        m.as_str(),
        "--vad-model",
        b.as_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("vad.safetensors"), "{err}");
}
