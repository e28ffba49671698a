//! Speech-to-LaTeX datasets: one reader over three layouts, yielding
//! [`S2lItem`]s (audio + LaTeX reference + spoken text + language + kind).
//!
//! Layouts ([`open`] picks one from the path):
//! - **Hugging Face parquet** (S2L, MathSpeech on the Hub, voxtok's own
//!   `tools/s2l/make_synthetic.py` / `make_corpus.py`): a `.parquet` file, or a
//!   directory holding `data/<split>-0000K-of-0000N.parquet` (or `*.parquet`
//!   anywhere below it). The audio column is a struct `{bytes, path}` (or
//!   `{array, sampling_rate}`), a binary column, or a string path.
//! - **JSONL manifest** (`*.jsonl`, or the only `.jsonl` in a directory):
//!   `{"audio": path, "latex": .., "text": .., "language": .., "kind": ..}` per
//!   line; paths are relative to the manifest. See [`crate::s2l_manifest`].
//! - **MathSpeech-style folder**: audio files plus a `.csv`/`.tsv`/`.json` table
//!   of audio file → LaTeX (and spoken text); see [`crate::s2l_manifest`].
//!
//! Column discovery (case-insensitive, first match wins; `--*-column` flags
//! override through [`Columns`]):
//! - audio: `audio`, then any struct column with a `bytes` or `array` field,
//!   then `audio_path`, `audio_filepath`, `file`, `file_name`, `filename`, `path`;
//! - LaTeX: `latex`, `formula`, `target`, `tex`, `sentence` (S2L's target column);
//! - spoken text: `spoken`, `pronunciation`, `transcription`, `text`,
//!   `sentence` (never the column chosen for LaTeX);
//! - language: `language`, `lang`, `locale` (values `eng`/`english` → `en`,
//!   `rus`/`russian` → `ru`); kind: `kind`, `type`.
//!
//! Per-item problems (null audio, a missing reference, audio that does not
//! decode, a reference that fails [`crate::latex_norm::check`]) are `Err`
//! items: the caller counts them and carries on with the rest.

use crate::latex_norm;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;
use parquet::schema::types::Type;
use std::path::{Path, PathBuf};
use voxtok_codecs::decode::{decode_all, Decoder};
use voxtok_codecs::resample::{Quality, Resampler};

/// Errors of the S2L readers. `Item`, `Audio` and `Reference` concern one
/// item; the others concern the whole dataset.
#[derive(Debug, thiserror::Error)]
pub enum S2lError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable parquet file: {msg}")]
    Parquet { path: PathBuf, msg: String },
    #[error("{path}: no audio column (columns: {}); name one with --audio-column", columns.join(", "))]
    NoAudioColumn { path: PathBuf, columns: Vec<String> },
    #[error("{path}: no LaTeX column (columns: {}); name one with --latex-column", columns.join(", "))]
    NoLatexColumn { path: PathBuf, columns: Vec<String> },
    #[error("{path}: no column `{name}` (columns: {})", columns.join(", "))]
    UnknownColumn {
        path: PathBuf,
        name: String,
        columns: Vec<String>,
    },
    #[error("{path}: no split `{split}` (splits: {})", available.join(", "))]
    NoSplit {
        path: PathBuf,
        split: String,
        available: Vec<String>,
    },
    #[error("{0}: no dataset found (expected parquet shards, a .jsonl manifest, or audio files with a .csv/.tsv/.json table)")]
    NoData(PathBuf),
    #[error("{path}: line {line}: {msg}")]
    Manifest {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{source_path} item {index}: {msg}")]
    Item {
        source_path: PathBuf,
        index: usize,
        msg: String,
    },
    #[error("{id}: audio does not decode: {msg}")]
    Audio { id: String, msg: String },
    #[error("{id}: bad LaTeX reference: {msg}")]
    Reference { id: String, msg: String },
}

pub type Result<T, E = S2lError> = std::result::Result<T, E>;

