//! Speech-to-LaTeX datasets listed in text files (audio files on disk):
//!
//! - **JSONL manifest**: one object per line,
//!   `{"audio": "a/1.wav", "latex": "x^{2}", "text": "x squared", "language": "en", "kind": "equation"}`;
//!   keys are discovered like parquet columns (see [`crate::s2l`]), audio paths
//!   are relative to the manifest's folder. Blank lines are skipped; a line
//!   that is not a JSON object is one failed item.
//! - **MathSpeech-style folder** (github.com/hyeonsieun/MathSpeech: `MathSpeech/1.mp3
//!   … 1101.mp3` beside a table with `transcription` and LaTeX columns): a
//!   `.csv` (RFC 4180 quoting), `.tsv` or `.json` (array of objects, or JSON
//!   lines) table. When the table has an audio column its values are file
//!   names relative to the table; without one, row *i* (1-based) is the audio
//!   file `<i>.<ext>` in the table's folder or a sub-folder of it (MathSpeech's
//!   numbering). Export MathSpeech's `.xlsx` table to CSV first.

use crate::s2l::{
    normalize_kind, normalize_language, resolve, AudioRef, Columns, Inner, Layout, Resolved,
    Result, S2lError, S2lItem, S2lSet,
};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

type Row = Map<String, Value>;

/// Opens a JSONL manifest.
pub fn open_jsonl(path: &Path, user: &Columns) -> Result<S2lSet> {
    let text = std::fs::read_to_string(path).map_err(|source| S2lError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rows: Vec<std::result::Result<Row, S2lError>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(manifest_err(path, n + 1, "not a JSON object".into())),
            Err(e) => Err(manifest_err(path, n + 1, format!("invalid JSON: {e}"))),
        });
    }
    build(path, rows, user, Layout::Jsonl, false)
}

/// Opens a MathSpeech-style table (`.csv`, `.tsv`, `.json`) with its audio files.
pub fn open_table(path: &Path, user: &Columns) -> Result<S2lSet> {
    let text = std::fs::read_to_string(path).map_err(|source| S2lError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows: Vec<std::result::Result<Row, S2lError>> = match ext.as_str() {
        "json" => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(o) => Ok(o),
                    _ => Err(manifest_err(path, i + 1, "not a JSON object".into())),
                })
                .collect(),
            Ok(_) => return Err(manifest_err(path, 1, "expected an array of objects".into())),
            Err(_) => {
                return open_jsonl(path, user).map(|mut s| {
                    s.layout = Layout::MathSpeech;
                    s
                })
            }
        },
        _ => {
            let sep = if ext == "tsv" { '\t' } else { ',' };
            let records =
                parse_delimited(&text, sep).map_err(|(line, msg)| manifest_err(path, line, msg))?;
            let mut it = records.into_iter();
            let header = it
                .next()
                .ok_or_else(|| manifest_err(path, 1, "empty table".into()))?;
            it.enumerate()
                .filter(|(_, r)| !(r.len() == 1 && r[0].trim().is_empty()))
                .map(|(i, r)| {
                    if r.len() != header.len() {
                        return Err(manifest_err(
                            path,
                            i + 2,
                            format!("{} fields, header has {}", r.len(), header.len()),
                        ));
                    }
                    Ok(header
                        .iter()
                        .cloned()
                        .zip(r.into_iter().map(Value::String))
                        .collect())
                })
                .collect()
        }
    };
    build(path, rows, user, Layout::MathSpeech, true)
}

fn manifest_err(path: &Path, line: usize, msg: String) -> S2lError {
    S2lError::Manifest {
        path: path.to_path_buf(),
        line,
        msg,
    }
}

