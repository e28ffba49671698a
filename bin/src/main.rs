//! `voxtok`: speech and audio tokens from the command line.
//!
//! A thin binary over the library crates: argument parsing, progress and
//! exit codes live here; all real work is in `voxtok-*`.

mod cmd;
mod exit;

use clap::{Parser, Subcommand};
use exit::Exit;

/// Speech and audio tokens: decode, resample, featurize, transcribe, tokenize.
#[derive(Parser, Debug)]
#[command(name = "voxtok", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// More log output (-v info, -vv debug, -vvv trace); also RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars or summaries on stderr; errors are still printed.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// One variant per subcommand; each lives in its own module under `cmd/`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compute model input features (Whisper log-mel) and write them as .npy.
    Features(cmd::features::Args),
    /// Spoken maths -> LaTeX with the rules converter (English, Russian) or an LLM (--model), one line per input line.
    Latex(cmd::latex::Args),
    /// Transcribe or translate speech with a Whisper model (files, directories or stdin).
    Transcribe(cmd::transcribe::Args),
    /// Benchmarks: `voxtok bench asr ...` (x real time, tokens/s, peak memory).
    Bench(cmd::bench::Args),
    /// Text tokenization (stats, digit splitting) and LLM generation (Qwen2/Llama).
    Text(cmd::text::Args),
    /// Audio -> discrete tokens (EnCodec, DAC, SSL + k-means): .npy for one input, JSONL for many.
    Tokenize(cmd::tokenize::TokenizeArgs),
    /// Discrete tokens (.npy) -> WAV (EnCodec, DAC; SSL tokens have no decoder).
    Detokenize(cmd::tokenize::DetokenizeArgs),
    /// Voice activity detection: speech segments of audio files (energy VAD, or Silero with --model-file).
    Vad(cmd::vad::Args),
    /// Live transcription (partial + final lines) from a microphone, a file replayed in real time or stdin; or audio codes with --codec.
    Stream(cmd::stream::Args),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_logging(&cli.global);
    // The codec commands move large per-layer buffers; let malloc recycle them.
    if matches!(
        cli.command,
        Command::Tokenize(_) | Command::Detokenize(_) | Command::Stream(_)
    ) {
        voxtok_models::runtime::keep_freed_memory();
    }
    let result = match cli.command {
        Command::Features(args) => cmd::features::run(args, &cli.global),
        Command::Latex(args) => cmd::latex::run(args, &cli.global),
        Command::Transcribe(args) => cmd::transcribe::run(args, &cli.global),
        Command::Bench(args) => cmd::bench::run(args, &cli.global),
        Command::Text(args) => cmd::text::run(args, &cli.global),
        Command::Tokenize(args) => cmd::tokenize::run_tokenize(args, &cli.global),
        Command::Detokenize(args) => cmd::tokenize::run_detokenize(args, &cli.global),
        Command::Vad(args) => cmd::vad::run(args, &cli.global),
        Command::Stream(args) => cmd::stream::run(args, &cli.global),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Usage.into()
        }
    }
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // symphonia logs its own probe/decode errors, which voxtok reports
    // itself with the file name; they are noise below -vv.
    let directives = if g.verbose < 2 {
        format!("{level},symphonia=off")
    } else {
        level.to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    // Panics inside symphonia on malformed input are caught and reported as
    // errors naming the file; keep their default message out of stderr.
    let verbose = g.verbose;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_symphonia = info
            .location()
            .is_some_and(|l| l.file().contains("symphonia"));
        if !in_symphonia || verbose >= 2 {
            default_hook(info);
        }
    }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
