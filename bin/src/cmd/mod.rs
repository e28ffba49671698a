//! One module per subcommand: each has an `Args` (clap) and a
//! `run(args, &Global) -> anyhow::Result<Exit>`. An `Err` means bad usage or
//! an unloadable model (exit 2); per-input failures are reported by the
//! command itself and counted into `Exit::SomeFailed`.

pub mod bench;
pub mod bench_asr;
pub mod bench_asr_dataset;
pub mod bench_codec;
pub mod bench_frontend;
pub mod bench_s2l;
pub mod bench_text;
pub mod common;
pub mod features;
pub mod latex;
pub mod stream;
pub mod stream_codes;
#[cfg(feature = "mic")]
pub mod stream_mic;
pub mod text;
pub mod tokenize;
pub mod transcribe;
pub mod transcribe_latex;
pub mod transcribe_vad;
pub mod vad;
