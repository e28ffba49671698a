//! Input lists: files, directories (recursive, by extension), glob patterns,
//! manifests (one path a line, or JSONL with `path`), stdin (`-`), and
//! deterministic sharding.

use std::collections::HashSet;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Audio file extensions picked up when walking a directory.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "ogg", "oga", "m4a", "mp4", "aac", "aif", "aiff", "caf", "mka",
    "mkv", "webm",
];

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// A file path (it may not exist: that is reported as that input's failure).
    Path(PathBuf),
    /// Bytes on standard input.
    Stdin,
}

impl Input {
    /// The name used in output records (`path`) and to match `--resume`.
    pub fn key(&self) -> String {
        match self {
            Input::Path(p) => p.to_string_lossy().into_owned(),
            Input::Stdin => "-".to_string(),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Errors building the input list (bad usage: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("bad glob pattern `{pattern}`: {msg}")]
    Pattern { pattern: String, msg: String },
    #[error("pattern `{0}` matched no files")]
    NoMatch(String),
    #[error("{path}:{line}: {msg}")]
    Manifest {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("bad --shard `{0}`: expected I/N with 0 <= I < N")]
    Shard(String),
    #[error("no inputs given")]
    Empty,
}

fn io(path: &Path, e: std::io::Error) -> InputError {
    InputError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Files under `dir` with one of `exts`, recursively, sorted (symlinked
/// directories are not followed; hidden entries are skipped).
pub fn walk_dir(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let e = e.map_err(|e| io(&d, e))?;
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = e.file_type().map_err(|e| io(&p, e))?;
            if ft.is_dir() {
                stack.push(p);
            } else if (ft.is_file() || (ft.is_symlink() && p.is_file())) && has_ext(&p, exts) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand command-line inputs: `-` is stdin, directories are walked, glob
/// patterns expanded (sorted), other paths kept as given. Duplicates are
/// dropped (first occurrence wins).
pub fn expand(
    args: &[String],
    manifest: Option<&Path>,
    exts: &[&str],
) -> Result<Vec<Input>, InputError> {
    let mut out = Vec::new();
    for a in args {
        let p = Path::new(a);
        if a == "-" {
            out.push(Input::Stdin);
        } else if p.is_dir() {
            out.extend(walk_dir(p, exts)?.into_iter().map(Input::Path));
        } else if !p.exists() && is_pattern(a) {
            let paths = glob::glob(a).map_err(|e| InputError::Pattern {
                pattern: a.clone(),
                msg: e.to_string(),
            })?;
            let mut matched = Vec::new();
            for m in paths {
                let m = m.map_err(|e| InputError::Io {
                    path: e.path().display().to_string(),
                    source: e.into(),
                })?;
                if m.is_dir() {
                    matched.extend(walk_dir(&m, exts)?);
                } else {
                    matched.push(m);
                }
            }
            if matched.is_empty() {
                return Err(InputError::NoMatch(a.clone()));
            }
            matched.sort();
            out.extend(matched.into_iter().map(Input::Path));
        } else {
            out.push(Input::Path(p.to_path_buf()));
        }
    }
    if let Some(m) = manifest {
        out.extend(read_manifest(m)?);
    }
    let mut seen = HashSet::new();
    out.retain(|i| seen.insert(i.clone()));
    if out.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(out)
}

/// Read a manifest (`-` for stdin): one path a line, or JSON objects with a
/// `path` field; blank lines and `#` comments skipped. Relative paths are
/// relative to the manifest's directory.
pub fn read_manifest(path: &Path) -> Result<Vec<Input>, InputError> {
    let (reader, base): (Box<dyn BufRead>, PathBuf) = if path == Path::new("-") {
        (Box::new(std::io::stdin().lock()), PathBuf::new())
    } else {
        let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
        (
            Box::new(std::io::BufReader::new(f)),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| io(path, e))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |msg: String| InputError::Manifest {
            path: path.display().to_string(),
            line: i + 1,
            msg,
        };
        let entry = if t.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(t).map_err(|e| bad(e.to_string()))?;
            match v.get("path").and_then(|p| p.as_str()) {
                Some(p) => p.to_string(),
                None => return Err(bad("JSON line without a string `path`".into())),
            }
        } else {
            t.to_string()
        };
        let p = Path::new(&entry);
        out.push(Input::Path(if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }));
    }
    Ok(out)
}

/// `--shard I/N`: worker I (0-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        let bad = || InputError::Shard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The inputs of this shard: every N-th of the sorted list, starting at
    /// I; the same on every worker whatever order the inputs were given in.
    /// The result keeps the given order.
    pub fn select(&self, inputs: Vec<Input>) -> Vec<Input> {
        let mut keys: Vec<String> = inputs.iter().map(Input::key).collect();
        keys.sort();
        keys.dedup();
        let mine: HashSet<&String> = keys.iter().skip(self.index).step_by(self.count).collect();
        inputs
            .into_iter()
            .filter(|i| mine.contains(&i.key()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn dirs_globs_manifests_and_dedup() {
        let d = std::env::temp_dir().join(format!("voxtok-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for f in [
            "a/1.wav",
            "a/b/2.FLAC",
            "a/notes.txt",
            "a/.hidden/3.wav",
            "c.mp3",
            "d.wav",
        ] {
            touch(&d.join(f));
        }
        let s = |p: &str| d.join(p).to_string_lossy().into_owned();
        let got = expand(
            &[
                s("a"),
                s("*.mp3"),
                s("a/1.wav"),
                "-".into(),
                s("missing.wav"),
            ],
            None,
            AUDIO_EXTENSIONS,
        )
        .unwrap();
        let want = vec![
            Input::Path(d.join("a/1.wav")),
            Input::Path(d.join("a/b/2.FLAC")),
            Input::Path(d.join("c.mp3")),
            Input::Stdin,
            Input::Path(d.join("missing.wav")),
        ];
        assert_eq!(got, want);
        assert!(matches!(
            expand(&[s("*.ogg")], None, AUDIO_EXTENSIONS),
            Err(InputError::NoMatch(_))
        ));

        let m = d.join("list.txt");
        std::fs::write(
            &m,
            "# comment\nd.wav\n\n{\"path\": \"c.mp3\", \"text\": \"hi\"}\n/abs/x.wav\n",
        )
        .unwrap();
        let got = expand(&[], Some(&m), AUDIO_EXTENSIONS).unwrap();
        assert_eq!(
            got,
            vec![
                Input::Path(d.join("d.wav")),
                Input::Path(d.join("c.mp3")),
                Input::Path("/abs/x.wav".into())
            ]
        );
        std::fs::write(&m, "{\"file\": 1}\n").unwrap();
        let e = expand(&[], Some(&m), AUDIO_EXTENSIONS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("list.txt:1") && e.contains("path"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shards_partition_the_sorted_list() {
        let inputs: Vec<Input> = ["e", "b", "a", "d", "c", "f", "g"]
            .iter()
            .map(|s| Input::Path(s.into()))
            .collect();
        let mut rev = inputs.clone();
        rev.reverse();
        let mut all = Vec::new();
        for i in 0..3 {
            let sh: Shard = format!("{i}/3").parse().unwrap();
            let a = sh.select(inputs.clone());
            let mut b = sh.select(rev.clone());
            b.reverse();
            assert_eq!(a, b, "same subset whatever the given order");
            all.extend(a);
        }
        all.sort();
        let mut want = inputs.clone();
        want.sort();
        assert_eq!(all, want, "shards partition the inputs");
        assert_eq!(
            "0/3".parse::<Shard>().unwrap().select(inputs.clone()).len(),
            3
        );
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
