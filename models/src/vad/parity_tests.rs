//! Silero VAD parity with the wheel's ONNX model (onnxruntime), and energy
//! VAD checks, on the committed fixtures in `tests/fixtures/vad/`
//! (`tools/fixtures/gen_vad.py`).

use std::path::PathBuf;

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load(rel: &str) -> Vec<f32> {
    voxtok_codecs::read_audio(fixtures().join(rel), Some(SAMPLE_RATE))
        .expect("fixture audio")
        .samples
}

#[test]
fn silero_matches_onnxruntime() {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("vad/reference.json")).unwrap())
            .unwrap();
    for model in [
        "silero_vad_v6_16k.safetensors",
        "silero_vad_16k.safetensors",
    ] {
        silero_parity(&r, model);
    }
}

fn silero_parity(r: &serde_json::Value, model: &str) {
    let mut vad = SileroVad::load(fixtures().join("vad").join(model)).unwrap();
    let mut worst = 0f32;
    for sig in r["signals"].as_array().unwrap() {
        let name = sig["name"].as_str().unwrap();
        let m = &sig["models"][model];
        let x = load(sig["file"].as_str().unwrap());
        assert_eq!(x.len() as u64, sig["samples"].as_u64().unwrap(), "{name}");
        let want: Vec<f32> = m["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // feed in odd-sized pieces: streaming must equal whole-signal batching
        vad.reset();
        let mut got = Vec::new();
        for piece in x.chunks(777) {
            got.extend(vad.feed(piece).unwrap());
        }
        got.extend(vad.flush().unwrap());
        assert_eq!(got.len(), want.len(), "{name}");
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{model} {name}: {} windows, max abs err {err:.2e}",
            got.len()
        );
        worst = worst.max(err);
        assert!(err <= 1e-4, "{name}: max abs error {err}");
        let segs: Vec<[u64; 2]> = segments(&got, x.len(), &SegmentParams::default())
            .iter()
            .map(|s| [s.start as u64, s.end as u64])
            .collect();
        let want_segs: Vec<[u64; 2]> = m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| [s[0].as_u64().unwrap(), s[1].as_u64().unwrap()])
            .collect();
        assert_eq!(segs, want_segs, "{name}: segments");
        // the reference probabilities through our segmenter give silero's segments too
        let from_ref: Vec<[u64; 2]> = segments(&want, x.len(), &SegmentParams::default())
            .iter()
            .map(|s| [s.start as u64, s.end as u64])
            .collect();
        assert_eq!(from_ref, want_segs, "{name}: segmenter port");
    }
    println!("{model}: worst max abs err {worst:.2e}");
}

