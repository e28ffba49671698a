//! Scoring an ASR run on a labelled set, and putting it beside a peer run
//! (e.g. faster-whisper via tools/bench/asr_faster_whisper.py) of the same
//! files: pooled WER after [`crate::english::normalize`], x real time and
//! peak memory, as a Markdown table.

use crate::english::wer_counts;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One engine's run over a set of files.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunScore {
    pub engine: String,
    pub files: usize,
    /// Files with no hypothesis (failed or missing from the run).
    pub missing: usize,
    pub word_errors: usize,
    pub ref_words: usize,
    pub audio_s: f64,
    pub wall_s: f64,
    pub peak_rss_mb: Option<f64>,
}

impl RunScore {
    /// Pooled WER in percent.
    pub fn wer(&self) -> f64 {
        100.0 * self.word_errors as f64 / self.ref_words.max(1) as f64
    }
    /// Audio seconds per wall second.
    pub fn x_real_time(&self) -> f64 {
        self.audio_s / self.wall_s.max(1e-9)
    }
}

/// Scores hypotheses against references; a missing hypothesis counts as
/// an empty transcript (all deletions) and is counted in `missing`.
pub fn score<'a>(
    engine: &str,
    refs: impl IntoIterator<Item = (&'a Path, &'a str)>,
    hyps: &HashMap<PathBuf, String>,
) -> RunScore {
    let mut s = RunScore {
        engine: engine.to_string(),
        ..Default::default()
    };
    for (path, reference) in refs {
        s.files += 1;
        let hyp = match hyps.get(path) {
            Some(h) => h.as_str(),
            None => {
                s.missing += 1;
                ""
            }
        };
        let (e, n) = wer_counts(reference, hyp);
        s.word_errors += e;
        s.ref_words += n;
    }
    s
}

/// A peer run read from JSONL: `{"path", "text"}` lines and a final
/// `{"summary": {"engine", "wall_s", "audio_s", "peak_rss_mb", ...}}`.
#[derive(Debug, Clone, Default)]
pub struct PeerRun {
    pub texts: HashMap<PathBuf, String>,
    pub summary: serde_json::Value,
}

/// Reads a peer JSONL file, naming the file and line in errors.
pub fn read_peer(path: &Path) -> Result<PeerRun, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut run = PeerRun::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: invalid JSON: {e}", path.display(), i + 1))?;
        if let Some(s) = v.get("summary") {
            run.summary = s.clone();
        } else if let (Some(p), Some(t)) = (v["path"].as_str(), v["text"].as_str()) {
            run.texts.insert(PathBuf::from(p), t.to_string());
        } else {
            return Err(format!(
                "{}:{}: expected `path` and `text`",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(run)
}

/// A Markdown table of the runs, one row each.
pub fn markdown(runs: &[RunScore]) -> String {
    let mut out = String::from(
        "| engine | files | WER % | x real time | peak RSS MiB | missing |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} | {} | {} |\n",
            r.engine,
            r.files,
            r.wer(),
            r.x_real_time(),
            r.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}")),
            r.missing
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_pools_and_tables() {
        let a = PathBuf::from("a.wav");
        let b = PathBuf::from("b.wav");
        let refs = [
            (a.as_path(), "Agent logged in."),
            (b.as_path(), "Press one."),
        ];
        let mut hyps = HashMap::new();
        hyps.insert(a.clone(), "agent locked in".to_string());
        let s = score("voxtok", refs, &hyps);
        // a: 1 error / 3 words; b missing: 2 deletions / 2 words.
        assert_eq!(
            (s.files, s.missing, s.word_errors, s.ref_words),
            (2, 1, 3, 5)
        );
        assert!((s.wer() - 60.0).abs() < 1e-9);
        let t = markdown(&[RunScore {
            audio_s: 10.0,
            wall_s: 2.0,
            ..s
        }]);
        assert!(t.contains("| voxtok | 2 | 60.00 | 5.0 | - | 1 |"), "{t}");
    }

    #[test]
    fn reads_peer_jsonl_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("voxtok-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fw.jsonl");
        std::fs::write(
            &p,
            "{\"path\": \"a.wav\", \"text\": \"Hi.\", \"seconds\": 0.1}\n{\"summary\": {\"wall_s\": 2.5}}\n",
        )
        .unwrap();
        let run = read_peer(&p).unwrap();
        assert_eq!(run.texts[&PathBuf::from("a.wav")], "Hi.");
        assert_eq!(run.summary["wall_s"], 2.5);
        std::fs::write(&p, "{\"path\": \"a.wav\"}\n").unwrap();
        let err = read_peer(&p).unwrap_err();
        assert!(err.contains("fw.jsonl:1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
