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
    /// Audio front-end: decode + resample and Whisper log-mel, x real time on one core, peak memory.
    Frontend(super::bench_frontend::Args),
    /// Speech-to-LaTeX routes (rules, asr+rules, e2e, asr+llm): CER, normalized-LaTeX CER, exact match.
    S2l(super::bench_s2l::Args),
    /// LLM prefill/decode tokens/s at batch 1 and 8, tokenizer MB/s (vs transformers).
    Text(super::bench_text::Args),
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    match args.kind {
        Kind::Asr(a) => super::bench_asr::run(a, g),
        Kind::Text(a) => super::bench_text::run(a, g),
        Kind::S2l(a) => super::bench_s2l::run(a, g),
        Kind::Codec(a) => {
            voxtok_models::runtime::keep_freed_memory();
            super::bench_codec::run(a, g)
        }
        Kind::Frontend(a) => super::bench_frontend::run(a, g),
    }
}
