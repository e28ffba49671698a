//! `voxtok features`: Whisper log-mel features as .npy (float32, [n_mels, frames]).
//!
//! One input writes `-o OUT.npy`; several inputs write `<stem>.npy` each into
//! the directory `-o DIR`. A failing input is reported on stderr with its
//! name and the others carry on; the exit code is then 1. The per-file work
//! is `voxtok_codecs::mel::whisper_mel_decoder`, so the stage graph can call it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use voxtok_codecs::decode::{Decoder, RawPcm, RawSampleFormat};
use voxtok_codecs::mel::{whisper_mel_decoder, MelPadding};
use voxtok_codecs::npy::write_mel_npy;
use voxtok_codecs::CodecError;

use crate::{exit::Exit, Global};

/// Feature kinds.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whisper log-mel spectrogram (Hugging Face `WhisperFeatureExtractor`).
    WhisperMel,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input audio files (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A), or `-` for stdin.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output: OUT.npy for one input, a directory for several.
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
}

fn is_stdin(p: &Path) -> bool {
    p == Path::new("-")
}

fn stem(p: &Path) -> String {
    if is_stdin(p) {
        return "stdin".into();
    }
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into())
}

fn open(p: &Path, args: &Args) -> Result<Decoder, CodecError> {
    match (is_stdin(p), args.raw_rate) {
        (true, Some(rate)) => Decoder::raw(
            std::io::stdin(),
            voxtok_codecs::decode::STDIN_NAME,
            RawPcm {
                sample_rate: rate,
                channels: args.raw_channels,
                format: args.raw_format,
            },
        ),
        _ => Decoder::open(p),
    }
}

/// Writes to a temporary name first so a failure never leaves a partial .npy.
fn write_atomic(out: &Path, mel: &voxtok_codecs::MelSpectrogram) -> Result<(), CodecError> {
    let tmp = out.with_extension("npy.part");
    write_mel_npy(&tmp, mel)?;
    std::fs::rename(&tmp, out).map_err(|e| CodecError::Write {
        path: out.to_path_buf(),
        detail: e.to_string(),
    })
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let Kind::WhisperMel = args.kind;
    if args.n_mels != 80 && args.n_mels != 128 {
        bail!("--n-mels must be 80 or 128, got {}", args.n_mels);
    }
    if args.inputs.iter().filter(|p| is_stdin(p)).count() > 1 {
        bail!("stdin (`-`) can be given only once");
    }
    if args.raw_rate.is_some() && !args.inputs.iter().any(|p| is_stdin(p)) {
        bail!("--raw-rate applies to stdin (`-`) only");
    }
    let padding = if args.no_pad {
        MelPadding::None
    } else {
        MelPadding::Whisper30s
    };

    // Where each input's features go.
    let outputs: Vec<PathBuf> = if args.inputs.len() == 1 && !args.output.is_dir() {
        vec![args.output.clone()]
    } else {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("cannot create output directory {}", args.output.display()))?;
        let mut seen: HashMap<String, &Path> = HashMap::new();
        for p in &args.inputs {
            if let Some(other) = seen.insert(stem(p), p) {
                bail!(
                    "{} and {} would both write {}.npy into {}",
                    other.display(),
                    p.display(),
                    stem(p),
                    args.output.display()
                );
            }
        }
        args.inputs
            .iter()
            .map(|p| args.output.join(format!("{}.npy", stem(p))))
            .collect()
    };

    let mut failed = 0usize;
    for (input, out) in args.inputs.iter().zip(&outputs) {
        let res = open(input, &args)
            .and_then(|dec| whisper_mel_decoder(dec, args.n_mels, padding))
            .and_then(|mel| write_atomic(out, &mel).map(|_| mel));
        match res {
            Ok(mel) => {
                if !g.quiet {
                    eprintln!(
                        "{} -> {} [{} x {}]",
                        input.display(),
                        out.display(),
                        mel.n_mels,
                        mel.n_frames
                    );
                }
            }
            Err(e) => {
                failed += 1;
                // CodecError messages start with the file name.
                eprintln!("error: {e}");
            }
        }
    }
    if !g.quiet && args.inputs.len() > 1 {
        eprintln!(
            "{} of {} inputs done, {failed} failed",
            args.inputs.len() - failed,
            args.inputs.len()
        );
    }
    Ok(Exit::from_failures(failed))
}
