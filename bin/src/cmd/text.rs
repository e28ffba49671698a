//! `voxtok text tokenize|generate`: text tokenization (with stats and digit
//! splitting) and LLM generation, single or JSONL batch (continuous batching).

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use voxtok_models::llm::{GenerateRequest, Generation, Llm, SamplingParams};
use voxtok_models::runtime::{parse_device, parse_dtype, ModelDir};
use voxtok_models::text::{premiums, ChatMessage, DigitSplit, TextStats, TextTokenizer};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: TextCmd,
}

#[derive(clap::Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum TextCmd {
    /// Encode texts (or files) to token ids, or report token statistics.
    Tokenize(TokenizeArgs),
    /// Generate text with a Qwen2/Llama model directory.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Model directory with tokenizer.json (or the tokenizer.json itself).
    #[arg(long)]
    pub model: PathBuf,
    /// Texts; an argument naming an existing file is read as UTF-8 (`-` = stdin).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Report tokens per char/byte/word for each input; with several inputs
    /// (parallel texts in different languages) also each one's token premium.
    #[arg(long)]
    pub stats: bool,
    /// Index of the reference input for the premium.
    #[arg(long, default_value_t = 0)]
    pub reference: usize,
    /// Pre-split digit runs: none, r2l3 (right-to-left groups of 3) or single.
    #[arg(long, default_value = "none")]
    pub split_digits: String,
    /// Do not add the post-processor's special tokens (BOS/EOS).
    #[arg(long)]
    pub no_special: bool,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Raw prompt text (encoded with the tokenizer's special tokens).
    #[arg(long, group = "input")]
    pub prompt: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[arg(long, group = "input")]
    pub chat: Option<String>,
    /// Prompt token ids, comma-separated.
    #[arg(long, group = "input")]
    pub input_ids: Option<String>,
    /// JSONL requests, one per line: {"prompt"|"chat"|"messages"|"input_ids": ..,
    /// optional "max_new_tokens", "temperature", "top_k", "top_p",
    /// "repetition_penalty", "greedy", "seed", "stop"}; output JSONL in input order.
    #[arg(long, group = "input")]
    pub batch: Option<PathBuf>,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Arg-max decoding (the default when no sampling option is given).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Stop when the generated text contains this (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object per request on stdout.
    #[arg(long)]
    pub json: bool,
    /// Sequences decoded together (continuous batching).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Digit pre-split for prompt encoding: none, r2l3 or single.
    #[arg(long, default_value = "none")]
    pub split_digits: String,
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    match args.cmd {
        TextCmd::Tokenize(a) => tokenize(a, g),
        TextCmd::Generate(a) => generate(a, g),
    }
}

/// Loads a tokenizer from a directory or a tokenizer.json path.
fn load_tokenizer(model: &Path) -> anyhow::Result<TextTokenizer> {
    let tok = if model.is_file() {
        TextTokenizer::from_file(model)?
    } else {
        let dir = ModelDir::open(model)?;
        TextTokenizer::from_dir(dir.root())?
    };
    Ok(tok)
}

/// An input argument: a file's UTF-8 text, stdin, or the literal text.
fn read_input(arg: &str) -> Result<(String, String), String> {
    let bytes_to_text = |name: &str, b: Vec<u8>| {
        String::from_utf8(b).map_err(|e| {
            format!(
                "{name}: invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            )
        })
    };
    if arg == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .map_err(|e| format!("stdin: {e}"))?;
        return Ok(("-".into(), bytes_to_text("stdin", b)?));
    }
    let p = Path::new(arg);
    if p.is_file() {
        let b = std::fs::read(p).map_err(|e| format!("{arg}: {e}"))?;
        return Ok((arg.to_string(), bytes_to_text(arg, b)?));
    }
    Ok((arg.to_string(), arg.to_string()))
}

fn tokenize(a: TokenizeArgs, g: &Global) -> anyhow::Result<Exit> {
    let split: DigitSplit = a.split_digits.parse()?;
    let tok = load_tokenizer(&a.model)?.with_digit_split(split);
    let mut failed = 0;
    let mut stats: Vec<Option<TextStats>> = Vec::new();
    let mut rows: Vec<Value> = Vec::new();
    for arg in &a.inputs {
        let res = read_input(arg).and_then(|(name, text)| {
            tok.encode(&text, !a.no_special)
                .map(|e| (name, text, e))
                .map_err(|e| format!("{arg}: {e}"))
        });
        match res {
            Ok((name, text, e)) => {
                if a.stats {
                    let s = TextStats::new(&text, e.ids.len());
                    stats.push(Some(s));
                    rows.push(json!({"input": name, "stats": s, "error": null}));
                } else {
                    stats.push(None);
                    rows.push(json!({"input": name, "ids": e.ids, "tokens": e.tokens,
                                     "offsets": e.offsets, "error": null}));
                }
            }
            Err(msg) => {
                failed += 1;
                eprintln!("error: {msg}");
                stats.push(None);
                rows.push(json!({"input": arg, "error": msg}));
            }
        }
    }
    if a.stats && a.inputs.len() > 1 {
        match stats.get(a.reference) {
            Some(Some(_)) => {
                let ok: Vec<TextStats> = stats
                    .iter()
                    .map(|s| s.unwrap_or(TextStats::new("", 0)))
                    .collect();
                for (row, p) in rows.iter_mut().zip(premiums(&ok, a.reference)) {
                    if row["error"].is_null() {
                        row["premium"] = json!(p.premium);
                    }
                }
            }
            _ => bail!(
                "--reference {} is not an input that was tokenized",
                a.reference
            ),
        }
    }
    let mut out = std::io::stdout().lock();
    for r in &rows {
        writeln!(out, "{r}")?;
    }
    if a.stats && !g.quiet {
        eprintln!(
            "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "input", "tokens", "tok/chr", "tok/byte", "tok/word", "premium"
        );
        for r in rows.iter().filter(|r| r["error"].is_null()) {
            let s = &r["stats"];
            let name: String = r["input"].as_str().unwrap_or("").chars().take(32).collect();
            eprintln!(
                "{:<32} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8}",
                name,
                s["tokens"].as_u64().unwrap_or(0),
                s["tokens_per_char"].as_f64().unwrap_or(0.0),
                s["tokens_per_byte"].as_f64().unwrap_or(0.0),
                s["tokens_per_word"].as_f64().unwrap_or(0.0),
                r.get("premium")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |p| format!("{p:.3}")),
            );
        }
    }
    Ok(Exit::from_failures(failed))
}

