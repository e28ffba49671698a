//! End-to-end tests of `voxtok tokenize` / `voxtok detokenize` on the
//! random-weight fixtures of tools/fixtures/gen_codecs.py.

use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use std::path::{Path, PathBuf};
use std::process::Output;
use voxtok_tests::{fixture, voxtok};

fn encodec() -> PathBuf {
    fixture("codecs/encodec")
}

fn hubert() -> PathBuf {
    fixture("codecs/hubert")
}

fn signal(name: &str) -> PathBuf {
    fixture(&format!("codecs/signals/{name}"))
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

/// Samples of a WAV written by voxtok (float32 or 16-bit PCM, mono).
fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"RIFF");
    let (mut pos, mut rate, mut bits, mut fmt) = (12usize, 0u32, 0u16, 0u16);
    loop {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = &b[pos + 8..pos + 8 + len];
        if id == b"fmt " {
            fmt = u16::from_le_bytes([body[0], body[1]]);
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            bits = u16::from_le_bytes([body[14], body[15]]);
        } else if id == b"data" {
            let x = match (fmt, bits) {
                (3 | 0xFFFE, 32) => body
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                (1 | 0xFFFE, 16) => body
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                    .collect(),
                other => panic!("unexpected WAV format {other:?}"),
            };
            return (rate, x);
        }
        pos += 8 + len + (len & 1);
    }
}

