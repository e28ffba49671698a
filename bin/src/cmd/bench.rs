//! `voxtok bench KIND`: throughput benchmarks, one module per kind
//! (each prints a summary and can write a JSON report).

use crate::{exit::Exit, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub kind: Kind,
}

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum Kind {
    /// Whisper transcription: x real time, tokens/s, peak memory.
    Asr(super::bench_asr::Args),
    /// Audio tokenizers (DASB-style): bitrate, SI-SDR, mel distance, encode/decode x real time.
    Codec(super::bench_codec::Args),
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    match args.kind {
        Kind::Asr(a) => super::bench_asr::run(a, g),
        Kind::Codec(a) => super::bench_codec::run(a, g),
    }
}
