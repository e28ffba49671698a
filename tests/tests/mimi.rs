//! End-to-end tests of `voxtok tokenize` / `detokenize` / `bench codec` with
//! `--codec mimi` on the random-weight fixture of tools/fixtures/gen_mimi.py.

use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use std::path::{Path, PathBuf};
use std::process::Output;
use voxtok_tests::{fixture, voxtok};

fn mimi() -> PathBuf {
    fixture("codecs/mimi")
}

fn run(args: &[&str]) -> Output {
    voxtok().args(args).output().expect("run voxtok")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Samples of a float32 mono WAV written by `detokenize --float`.
fn read_f32_wav(path: &Path) -> (u32, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"RIFF");
    let (mut pos, mut rate) = (12usize, 0u32);
    loop {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &b[pos + 8..pos + 8 + len];
        if id == b"fmt " {
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            assert_eq!(u16::from_le_bytes([body[14], body[15]]), 32, "float32 WAV");
        } else if id == b"data" {
            let x = body
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            return (rate, x);
        }
        pos += 8 + len + (len & 1);
    }
}

#[test]
fn mimi_codes_match_transformers_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let chirp = fixture("codecs/signals/chirp_24k.wav");
    let want: Array2<i64> = read_npy(mimi().join("chirp_codes_4.npy")).unwrap();
    // Default codebooks = all of them (transformers' default), and --codebooks 4.
    let model = mimi();
    for extra in [&[][..], &["--codebooks", "4"][..]] {
        let npy = dir.path().join("chirp.npy");
        let mut args = vec!["tokenize", "--codec", "mimi", "--model", s(&model)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&chirp), "-o", s(&npy)]);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let got: Array2<i64> = read_npy(&npy).unwrap();
        assert_eq!(got, want, "CLI codes differ from transformers' codes");
    }

    let wav = dir.path().join("chirp.wav");
    let npy = dir.path().join("chirp.npy");
    let o = run(&[
        "detokenize",
        "--codec",
        "mimi",
        "--model",
        s(&mimi()),
        s(&npy),
        "-o",
        s(&wav),
        "--float",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rate, y) = read_f32_wav(&wav);
    assert_eq!(rate, 24000);
    let want: Array1<f32> = read_npy(mimi().join("chirp_decoded_4.npy")).unwrap();
    assert_eq!(y.len(), want.len());
    let err = y
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-4, "decoded audio max abs err {err}");
    assert!(y.iter().any(|v| v.abs() > 1e-3), "decoded audio is silent");

    // Codes out of range (codebook size 32) and too many codebooks: exit 2 or 1
    // with a message, never a panic.
    for (name, codes) in [
        ("range.npy", Array2::<i64>::from_elem((2, 5), 32)),
        ("five.npy", Array2::<i64>::zeros((5, 5))),
    ] {
        let p = dir.path().join(name);
        write_npy(&p, &codes).unwrap();
        let o = run(&[
            "detokenize",
            "--codec",
            "mimi",
            "--model",
            s(&mimi()),
            s(&p),
            "-o",
            s(&dir.path().join("x.wav")),
        ]);
        assert!(!o.status.success(), "{name}: accepted");
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(
            e.contains("out of range") || e.contains("5 codebooks"),
            "{name}: {e}"
        );
    }
}

#[test]
fn mimi_bench_codec_streams_like_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = run(&[
        "bench",
        "codec",
        "--dataset",
        s(&fixture("codecs/signals/speech_24k.wav")),
        "--codec",
        "mimi",
        "--model",
        s(&mimi()),
        "--codebooks",
        "2,4",
        "--stream-chunk-ms",
        "80",
        "--json",
        s(&json),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // 12.5 Hz x 4 codebooks x 5 bits = 250 bps.
    assert!((rows[1]["frame_rate"].as_f64().unwrap() - 12.5).abs() < 1e-9);
    let st = v["streaming"].as_array().unwrap();
    assert_eq!(st.len(), 2);
    for s in st {
        assert_eq!(s["identical_to_whole_file"], true, "{s}");
    }
}
