//! End-to-end tests of `voxtok vad` on the committed fixtures
//! (`tools/fixtures/gen_vad.py`): Silero segments equal silero's own
//! `get_speech_timestamps` on the onnxruntime probabilities; bad input is
//! reported with exit codes 1 / 2, never a panic.

use voxtok_tests::{fixture, voxtok};

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("vad/reference.json")).unwrap()).unwrap()
}

#[test]
fn silero_segments_match_reference() {
    let r = reference();
    let model = "silero_vad_v6_16k.safetensors";
    for sig in r["signals"].as_array().unwrap() {
        let file = fixture(sig["file"].as_str().unwrap());
        let out = voxtok()
            .args(["vad", "--format", "jsonl", "--model-file"])
            .arg(fixture("vad").join(model))
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(rec["error"].is_null());
        let got: Vec<(f64, f64)> = rec["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["start_s"].as_f64().unwrap(), s["end_s"].as_f64().unwrap()))
            .collect();
        let want: Vec<(f64, f64)> = sig["models"][model]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_f64().unwrap() / 16000.0,
                    s[1].as_f64().unwrap() / 16000.0,
                )
            })
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{}: {got:?} vs {want:?}",
            file.display()
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.0 - w.0).abs() < 1e-4 && (g.1 - w.1).abs() < 1e-4,
                "{g:?} vs {w:?}"
            );
        }
    }
}

#[test]
fn energy_default_text_output() {
    let out = voxtok()
        .arg("vad")
        .arg(fixture("vad/vad_speech_gap.wav"))
        .arg(fixture("vad/vad_silence.wav"))
        .arg(fixture("vad/vad_noise.wav"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // speech-silence-speech: silero finds 3 segments (the 2nd sentence has a pause); so does energy
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines.iter().all(|l| l.contains("vad_speech_gap.wav")),
        "{text}"
    );
    let first: Vec<f64> = lines[0]
        .split('\t')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        (first[0] - 0.48).abs() < 0.1 && (first[1] - 3.45).abs() < 0.1,
        "{text}"
    );
}

#[test]
fn bad_inputs_and_models() {
    // an undecodable input: reported, others carry on, exit 1
    let out = voxtok()
        .args(["vad", "--format", "jsonl"])
        .arg(fixture("audio/bad/text.wav"))
        .arg(fixture("vad/vad_speech.wav"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let recs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert!(recs[0]["error"].as_str().unwrap().contains("text.wav"));
    assert!(recs[1]["error"].is_null() && !recs[1]["segments"].as_array().unwrap().is_empty());
    // missing and wrong model files: exit 2 with the file named
    for (m, needle) in [
        ("vad/missing.safetensors", "missing.safetensors"),
        ("vad/vad_noise.wav", "not a safetensors file"),
        ("whisper/tiny-en/model.safetensors", "not a Silero VAD"),
    ] {
        let p = fixture(m);
        if m.starts_with("whisper") && !p.exists() {
            continue;
        }
        let out = voxtok()
            .args(["vad", "--model-file"])
            .arg(&p)
            .arg(fixture("vad/vad_speech.wav"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{m}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{m}: {err}"
        );
    }
}
