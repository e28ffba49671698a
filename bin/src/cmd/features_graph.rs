//! `voxtok features`: Whisper log-mel features of one or many inputs as .npy,
//! run on the stage graph: inputs → decode → resample (16 kHz) → mel →
//! write .npy → one record per input (text, JSON or JSONL).
#![allow(dead_code)] // until bin/src/cmd/features.rs (codecs area) calls `run`

use super::common::{self, InputArgs, RunArgs};
use crate::{exit::Exit, Global};
use anyhow::bail;
use clap::builder::TypedValueParser;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use voxtok_codecs::mel::WHISPER_SAMPLE_RATE;
use voxtok_codecs::{
    read_audio, whisper_mel, Audio, MelPadding, MelSpectrogram, Quality, Resampler,
};
use voxtok_pipeline::records::{Format, RecordWriter};
use voxtok_pipeline::{BoxError, Emit, Graph, GraphOptions, Input, Item, Sink, Stage};

/// Which features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Whisper log-mel spectrogram (Hugging Face WhisperFeatureExtractor).
    WhisperMel,
}

/// What is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// .npy files only (`-o` is the file for one input, a directory for several).
    Npy,
    /// .npy files plus one JSON object per input, appended as each completes.
    Jsonl,
    /// .npy files plus one JSON array of records at the end.
    Json,
    /// .npy files plus one line per input.
    Text,
}

/// Signal length handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Padding {
    /// Pad or trim to Whisper's 30 s window (3000 frames).
    #[value(name = "30s")]
    Whisper30s,
    /// All frames of the signal.
    None,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, value_enum, default_value = "whisper-mel")]
    pub kind: Kind,
    /// Mel bins: 80 (Whisper up to v2) or 128 (large-v3).
    #[arg(long, default_value_t = 80, value_parser = clap::builder::PossibleValuesParser::new(["80", "128"]).map(|s| s.parse::<usize>().unwrap_or(80)))]
    pub n_mels: usize,
    #[arg(long, value_enum, default_value = "30s")]
    pub padding: Padding,
    #[arg(long, short, value_enum, default_value = "npy")]
    pub format: OutFormat,
    /// npy: the .npy file (one input) or directory (several); other formats:
    /// the records file (stdout when absent).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Directory of the .npy files with --format jsonl/json/text (default:
    /// `<OUTPUT without extension>_npy`, or `features_npy` without -o).
    #[arg(long, value_name = "DIR")]
    pub npy_dir: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `<stem>.npy`, or `<stem>-<hash>.npy` when several inputs share a stem;
/// computed on the whole input list so names are stable across shards and
/// resumed runs.
fn npy_names(inputs: &[Input]) -> HashMap<String, String> {
    let stem = |i: &Input| match i {
        Input::Stdin => "stdin".to_string(),
        Input::Path(p) => p
            .file_stem()
            .map_or("input".into(), |s| s.to_string_lossy().into_owned()),
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for i in inputs {
        *count.entry(stem(i)).or_default() += 1;
    }
    inputs
        .iter()
        .map(|i| {
            let s = stem(i);
            let name = if count[&s] > 1 {
                // FNV-1a: stable across runs and platforms.
                let h = i.key().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
                });
                format!("{s}-{:08x}.npy", h as u32)
            } else {
                format!("{s}.npy")
            };
            (i.key(), name)
        })
        .collect()
}

/// Writes each mel to its .npy (atomically: temp file, then rename).
struct WriteNpy {
    targets: Arc<Vec<PathBuf>>,
}

impl Stage for WriteNpy {
    type In = MelSpectrogram;
    type Out = (PathBuf, [usize; 2]);
    fn process(
        &mut self,
        mel: MelSpectrogram,
        out: &mut Emit<'_, Self::Out>,
    ) -> Result<(), BoxError> {
        let path = &self.targets[out.stream() as usize];
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let tmp = path.with_extension("npy.tmp");
        voxtok_codecs::npy::write_mel_npy(&tmp, &mel)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push((path.clone(), [mel.n_mels, mel.n_frames]));
        Ok(())
    }
}

/// One record per input; failures also go to stderr.
struct Records {
    inputs: Arc<Vec<Input>>,
    writer: RecordWriter,
    failed: u64,
}

