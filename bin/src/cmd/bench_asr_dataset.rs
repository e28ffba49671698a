//! `voxtok bench asr --dataset asterisk`: WER, x real time and peak memory
//! on real speech with transcripts, and the same files through a peer
//! (faster-whisper, tools/bench/asr_faster_whisper.py) side by side.
//!
//! Two steps, so every engine reads the same file list:
//! `--out-dir D` transcribes (writes `D/files.txt` and a run JSONL in the
//! peer format), and `--score RUN.jsonl...` scores any number of runs.
//! tools/bench/asr_real.sh does both with voxtok and faster-whisper.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use voxtok_codecs::decode::read_audio;
use voxtok_datasets::{asr_eval, asterisk};
use voxtok_models::whisper::longform::{InMemory, Stream, Transcriber};
use voxtok_models::whisper::TranscribeOptions;

/// What the dataset mode needs from `bench asr`'s arguments.
pub struct DatasetArgs<'a> {
    pub dataset: &'a str,
    pub model: Option<&'a Path>,
    pub device: &'a str,
    pub dtype: &'a str,
    pub batch_size: usize,
    pub beam_size: Option<usize>,
    pub limit: Option<usize>,
    pub out_dir: Option<&'a Path>,
    pub score: &'a [PathBuf],
    pub json: Option<&'a Path>,
}

/// Resolves `asterisk` or `asterisk:DIR` to the set's folder.
fn dataset_dir(spec: &str) -> anyhow::Result<PathBuf> {
    let (name, dir) = spec.split_once(':').unwrap_or((spec, ""));
    if name != "asterisk" {
        bail!("unknown dataset `{name}` (supported: asterisk, asterisk:DIR)");
    }
    if !dir.is_empty() {
        return Ok(PathBuf::from(dir));
    }
    // Beside the default models: <data>/speech/asterisk.
    let candidates = [
        PathBuf::from("data/speech/asterisk"),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.ancestors().nth(3).map(|r| r.join("data/speech/asterisk")))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .context("data/speech/asterisk not found: run scripts/setup.sh or give asterisk:DIR")
}

/// The utterances, thinned to `limit` by an even stride (deterministic,
/// and spread over the whole set rather than its first letters).
fn select(set: &asterisk::AsteriskSet, limit: Option<usize>) -> Vec<&asterisk::Utterance> {
    let all: Vec<_> = set.utterances.iter().collect();
    match limit {
        Some(n) if n > 0 && n < all.len() => (0..n).map(|i| all[i * all.len() / n]).collect(),
        _ => all,
    }
}

