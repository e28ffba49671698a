//! Reader for the Asterisk core sound prompts (Debian packages
//! `asterisk-core-sounds-en` and `asterisk-core-sounds-en-wav`, CC-BY-SA-3.0):
//! real human speech at 8 kHz with transcripts in `core-sounds-en.txt`
//! (`name: Transcript.` per line, `;` comments).
//! `scripts/setup.sh` unpacks them to `data/speech/asterisk/` with the
//! transcripts as `transcripts.txt`.

use std::path::{Path, PathBuf};

/// One prompt: its WAV file and reference transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utterance {
    pub id: String,
    pub path: PathBuf,
    pub text: String,
}

/// Problems reading the set.
#[derive(Debug, thiserror::Error)]
pub enum AsteriskError {
    #[error("{0}: no transcripts file (expected transcripts.txt or core-sounds-en.txt; run scripts/setup.sh)")]
    NoTranscripts(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The parsed set: utterances with audio present, and how many transcript
/// lines were skipped (non-speech like `[beep]`, or audio missing).
#[derive(Debug, Clone, Default)]
pub struct AsteriskSet {
    pub utterances: Vec<Utterance>,
    pub skipped_non_speech: usize,
    pub skipped_missing_audio: usize,
}

/// Reads `dir` (the unpacked sounds with `transcripts.txt` beside them).
/// Utterances come sorted by id, so runs and shards are deterministic.
pub fn read(dir: &Path) -> Result<AsteriskSet, AsteriskError> {
    let tx = ["transcripts.txt", "core-sounds-en.txt"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| AsteriskError::NoTranscripts(dir.to_path_buf()))?;
    let text = std::fs::read(&tx).map_err(|source| AsteriskError::Io {
        path: tx.clone(),
        source,
    })?;
    let mut set = parse(&String::from_utf8_lossy(&text), dir);
    set.utterances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(set)
}

/// Parses transcript lines; `dir` resolves `name` to `dir/name.wav`.
pub fn parse(transcripts: &str, dir: &Path) -> AsteriskSet {
    let mut set = AsteriskSet::default();
    for line in transcripts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let Some((id, raw)) = line.split_once(':') else {
            continue;
        };
        let (id, raw) = (id.trim(), raw.trim());
        let text = strip_annotations(raw);
        if id.is_empty() || text.is_empty() {
            set.skipped_non_speech += 1;
            continue;
        }
        let path = dir.join(format!("{id}.wav"));
        if !path.is_file() {
            set.skipped_missing_audio += 1;
            continue;
        }
        set.utterances.push(Utterance {
            id: id.to_string(),
            path,
            text,
        });
    }
    set
}

/// Removes `[...]` annotations (`[beep]`, `at [@]`) and squeezes spaces.
fn strip_annotations(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_skips_tones_and_missing_audio() {
        let dir = std::env::temp_dir().join(format!("voxtok-ast-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("digits")).unwrap();
        for f in ["added.wav", "digits/1.wav", "letters-at.wav"] {
            std::fs::write(dir.join(f), b"RIFF").unwrap();
        }
        let tx = "; Core Asterisk Sounds\n\nadded: Added.\nbeep: [this is a simple beep tone]\n\
                  digits/1: One.\nletters-at: at [@]\nmissing: Not here.\nno colon line\n";
        std::fs::write(dir.join("transcripts.txt"), tx).unwrap();
        let set = read(&dir).unwrap();
        let ids: Vec<_> = set
            .utterances
            .iter()
            .map(|u| (u.id.as_str(), u.text.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("added", "Added."),
                ("digits/1", "One."),
                ("letters-at", "at")
            ]
        );
        assert_eq!(set.utterances[1].path, dir.join("digits/1.wav"));
        assert_eq!((set.skipped_non_speech, set.skipped_missing_audio), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = read(&dir).unwrap_err().to_string();
        assert!(err.contains("transcripts"), "{err}");
    }
}