/// A request as read from the command line or a JSONL line, before encoding.
struct RawRequest {
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    ids: Option<Vec<u32>>,
    sampling: SamplingParams,
    max_new_tokens: usize,
    stop: Vec<String>,
}

fn base_sampling(a: &GenerateArgs) -> SamplingParams {
    let sampled = a.temperature.is_some() || a.top_k.is_some() || a.top_p.is_some();
    SamplingParams {
        temperature: a.temperature.unwrap_or(1.0),
        top_k: a.top_k.unwrap_or(0),
        top_p: a.top_p.unwrap_or(1.0),
        repetition_penalty: a.repetition_penalty,
        greedy: a.greedy || !sampled,
        seed: a.seed,
    }
}

fn chat_messages(system: Option<&str>, user: &str) -> Vec<ChatMessage> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(ChatMessage::new("system", s));
    }
    m.push(ChatMessage::new("user", user));
    m
}

fn parse_ids(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<u32>().map_err(|_| format!("bad token id `{x}`")))
        .collect()
}

/// Parses one JSONL request line, with the command-line options as defaults.
fn parse_line(line: &str, a: &GenerateArgs) -> Result<RawRequest, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("a request must be a JSON object")?;
    let mut s = base_sampling(a);
    let f = |k: &str| obj.get(k).and_then(Value::as_f64);
    if let Some(t) = f("temperature") {
        s.temperature = t as f32;
        s.greedy = obj.get("greedy").and_then(Value::as_bool).unwrap_or(false);
    }
    if let Some(k) = obj.get("top_k").and_then(Value::as_u64) {
        s.top_k = k as usize;
        s.greedy = obj.get("greedy").and_then(Value::as_bool).unwrap_or(false);
    }
    if let Some(p) = f("top_p") {
        s.top_p = p as f32;
        s.greedy = obj.get("greedy").and_then(Value::as_bool).unwrap_or(false);
    }
    if let Some(p) = f("repetition_penalty") {
        s.repetition_penalty = p as f32;
    }
    if let Some(gr) = obj.get("greedy").and_then(Value::as_bool) {
        s.greedy = gr;
    }
    if let Some(seed) = obj.get("seed").and_then(Value::as_u64) {
        s.seed = seed;
    }
    let max_new_tokens = obj
        .get("max_new_tokens")
        .and_then(Value::as_u64)
        .map_or(a.max_new_tokens, |n| n as usize);
    let mut stop = a.stop.clone();
    match obj.get("stop") {
        Some(Value::String(x)) => stop.push(x.clone()),
        Some(Value::Array(xs)) => {
            stop.extend(xs.iter().filter_map(|x| x.as_str().map(str::to_string)))
        }
        _ => {}
    }
    let mut r = RawRequest {
        prompt: None,
        messages: None,
        ids: None,
        sampling: s,
        max_new_tokens,
        stop,
    };
    if let Some(p) = obj.get("prompt") {
        r.prompt = Some(p.as_str().ok_or("`prompt` must be a string")?.to_string());
    } else if let Some(c) = obj.get("chat") {
        let c = c.as_str().ok_or("`chat` must be a string")?;
        let sys = obj
            .get("system")
            .and_then(Value::as_str)
            .or(a.system.as_deref());
        r.messages = Some(chat_messages(sys, c));
    } else if let Some(m) = obj.get("messages") {
        r.messages =
            Some(serde_json::from_value(m.clone()).map_err(|e| format!("`messages`: {e}"))?);
    } else if let Some(ids) = obj.get("input_ids") {
        r.ids = Some(serde_json::from_value(ids.clone()).map_err(|e| format!("`input_ids`: {e}"))?);
    } else {
        return Err("a request needs `prompt`, `chat`, `messages` or `input_ids`".into());
    }
    Ok(r)
}

