//! End-to-end: `voxtok features` on good and bad inputs together.

use std::process::Stdio;

use ndarray::Array2;
use ndarray_npy::ReadNpyExt;
use voxtok_tests::{fixture, voxtok};

fn read_npy(p: &std::path::Path) -> Array2<f32> {
    Array2::<f32>::read_npy(std::fs::File::open(p).unwrap()).unwrap()
}

/// The reference frames stored for (stem, n_mels, pad) are `[0, k)`: compare them.
fn assert_matches_reference(got: &Array2<f32>, reference: &str) {
    let want = read_npy(&fixture(&format!("mel/{reference}")));
    let k = want.shape()[1];
    assert_eq!(got.shape()[0], want.shape()[0]);
    let mut worst = 0f32;
    for j in 0..want.shape()[0] {
        for t in 0..k {
            worst = worst.max((got[[j, t]] - want[[j, t]]).abs());
        }
    }
    assert!(worst <= 1e-4, "{reference}: max abs err {worst}");
}

#[test]
fn single_input_writes_the_hf_log_mel() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("speech.npy");
    let o = voxtok()
        .args(["features", "--kind", "whisper-mel", "--n-mels", "128"])
        .arg(fixture("audio/speech_16k.wav"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mel = read_npy(&out);
    assert_eq!(mel.shape(), &[128, 3000]);
    assert_matches_reference(&mel, "speech_16k.128.pad.npy");
}

#[test]
fn good_and_bad_inputs_together() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("feats");
    let o = voxtok()
        .args(["features", "--no-pad"])
        .arg(fixture("audio/chirp_16k.wav"))
        .arg(fixture("audio/bad/text.wav"))
        .arg(fixture("audio/speech.flac"))
        .arg(fixture("audio/bad/truncated.mp3"))
        .arg(fixture("audio/no_such_file.wav"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    for bad in ["bad/text.wav", "bad/truncated.mp3", "no_such_file.wav"] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:") && l.contains(bad));
        assert!(line.is_some(), "no error line naming {bad}:\n{stderr}");
    }
    assert!(stderr.contains("not a recognised audio file"), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");
    // Good outputs are written and right; bad ones leave nothing behind.
    assert_matches_reference(
        &read_npy(&out.join("chirp_16k.npy")),
        "chirp_16k.80.nopad.npy",
    );
    let speech = read_npy(&out.join("speech.npy"));
    assert_eq!(speech.shape(), &[80, 291]);
    assert_matches_reference(&speech, "speech_16k.80.nopad.npy");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["chirp_16k.npy", "speech.npy"]);
}

#[test]
fn raw_pcm_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdin.npy");
    let mut child = voxtok()
        .args(["features", "--no-pad", "--raw-rate", "16000", "-", "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let raw = std::fs::read(fixture("audio/speech_16k_s16le.raw")).unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&raw).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_matches_reference(&read_npy(&out), "speech_16k.80.nopad.npy");
}

#[test]
fn bad_usage_exits_2() {
    let o = voxtok()
        .args(["features", "--n-mels", "64"])
        .arg(fixture("audio/speech_16k.wav"))
        .args(["-o", "/tmp/never-written.npy"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--n-mels"));
    let o = voxtok()
        .args(["features", "--kind", "nope", "x.wav", "-o", "y.npy"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
