//! `voxtok bench asr`: Whisper transcription throughput (x real time,
//! tokens/s) and peak memory over N files, one batch size per run.
//!
//! Decoding is plain greedy (no fallback, no timestamps, given language) so
//! that the work is fixed; `--exact-tokens N` suppresses end-of-text and
//! decodes exactly N tokens per window, as tools/bench/asr_transformers.py
//! does with `transformers` (compare both with tools/bench/asr.sh).

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use voxtok_codecs::decode::read_audio;
use voxtok_models::whisper::decoding::Suppress;
use voxtok_models::whisper::longform::{InMemory, Stream, Transcriber};
use voxtok_models::whisper::TranscribeOptions;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Audio files or directories; when absent, `--synthetic` seconds of a test signal.
    pub inputs: Vec<String>,
    /// Whisper model directory (Hugging Face or CTranslate2 layout);
    /// default: whisper-tiny.en as for `transcribe`.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Score real speech instead of timing a synthetic signal: `asterisk` or
    /// `asterisk:DIR` (the Asterisk prompts unpacked by scripts/setup.sh).
    /// With `--out-dir` it transcribes, with `--score` it compares runs.
    #[arg(long)]
    pub dataset: Option<String>,
    /// With --dataset: use N utterances spread evenly over the set.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --dataset: write files.txt and the run's JSONL here.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// With --dataset: score these run JSONL files (voxtok's or a peer's, e.g.
    /// tools/bench/asr_faster_whisper.py) side by side; no model is loaded.
    #[arg(long, num_args = 1..)]
    pub score: Vec<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Files decoded together (one batch row each).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Decode exactly N tokens per 30 s window (end-of-text suppressed).
    #[arg(long)]
    pub exact_tokens: Option<usize>,
    #[arg(long, default_value_t = 224)]
    pub max_new_tokens: usize,
    /// Length in seconds of the synthetic input used when no files are given.
    #[arg(long, default_value_t = 30.0)]
    pub synthetic: f64,
    /// Number of inputs: the synthetic signal or the given files are repeated up to N.
    #[arg(short = 'n', long)]
    pub count: Option<usize>,
    /// Timed runs (the fastest is reported); one untimed warm-up run precedes them.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A deterministic speech-like test signal (harmonics with vibrato, noise).
fn synthetic(seconds: f64) -> Vec<f32> {
    let n = (seconds * 16000.0) as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut phase = 0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 16000.0;
            let f0 = 140.0 + 30.0 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / 16000.0;
            let v: f64 = (1..8).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            (0.2 * v * (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 2.0 * t).sin()) + 0.02 * noise)
                as f32
        })
        .collect()
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<Exit> {
    if a.batch_size == 0 || a.repeat == 0 {
        bail!("--batch-size and --repeat must be at least 1");
    }
    if let Some(dataset) = &a.dataset {
        return super::bench_asr_dataset::run(
            super::bench_asr_dataset::DatasetArgs {
                dataset,
                model: a.model.as_deref(),
                device: &a.device,
                dtype: &a.dtype,
                batch_size: a.batch_size,
                beam_size: a.beam_size,
                limit: a.limit,
                out_dir: a.out_dir.as_deref(),
                score: &a.score,
                json: a.json.as_deref(),
            },
            g,
        );
    }
    let w = super::transcribe::load_whisper(a.model.as_deref(), &a.device, &a.dtype)?;

    let mut audio: Vec<Vec<f32>> = Vec::new();
    for i in &a.inputs {
        let x = read_audio(i, Some(16000)).with_context(|| format!("{i}: cannot decode"))?;
        audio.push(x.samples);
    }
    if audio.is_empty() {
        audio.push(synthetic(a.synthetic));
    }
    let n = a.count.unwrap_or(audio.len()).max(1);
    let inputs: Vec<&Vec<f32>> = (0..n).map(|i| &audio[i % audio.len()]).collect();
    let audio_s: f64 = inputs.iter().map(|x| x.len() as f64 / 16000.0).sum();

    let mut o = TranscribeOptions {
        temperatures: vec![0.0],
        compression_ratio_threshold: None,
        logprob_threshold: None,
        no_speech_threshold: None,
        ..TranscribeOptions::default()
    };
    o.decode.language = Some("en".into());
    o.decode.without_timestamps = true;
    o.decode.beam_size = a.beam_size;
    o.decode.sample_len = a.max_new_tokens;
    o.decode.suppress_blank = false;
    o.decode.suppress = Suppress::None;
    if let Some(k) = a.exact_tokens {
        o.decode.sample_len = k;
        o.decode.suppress = Suppress::List(vec![w.tokenizer.eot]);
    }
    let mut tr = Transcriber::new(&w, o)?;

    let mut best: Option<(f64, usize)> = None;
    for run in 0..=a.repeat {
        let t0 = Instant::now();
        let mut tokens = 0;
        for chunk in inputs.chunks(a.batch_size) {
            let mut streams: Vec<Stream> = chunk
                .iter()
                .map(|x| Stream::new(Box::new(InMemory::new((*x).clone()))))
                .collect();
            tr.run(&mut streams)?;
            for s in streams {
                tokens += s.tokens_decoded();
                s.into_result().map_err(anyhow::Error::msg)?;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        if !g.quiet {
            eprintln!(
                "run {run}{}: {secs:.3} s, {tokens} tokens",
                if run == 0 { " (warm-up)" } else { "" }
            );
        }
        if run > 0 && best.is_none_or(|b| secs < b.0) {
            best = Some((secs, tokens));
        }
    }
    let (secs, tokens) = best.expect("at least one timed run");
    let report = json!({
        "engine": "voxtok",
        "model": w.name,
        "device": a.device,
        "dtype": a.dtype,
        "files": n,
        "batch_size": a.batch_size,
        "beam_size": a.beam_size.unwrap_or(1),
        "audio_s": audio_s,
        "wall_s": secs,
        "x_real_time": audio_s / secs,
        "tokens": tokens,
        "tokens_per_s": tokens as f64 / secs,
        "peak_rss_mib": peak_rss_mib(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    println!(
        "voxtok asr  model={} files={n} batch={} audio={audio_s:.1}s wall={secs:.3}s  {:.2}x real time  {:.1} tokens/s  peak {:.0} MiB",
        w.name,
        a.batch_size,
        audio_s / secs,
        tokens as f64 / secs,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(Exit::Ok)
}