/// Encodes a raw request into a GenerateRequest.
fn encode(llm: &Llm, split: DigitSplit, r: RawRequest) -> Result<GenerateRequest, String> {
    let prompt_ids = if let Some(ids) = r.ids {
        if let Some(t) = &llm.tokenizer {
            t.check_ids(&ids).map_err(|e| e.to_string())?;
        }
        ids
    } else {
        let tok = llm
            .tokenizer()
            .map_err(|e| e.to_string())?
            .clone()
            .with_digit_split(split);
        let (text, special) = if let Some(msgs) = r.messages {
            let chat = llm.chat.as_ref().ok_or_else(|| {
                format!(
                    "{}: the model has no chat template",
                    llm.dir.root().display()
                )
            })?;
            (chat.render(&msgs, true).map_err(|e| e.to_string())?, false)
        } else {
            (r.prompt.unwrap_or_default(), true)
        };
        tok.check_specials(&text).map_err(|e| e.to_string())?;
        tok.encode(&text, special).map_err(|e| e.to_string())?.ids
    };
    Ok(GenerateRequest {
        prompt_ids,
        max_new_tokens: r.max_new_tokens,
        sampling: r.sampling,
        stop_strings: r.stop,
    })
}

fn result_json(index: usize, res: &Result<Generation, String>) -> Value {
    match res {
        Ok(g) => json!({
            "index": index,
            "ids": g.ids,
            "text": g.text,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "tokens_per_s": if g.seconds > 0.0 { g.generated_tokens as f64 / g.seconds } else { 0.0 },
            "finish": g.finish,
            "error": null,
        }),
        Err(e) => json!({"index": index, "error": e}),
    }
}

