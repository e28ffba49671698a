//! `voxtok vad`: speech segments of audio files by voice activity detection.
//!
//! The built-in energy/spectral detector is the default; `--model-file
//! silero_vad_16k.safetensors` runs Silero VAD on candle. Each input is
//! decoded and resampled to 16 kHz mono, then segmented with silero's
//! `get_speech_timestamps` rules. `--format text` prints `path<TAB>start<TAB>end`
//! lines (seconds); `--format jsonl` one object per input (`path`, `vad`,
//! `duration_s`, `segments: [{start_s, end_s}]`, `error`). `--bench` adds a
//! timing line on stderr (x real time of the detector alone, one thread).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;
use voxtok_models::vad::{self, EnergyVad, SegmentParams, SileroVad, Vad};

use crate::{exit::Exit, Global};

/// Output formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `path<TAB>start_s<TAB>end_s`, one line per segment.
    Text,
    /// One JSON object per input.
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Audio files (any format voxtok decodes; resampled to 16 kHz mono).
    #[arg(required = true, value_name = "IN")]
    pub inputs: Vec<PathBuf>,
    /// Silero VAD weights (`silero_vad_16k.safetensors`, e.g. from scripts/setup.sh
    /// in data/models/silero-vad/); without it the built-in energy VAD is used.
    #[arg(long, value_name = "FILE")]
    pub model_file: Option<PathBuf>,
    /// Speech probability threshold.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Shortest speech segment kept (ms).
    #[arg(long, default_value_t = 250)]
    pub min_speech_ms: u32,
    /// Silence needed to end a segment (ms).
    #[arg(long, default_value_t = 100)]
    pub min_silence_ms: u32,
    /// Padding on each side of a segment (ms).
    #[arg(long, default_value_t = 30)]
    pub speech_pad_ms: u32,
    /// Split segments longer than this (seconds).
    #[arg(long)]
    pub max_speech_s: Option<f32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also print per-input detector throughput (x real time) on stderr,
    /// repeating detection N times for stable timing.
    #[arg(long, value_name = "N")]
    pub bench: Option<u32>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<Exit> {
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold must be in [0, 1], got {}", args.threshold);
    }
    let mut det: Box<dyn Vad> = match &args.model_file {
        Some(p) => Box::new(SileroVad::load(p).context("loading Silero VAD")?),
        None => Box::new(EnergyVad::default()),
    };
    let params = SegmentParams {
        threshold: args.threshold,
        min_speech_ms: args.min_speech_ms,
        min_silence_ms: args.min_silence_ms,
        speech_pad_ms: args.speech_pad_ms,
        max_speech_s: args.max_speech_s.unwrap_or(f32::INFINITY),
        ..Default::default()
    };
    let mut failed = 0;
    for path in &args.inputs {
        let name = path.display().to_string();
        let result = voxtok_codecs::read_audio(path, Some(vad::SAMPLE_RATE))
            .map_err(|e| format!("{e}"))
            .and_then(|audio| {
                let t0 = Instant::now();
                let reps = args.bench.unwrap_or(1).max(1);
                let mut probs = Vec::new();
                for _ in 0..reps {
                    probs = vad::probabilities(det.as_mut(), &audio.samples)
                        .map_err(|e| format!("{name}: {e}"))?;
                }
                let dt = t0.elapsed().as_secs_f64() / reps as f64;
                let dur = audio.duration_s();
                if args.bench.is_some() {
                    eprintln!(
                        "{}",
                        json!({"path": name, "vad": det.name(), "audio_s": dur,
                               "seconds": dt, "x_realtime": dur / dt.max(1e-9)})
                    );
                }
                Ok((dur, vad::segments(&probs, audio.samples.len(), &params)))
            });
        match result {
            Ok((dur, segs)) => match args.format {
                Format::Text => {
                    for s in &segs {
                        println!("{name}\t{:.3}\t{:.3}", s.start_s(), s.end_s());
                    }
                }
                Format::Jsonl => {
                    let segs: Vec<_> = segs
                        .iter()
                        .map(|s| json!({"start_s": s.start_s(), "end_s": s.end_s()}))
                        .collect();
                    println!(
                        "{}",
                        json!({"path": name, "vad": det.name(), "duration_s": dur,
                               "segments": segs, "error": null})
                    );
                }
            },
            Err(e) => {
                failed += 1;
                let msg = if e.contains(&name) {
                    e
                } else {
                    format!("{name}: {e}")
                };
                if !global.quiet || args.format == Format::Text {
                    eprintln!("error: {msg}");
                }
                if args.format == Format::Jsonl {
                    println!(
                        "{}",
                        json!({"path": name, "vad": det.name(), "segments": [], "error": msg})
                    );
                }
            }
        }
    }
    Ok(Exit::from_failures(failed))
}