/// Where an item's audio is.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioRef {
    /// An encoded file held in memory (WAV, FLAC, MP3, ...).
    Bytes(Vec<u8>),
    /// Decoded samples (mono) at `rate` Hz.
    Samples { samples: Vec<f32>, rate: u32 },
    /// A file on disk.
    File(PathBuf),
}

/// One dataset item.
#[derive(Debug, Clone, PartialEq)]
pub struct S2lItem {
    /// A name for messages: the audio path or `<source>#<row>`.
    pub id: String,
    pub audio: AudioRef,
    /// Reference LaTeX (sentences carry inline maths in `$…$`).
    pub latex: String,
    /// Spoken form of the reference, when the dataset has it.
    pub spoken: Option<String>,
    /// `en`, `ru`, ... when known.
    pub language: Option<String>,
    /// `equation` or `sentence` (from a kind column, else `sentence` when
    /// the reference holds `$`).
    pub kind: String,
}

impl S2lItem {
    /// 16 kHz mono samples of the item's audio.
    pub fn load_audio(&self) -> Result<Vec<f32>> {
        let bad = |msg: String| S2lError::Audio {
            id: self.id.clone(),
            msg,
        };
        match &self.audio {
            AudioRef::Bytes(b) => {
                let dec =
                    Decoder::from_bytes(b.clone(), &self.id).map_err(|e| bad(e.to_string()))?;
                let a =
                    decode_all(dec, Some(16000), Quality::High).map_err(|e| bad(e.to_string()))?;
                nonempty(a.samples).map_err(bad)
            }
            AudioRef::File(p) => {
                let dec = Decoder::open(p).map_err(|e| bad(e.to_string()))?;
                let a =
                    decode_all(dec, Some(16000), Quality::High).map_err(|e| bad(e.to_string()))?;
                nonempty(a.samples).map_err(bad)
            }
            AudioRef::Samples { samples, rate } => {
                if *rate == 16000 {
                    return nonempty(samples.clone()).map_err(bad);
                }
                let s = Resampler::process_all(*rate, 16000, Quality::High, samples)
                    .map_err(|e| bad(e.to_string()))?;
                nonempty(s).map_err(bad)
            }
        }
    }

    /// Checks that the reference LaTeX is well formed (balanced braces).
    pub fn check_reference(&self) -> Result<()> {
        latex_norm::check(&self.latex).map_err(|e| S2lError::Reference {
            id: self.id.clone(),
            msg: e.to_string(),
        })
    }
}

fn nonempty(s: Vec<f32>) -> std::result::Result<Vec<f32>, String> {
    if s.is_empty() {
        Err("no samples".into())
    } else {
        Ok(s)
    }
}

/// Column names given by the user (`--audio-column` etc.); `None` = discover.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub audio: Option<String>,
    pub latex: Option<String>,
    pub text: Option<String>,
    pub lang: Option<String>,
}

/// The columns a reader uses (exact names as in the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub audio: String,
    pub latex: String,
    pub text: Option<String>,
    pub lang: Option<String>,
    pub kind: Option<String>,
}

const AUDIO_NAMES: &[&str] = &[
    "audio",
    "audio_path",
    "audio_filepath",
    "file",
    "file_name",
    "filename",
    "path",
];
const LATEX_NAMES: &[&str] = &["latex", "formula", "target", "tex", "sentence"];
const TEXT_NAMES: &[&str] = &[
    "spoken",
    "pronunciation",
    "transcription",
    "text",
    "sentence",
];
const LANG_NAMES: &[&str] = &["language", "lang", "locale"];
const KIND_NAMES: &[&str] = &["kind", "type"];

fn find(columns: &[String], names: &[&str], except: Option<&str>) -> Option<String> {
    names.iter().find_map(|n| {
        columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(n) && Some(c.as_str()) != except)
            .cloned()
    })
}