fn build(
    path: &Path,
    rows: Vec<std::result::Result<Row, S2lError>>,
    user: &Columns,
    layout: Layout,
    numbered_audio: bool,
) -> Result<S2lSet> {
    // Columns: union of keys in order of first appearance.
    let mut names: Vec<String> = Vec::new();
    for r in rows.iter().flatten() {
        for k in r.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let (columns, numbered) = match resolve(path, &names, &[], user) {
        Ok(c) => (c, false),
        Err(S2lError::NoAudioColumn { .. }) if numbered_audio && user.audio.is_none() => {
            // MathSpeech: rows are numbered audio files. Resolve the rest
            // with a placeholder audio column.
            let mut with = names.clone();
            with.push("\u{0}audio".into());
            let mut u = user.clone();
            u.audio = Some("\u{0}audio".into());
            (resolve(path, &with, &[], &u)?, true)
        }
        Err(e) => return Err(e),
    };
    let audio_files = if numbered {
        numbered_files(&base)
    } else {
        Vec::new()
    };
    let len = rows.len();
    let items: Vec<Result<S2lItem>> = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r?;
            item(
                path,
                &base,
                i,
                &r,
                &columns,
                numbered.then_some(&audio_files[..]),
            )
        })
        .collect();
    Ok(S2lSet {
        path: path.to_path_buf(),
        layout,
        columns,
        len,
        inner: Inner::Items(items.into_iter()),
    })
}

/// Audio files named `<number>.<ext>` in `dir` or one folder below, by number.
fn numbered_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let mut scan = |d: &Path| {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if let Some(n) = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    if p.is_file() {
                        out.push((n, p));
                    }
                }
            }
        }
    };
    scan(dir);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                scan(&e.path());
            }
        }
    }
    out.sort();
    out
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn item(
    path: &Path,
    base: &Path,
    i: usize,
    r: &Row,
    c: &Resolved,
    numbered: Option<&[(u64, PathBuf)]>,
) -> Result<S2lItem> {
    let bad = |msg: String| S2lError::Item {
        source_path: path.to_path_buf(),
        index: i,
        msg,
    };
    let audio = match numbered {
        Some(files) => files
            .iter()
            .find(|(n, _)| *n == i as u64 + 1)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| bad(format!("no audio file {}.* for row {}", i + 1, i + 1)))?,
        None => {
            let a = text_of(r.get(&c.audio))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad(format!("no audio in `{}`", c.audio)))?;
            let p = Path::new(&a);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        }
    };
    let latex =
        text_of(r.get(&c.latex)).ok_or_else(|| bad(format!("no LaTeX in `{}`", c.latex)))?;
    let kind = text_of(c.kind.as_ref().and_then(|k| r.get(k)));
    Ok(S2lItem {
        id: audio.display().to_string(),
        audio: AudioRef::File(audio),
        kind: normalize_kind(kind.as_deref(), &latex),
        latex,
        spoken: text_of(c.text.as_ref().and_then(|k| r.get(k))),
        language: text_of(c.lang.as_ref().and_then(|k| r.get(k))).map(|l| normalize_language(&l)),
    })
}