fn generate(a: GenerateArgs, g: &Global) -> anyhow::Result<Exit> {
    let split: DigitSplit = a.split_digits.parse()?;
    let device = parse_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype)?;
    // requests first: bad usage fails before the (slow) model load
    let mut raws: Vec<Result<RawRequest, String>> = Vec::new();
    if let Some(path) = &a.batch {
        let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        for (n, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line = line.with_context(|| format!("{}", path.display()))?;
            let r = match std::str::from_utf8(&line) {
                Err(e) => Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
                Ok(s) if s.trim().is_empty() => continue,
                Ok(s) => parse_line(s, &a),
            };
            raws.push(r.map_err(|e| format!("{}:{}: {e}", path.display(), n + 1)));
        }
    } else {
        let base = RawRequest {
            prompt: None,
            messages: None,
            ids: None,
            sampling: base_sampling(&a),
            max_new_tokens: a.max_new_tokens,
            stop: a.stop.clone(),
        };
        let r = if let Some(p) = &a.prompt {
            RawRequest {
                prompt: Some(p.clone()),
                ..base
            }
        } else if let Some(c) = &a.chat {
            RawRequest {
                messages: Some(chat_messages(a.system.as_deref(), c)),
                ..base
            }
        } else if let Some(ids) = &a.input_ids {
            RawRequest {
                ids: Some(parse_ids(ids).map_err(anyhow::Error::msg)?),
                ..base
            }
        } else {
            bail!("give one of --prompt, --chat, --input-ids or --batch");
        };
        raws.push(Ok(r));
    }
    // First Ctrl-C: stop generating, write what was generated so far, exit 130;
    // a second one exits at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let dir = ModelDir::open(&a.model)?;
    let llm = Llm::load(&dir, dtype, &device)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    if a.batch.is_none() && (a.prompt.is_some() || a.chat.is_some()) {
        llm.tokenizer()?;
    }
    let mut results: Vec<Option<Result<Generation, String>>> = vec![None; raws.len()];
    let mut reqs = Vec::new();
    let mut req_index = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        match r.and_then(|r| encode(&llm, split, r)) {
            Ok(req) => {
                req_index.push(i);
                reqs.push(req);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let max_pos = llm.model.config().max_position_embeddings;
    let capacity = reqs
        .iter()
        .map(|r| r.prompt_ids.len() + r.max_new_tokens)
        .max()
        .unwrap_or(1)
        .min(max_pos);
    let capacity = capacity.max(
        reqs.iter()
            .map(|r| r.prompt_ids.len() + 1)
            .max()
            .unwrap_or(1)
            .min(max_pos),
    );
    let t0 = std::time::Instant::now();
    let mut engine = llm.engine(a.max_batch, capacity);
    // write results in input order as soon as every earlier one is done
    let mut out = std::io::stdout().lock();
    let mut next = 0usize;
    let mut flush = |results: &mut Vec<Option<Result<Generation, String>>>,
                     next: &mut usize|
     -> std::io::Result<()> {
        while *next < results.len() {
            let Some(r) = &results[*next] else { break };
            if a.json || a.batch.is_some() {
                writeln!(out, "{}", result_json(*next, r))?;
            } else {
                match r {
                    Ok(gen) => writeln!(
                        out,
                        "{}",
                        if llm.tokenizer.is_some() {
                            gen.text.clone()
                        } else {
                            gen.ids
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        }
                    )?,
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            *next += 1;
        }
        out.flush()
    };
    flush(&mut results, &mut next)?;
    let mut io_err = None;
    let not_started = engine.run_until(reqs, &stop, |k, res| {
        results[req_index[k]] = Some(res.map_err(|e| e.to_string()));
        if let Err(e) = flush(&mut results, &mut next) {
            io_err.get_or_insert(e);
        }
    });
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        // Write the finished outputs after a request that never started too.
        let mut out = std::io::stdout().lock();
        for (i, r) in results.iter().enumerate().skip(next) {
            if let (Some(r), true) = (r, a.json || a.batch.is_some()) {
                writeln!(out, "{}", result_json(i, r))?;
            }
        }
        out.flush()?;
        eprintln!(
            "interrupted: running requests stopped early (finish \"interrupted\"), {not_started} not started"
        );
        return Ok(Exit::Interrupted);
    }
    let failed = results.iter().filter(|r| !matches!(r, Some(Ok(_)))).count();
    if (a.json || a.batch.is_some()) && !g.quiet {
        for (i, r) in results.iter().enumerate() {
            if let Some(Err(e)) = r {
                eprintln!("error: request {i}: {e}");
            }
        }
    }
    if !g.quiet {
        let s = engine.stats;
        eprintln!(
            "{} requests ({} failed) in {:.2}s: prefill {} tok at {:.1} tok/s, decode {} tok at {:.1} tok/s (max batch {})",
            results.len(),
            failed,
            t0.elapsed().as_secs_f64(),
            s.prefill_tokens,
            s.prefill_tokens as f64 / s.prefill_seconds.max(1e-9),
            s.decode_tokens,
            s.decode_tokens as f64 / s.decode_seconds.max(1e-9),
            s.max_active,
        );
    }
    Ok(Exit::from_failures(failed))
}
