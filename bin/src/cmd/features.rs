//! `voxtok features`: Whisper log-mel features as .npy (float32, [n_mels, frames]).
//!
//! One input writes `-o OUT.npy`; several inputs write `<stem>.npy` each into
//! the directory `-o DIR`. With `--format jsonl|json`, `-o` is a records file
//! (one object per input: `path`, `npy`, `shape`, `error`) and the .npy files
//! go to `--npy-dir`. A failing input is reported on stderr with its name and
//! the others carry on; the exit code is then 1.
//!
//! Runs on the stage graph, streaming each input in chunks:
//! inputs → decode → resample (16 kHz) → mel → write .npy → records.
//! Decode, resample and mel keep per-stream state and run `--jobs` workers
//! with each input pinned to one worker; the same chunks in the same order as
//! `voxtok_codecs::mel::whisper_mel_decoder`, so the features are identical.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::json;
use voxtok_codecs::decode::{Decoder, RawPcm, RawSampleFormat};
use voxtok_codecs::mel::{LogMel, MelPadding, MelSpectrogram, WHISPER_SAMPLE_RATE};
use voxtok_codecs::npy::write_mel_npy;
use voxtok_codecs::resample::{Quality, Resampler};
use voxtok_codecs::CodecError;
use voxtok_pipeline::payload::AudioChunk;
use voxtok_pipeline::records::{Format, RecordWriter};
use voxtok_pipeline::{BoxError, Emit, Graph, GraphOptions, Input, Item, Sink, Stage, StreamId};

use super::common::{self, InputArgs, RunArgs};
use crate::{exit::Exit, Global};

/// Feature kinds.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whisper log-mel spectrogram (Hugging Face `WhisperFeatureExtractor`).
    WhisperMel,
}

/// What is written besides the .npy files.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// Only .npy files (`-o` is the file for one input, a directory for several).
    Npy,
    /// `-o` gets one JSON object per input, appended as each completes.
    Jsonl,
    /// `-o` gets a JSON array of records at the end.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output: OUT.npy for one input, a directory for several; with
    /// --format jsonl/json the records file.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Feature kind.
    #[arg(long, value_enum, default_value = "whisper-mel")]
    pub kind: Kind,
    /// Mel bins: 80 (Whisper v1/v2) or 128 (Whisper large-v3).
    #[arg(long, default_value_t = 80)]
    pub n_mels: usize,
    /// Features for the whole signal instead of Whisper's 30 s window
    /// (same as HF with padding="longest", truncation=False).
    #[arg(long)]
    pub no_pad: bool,
    /// Stdin is headerless PCM at this sample rate (default: stdin is a container such as WAV).
    #[arg(long, value_name = "HZ")]
    pub raw_rate: Option<u32>,
    /// Raw PCM sample format: s16le, s32le or f32le.
    #[arg(long, default_value = "s16le", value_name = "FMT")]
    pub raw_format: RawSampleFormat,
    /// Raw PCM channel count (interleaved).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub raw_channels: u16,
    /// What to write: npy files only, or also JSONL / JSON records in `-o`.
    #[arg(long, value_enum, default_value = "npy")]
    pub format: OutFormat,
    /// Directory of the .npy files with --format jsonl/json (default:
    /// `<OUT without extension>_npy` next to OUT).
    #[arg(long, value_name = "DIR")]
    pub npy_dir: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

fn stem(i: &Input) -> String {
    match i {
        Input::Stdin => "stdin".into(),
        Input::Path(p) => p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audio".into()),
    }
}

/// `<stem>.npy`, or `<stem>-<hash of the path>.npy` for stems shared by
/// several inputs; computed on the whole input list (before --shard and
/// --resume) so names are the same on every worker and every run.
fn unique_names(inputs: &[Input]) -> HashMap<String, String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for i in inputs {
        *count.entry(stem(i)).or_default() += 1;
    }
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
    };
    inputs
        .iter()
        .map(|i| {
            let s = stem(i);
            let name = if count[&s] > 1 {
                format!("{s}-{:08x}.npy", fnv(&i.key()) as u32)
            } else {
                format!("{s}.npy")
            };
            (i.key(), name)
        })
        .collect()
}