#[test]
fn silero_rejects_wrong_model() {
    let dir = std::env::temp_dir().join(format!("voxtok-vad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.safetensors");
    std::fs::write(&p, b"not a model").unwrap();
    let e = SileroVad::load(&p).err().unwrap().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("safetensors"),
        "{e}"
    );
    let mut t = std::collections::HashMap::new();
    t.insert(
        "stft_conv.weight".to_string(),
        candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    let e = SileroVad::from_tensors(t, "x.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("stft_conv.weight") && e.contains("shape"), "{e}");
    let e = SileroVad::load(dir.join("missing.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A synthetic "speech-like" signal: a harmonic source (f0 100–180 Hz with
/// vibrato) through a formant-ish envelope, syllable-modulated at ~4 Hz.
fn speech_like(secs: f32, seed: u32) -> Vec<f32> {
    let n = (secs * SAMPLE_RATE as f32) as usize;
    let sr = SAMPLE_RATE as f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / sr;
            let f0 = 120.0 + 30.0 * (t * 1.3 + seed as f32).sin();
            let mut s = 0.0;
            for h in 1..30 {
                let f = f0 * h as f32;
                if f > 4000.0 {
                    break;
                }
                let formant = (-((f - 700.0) / 300.0).powi(2)).exp()
                    + 0.6 * (-((f - 1200.0) / 400.0).powi(2)).exp()
                    + 0.3 * (-((f - 2500.0) / 500.0).powi(2)).exp();
                s += formant * (std::f32::consts::TAU * f * t).sin();
            }
            let syll = 0.55 + 0.45 * (std::f32::consts::TAU * 4.0 * t).sin();
            0.1 * s * syll
        })
        .collect()
}

fn noise(n: usize, amp: f32, seed: u64) -> Vec<f32> {
    // xorshift, uniform in [-amp, amp]
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            amp * ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        })
        .collect()
}

#[test]
fn energy_finds_speech_like_segments() {
    let sr = SAMPLE_RATE as usize;
    // silence(1) speech(1.5) silence(1) speech(2) silence(0.7), with low noise
    let plan = [
        (false, 1.0),
        (true, 1.5),
        (false, 1.0),
        (true, 2.0),
        (false, 0.7),
    ];
    let mut x = Vec::new();
    let mut truth = Vec::new();
    for (k, (speech, d)) in plan.iter().enumerate() {
        let start = x.len() as f32 / sr as f32;
        if *speech {
            x.extend(speech_like(*d, k as u32));
            truth.push((start, start + d));
        } else {
            x.extend(vec![0.0; (*d * sr as f32) as usize]);
        }
    }
    let nz = noise(x.len(), 0.002, 7);
    for (a, b) in x.iter_mut().zip(nz) {
        *a += b;
    }
    let params = SegmentParams {
        speech_pad_ms: 0,
        ..Default::default()
    };
    let got = speech_regions(&x, &mut EnergyVad::default(), &params).unwrap();
    println!("energy: truth {truth:?} got {got:?}");
    assert_eq!(got.len(), truth.len(), "{got:?}");
    for (g, t) in got.iter().zip(&truth) {
        assert!(
            (g.0 - t.0).abs() <= 0.1 && (g.1 - t.1).abs() <= 0.1,
            "{g:?} vs {t:?}"
        );
    }
}

#[test]
fn energy_ignores_silence_and_noise() {
    let p = SegmentParams::default();
    let sr = SAMPLE_RATE as usize;
    let mut vad = EnergyVad::default();
    assert!(speech_regions(&vec![0.0; 3 * sr], &mut vad, &p)
        .unwrap()
        .is_empty());
    for amp in [0.001, 0.01, 0.05] {
        let r = speech_regions(&noise(3 * sr, amp, 3), &mut vad, &p).unwrap();
        assert!(r.is_empty(), "noise {amp}: {r:?}");
    }
    // a noise burst after silence (stationary noise is learned or rejected)
    let mut x = vec![0.0; sr];
    x.extend(noise(2 * sr, 0.01, 5));
    assert!(speech_regions(&x, &mut vad, &p).unwrap().is_empty());
}

#[test]
fn energy_on_fixture_speech() {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("vad/reference.json")).unwrap())
            .unwrap();
    for sig in r["signals"].as_array().unwrap() {
        let name = sig["name"].as_str().unwrap();
        let x = load(sig["file"].as_str().unwrap());
        let got = speech_regions(&x, &mut EnergyVad::default(), &SegmentParams::default()).unwrap();
        let want: Vec<(f32, f32)> = sig["models"]["silero_vad_v6_16k.safetensors"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_f64().unwrap() as f32 / 16000.0,
                    s[1].as_f64().unwrap() as f32 / 16000.0,
                )
            })
            .collect();
        println!("{name}: energy {got:?} silero {want:?}");
        if want.is_empty() {
            assert!(got.is_empty(), "{name}: {got:?}");
        } else {
            // every silero segment overlaps an energy segment
            for w in &want {
                assert!(
                    got.iter().any(|g| g.0 < w.1 && w.0 < g.1),
                    "{name}: {w:?} not found in {got:?}"
                );
            }
        }
    }
}
