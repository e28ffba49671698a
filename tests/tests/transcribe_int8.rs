//! End-to-end test of `voxtok transcribe --dtype int8` (the int8 compute
//! type) on the random-weight Whisper fixtures. Its numerics are tested in
//! models (runtime::int8, whisper::model::int8_tests); here: the flag is
//! wired through, the output is a normal transcript, and float32 runs are
//! unaffected by the option's existence (same ids as transformers).

use serde_json::Value;
use voxtok_tests::{fixture, run, WHISPER_PLAIN};

fn transcribe(dtype: &str) -> (i32, Value, String) {
    let f = fixture("whisper/audio/voiced.wav").display().to_string();
    let m = fixture("whisper/tiny-multi").display().to_string();
    let mut args = vec![
        "transcribe",
        &f,
        "--model",
        &m,
        "--format",
        "json",
        "--dtype",
        dtype,
    ];
    args.extend_from_slice(WHISPER_PLAIN);
    let (code, out, err) = run(&args);
    let v = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, v, err)
}

fn tokens(v: &Value) -> Vec<u64> {
    v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
        })
        .collect()
}

#[test]
fn int8_dtype_transcribes_and_f32_keeps_its_ids() {
    let (code, f32_run, err) = transcribe("f32");
    assert_eq!(code, 0, "{err}");
    let (code, int8_run, err) = transcribe("int8");
    assert_eq!(code, 0, "{err}");
    assert!(int8_run["error"].is_null());
    let (a, b) = (tokens(&f32_run), tokens(&int8_run));
    assert!(!b.is_empty() && b.len() <= 24, "int8 tokens {b:?}");
    // The first decoded token depends on the audio through every quantized
    // layer; on this fixture it is the same as float32's.
    assert_eq!(a.first(), b.first(), "f32 {a:?} vs int8 {b:?}");
    let p = fixture("whisper/tiny-multi/reference.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let want: Vec<u64> = r["wav"]["voiced"]["plain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .filter(|&t| t != 588)
        .collect();
    assert_eq!(a, want, "float32 ids differ from transformers");
}

#[test]
fn int8_dtype_on_a_gpu_request_fails_cleanly() {
    let f = fixture("whisper/audio/voiced.wav").display().to_string();
    let m = fixture("whisper/tiny-multi").display().to_string();
    let (code, _, err) = run(&[
        "transcribe",
        &f,
        "--model",
        &m,
        "--dtype",
        "int8",
        "--device",
        "cuda",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