/// How stdin is read.
#[derive(Clone)]
struct Raw {
    rate: Option<u32>,
    format: RawSampleFormat,
    channels: u16,
}

fn open(i: &Input, raw: &Raw) -> Result<Decoder, CodecError> {
    match (i, raw.rate) {
        (Input::Stdin, Some(rate)) => Decoder::raw(
            std::io::stdin(),
            voxtok_codecs::decode::STDIN_NAME,
            RawPcm {
                sample_rate: rate,
                channels: raw.channels,
                format: raw.format,
            },
        ),
        (Input::Stdin, None) => Decoder::open("-"),
        (Input::Path(p), _) => Decoder::open(p),
    }
}

/// Decodes an input into mono chunks, streamed downstream as they come.
struct Decode {
    inputs: Arc<Vec<Input>>,
    raw: Raw,
    /// Stop after this much audio (the 30 s window plus resampler margin).
    max_seconds: Option<f64>,
}

impl Stage for Decode {
    type In = usize;
    type Out = AudioChunk;
    fn process(&mut self, i: usize, out: &mut Emit<'_, AudioChunk>) -> Result<(), BoxError> {
        let mut dec = open(&self.inputs[i], &self.raw)?;
        let rate = dec.sample_rate();
        let limit = self.max_seconds.map(|s| (s * rate as f64) as u64);
        let mut start = 0u64;
        while let Some(chunk) = dec.next_chunk()? {
            let n = chunk.len() as u64;
            out.push(AudioChunk {
                sample_rate: rate,
                samples: chunk.into(),
                start_s: start as f64 / rate as f64,
                last: false,
            });
            start += n;
            if limit.is_some_and(|l| start >= l) {
                break;
            }
        }
        Ok(())
    }
}

/// Resamples each stream to 16 kHz (one resampler per stream).
#[derive(Default)]
struct Resample(HashMap<StreamId, Resampler>);

impl Stage for Resample {
    type In = AudioChunk;
    type Out = Vec<f32>;
    fn process(&mut self, c: AudioChunk, out: &mut Emit<'_, Vec<f32>>) -> Result<(), BoxError> {
        let rs = match self.0.entry(out.stream()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Resampler::new(
                c.sample_rate,
                WHISPER_SAMPLE_RATE,
                Quality::High,
            )?),
        };
        let mut buf = Vec::new();
        rs.process_into(&c.samples, &mut buf)?;
        out.push(buf);
        Ok(())
    }
    fn flush(&mut self, out: &mut Emit<'_, Vec<f32>>) -> Result<(), BoxError> {
        if let Some(mut rs) = self.0.remove(&out.stream()) {
            let mut buf = Vec::new();
            rs.finish_into(&mut buf)?;
            out.push(buf);
        }
        Ok(())
    }
}

/// Streaming log-mel, one extractor per stream.
struct Mel {
    n_mels: usize,
    padding: MelPadding,
    open: HashMap<StreamId, LogMel>,
}

impl Stage for Mel {
    type In = Vec<f32>;
    type Out = MelSpectrogram;
    fn process(&mut self, s: Vec<f32>, out: &mut Emit<'_, MelSpectrogram>) -> Result<(), BoxError> {
        let mel = match self.open.entry(out.stream()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(LogMel::new(self.n_mels, self.padding)?)
            }
        };
        if !mel.is_full() {
            mel.push(&s);
        }
        Ok(())
    }
    fn flush(&mut self, out: &mut Emit<'_, MelSpectrogram>) -> Result<(), BoxError> {
        let mut mel = match self.open.remove(&out.stream()) {
            Some(m) => m,
            // An input with no audio at all still gets its (padded) features.
            None => LogMel::new(self.n_mels, self.padding)?,
        };
        out.push(mel.finish());
        Ok(())
    }
}

