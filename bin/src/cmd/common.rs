//! CLI parts shared by the commands that run on the stage graph
//! (`features`, `transcribe`, `tokenize`, ...): input-list flags, run flags
//! (`--jobs`, `--keep-order`, `--resume`, `--stats`), Ctrl-C, the progress
//! bar, and the exit code.

use crate::exit::Exit;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use voxtok_pipeline::inputs::{self, AUDIO_EXTENSIONS};
use voxtok_pipeline::{records, Cancel, Input, PipelineError, Report, Running, Shard};

/// Which inputs to process.
#[derive(clap::Args, Debug, Clone)]
pub struct InputArgs {
    /// Audio files, directories (searched recursively for audio files), glob
    /// patterns, or `-` for audio on stdin.
    pub inputs: Vec<String>,
    /// A list of inputs: one path a line, or JSONL with a `path` field
    /// (relative paths are relative to the manifest; `-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Process only shard I of N (0-based) of the sorted input list, for
    /// running N workers under a scheduler.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

impl InputArgs {
    /// The expanded, de-duplicated, sharded input list (errors are usage errors).
    pub fn expand(&self) -> anyhow::Result<Vec<Input>> {
        let all = inputs::expand(&self.inputs, self.manifest.as_deref(), AUDIO_EXTENSIONS)?;
        if all.iter().filter(|i| **i == Input::Stdin).count() > 0
            && self.manifest.as_deref() == Some(Path::new("-"))
        {
            anyhow::bail!("stdin cannot be both an input (`-`) and the manifest (`--manifest -`)");
        }
        Ok(match self.shard {
            Some(s) => s.select(all),
            None => all,
        })
    }
}

/// How the graph runs.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Worker threads per parallel stage (default: the number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Write results in input order (default: as each input completes).
    #[arg(long)]
    pub keep_order: bool,
    /// Skip inputs already done (`error` null) in the `-o` JSONL file and
    /// append the others; failed records are retried.
    #[arg(long)]
    pub resume: bool,
    /// Print per-stage counters (items, busy time, queue high-water, errors)
    /// to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

impl RunArgs {
    /// Workers per parallel stage.
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// For `--resume`: drop the inputs already done in `output` (JSONL), which is
/// cleaned of failed and torn records. Returns the inputs left and how many
/// were skipped.
pub fn resume_filter(
    output: Option<&Path>,
    inputs: Vec<Input>,
) -> anyhow::Result<(Vec<Input>, usize)> {
    let Some(out) = output.filter(|p| *p != Path::new("-")) else {
        anyhow::bail!("--resume needs an output file (-o OUT.jsonl)");
    };
    let r = records::prepare_resume(out)
        .with_context(|| format!("reading {} to resume", out.display()))?;
    if r.dropped > 0 {
        tracing::info!(
            "resume: dropped {} failed or incomplete records from {}",
            r.dropped,
            out.display()
        );
    }
    let before = inputs.len();
    let left: Vec<Input> = inputs
        .into_iter()
        .filter(|i| !r.done.contains(&i.key()))
        .collect();
    Ok((left.clone(), before - left.len()))
}

/// Ctrl-C cancels the run (sources stop, in-flight inputs finish, outputs
/// are flushed); a second Ctrl-C exits at once with 130.
pub fn install_ctrlc(cancel: &Cancel) {
    let c = cancel.clone();
    let r = ctrlc::set_handler(move || {
        if c.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing inputs in flight (Ctrl-C again to stop now)");
        c.cancel();
    });
    if let Err(e) = r {
        tracing::debug!("Ctrl-C handler not installed: {e}");
    }
}

/// Wait for a started graph, showing a progress bar of completed inputs on a
/// terminal (not with `--quiet`), then print `--stats`.
pub fn drive(
    running: Running,
    total: u64,
    quiet: bool,
    stats: bool,
) -> Result<Report, PipelineError> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let target = if !quiet && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} inputs {elapsed_precise} eta {eta} {msg}",
    ) {
        pb.set_style(style);
    }
    while !running.is_finished() {
        let m = running.metrics();
        pb.set_position(m.streams_done());
        let failed: u64 = m
            .snapshot()
            .iter()
            .filter(|s| s.kind == "sink")
            .map(|s| s.errors)
            .sum();
        if failed > 0 {
            pb.set_message(format!("({failed} failed)"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pb.finish_and_clear();
    let r = running.wait();
    if stats {
        if let Ok(rep) = &r {
            eprintln!("{rep}");
        }
    }
    r
}

/// The exit code of a graph run that wrote `failed` failure records.
pub fn exit_code(result: &Result<Report, PipelineError>, failed: u64) -> Exit {
    match result {
        Ok(r) if r.cancelled => Exit::Interrupted,
        Ok(_) => Exit::from_failures(failed as usize),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::SomeFailed
        }
    }
}