/// Resolves the columns of a dataset with these `columns` (in order);
/// `audio_like` names struct columns that hold audio (checked after `audio`).
pub fn resolve(
    path: &Path,
    columns: &[String],
    audio_like: &[String],
    user: &Columns,
) -> Result<Resolved> {
    let given = |name: &Option<String>| -> Result<Option<String>> {
        match name {
            None => Ok(None),
            Some(n) => columns
                .iter()
                .find(|c| *c == n)
                .or_else(|| columns.iter().find(|c| c.eq_ignore_ascii_case(n)))
                .cloned()
                .map(Some)
                .ok_or_else(|| S2lError::UnknownColumn {
                    path: path.to_path_buf(),
                    name: n.clone(),
                    columns: columns.to_vec(),
                }),
        }
    };
    let audio = match given(&user.audio)? {
        Some(a) => a,
        None => find(columns, &AUDIO_NAMES[..1], None)
            .or_else(|| audio_like.first().cloned())
            .or_else(|| find(columns, &AUDIO_NAMES[1..], None))
            .ok_or_else(|| S2lError::NoAudioColumn {
                path: path.to_path_buf(),
                columns: columns.to_vec(),
            })?,
    };
    let latex = match given(&user.latex)? {
        Some(l) => l,
        None => {
            find(columns, LATEX_NAMES, Some(&audio)).ok_or_else(|| S2lError::NoLatexColumn {
                path: path.to_path_buf(),
                columns: columns.to_vec(),
            })?
        }
    };
    let text = match given(&user.text)? {
        Some(t) => Some(t),
        None => find(columns, TEXT_NAMES, Some(&latex)),
    };
    let lang = match given(&user.lang)? {
        Some(l) => Some(l),
        None => find(columns, LANG_NAMES, None),
    };
    let kind = find(columns, KIND_NAMES, None);
    Ok(Resolved {
        audio,
        latex,
        text,
        lang,
        kind,
    })
}

/// `eng`/`english`/`en-US` → `en`, `rus`/`russian` → `ru`; other codes lower-cased.
pub fn normalize_language(l: &str) -> String {
    let l = l.trim().to_ascii_lowercase();
    let base = l.split(['-', '_']).next().unwrap_or("");
    match base {
        "eng" | "english" | "en" => "en".into(),
        "rus" | "russian" | "ru" => "ru".into(),
        _ => base.to_string(),
    }
}

/// `equation` or `sentence`, from a kind value or the reference itself.
pub fn normalize_kind(kind: Option<&str>, latex: &str) -> String {
    match kind.map(|k| k.trim().to_ascii_lowercase()) {
        Some(k) if k.starts_with("sent") || k == "text" => "sentence".into(),
        Some(k) if k.starts_with("eq") || k == "formula" => "equation".into(),
        _ if latex.contains('$') => "sentence".into(),
        _ => "equation".into(),
    }
}

/// An opened dataset: its layout, columns and item count; iterate it for items.
pub struct S2lSet {
    pub path: PathBuf,
    pub layout: Layout,
    pub columns: Resolved,
    /// Number of items (rows) it will yield.
    pub len: usize,
    pub(crate) inner: Inner,
}

/// The layout [`open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Parquet,
    Jsonl,
    MathSpeech,
}

pub(crate) enum Inner {
    Parquet(ParquetItems),
    Items(std::vec::IntoIter<Result<S2lItem>>),
}

impl Iterator for S2lSet {
    type Item = Result<S2lItem>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Parquet(p) => p.next(&self.columns),
            Inner::Items(it) => it.next(),
        }
    }
}

