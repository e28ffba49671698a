//! `voxtok bench text`: LLM prefill and decode tokens/s at several batch
//! sizes (continuous-batching engine, greedy, no early stop) and tokenizer
//! MB/s, optionally beside a reference JSON written by
//! tools/bench/text_transformers.py in the same script run.

use crate::{exit::Exit, Global};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;
use voxtok_models::llm::{Engine, GenerateRequest, Llm, Rng, SamplingParams};
use voxtok_models::runtime::{parse_device, parse_dtype, ModelDir};
use voxtok_models::text::TextTokenizer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (Qwen2/Llama, Hugging Face layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Tokenizer for the MB/s figure (default: the model's tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Text files for the tokenizer figure (default: tests/fixtures/llm corpora).
    #[arg(long)]
    pub text: Vec<PathBuf>,
    /// Repeat the text up to this many MB.
    #[arg(long, default_value_t = 2.0)]
    pub text_mb: f64,
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 16)]
    pub new_tokens: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,8")]
    pub batches: String,
    /// JSON written by tools/bench/text_transformers.py: adds ratio columns.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Write the JSON report here (stdout otherwise).
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_model(llm: &Llm, batch: usize, prompt: usize, new: usize) -> anyhow::Result<(f64, f64)> {
    let vocab = llm.model.config().vocab_size as u64;
    let mut rng = Rng::new(batch as u64);
    let reqs: Vec<GenerateRequest> = (0..batch)
        .map(|_| GenerateRequest {
            prompt_ids: (0..prompt)
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect(),
            max_new_tokens: new + 1, // the first token comes from prefill
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        })
        .collect();
    // no end-of-sequence ids: every sequence decodes exactly `new` steps
    let mut engine = Engine::new(&llm.model, None, vec![], batch, prompt + new + 2);
    let mut err = None;
    engine.run(reqs, |_, r| {
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let s = engine.stats;
    Ok((
        s.prefill_tokens as f64 / s.prefill_seconds,
        s.decode_tokens as f64 / s.decode_seconds,
    ))
}

fn bench_text(tok: &TextTokenizer, files: &[PathBuf], mb: f64) -> anyhow::Result<Value> {
    let mut base = String::new();
    for f in files {
        base += &std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
    }
    let lines: Vec<&str> = base.lines().filter(|l| !l.is_empty()).collect();
    anyhow::ensure!(!lines.is_empty(), "no text for the tokenizer benchmark");
    let mut text: Vec<&str> = Vec::new();
    let mut size = 0usize;
    while (size as f64) < mb * 1e6 {
        for l in &lines {
            text.push(l);
            size += l.len() + 1;
        }
    }
    let t0 = Instant::now();
    let mut n = 0;
    for l in &text {
        n += tok.encode(l, true)?.ids.len();
    }
    let one = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let b = tok.encode_batch(&text, true)?;
    let batch = t0.elapsed().as_secs_f64();
    anyhow::ensure!(b.iter().map(|e| e.ids.len()).sum::<usize>() == n);
    Ok(
        json!({"bytes": size, "tokens": n, "encode_mb_s": size as f64 / 1e6 / one,
              "encode_batch_mb_s": size as f64 / 1e6 / batch}),
    )
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<Exit> {
    let device = parse_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype)?;
    let batches: Vec<usize> = a
        .batches
        .split(',')
        .map(|b| {
            b.trim()
                .parse::<usize>()
                .context("--batches: comma-separated sizes")
        })
        .collect::<anyhow::Result<_>>()?;
    let reference: Option<Value> = match &a.reference {
        Some(p) => Some(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
        )?),
        None => None,
    };
    let dir = ModelDir::open(&a.model)?;
    let llm = Llm::load(&dir, dtype, &device)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    let mut model = serde_json::Map::new();
    for &b in &batches {
        let (pf, dec) = bench_model(&llm, b, a.prompt_tokens, a.new_tokens)?;
        if !g.quiet {
            eprintln!("voxtok batch {b}: prefill {pf:.1} tok/s, decode {dec:.2} tok/s");
        }
        model.insert(
            b.to_string(),
            json!({"prefill_tok_s": pf, "decode_tok_s": dec}),
        );
    }
    let tok = match &a.tokenizer {
        Some(p) if p.is_file() => TextTokenizer::from_file(p)?,
        Some(p) => TextTokenizer::from_dir(p)?,
        None => llm.tokenizer()?.clone(),
    };
    let files = if a.text.is_empty() {
        let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm");
        ["en", "ru", "math"]
            .iter()
            .map(|l| fx.join(format!("corpus_{l}.txt")))
            .collect()
    } else {
        a.text.clone()
    };
    let tokenizer = bench_text(&tok, &files, a.text_mb)?;
    let report = json!({
        "engine": "voxtok",
        "model": model,
        "tokenizer": tokenizer,
        "prompt_tokens": a.prompt_tokens,
        "new_tokens": a.new_tokens,
        "peak_rss_mb": peak_rss_mb(),
        "reference": reference,
    });
    // Markdown table, ratios against the reference when given
    let r = |path: &[&str]| -> Option<f64> {
        let mut v = reference.as_ref()?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    };
    let mut md = String::from("| metric | voxtok | reference | ratio |\n|---|---:|---:|---:|\n");
    let mut row = |name: String, ours: f64, theirs: Option<f64>| {
        let (t, ratio) = match theirs {
            Some(t) if t > 0.0 => (format!("{t:.2}"), format!("{:.2}x", ours / t)),
            _ => ("-".into(), "-".into()),
        };
        md += &format!("| {name} | {ours:.2} | {t} | {ratio} |\n");
    };
    for &b in &batches {
        let m = &model[&b.to_string()];
        for k in ["prefill_tok_s", "decode_tok_s"] {
            row(
                format!("{k} (batch {b})"),
                m[k].as_f64().unwrap_or(0.0),
                r(&["model", &b.to_string(), k]),
            );
        }
    }
    if let (Some(b1), Some(bn)) = (batches.first(), batches.last()) {
        if b1 != bn {
            let d = |b: &usize| {
                model[&b.to_string()]["decode_tok_s"]
                    .as_f64()
                    .unwrap_or(0.0)
            };
            row(
                format!("decode batch {bn} / batch {b1}"),
                d(bn) / d(b1).max(1e-12),
                None,
            );
        }
    }
    for k in ["encode_mb_s", "encode_batch_mb_s"] {
        row(
            format!("tokenizer {k}"),
            tokenizer[k].as_f64().unwrap_or(0.0),
            r(&["tokenizer", k]),
        );
    }
    row("peak RSS MB".into(), peak_rss_mb(), r(&["peak_rss_mb"]));
    eprint!("{md}");
    let js = serde_json::to_string_pretty(&report)?;
    match &a.json {
        Some(p) => std::fs::write(p, js + "\n").with_context(|| format!("{}", p.display()))?,
        None => println!("{js}"),
    }
    Ok(Exit::Ok)
}
