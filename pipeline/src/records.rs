//! Output records (one per input): plain text, a JSON array, or JSONL
//! appended and flushed per record, and `--resume` from an existing JSONL.

use serde_json::Value;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per input.
    Text,
    /// One JSON array of records, written at the end.
    Json,
    /// One JSON object per line, written as each input completes.
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            _ => Err(format!("unknown format `{s}` (text, json, jsonl)")),
        }
    }
}

/// Environment variable of the test-only fault point: abort the process
/// right after writing this many records (to test `--resume`).
pub const ABORT_AFTER_ENV: &str = "VOXTOK_TEST_ABORT_AFTER";

/// Writes one record per input to a file or stdout.
pub struct RecordWriter {
    format: Format,
    out: Box<dyn Write + Send>,
    json: Vec<Value>,
    written: u64,
    abort_after: Option<u64>,
}

impl RecordWriter {
    /// Write to `path` (stdout when `None` or `-`); `append` keeps what is
    /// there (JSONL resume).
    pub fn create(path: Option<&Path>, format: Format, append: bool) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) if p != Path::new("-") => {
                if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d)?;
                }
                let f = if append {
                    OpenOptions::new().create(true).append(true).open(p)?
                } else {
                    File::create(p)?
                };
                Box::new(f)
            }
            _ => Box::new(io::stdout()),
        };
        let abort_after = std::env::var(ABORT_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(RecordWriter {
            format,
            out,
            json: Vec::new(),
            written: 0,
            abort_after,
        })
    }

    /// Write one record; `text` is its line in text format. JSONL and text
    /// lines go out (and are flushed) now, in one write each.
    pub fn write(&mut self, record: Value, text: &str) -> io::Result<()> {
        match self.format {
            Format::Jsonl => {
                let mut line = serde_json::to_string(&record).map_err(io::Error::other)?;
                line.push('\n');
                self.out.write_all(line.as_bytes())?;
                self.out.flush()?;
            }
            Format::Text => {
                self.out.write_all(format!("{text}\n").as_bytes())?;
                self.out.flush()?;
            }
            Format::Json => self.json.push(record),
        }
        self.written += 1;
        if self.abort_after == Some(self.written) {
            eprintln!("{ABORT_AFTER_ENV}: aborting after {} records", self.written);
            std::process::abort();
        }
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Write the JSON array (JSON format) and flush.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.format == Format::Json {
            let s = serde_json::to_string_pretty(&Value::Array(std::mem::take(&mut self.json)))
                .map_err(io::Error::other)?;
            self.out.write_all(s.as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

/// What `--resume` found in an existing JSONL output.
#[derive(Debug, Default)]
pub struct Resume {
    /// `path` of every record that worked (`error` null): skip these.
    pub done: HashSet<String>,
    /// Records dropped (failed, to be retried, or a torn last line).
    pub dropped: usize,
}

/// Prepare `path` for a resumed run: keep the records that worked, drop
/// failed ones and any torn or invalid line (rewriting the file atomically
/// if something is dropped), and return the set of finished inputs.
pub fn prepare_resume(path: &Path) -> io::Result<Resume> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Resume::default()),
        Err(e) => return Err(e),
    };
    let mut keep = Vec::new();
    let mut res = Resume::default();
    for line in io::BufReader::new(f).split(b'\n') {
        let line = line?;
        let ok = serde_json::from_slice::<Value>(&line)
            .ok()
            .filter(|v| v.get("error").is_some_and(Value::is_null))
            .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_string));
        match ok {
            Some(p) if !res.done.contains(&p) => {
                res.done.insert(p);
                keep.push(line);
            }
            _ => res.dropped += usize::from(!line.iter().all(u8::is_ascii_whitespace)),
        }
    }
    if res.dropped > 0 {
        let tmp = PathBuf::from(format!("{}.resume-tmp", path.display()));
        let mut w = io::BufWriter::new(File::create(&tmp)?);
        for l in &keep {
            w.write_all(l)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_keeps_good_records_and_drops_torn_lines() {
        let p = std::env::temp_dir().join(format!("voxtok-resume-{}.jsonl", std::process::id()));
        std::fs::write(
            &p,
            concat!(
                "{\"path\":\"a\",\"error\":null}\n",
                "{\"path\":\"b\",\"error\":\"bad header\"}\n",
                "{\"path\":\"c\",\"error\":null}\n",
                "{\"path\":\"d\",\"err"
            ),
        )
        .unwrap();
        let r = prepare_resume(&p).unwrap();
        assert_eq!(r.done, ["a", "c"].iter().map(|s| s.to_string()).collect());
        assert_eq!(r.dropped, 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"path\":\"a\",\"error\":null}\n{\"path\":\"c\",\"error\":null}\n"
        );
        let mut w = RecordWriter::create(Some(&p), Format::Jsonl, true).unwrap();
        w.write(json!({"path": "b", "error": null}), "").unwrap();
        w.finish().unwrap();
        let r = prepare_resume(&p).unwrap();
        assert_eq!((r.done.len(), r.dropped), (3, 0));
        std::fs::remove_file(&p).unwrap();
        assert!(
            prepare_resume(&p).unwrap().done.is_empty(),
            "a missing output resumes from nothing"
        );
    }
}