/// Splits delimited text into records (RFC 4180: `"` quotes, `""` escapes,
/// quoted fields may hold separators and newlines). Errors carry a line number.
pub fn parse_delimited(
    text: &str,
    sep: char,
) -> std::result::Result<Vec<Vec<String>>, (usize, String)> {
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut at_start = true;
    while let Some(ch) = chars.next() {
        if quoted {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(ch);
                }
                _ => field.push(ch),
            }
            continue;
        }
        match ch {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            c if c == sep => {
                rec.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut rec));
                line += 1;
                at_start = true;
            }
            _ => {
                field.push(ch);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err((line, "unterminated quoted field".into()));
    }
    if !field.is_empty() || !rec.is_empty() {
        rec.push(field);
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s2l::{open, read_all};

    fn wav(path: &Path) {
        // 0.5 s of a 440 Hz tone, 16-bit PCM WAV at 8 kHz.
        let rate = 8000u32;
        let n = rate / 2;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + n * 2).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(n * 2).to_le_bytes());
        for i in 0..n {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0;
            b.extend_from_slice(&(s as i16).to_le_bytes());
        }
        std::fs::write(path, b).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("voxtok-s2l-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn jsonl_paths_are_relative_to_the_manifest() {
        let d = tmp("jsonl");
        std::fs::create_dir_all(d.join("clips")).unwrap();
        wav(&d.join("clips/a.wav"));
        std::fs::write(d.join("clips/b.wav"), b"RIFF not really a wav file").unwrap();
        std::fs::write(
            d.join("m.jsonl"),
            concat!(
                r#"{"audio": "clips/a.wav", "latex": "x^{2}", "text": "x squared", "language": "eng"}"#,
                "\n\n",
                r#"{"audio": "clips/b.wav", "latex": "\\frac{1}{2", "text": "one half", "language": "en"}"#,
                "\nnot json\n",
                r#"{"latex": "y"}"#,
                "\n"
            ),
        )
        .unwrap();
        // Opened through the folder (the only .jsonl in it).
        let set = open(&d, None, &Columns::default()).unwrap();
        assert_eq!(set.layout, Layout::Jsonl);
        assert_eq!(set.len, 4);
        let (items, errs) = read_all(set);
        assert_eq!(items.len(), 2);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].to_string().contains("line 4"), "{}", errs[0]);
        assert!(errs[1].to_string().contains("no audio"), "{}", errs[1]);
        assert_eq!(items[0].audio, AudioRef::File(d.join("clips/a.wav")));
        assert_eq!(items[0].spoken.as_deref(), Some("x squared"));
        assert_eq!(items[0].language.as_deref(), Some("en"));
        // The good file decodes (8 kHz → 16 kHz); the bad bytes are an Audio error.
        assert!((items[0].load_audio().unwrap().len() as i64 - 8000).abs() < 50);
        let e = items[1].load_audio().unwrap_err();
        assert!(matches!(e, S2lError::Audio { .. }), "{e}");
        assert!(e.to_string().contains("b.wav"), "{e}");
        // Unbalanced reference → Reference error; the good one passes.
        items[0].check_reference().unwrap();
        assert!(matches!(
            items[1].check_reference(),
            Err(S2lError::Reference { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn mathspeech_numbered_audio_and_csv_quoting() {
        let d = tmp("mathspeech");
        std::fs::create_dir_all(d.join("MathSpeech")).unwrap();
        wav(&d.join("MathSpeech/1.wav"));
        wav(&d.join("MathSpeech/2.wav"));
        std::fs::write(
            d.join("MathSpeech.csv"),
            "transcription,LaTeX\n\"x squared, plus one\",x^2+1\n\"say \"\"a\"\"\",a\nthree,3\n",
        )
        .unwrap();
        let set = open(&d, None, &Columns::default()).unwrap();
        assert_eq!(set.layout, Layout::MathSpeech);
        assert_eq!(set.columns.latex, "LaTeX");
        assert_eq!(set.columns.text.as_deref(), Some("transcription"));
        let (items, errs) = read_all(set);
        assert_eq!(items.len(), 2);
        assert_eq!(errs.len(), 1, "row 3 has no 3.* audio");
        assert_eq!(items[0].spoken.as_deref(), Some("x squared, plus one"));
        assert_eq!(items[1].spoken.as_deref(), Some("say \"a\""));
        assert_eq!(items[1].audio, AudioRef::File(d.join("MathSpeech/2.wav")));
        // TSV with an audio column and an override.
        std::fs::remove_file(d.join("MathSpeech.csv")).unwrap();
        std::fs::write(
            d.join("pairs.tsv"),
            "wav\tformula\nMathSpeech/2.wav\t\\alpha\n",
        )
        .unwrap();
        let user = Columns {
            audio: Some("wav".into()),
            ..Default::default()
        };
        let (items, errs) = read_all(open(&d.join("pairs.tsv"), None, &user).unwrap());
        assert!(errs.is_empty());
        assert_eq!(items[0].latex, "\\alpha");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn delimited_parser() {
        let r = parse_delimited("a,b\r\n\"x\ny\",\"\"\"q\"\"\"\n", ',').unwrap();
        assert_eq!(r, vec![vec!["a", "b"], vec!["x\ny", "\"q\""]]);
        assert_eq!(parse_delimited("\"open", ',').unwrap_err().0, 1);
    }
}