pub fn run(a: DatasetArgs, g: &Global) -> anyhow::Result<Exit> {
    let dir = dataset_dir(a.dataset)?;
    let set = asterisk::read(&dir)?;
    let utts = select(&set, a.limit);
    if utts.is_empty() {
        bail!("{}: no utterances with audio", dir.display());
    }
    if !a.score.is_empty() {
        return score(&utts, a.score, a.json);
    }
    let out_dir = a
        .out_dir
        .context("give --out-dir DIR to transcribe, or --score RUN.jsonl... to score runs")?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let w = super::transcribe::load_whisper(a.model, a.device, a.dtype)?;

    // The same settings as tools/bench/asr_faster_whisper.py: one temperature
    // (no fallback), no timestamps, English, default suppression, no-speech
    // skipping at faster-whisper's default thresholds.
    let mut o = TranscribeOptions {
        temperatures: vec![0.0],
        ..TranscribeOptions::default()
    };
    o.decode.language = Some("en".into());
    o.decode.without_timestamps = true;
    o.decode.beam_size = a.beam_size;
    let mut tr = Transcriber::new(&w, o)?;

    // Decode outside the timed region, as the peer script does.
    let mut audio = Vec::with_capacity(utts.len());
    for u in &utts {
        let x = read_audio(&u.path, Some(16000))
            .with_context(|| format!("{}: cannot decode", u.path.display()))?;
        audio.push(x.samples);
    }
    let files_txt = out_dir.join("files.txt");
    std::fs::write(
        &files_txt,
        utts.iter()
            .map(|u| format!("{}\n", u.path.display()))
            .collect::<String>(),
    )?;

    let batch = a.batch_size.max(1);
    // int8 runs get their own file and label, beside the float runs.
    let int8 = if a.dtype.eq_ignore_ascii_case("int8") {
        "-int8"
    } else {
        ""
    };
    let run_path = out_dir.join(format!("voxtok-b{batch}{int8}.jsonl"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&run_path)?);
    let t_all = Instant::now();
    for (ci, chunk) in audio.chunks(batch).enumerate() {
        let t0 = Instant::now();
        let mut streams: Vec<Stream> = chunk
            .iter()
            .map(|x| Stream::new(Box::new(InMemory::new(x.clone()))))
            .collect();
        tr.run(&mut streams)?;
        let secs = t0.elapsed().as_secs_f64() / chunk.len() as f64;
        for (j, s) in streams.into_iter().enumerate() {
            let u = utts[ci * batch + j];
            let rec = match s.into_result() {
                Ok(t) => {
                    serde_json::json!({"path": u.path, "text": t.text.trim(), "seconds": secs})
                }
                Err(e) => {
                    serde_json::json!({"path": u.path, "text": "", "seconds": secs, "error": e})
                }
            };
            writeln!(out, "{rec}")?;
        }
        if !g.quiet {
            eprint!(
                "\r{}/{} files",
                (ci * batch + chunk.len()).min(utts.len()),
                utts.len()
            );
        }
    }
    let wall = t_all.elapsed().as_secs_f64();
    let audio_s: f64 = audio.iter().map(|x| x.len() as f64 / 16000.0).sum();
    let summary = serde_json::json!({"summary": {
        "engine": format!("voxtok{} (batch {batch})", if int8.is_empty() { "" } else { " int8" }), "model": w.name, "files": utts.len(),
        "beam_size": a.beam_size.unwrap_or(1), "batch_size": batch, "audio_s": audio_s, "wall_s": wall,
        "x_real_time": audio_s / wall, "peak_rss_mb": super::bench_asr::peak_rss_mib(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }});
    writeln!(out, "{summary}")?;
    out.flush()?;
    if !g.quiet {
        eprintln!();
    }
    eprintln!("wrote {} and {}", files_txt.display(), run_path.display());
    score(&utts, std::slice::from_ref(&run_path), a.json)
}

/// Scores runs (JSONL: per-file `path`/`text` and a `summary`) against the
/// references and prints the side-by-side table.
fn score(
    utts: &[&asterisk::Utterance],
    runs: &[PathBuf],
    json: Option<&Path>,
) -> anyhow::Result<Exit> {
    let mut rows = Vec::new();
    for r in runs {
        let peer = asr_eval::read_peer(r).map_err(anyhow::Error::msg)?;
        // Paths in a run may be written relative or absolute; key by file name within the set.
        let texts: HashMap<PathBuf, String> = peer
            .texts
            .into_iter()
            .map(|(p, t)| (canon(&p), t))
            .collect();
        let refs: Vec<(PathBuf, &str)> = utts
            .iter()
            .map(|u| (canon(&u.path), u.text.as_str()))
            .collect();
        let s = &peer.summary;
        let engine = s["engine"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r.display().to_string());
        let engine = match s["compute_type"].as_str() {
            Some(ct) => format!(
                "{engine} {ct} (batch {})",
                s["batch_size"].as_u64().unwrap_or(1)
            ),
            None => engine,
        };
        let mut score =
            asr_eval::score(&engine, refs.iter().map(|(p, t)| (p.as_path(), *t)), &texts);
        score.audio_s = s["audio_s"].as_f64().unwrap_or(0.0);
        score.wall_s = s["wall_s"].as_f64().unwrap_or(f64::NAN);
        score.peak_rss_mb = s["peak_rss_mb"].as_f64();
        rows.push(score);
    }
    print!("{}", asr_eval::markdown(&rows));
    if let Some(p) = json {
        let v: Vec<_> = rows
            .iter()
            .map(
                |r| serde_json::json!({"score": r, "wer": r.wer(), "x_real_time": r.x_real_time()}),
            )
            .collect();
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(Exit::from_failures(rows.iter().map(|r| r.missing).sum()))
}

fn canon(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}
