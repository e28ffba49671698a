//! End-to-end runs of `voxtok features` on the stage graph: many inputs,
//! corrupt files, JSONL records, --resume after a kill, --shard, Ctrl-C.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use voxtok_tests::{fixture, voxtok};

const GOOD: &[&str] = &[
    "speech_16k.wav",
    "speech.flac",
    "speech.mp3",
    "speech_stereo_44k.wav",
    "chirp_16k.wav",
    "silence_16k.wav",
];
const BAD: &[&str] = &["empty.wav", "text.wav", "rate0.wav"];

/// A directory with the good fixtures (some in a subdirectory) and corrupt files.
fn corpus() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("in/sub")).unwrap();
    for (i, f) in GOOD.iter().enumerate() {
        let sub = if i % 2 == 0 { "in" } else { "in/sub" };
        std::fs::copy(fixture("audio").join(f), d.path().join(sub).join(f)).unwrap();
    }
    for f in BAD {
        std::fs::copy(
            fixture("audio/bad").join(f),
            d.path().join("in").join(format!("bad_{f}")),
        )
        .unwrap();
    }
    std::fs::write(d.path().join("in/readme.txt"), "not audio, not picked up").unwrap();
    d
}

fn features(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = voxtok();
    c.arg("features")
        .arg(dir.join("in"))
        .args(["--format", "jsonl", "-o"])
        .arg(dir.join("out.jsonl"));
    c.arg("--npy-dir").arg(dir.join("npy")).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `path` → record, checking every line is a complete JSON object.
fn records(p: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(p).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn last line in {}",
        p.display()
    );
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSONL line {line:?}: {e}"));
        let path = v["path"].as_str().unwrap().to_string();
        assert!(
            out.insert(path.clone(), v).is_none(),
            "{path} written twice"
        );
    }
    out
}

fn check_records(recs: &BTreeMap<String, Value>) {
    assert_eq!(
        recs.len(),
        GOOD.len() + BAD.len(),
        "one record per input: {recs:#?}"
    );
    for (path, r) in recs {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        if name.starts_with("bad_") {
            let e = r["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{path} should fail: {r}"));
            assert!(!e.is_empty());
            assert!(r["npy"].is_null());
        } else {
            assert!(r["error"].is_null(), "{path}: {r}");
            let npy = PathBuf::from(r["npy"].as_str().unwrap());
            let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&npy).unwrap();
            let shape: Vec<usize> = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(a.shape(), &shape[..]);
            assert_eq!(shape, vec![80, 3000], "{path}: Whisper 30 s window");
            assert!(a.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn directory_with_corrupt_files_reports_each_failure_and_loses_nothing() {
    let d = corpus();
    let out = features(d.path(), &["--stats", "-j", "2"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "some inputs failed: {stderr}");
    let recs = records(&d.path().join("out.jsonl"));
    check_records(&recs);
    for f in BAD {
        assert!(
            stderr.contains(&format!("bad_{f}")),
            "failure of {f} reported on stderr: {stderr}"
        );
    }
    for stage in ["decode", "resample", "mel", "write"] {
        assert!(
            stderr.lines().any(|l| l.starts_with(stage)),
            "--stats shows `{stage}`: {stderr}"
        );
    }
}

#[test]
fn resume_after_a_kill_equals_an_uninterrupted_run() {
    let d = corpus();
    let out = features(d.path(), &["-j", "2"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let want = records(&d.path().join("out.jsonl"));
    let npys = |recs: &BTreeMap<String, Value>| -> BTreeMap<String, Vec<u8>> {
        recs.values()
            .filter_map(|r| r["npy"].as_str())
            .map(|p| (p.to_string(), std::fs::read(p).unwrap()))
            .collect()
    };
    let want_npy = npys(&want);
    std::fs::remove_file(d.path().join("out.jsonl")).unwrap();
    std::fs::remove_dir_all(d.path().join("npy")).unwrap();

    let out = features(d.path(), &["-j", "2"], &[("VOXTOK_TEST_ABORT_AFTER", "4")]);
    assert!(
        !out.status.success() && out.status.code() != Some(1),
        "killed midway: {:?}",
        out.status
    );
    let partial = records(&d.path().join("out.jsonl"));
    assert_eq!(partial.len(), 4, "the killed run left 4 complete records");

    let out = features(d.path(), &["-j", "2", "--resume"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = records(&d.path().join("out.jsonl"));
    check_records(&got);
    assert_eq!(got, want, "same records as the uninterrupted run");
    assert_eq!(npys(&got), want_npy, "same features");

    // A second resume only retries the failures.
    let out = features(d.path(), &["--resume", "--stats"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} of {} inputs already done",
            GOOD.len(),
            recs_len()
        )),
        "{stderr}"
    );
    assert_eq!(records(&d.path().join("out.jsonl")), want);
}

fn recs_len() -> usize {
    GOOD.len() + BAD.len()
}

#[test]
fn shards_split_the_inputs_without_overlap() {
    let d = corpus();
    let mut seen = BTreeMap::new();
    for i in 0..3 {
        let o = d.path().join(format!("shard{i}.jsonl"));
        let out = voxtok()
            .arg("features")
            .arg(d.path().join("in"))
            .args(["--format", "jsonl", "--shard", &format!("{i}/3"), "-o"])
            .arg(&o)
            .arg("--npy-dir")
            .arg(d.path().join("npy"))
            .output()
            .unwrap();
        assert!(out.status.code() == Some(0) || out.status.code() == Some(1));
        for (k, _) in records(&o) {
            assert!(seen.insert(k, i).is_none(), "an input in two shards");
        }
    }
    assert_eq!(seen.len(), recs_len());
    let out = voxtok()
        .args(["features", "x.wav", "--shard", "3/3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad --shard is a usage error");
}

#[cfg(unix)]
#[test]
fn ctrl_c_drains_flushes_and_exits_130_then_resume_completes() {
    // Many inputs (hard links of one file) so the run is still going when
    // the signal arrives.
    let d = tempfile::tempdir().unwrap();
    let src = fixture("audio/speech_16k.wav");
    std::fs::create_dir_all(d.path().join("in")).unwrap();
    let n = 300;
    for i in 0..n {
        std::fs::hard_link(&src, d.path().join(format!("in/{i:04}.wav")))
            .or_else(|_| std::fs::copy(&src, d.path().join(format!("in/{i:04}.wav"))).map(|_| ()))
            .unwrap();
    }
    let out_path = d.path().join("out.jsonl");
    let mut child = voxtok()
        .arg("features")
        .arg(d.path().join("in"))
        .args(["--format", "jsonl", "--no-pad", "-j", "1", "-o"])
        .arg(&out_path)
        .arg("--npy-dir")
        .arg(d.path().join("npy"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::metadata(&out_path).map_or(0, |m| m.len()) == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no record written");
        std::thread::sleep(Duration::from_millis(5));
    }
    voxtok_tests::interrupt(&child);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Ctrl-C did not stop the run"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130));
    let recs = records(&out_path);
    assert!(
        !recs.is_empty() && recs.len() < n,
        "stopped early: {} records",
        recs.len()
    );
    assert!(
        recs.values().all(|r| r["error"].is_null()),
        "in-flight inputs finished, not failed"
    );

    let out = voxtok()
        .arg("features")
        .arg(d.path().join("in"))
        .args(["--format", "jsonl", "--no-pad", "--resume", "-o"])
        .arg(&out_path)
        .arg("--npy-dir")
        .arg(d.path().join("npy"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&out_path).len(), n);
}