/// Opens a dataset at `path` (a file or a directory, see the module doc);
/// `split` keeps only parquet shards named `<split>-*` / `<split>_*` /
/// `<split>.parquet` or under a `<split>/` folder.
pub fn open(path: &Path, split: Option<&str>, user: &Columns) -> Result<S2lSet> {
    let io = |source| S2lError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let ext = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default()
    };
    if meta.is_file() {
        return match ext(path).as_str() {
            "parquet" => open_parquet(path, vec![path.to_path_buf()], user),
            "jsonl" => crate::s2l_manifest::open_jsonl(path, user),
            "csv" | "tsv" | "json" => crate::s2l_manifest::open_table(path, user),
            _ => Err(S2lError::NoData(path.to_path_buf())),
        };
    }
    let mut files = Vec::new();
    walk(path, &mut files, 0);
    files.sort();
    let shards: Vec<PathBuf> = files
        .iter()
        .filter(|f| ext(f) == "parquet")
        .cloned()
        .collect();
    if !shards.is_empty() {
        let shards = match split {
            None => shards,
            Some(s) => {
                let keep: Vec<PathBuf> = shards
                    .iter()
                    .filter(|f| split_of(path, f).as_deref() == Some(s))
                    .cloned()
                    .collect();
                if keep.is_empty() {
                    let mut available: Vec<String> =
                        shards.iter().filter_map(|f| split_of(path, f)).collect();
                    available.sort();
                    available.dedup();
                    return Err(S2lError::NoSplit {
                        path: path.to_path_buf(),
                        split: s.to_string(),
                        available,
                    });
                }
                keep
            }
        };
        return open_parquet(path, shards, user);
    }
    if let Some(m) = files.iter().find(|f| ext(f) == "jsonl") {
        return crate::s2l_manifest::open_jsonl(m, user);
    }
    if let Some(t) = files
        .iter()
        .find(|f| matches!(ext(f).as_str(), "csv" | "tsv" | "json"))
    {
        return crate::s2l_manifest::open_table(t, user);
    }
    Err(S2lError::NoData(path.to_path_buf()))
}

/// The split a shard belongs to: `test` for `data/test-00000-of-00001.parquet`,
/// `test.parquet`, `test_0.parquet` or `test/0000.parquet`.
pub fn split_of(root: &Path, shard: &Path) -> Option<String> {
    let stem = shard.file_stem()?.to_str()?;
    let name = stem
        .split_once(['-', '_'])
        .map_or(stem, |(a, _)| a)
        .to_string();
    if name.chars().all(|c| c.is_ascii_digit()) {
        // `test/0000.parquet`: the folder names the split.
        let parent = shard.parent()?;
        if parent != root {
            return parent.file_name()?.to_str().map(str::to_string);
        }
    }
    Some(name)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if depth < 4 {
                walk(&p, out, depth + 1);
            }
        } else {
            out.push(p);
        }
    }
}

