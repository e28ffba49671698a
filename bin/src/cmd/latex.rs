//! `voxtok latex`: spoken maths → LaTeX with the rules converter (no model),
//! or with an LLM (`--model DIR`, the S2L prompt; see
//! `voxtok_models::latex::correct`). One LaTeX line per input line on stdout
//! (empty when nothing could be made); words that could not be placed, and
//! LLM failures, are listed on stderr.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use voxtok_models::latex::{convert, Lang};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Spoken maths, `-` for stdin, or a file (one utterance per line).
    #[arg(required = true)]
    pub input: Vec<String>,
    /// Language of the spoken text: en, ru, or auto (Cyrillic → ru).
    #[arg(long, default_value = "auto")]
    pub lang: String,
    /// Time the converter on the inputs for about this many seconds and print
    /// utterances/s on stderr (reference: splitting the same lines into words).
    #[arg(long)]
    pub time: Option<f64>,
    /// LLM directory (Qwen2/Llama, Hugging Face layout with tokenizer.json):
    /// post-correction with the S2L prompt instead of the rules, greedy.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Few-shot examples for --model: `spoken<TAB>latex` per line.
    #[arg(long)]
    pub examples: Option<std::path::PathBuf>,
    /// Maximum tokens generated per line (--model).
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// cpu, cuda or cuda:N (--model).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (--model).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let lang = match args.lang.as_str() {
        "auto" => None,
        l => match Lang::parse(l) {
            Some(l) => Some(l),
            None => bail!("unknown --lang {l:?} (expected en, ru or auto)"),
        },
    };
    let lines: Vec<String> = if args.input.len() == 1 && args.input[0] == "-" {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .context("reading stdin")?
    } else if args.input.len() == 1 && std::path::Path::new(&args.input[0]).is_file() {
        std::fs::read_to_string(&args.input[0])
            .with_context(|| format!("reading {}", args.input[0]))?
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        vec![args.input.join(" ")]
    };
    let lang_of = |s: &str| lang.unwrap_or_else(|| Lang::detect(s));
    if let Some(secs) = args.time {
        return time(&lines, secs, &lang_of);
    }
    if let Some(dir) = &args.model {
        return run_llm(&args, dir, &lines, g);
    }
    if args.examples.is_some() {
        bail!("--examples needs --model");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut empty = 0;
    for (n, line) in lines.iter().enumerate() {
        let c = convert(line, lang_of(line));
        if !c.unplaced.is_empty() && !g.quiet {
            eprintln!(
                "warning: line {}: could not place: {}",
                n + 1,
                c.unplaced.join(" ")
            );
        }
        if c.latex.is_empty() && !line.trim().is_empty() {
            empty += 1;
        }
        writeln!(out, "{}", c.latex)?;
    }
    out.flush()?;
    Ok(Exit::from_failures(empty))
}

fn time(lines: &[String], secs: f64, lang_of: &dyn Fn(&str) -> Lang) -> anyhow::Result<Exit> {
    let langs: Vec<Lang> = lines.iter().map(|l| lang_of(l)).collect();
    let run = |f: &mut dyn FnMut(&str, Lang) -> usize| {
        let t = Instant::now();
        let mut n = 0u64;
        let mut sink = 0usize;
        while t.elapsed().as_secs_f64() < secs {
            for (l, &lang) in lines.iter().zip(&langs) {
                sink = sink.wrapping_add(f(l, lang));
                n += 1;
            }
        }
        (n as f64 / t.elapsed().as_secs_f64(), sink)
    };
    let (conv, _) = run(&mut |l, lang| convert(l, lang).latex.len());
    let (split, _) = run(&mut |l, _| {
        l.split_whitespace()
            .map(|w| w.to_lowercase().len())
            .sum::<usize>()
    });
    eprintln!(
        "rules converter: {conv:.0} utterances/s on one thread ({} lines); reference (lower-case word split): {split:.0}/s; ratio {:.3}",
        lines.len(),
        conv / split
    );
    Ok(Exit::Ok)
}

/// `--model`: every non-empty line through the LLM corrector, output in order.
fn run_llm(
    args: &Args,
    dir: &std::path::Path,
    lines: &[String],
    g: &Global,
) -> anyhow::Result<Exit> {
    let mut c = super::transcribe_latex::load_corrector(
        dir,
        args.examples.as_deref(),
        &args.device,
        &args.dtype,
    )?;
    c.max_new_tokens = args.max_new_tokens;
    let todo: Vec<String> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    // First Ctrl-C: stop generating, print what was made (one line per input
    // line still), exit 130; a second one exits at once.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let mut results = c.convert_batch_until(&todo, &stop).into_iter();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0;
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            writeln!(out)?;
            continue;
        }
        match results.next() {
            Some(Ok(l)) => {
                if l.is_empty() {
                    failed += 1;
                }
                writeln!(out, "{l}")?
            }
            Some(Err(e)) => {
                failed += 1;
                // after Ctrl-C, one summary line instead of one per line not done
                if !g.quiet && !stop.load(Ordering::SeqCst) {
                    eprintln!("error: line {}: {e}", n + 1);
                }
                writeln!(out)?;
            }
            None => writeln!(out)?,
        }
    }
    out.flush()?;
    if stop.load(Ordering::SeqCst) {
        eprintln!("interrupted: lines not finished are cut or empty");
        return Ok(Exit::Interrupted);
    }
    Ok(Exit::from_failures(failed))
}