/// Writes to a temporary name first so a failure never leaves a partial .npy.
fn write_atomic(out: &Path, mel: &MelSpectrogram) -> Result<(), CodecError> {
    let tmp = out.with_extension("npy.part");
    write_mel_npy(&tmp, mel)?;
    std::fs::rename(&tmp, out).map_err(|e| CodecError::Write {
        path: out.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Writes each stream's features to its .npy.
struct WriteNpy(Arc<Vec<PathBuf>>);

impl Stage for WriteNpy {
    type In = MelSpectrogram;
    type Out = (PathBuf, [usize; 2]);
    fn process(
        &mut self,
        mel: MelSpectrogram,
        out: &mut Emit<'_, Self::Out>,
    ) -> Result<(), BoxError> {
        let path = &self.0[out.stream() as usize];
        write_atomic(path, &mel)?;
        out.push((path.clone(), [mel.n_mels, mel.n_frames]));
        Ok(())
    }
}

/// One record per input; failures (and, without records, successes) go to stderr.
struct Records {
    inputs: Arc<Vec<Input>>,
    writer: Option<RecordWriter>,
    announce: bool,
    ok: u64,
    failed: u64,
}

impl Sink for Records {
    type In = (PathBuf, [usize; 2]);
    fn item(&mut self, it: Item<Self::In>) -> Result<(), BoxError> {
        let key = self.inputs[it.stream as usize].key();
        let rec = match it.data {
            Ok((npy, shape)) => {
                self.ok += 1;
                if self.announce {
                    eprintln!("{key} -> {} [{} x {}]", npy.display(), shape[0], shape[1]);
                }
                json!({"path": key, "npy": npy.to_string_lossy(), "shape": shape, "error": null})
            }
            Err(f) => {
                self.failed += 1;
                // Codec errors start with the file name; others get it here.
                if f.error.contains(&key) {
                    eprintln!("error: {}", f.error);
                } else {
                    eprintln!("error: {key}: {}", f.error);
                }
                json!({"path": key, "npy": null, "shape": null, "error": f.to_string()})
            }
        };
        if let Some(w) = &mut self.writer {
            w.write(rec, "")?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BoxError> {
        if let Some(w) = &mut self.writer {
            w.finish()?;
        }
        Ok(())
    }
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let Kind::WhisperMel = args.kind;
    if args.n_mels != 80 && args.n_mels != 128 {
        bail!("--n-mels must be 80 or 128, got {}", args.n_mels);
    }
    let all = args.input.expand()?;
    if all.iter().filter(|i| **i == Input::Stdin).count() > 1 {
        bail!("stdin (`-`) can be given only once");
    }
    if args.raw_rate.is_some() && !all.contains(&Input::Stdin) {
        bail!("--raw-rate applies to stdin (`-`) only");
    }
    let records = args.format != OutFormat::Npy;
    if args.run.resume && args.format != OutFormat::Jsonl {
        bail!("--resume needs --format jsonl (it reads the records of the previous run)");
    }
    if args.npy_dir.is_some() && !records {
        bail!("--npy-dir is for --format jsonl/json; with --format npy, -o is the directory");
    }
    let padding = if args.no_pad {
        MelPadding::None
    } else {
        MelPadding::Whisper30s
    };

    // Where each input's features go (names fixed on the whole list).
    let names: HashMap<String, String> = if records {
        unique_names(&all)
    } else if all.len() == 1 && !args.output.is_dir() {
        HashMap::new()
    } else {
        let mut seen: HashMap<String, &Input> = HashMap::new();
        for i in &all {
            if let Some(other) = seen.insert(stem(i), i) {
                bail!(
                    "{other} and {i} would both write {}.npy into {} (use --format jsonl to name them apart)",
                    stem(i),
                    args.output.display()
                );
            }
        }
        all.iter()
            .map(|i| (i.key(), format!("{}.npy", stem(i))))
            .collect()
    };
    let npy_dir = if records {
        args.npy_dir.clone().unwrap_or_else(|| {
            let s = args
                .output
                .file_stem()
                .map_or("features".into(), |s| s.to_string_lossy().into_owned());
            args.output.with_file_name(format!("{s}_npy"))
        })
    } else {
        args.output.clone()
    };
    if !names.is_empty() {
        std::fs::create_dir_all(&npy_dir)
            .with_context(|| format!("cannot create output directory {}", npy_dir.display()))?;
    }
    let total = all.len();
    let (inputs, skipped) = if args.run.resume {
        common::resume_filter(Some(&args.output), all)?
    } else {
        (all, 0)
    };
    if skipped > 0 && !g.quiet {
        eprintln!("resume: {skipped} of {total} inputs already done");
    }
    let targets: Vec<PathBuf> = inputs
        .iter()
        .map(|i| {
            names
                .get(&i.key())
                .map_or_else(|| args.output.clone(), |n| npy_dir.join(n))
        })
        .collect();
    let writer = if records {
        let f = if args.format == OutFormat::Jsonl {
            Format::Jsonl
        } else {
            Format::Json
        };
        Some(
            RecordWriter::create(Some(&args.output), f, args.run.resume)
                .with_context(|| format!("cannot write {}", args.output.display()))?,
        )
    } else {
        None
    };

    let n = inputs.len();
    let inputs = Arc::new(inputs);
    let jobs = args.run.jobs();
    let cancel = voxtok_pipeline::Cancel::new();
    common::install_ctrlc(&cancel);
    let mut graph = Graph::new(GraphOptions {
        capacity: 2 * jobs + 2,
        max_open_streams: Some(4 * jobs + 4),
        cancel,
    });
    let raw = Raw {
        rate: args.raw_rate,
        format: args.raw_format,
        channels: args.raw_channels,
    };
    // Decoding stops a little past 30 s in padded mode (the resampler needs
    // its look-ahead); the features only use the first 30 s.
    let max_seconds = (padding == MelPadding::Whisper30s).then_some(32.0);
    let src = graph.source_iter("inputs", 0..n);
    let ins = inputs.clone();
    let chunks = graph.per_stream("decode", src, jobs, move || Decode {
        inputs: ins.clone(),
        raw: raw.clone(),
        max_seconds,
    });
    let pcm = graph.per_stream("resample", chunks, jobs, Resample::default);
    let n_mels = args.n_mels;
    let mels = graph.per_stream("mel", pcm, jobs, || Mel {
        n_mels,
        padding,
        open: HashMap::new(),
    });
    let targets = Arc::new(targets);
    let written = graph.parallel("write", mels, jobs, || WriteNpy(targets.clone()));
    let sink = Records {
        inputs,
        writer,
        announce: !records && !g.quiet,
        ok: 0,
        failed: 0,
    };
    let handle = graph.sink("records", written, sink, args.run.keep_order);
    let result = common::drive(graph.start(), n as u64, g.quiet, args.run.stats);
    let (ok, failed) = handle.take().map_or((0, n as u64), |s| (s.ok, s.failed));
    if !g.quiet && total > 1 {
        eprintln!("{} of {n} inputs done, {failed} failed", ok);
    }
    Ok(common::exit_code(&result, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_names_are_unique_and_stable() {
        let ins: Vec<Input> = ["a/x.wav", "b/x.wav", "c/y.flac", "-"]
            .iter()
            .map(|s| {
                if *s == "-" {
                    Input::Stdin
                } else {
                    Input::Path(s.into())
                }
            })
            .collect();
        let names = unique_names(&ins);
        assert_eq!(names["c/y.flac"], "y.npy");
        assert_eq!(names["-"], "stdin.npy");
        assert!(names["a/x.wav"].starts_with("x-") && names["b/x.wav"].starts_with("x-"));
        assert_ne!(names["a/x.wav"], names["b/x.wav"]);
        assert_eq!(unique_names(&ins), names, "deterministic");
    }
}