impl Sink for Records {
    type In = (PathBuf, [usize; 2]);
    fn item(&mut self, it: Item<Self::In>) -> Result<(), BoxError> {
        let key = self.inputs[it.stream as usize].key();
        let (rec, text) = match it.data {
            Ok((npy, shape)) => {
                let npy = npy.to_string_lossy().into_owned();
                let text = format!("{key}\t{npy}\t{}x{}", shape[0], shape[1]);
                (
                    json!({"path": key, "npy": npy, "shape": shape, "error": null}),
                    text,
                )
            }
            Err(f) => {
                self.failed += 1;
                eprintln!("error: {key}: {f}");
                let text = format!("{key}\terror: {f}");
                (
                    json!({"path": key, "npy": null, "shape": null, "error": f.to_string()}),
                    text,
                )
            }
        };
        self.writer.write(rec, &text)?;
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(self.writer.finish()?)
    }
}

fn decode(input: &Input) -> Result<Audio, BoxError> {
    Ok(match input {
        Input::Stdin => read_audio("-", None)?,
        Input::Path(p) => read_audio(p, None)?,
    })
}

fn resample(a: Audio) -> Result<Vec<f32>, BoxError> {
    if a.sample_rate == WHISPER_SAMPLE_RATE {
        return Ok(a.samples);
    }
    Ok(Resampler::process_all(
        a.sample_rate,
        WHISPER_SAMPLE_RATE,
        Quality::default(),
        &a.samples,
    )?)
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let Kind::WhisperMel = args.kind;
    let all = args.input.expand()?;
    let names = npy_names(&all);
    let padding = match args.padding {
        Padding::Whisper30s => MelPadding::Whisper30s,
        Padding::None => MelPadding::None,
    };
    let format = match args.format {
        OutFormat::Npy => Format::Text,
        OutFormat::Jsonl => Format::Jsonl,
        OutFormat::Json => Format::Json,
        OutFormat::Text => Format::Text,
    };
    if args.run.resume && args.format != OutFormat::Jsonl {
        bail!("--resume needs --format jsonl");
    }
    if args.format == OutFormat::Npy && args.npy_dir.is_some() {
        bail!("--npy-dir is for --format jsonl/json/text; with --format npy use -o");
    }
    // Where each input's .npy goes, and where the records go.
    let single_npy = args.format == OutFormat::Npy
        && all.len() == 1
        && args.output.as_ref().is_some_and(|o| !o.is_dir());
    let (npy_dir, records_out): (PathBuf, Option<PathBuf>) = match args.format {
        OutFormat::Npy => (
            args.output
                .clone()
                .filter(|_| !single_npy)
                .unwrap_or_else(|| ".".into()),
            None,
        ),
        _ => {
            let dir = args.npy_dir.clone().unwrap_or_else(|| match &args.output {
                Some(o) if o != Path::new("-") => {
                    let stem = o
                        .file_stem()
                        .map_or("features".into(), |s| s.to_string_lossy().into_owned());
                    o.with_file_name(format!("{stem}_npy"))
                }
                _ => "features_npy".into(),
            });
            (dir, args.output.clone())
        }
    };
    let (inputs, skipped) = if args.run.resume {
        common::resume_filter(records_out.as_deref(), all)?
    } else {
        (all, 0)
    };
    if skipped > 0 {
        tracing::info!("resume: {skipped} inputs already done");
    }
    let targets: Vec<PathBuf> = inputs
        .iter()
        .map(|i| match (&args.output, single_npy) {
            (Some(o), true) => o.clone(),
            _ => npy_dir.join(&names[&i.key()]),
        })
        .collect();
    let n = inputs.len();
    let inputs = Arc::new(inputs);
    let writer = RecordWriter::create(records_out.as_deref(), format, args.run.resume)?;

    let jobs = args.run.jobs();
    let cancel = voxtok_pipeline::Cancel::new();
    common::install_ctrlc(&cancel);
    let mut graph = Graph::new(GraphOptions {
        capacity: 2 * jobs,
        max_open_streams: Some(4 * jobs + 4),
        cancel,
    });
    let ins = inputs.clone();
    let src = graph.source_iter("inputs", 0..n);
    let audio = graph.map("decode", src, jobs, move |i: usize| decode(&ins[i]));
    let pcm = graph.map("resample", audio, jobs, resample);
    let mels = graph.map("mel", pcm, jobs, move |s: Vec<f32>| {
        whisper_mel(&s, args.n_mels, padding)
    });
    let targets = Arc::new(targets);
    let written = graph.parallel("write", mels, jobs, || WriteNpy {
        targets: targets.clone(),
    });
    let sink = Records {
        inputs,
        writer,
        failed: 0,
    };
    let handle = graph.sink("records", written, sink, args.run.keep_order);
    let result = common::drive(graph.start(), n as u64, g.quiet, args.run.stats);
    let failed = handle.take().map_or(n as u64, |s| s.failed);
    Ok(common::exit_code(&result, failed))
}