fn pq_err(path: &Path, e: impl std::fmt::Display) -> S2lError {
    S2lError::Parquet {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn open_reader(path: &Path) -> Result<SerializedFileReader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|source| S2lError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    SerializedFileReader::new(f).map_err(|e| pq_err(path, e))
}

fn open_parquet(root: &Path, shards: Vec<PathBuf>, user: &Columns) -> Result<S2lSet> {
    let first = open_reader(&shards[0])?;
    let schema = first.metadata().file_metadata().schema().clone();
    let fields = schema.get_fields();
    let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
    let audio_like: Vec<String> = fields
        .iter()
        .filter(|f| {
            f.is_group()
                && f.get_fields()
                    .iter()
                    .any(|c| c.name() == "bytes" || c.name() == "array")
        })
        .map(|f| f.name().to_string())
        .collect();
    let columns = resolve(&shards[0], &names, &audio_like, user)?;
    let mut len = 0;
    for s in &shards {
        let n = if s == &shards[0] {
            first.metadata().file_metadata().num_rows()
        } else {
            open_reader(s)?.metadata().file_metadata().num_rows()
        };
        len += n.max(0) as usize;
    }
    Ok(S2lSet {
        path: root.to_path_buf(),
        layout: Layout::Parquet,
        columns,
        len,
        inner: Inner::Parquet(ParquetItems {
            shards,
            next_shard: 0,
            rows: None,
            shard: PathBuf::new(),
            row: 0,
        }),
    })
}

/// Row-by-row over the shards, reading only the resolved columns.
pub(crate) struct ParquetItems {
    shards: Vec<PathBuf>,
    next_shard: usize,
    rows: Option<RowIter<'static>>,
    shard: PathBuf,
    row: usize,
}

impl ParquetItems {
    fn open_shard(&mut self, cols: &Resolved) -> Result<()> {
        let path = self.shards[self.next_shard].clone();
        self.next_shard += 1;
        self.shard = path.clone();
        self.row = 0;
        let reader = open_reader(&path)?;
        let schema = reader.metadata().file_metadata().schema().clone();
        let wanted: Vec<&str> = [
            Some(cols.audio.as_str()),
            Some(cols.latex.as_str()),
            cols.text.as_deref(),
            cols.lang.as_deref(),
            cols.kind.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut keep = Vec::new();
        for f in schema.get_fields() {
            if wanted.contains(&f.name()) {
                keep.push(f.clone());
            }
        }
        for w in &wanted {
            if !keep.iter().any(|f| f.name() == *w) {
                return Err(S2lError::UnknownColumn {
                    path: path.clone(),
                    name: w.to_string(),
                    columns: schema
                        .get_fields()
                        .iter()
                        .map(|f| f.name().to_string())
                        .collect(),
                });
            }
        }
        let proj = Type::group_type_builder(schema.name())
            .with_fields(keep)
            .build()
            .map_err(|e| pq_err(&path, e))?;
        let rows = RowIter::from_file_into(Box::new(reader) as Box<dyn FileReader>)
            .project(Some(proj))
            .map_err(|e| pq_err(&path, e))?;
        self.rows = Some(rows);
        Ok(())
    }

    fn next(&mut self, cols: &Resolved) -> Option<Result<S2lItem>> {
        loop {
            if let Some(rows) = &mut self.rows {
                match rows.next() {
                    Some(Ok(row)) => {
                        let i = self.row;
                        self.row += 1;
                        return Some(self.item(row, i, cols));
                    }
                    Some(Err(e)) => {
                        // A corrupt page: report it once and skip the rest of the shard.
                        self.rows = None;
                        return Some(Err(pq_err(&self.shard, e)));
                    }
                    None => self.rows = None,
                }
            }
            if self.next_shard >= self.shards.len() {
                return None;
            }
            if let Err(e) = self.open_shard(cols) {
                return Some(Err(e));
            }
        }
    }

    fn item(&self, row: parquet::record::Row, i: usize, cols: &Resolved) -> Result<S2lItem> {
        let bad = |msg: String| S2lError::Item {
            source_path: self.shard.clone(),
            index: i,
            msg,
        };
        let mut audio = None;
        let (mut latex, mut text, mut lang, mut kind) = (None, None, None, None);
        let mut name = None;
        for (col, field) in row.into_columns() {
            if col == cols.audio {
                let (a, n) =
                    audio_field(field, &self.shard).map_err(|m| bad(format!("{col}: {m}")))?;
                audio = Some(a);
                name = n;
            } else if col == cols.latex {
                latex = string_field(field);
            } else if Some(&col) == cols.text.as_ref() {
                text = string_field(field);
            } else if Some(&col) == cols.lang.as_ref() {
                lang = string_field(field);
            } else if Some(&col) == cols.kind.as_ref() {
                kind = string_field(field);
            }
        }
        let audio = audio.ok_or_else(|| bad(format!("no audio in column `{}`", cols.audio)))?;
        let latex = latex.ok_or_else(|| bad(format!("no LaTeX in column `{}`", cols.latex)))?;
        let stem = self
            .shard
            .file_name()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let id = match name {
            Some(n) if !n.is_empty() => format!("{stem}#{i}:{n}"),
            _ => format!("{stem}#{i}"),
        };
        Ok(S2lItem {
            id,
            kind: normalize_kind(kind.as_deref(), &latex),
            audio,
            latex,
            spoken: text,
            language: lang.map(|l| normalize_language(&l)),
        })
    }
}

fn string_field(f: Field) -> Option<String> {
    match f {
        Field::Str(s) => Some(s),
        Field::Bytes(b) => Some(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Int(i) => Some(i.to_string()),
        Field::Long(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Audio from a struct `{bytes, path}` / `{array, sampling_rate}`, a binary
/// value or a path string; also the file name when there is one.
fn audio_field(f: Field, shard: &Path) -> std::result::Result<(AudioRef, Option<String>), String> {
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        // Relative to the shard's folder or the dataset folder above it.
        let dir = shard.parent().unwrap_or(Path::new("."));
        let near = dir.join(p);
        if near.exists() {
            return near;
        }
        dir.parent().map_or(near.clone(), |d| d.join(p))
    };
    match f {
        Field::Bytes(b) if !b.data().is_empty() => Ok((AudioRef::Bytes(b.data().to_vec()), None)),
        Field::Str(s) if !s.is_empty() => Ok((AudioRef::File(resolve(&s)), Some(s))),
        Field::Group(row) => {
            let (mut bytes, mut path, mut array, mut rate) = (None, None, None, None);
            for (k, v) in row.into_columns() {
                match (k.as_str(), v) {
                    ("bytes", Field::Bytes(b)) if !b.data().is_empty() => {
                        bytes = Some(b.data().to_vec())
                    }
                    ("path", Field::Str(s)) if !s.is_empty() => path = Some(s),
                    ("array", Field::ListInternal(l)) => {
                        let mut v = Vec::with_capacity(l.len());
                        for x in l.elements() {
                            match x {
                                Field::Double(d) => v.push(*d as f32),
                                Field::Float(d) => v.push(*d),
                                _ => return Err("`array` holds non-float values".into()),
                            }
                        }
                        array = Some(v);
                    }
                    ("sampling_rate", Field::Int(r)) => rate = Some(r as u32),
                    ("sampling_rate", Field::Long(r)) => rate = Some(r as u32),
                    _ => {}
                }
            }
            if let Some(b) = bytes {
                Ok((AudioRef::Bytes(b), path))
            } else if let Some(samples) = array {
                let rate = rate.ok_or("`array` without `sampling_rate`")?;
                Ok((AudioRef::Samples { samples, rate }, path))
            } else if let Some(p) = path {
                Ok((AudioRef::File(resolve(&p)), Some(p)))
            } else {
                Err("null audio (no bytes, array or path)".into())
            }
        }
        Field::Null => Err("null audio".into()),
        other => Err(format!("unsupported audio value {other}")),
    }
}

/// Convenience for tests and callers that want everything at once:
/// items that read, and per-item errors.
pub fn read_all(set: S2lSet) -> (Vec<S2lItem>, Vec<S2lError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for r in set {
        match r {
            Ok(i) => ok.push(i),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel)
    }

    #[test]
    fn discovers_columns() {
        let cols = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = Path::new("x");
        // voxtok / lead corpus schema
        let r = resolve(
            p,
            &cols(&["audio", "spoken", "latex", "language", "kind"]),
            &[],
            &Columns::default(),
        )
        .unwrap();
        assert_eq!(
            (
                r.audio.as_str(),
                r.latex.as_str(),
                r.text.as_deref(),
                r.lang.as_deref()
            ),
            ("audio", "latex", Some("spoken"), Some("language"))
        );
        // S2L's own names: sentence is the LaTeX target, pronunciation the spoken form
        let r = resolve(
            p,
            &cols(&["audio_path", "sentence", "pronunciation", "language"]),
            &["audio_path".into()],
            &Columns::default(),
        )
        .unwrap();
        assert_eq!(
            (r.audio.as_str(), r.latex.as_str()),
            ("audio_path", "sentence")
        );
        assert_eq!(r.text.as_deref(), Some("pronunciation"));
        // flags override; unknown names are errors naming the columns
        let user = Columns {
            latex: Some("LaTeX".into()),
            ..Default::default()
        };
        let r = resolve(p, &cols(&["file", "latex", "transcription"]), &[], &user).unwrap();
        assert_eq!(r.latex, "latex");
        let user = Columns {
            text: Some("nope".into()),
            ..Default::default()
        };
        let e = resolve(p, &cols(&["audio", "latex"]), &[], &user).unwrap_err();
        assert!(e.to_string().contains("no column `nope`"), "{e}");
        let e = resolve(p, &cols(&["latex", "spoken"]), &[], &Columns::default()).unwrap_err();
        assert!(matches!(e, S2lError::NoAudioColumn { .. }), "{e}");
        assert!(e.to_string().contains("--audio-column"), "{e}");
    }

    #[test]
    fn languages_kinds_splits() {
        assert_eq!(normalize_language("eng"), "en");
        assert_eq!(normalize_language("ru-RU"), "ru");
        assert_eq!(normalize_kind(None, "the area is $x$"), "sentence");
        assert_eq!(normalize_kind(Some("equation"), "$x$"), "equation");
        let root = Path::new("/d");
        assert_eq!(
            split_of(root, Path::new("/d/data/test-00000-of-00001.parquet")).as_deref(),
            Some("test")
        );
        assert_eq!(
            split_of(root, Path::new("/d/test/0000.parquet")).as_deref(),
            Some("test")
        );
    }

    #[test]
    fn parquet_errors_are_typed_and_per_item() {
        let bad = fixture("s2l/bad");
        let e = open(&bad.join("no_audio.parquet"), None, &Columns::default())
            .err()
            .unwrap();
        assert!(matches!(e, S2lError::NoAudioColumn { .. }), "{e}");
        assert!(e.to_string().contains("no_audio.parquet"), "{e}");
        let set = open(&bad.join("broken_items.parquet"), None, &Columns::default()).unwrap();
        let (items, errs) = read_all(set);
        assert!(errs.is_empty());
        assert_eq!(items.len(), 3);
        // good row: decodes, reference fine
        assert!(items[0].load_audio().is_ok());
        items[0].check_reference().unwrap();
        // undecodable bytes: an Audio error naming the item, the others unaffected
        let e = items[1].load_audio().unwrap_err();
        assert!(matches!(e, S2lError::Audio { .. }), "{e}");
        assert!(e.to_string().contains("broken_items.parquet#1"), "{e}");
        // unbalanced reference
        let e = items[2].check_reference().unwrap_err();
        assert!(matches!(e, S2lError::Reference { .. }), "{e}");
        assert!(items[2].load_audio().is_ok());
    }

    #[test]
    fn reads_synthetic_parquet() {
        let dir = fixture("s2l/synthetic");
        let set = open(&dir, Some("test"), &Columns::default()).unwrap();
        assert_eq!(set.layout, Layout::Parquet);
        assert_eq!(set.columns.latex, "latex");
        let n = set.len;
        let (items, errs) = read_all(set);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(items.len(), n);
        assert!(n >= 16, "{n}");
        let langs: std::collections::BTreeSet<_> =
            items.iter().filter_map(|i| i.language.clone()).collect();
        assert_eq!(langs.into_iter().collect::<Vec<_>>(), ["en", "ru"]);
        assert!(items.iter().any(|i| i.kind == "sentence"));
        for it in &items {
            assert!(it.spoken.as_deref().is_some_and(|s| !s.is_empty()));
            it.check_reference().unwrap();
        }
        // the first item's audio decodes to 16 kHz mono speech-length audio
        let s = items[0].load_audio().unwrap();
        assert!(s.len() > 16000 / 2 && s.len() < 16000 * 15, "{}", s.len());
        // --split that does not exist lists the ones that do
        let e = open(&dir, Some("train"), &Columns::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("splits: test"), "{e}");
    }
}