#[test]
fn encodec_npy_matches_transformers_codes_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("chirp.npy");
    let o = run(&[
        "tokenize",
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        "--bandwidth",
        "3.6",
        s(&signal("chirp_24k.wav")),
        "-o",
        s(&npy),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Array2<i64> = read_npy(&npy).unwrap();
    let want: Array2<i64> = read_npy(encodec().join("chirp_codes_8.npy")).unwrap();
    assert_eq!(got, want, "CLI codes differ from transformers' codes");

    // Same with --codebooks, and the first two rows equal --bandwidth 0.9.
    let npy2 = dir.path().join("chirp2.npy");
    let o = run(&[
        "tokenize",
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        "--codebooks",
        "2",
        s(&signal("chirp_24k.wav")),
        "-o",
        s(&npy2),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got2: Array2<i64> = read_npy(&npy2).unwrap();
    assert_eq!(got2, want.slice(ndarray::s![..2, ..]).to_owned());

    // Detokenize: float WAV equal to transformers' decoded audio (<= 1e-4).
    let wav = dir.path().join("chirp.wav");
    let o = run(&[
        "detokenize",
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        s(&npy),
        "-o",
        s(&wav),
        "--float",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rate, y) = read_wav(&wav);
    assert_eq!(rate, 24000);
    let want: Array1<f32> = read_npy(encodec().join("chirp_decoded_8.npy")).unwrap();
    assert_eq!(y.len(), want.len());
    let err = y
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-4, "decoded audio max abs err {err}");
    assert!(y.iter().any(|v| v.abs() > 1e-3), "decoded audio is silent");
}

#[test]
fn directory_to_jsonl_with_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for f in ["chirp_24k.wav", "noise_16k.wav", "speech_24k.wav"] {
        std::fs::copy(signal(f), inputs.join(f)).unwrap();
    }
    std::fs::write(inputs.join("broken.wav"), b"this is not audio").unwrap();
    let out = dir.path().join("codes.jsonl");
    let o = run(&[
        "-v",
        "tokenize",
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        "--bandwidth",
        "1.8",
        s(&inputs),
        "-o",
        s(&out),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "one input failed: exit 1\n{}",
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("broken.wav"), "{err}");
    assert!(err.contains("resampling 16000 Hz -> 24000 Hz"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 4);
    let want: Array2<i64> = read_npy(encodec().join("chirp_codes_8.npy")).unwrap();
    for r in &recs {
        let path = r["path"].as_str().unwrap();
        assert_eq!(r["codec"], "encodec");
        assert_eq!(r["frame_rate"], 75.0);
        if path.ends_with("broken.wav") {
            assert!(r["error"].is_string() && r["codes"].is_null(), "{r}");
            continue;
        }
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["codebooks"], 4);
        let rows = r["codes"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        if path.ends_with("chirp_24k.wav") {
            for (k, row) in rows.iter().enumerate() {
                let row: Vec<i64> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(row, want.row(k).to_vec(), "codebook {k}");
            }
        }
        if path.ends_with("noise_16k.wav") {
            // 0.4 s resampled to 24 kHz: 9600 samples -> 30 frames.
            assert_eq!(rows[0].as_array().unwrap().len(), 30);
        }
    }
}

#[test]
fn ssl_kmeans_ids_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("ids.npy");
    let km = hubert().join("centroids.npy");
    let o = run(&[
        "tokenize",
        "--codec",
        "ssl",
        "--model",
        s(&hubert()),
        "--layer",
        "2",
        "--kmeans",
        s(&km),
        s(&signal("speech_16k.wav")),
        "-o",
        s(&npy),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Array2<i64> = read_npy(&npy).unwrap();
    let want: Array1<i64> = read_npy(hubert().join("speech_ids_2.npy")).unwrap();
    assert_eq!(got.row(0).to_vec(), want.to_vec());

    // --dedup collapses runs.
    let o = run(&[
        "tokenize",
        "--codec",
        "ssl",
        "--model",
        s(&hubert()),
        "--layer",
        "2",
        "--kmeans",
        s(&km),
        "--dedup",
        s(&signal("speech_16k.wav")),
        "-o",
        s(&npy),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Array2<i64> = read_npy(&npy).unwrap();
    let mut d = want.to_vec();
    d.dedup();
    assert_eq!(got.row(0).to_vec(), d);

    // No decoder: detokenize says so (usage error).
    let o = run(&[
        "detokenize",
        "--codec",
        "ssl",
        "--model",
        s(&hubert()),
        s(&npy),
        "-o",
        "x.wav",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no decoder"), "{}", stderr(&o));
}

#[test]
fn bad_codes_and_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = encodec();
    let wav = dir.path().join("out.wav");
    let detok = |npy: &Path| {
        run(&[
            "detokenize",
            "--codec",
            "encodec",
            "--model",
            s(&m),
            s(npy),
            "-o",
            s(&wav),
        ])
    };
    type MakeFile = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, MakeFile, &str)> = vec![
        (
            "range.npy",
            Box::new(|p| write_npy(p, &Array2::<i64>::from_elem((2, 5), 64)).unwrap()),
            "out of range",
        ),
        (
            "negative.npy",
            Box::new(|p| write_npy(p, &Array2::<i64>::from_elem((2, 5), -1)).unwrap()),
            "out of range",
        ),
        (
            "nine.npy",
            Box::new(|p| write_npy(p, &Array2::<i64>::zeros((9, 5))).unwrap()),
            "9 codebooks",
        ),
        (
            "empty.npy",
            Box::new(|p| write_npy(p, &Array2::<i64>::zeros((2, 0))).unwrap()),
            "empty",
        ),
        (
            "float.npy",
            Box::new(|p| write_npy(p, &Array2::<f32>::zeros((2, 5))).unwrap()),
            "dtype",
        ),
        (
            "garbage.npy",
            Box::new(|p| std::fs::write(p, b"nope").unwrap()),
            "not a .npy",
        ),
    ];
    for (name, make, needle) in cases {
        let p = dir.path().join(name);
        make(&p);
        let o = detok(&p);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(
            e.contains(name) && e.contains(needle),
            "{name}: expected `{needle}` in: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }

    // Centroids of the wrong dimension: the model cannot be set up (exit 2).
    let bad = dir.path().join("bad_centroids.npy");
    write_npy(&bad, &Array2::<f32>::zeros((4, 7))).unwrap();
    let o = run(&[
        "tokenize",
        "--codec",
        "ssl",
        "--model",
        s(&hubert()),
        "--layer",
        "1",
        "--kmeans",
        s(&bad),
        s(&signal("chirp_16k.wav")),
        "-o",
        s(&dir.path().join("x.npy")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad_centroids.npy") && stderr(&o).contains("dimension 7"),
        "{}",
        stderr(&o)
    );

    // Bitrate beyond the model, unknown codec, several inputs into one .npy.
    let sig = signal("chirp_24k.wav");
    let out = dir.path().join("x.npy");
    for (args, needle) in [
        (vec!["--codec", "encodec", "--bandwidth", "24"], "codebooks"),
        (vec!["--codec", "mp3"], "unknown codec"),
        (
            vec!["--codec", "encodec", "--codebooks", "0"],
            "--codebooks 0",
        ),
    ] {
        let mut a = vec!["tokenize", "--model", s(&m)];
        a.extend(args);
        a.extend([s(&sig), "-o", s(&out)]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        assert!(stderr(&o).contains(needle), "{a:?}: {}", stderr(&o));
    }
    let o = run(&[
        "tokenize",
        "--codec",
        "encodec",
        "--model",
        s(&m),
        s(&sig),
        s(&signal("noise_24k.wav")),
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("JSONL"), "{}", stderr(&o));
}

#[test]
fn dac_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("speech.npy");
    let m = fixture("codecs/dac");
    // 24 kHz input, resampled to the model's 16 kHz.
    let o = run(&[
        "tokenize",
        "--codec",
        "dac",
        "--model",
        s(&m),
        "--codebooks",
        "4",
        s(&signal("speech_24k.wav")),
        "-o",
        s(&npy),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let codes: Array2<i64> = read_npy(&npy).unwrap();
    assert_eq!(codes.nrows(), 4);
    assert!(codes.iter().all(|&c| (0..64).contains(&c)));
    let wav = dir.path().join("speech.wav");
    let o = run(&[
        "detokenize",
        "--codec",
        "dac",
        "--model",
        s(&m),
        s(&npy),
        "-o",
        s(&wav),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rate, y) = read_wav(&wav);
    assert_eq!(rate, 16000);
    assert_eq!(y.len(), codes.ncols() * 512);
    assert!(y.iter().any(|v| v.abs() > 1e-2), "decoded audio is silent");
}

#[test]
fn bench_codec_prints_the_dasb_table() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let svg = dir.path().join("bench.svg");
    let o = run(&[
        "-q",
        "bench",
        "codec",
        "--dataset",
        s(&fixture("codecs/signals")),
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        "--codebooks",
        "2,8",
        "--json",
        s(&json),
        "--svg",
        s(&svg),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("| codebooks | kbps |") && out.contains("| 8 | 3.60 | 75.00 | 600.0 |"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["files"], 6);
    assert!(rows[1]["si_sdr_db"].is_number() && rows[1]["encode_xrt"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
}

#[test]
fn llm_ids_follow_the_documented_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.jsonl");
    let want: Array2<i64> = read_npy(encodec().join("chirp_codes_8.npy")).unwrap();
    for order in ["interleaved", "flattened"] {
        let o = run(&[
            "tokenize",
            "--codec",
            "encodec",
            "--model",
            s(&encodec()),
            "--codebooks",
            "2",
            "--llm-base",
            "1000",
            "--llm-order",
            order,
            s(&signal("chirp_24k.wav")),
            "-o",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
        let ids: Vec<i64> = r["llm_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let n = want.ncols();
        assert_eq!(ids.len(), 2 * n + 2);
        assert_eq!(
            (ids[0], ids[2 * n + 1]),
            (1000 + 2 * 64, 1000 + 2 * 64 + 1),
            "<audio> </audio>"
        );
        let (a, b) = if order == "interleaved" {
            (ids[1], ids[2])
        } else {
            (ids[1], ids[1 + n])
        };
        assert_eq!(a, 1000 + want[[0, 0]], "{order}: codebook 0, frame 0");
        assert_eq!(b, 1000 + 64 + want[[1, 0]], "{order}: codebook 1, frame 0");
    }
}

#[test]
fn bench_codec_reports_stoi_and_dwer() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let md = dir.path().join("bench.md");
    let o = run(&[
        "-q",
        "bench",
        "codec",
        "--dataset",
        s(&fixture("stoi/clean_16000.wav")),
        "--codec",
        "encodec",
        "--model",
        s(&encodec()),
        "--codebooks",
        "8",
        "--asr-model",
        s(&fixture("whisper/tiny-en")),
        "--json",
        s(&json),
        "--markdown",
        s(&md),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.contains("| STOI | dWER % |"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let row = &v["rows"][0];
    // Random-weight codec and ASR: only the range is meaningful.
    let stoi = row["stoi"].as_f64().expect("stoi present");
    assert!((-1.0..=1.0).contains(&stoi), "{stoi}");
    let dwer = row["dwer"].as_f64().expect("dwer present");
    assert!(dwer.is_finite() && dwer >= 0.0, "{dwer}");
}
