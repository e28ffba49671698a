//! `voxtok bench s2l --dataset PATH`: scores speech-to-LaTeX routes on an
//! S2L-style dataset (parquet shards, JSONL manifest or MathSpeech folder;
//! see `voxtok_datasets::s2l`).
//!
//! Routes (each run when it can be):
//! - `rules`: the rules converter on the dataset's reference spoken text;
//! - `asr+rules`: Whisper (`--model`, greedy, no timestamps, the item's
//!   language when known) then the rules converter;
//! - `e2e`: a Whisper model with a `latex` task token (generation config
//!   `task_to_id`) emitting LaTeX directly;
//! - `asr+llm` (`--latex-model`): the Whisper transcript through the LLM with
//!   the S2L prompt.
//!
//! Per route and language: mean CER of the raw LaTeX, mean CER after LaTeX
//! normalization, exact match after normalization, S2L `cer_lower`; for
//! `kind=sentence` items also WER/CER of the lower-cased sentence. Items whose
//! audio does not decode, whose reference fails the LaTeX check, or that do
//! not read are counted as failed and left out; a route that fails on an
//! item (ASR or LLM error) scores it as an empty output and counts it.
//!
//! Writes `s2l.json`, `s2l.md` (also printed), `s2l.svg` (bar chart) and
//! `s2l-items.jsonl` (every output) to `--out-dir`. Overhead = wall time
//! outside the model stages (Whisper, LLM, rules) and audio decoding,
//! as a fraction of the total.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use voxtok_datasets::metrics;
use voxtok_datasets::s2l::{self, Columns, S2lItem};
use voxtok_models::latex::{convert, Lang};
use voxtok_models::whisper::longform::{InMemory, Stream, Transcriber};
use voxtok_models::whisper::{TranscribeOptions, Whisper};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset: a parquet file or folder of shards, a .jsonl manifest, or a
    /// MathSpeech-style folder (audio + .csv/.tsv/.json table).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Parquet split to read (`test` for data/test-*.parquet); all shards when absent.
    #[arg(long)]
    pub split: Option<String>,
    /// Whisper model for the audio routes. Default: assets/s2l-small (or
    /// $VOXTOK_S2L_MODEL) when present, else the default Whisper model; with
    /// neither, only the rules route runs.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// LLM directory for the `asr+llm` route (S2L prompt, greedy).
    #[arg(long)]
    pub latex_model: Option<PathBuf>,
    /// Few-shot examples for --latex-model: `spoken<TAB>latex` per line.
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Only the rules route on the reference text (no audio, no model).
    #[arg(long)]
    pub rules_only: bool,
    /// Score only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where the reports go.
    #[arg(long, default_value = "bench-out/s2l")]
    pub out_dir: PathBuf,
    /// Inputs decoded together by Whisper.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Maximum tokens Whisper samples per utterance.
    #[arg(long, default_value_t = 224)]
    pub max_new_tokens: usize,
    #[arg(long)]
    pub audio_column: Option<String>,
    #[arg(long)]
    pub latex_column: Option<String>,
    #[arg(long)]
    pub text_column: Option<String>,
    #[arg(long)]
    pub lang_column: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// One scored item of one route.
struct Scored {
    route: String,
    lang: String,
    failed: bool,
    cer: f64,
    latex_cer: f64,
    exact: bool,
    cer_lower: f64,
    sent: Option<(f64, f64)>,
}

fn score(route: &str, it: &S2lItem, hyp: Result<&str, &str>) -> Scored {
    let (h, failed) = match hyp {
        Ok(h) => (h, false),
        Err(_) => ("", true),
    };
    let r = it.latex.as_str();
    let sent = (it.kind == "sentence").then(|| {
        let (rl, hl) = (r.to_lowercase(), h.to_lowercase());
        (metrics::wer(&rl, &hl), metrics::cer(&rl, &hl))
    });
    Scored {
        route: route.into(),
        lang: it.language.clone().unwrap_or_else(|| "?".into()),
        failed,
        cer: metrics::cer(r, h),
        latex_cer: metrics::latex_cer(r, h),
        exact: metrics::exact_match(r, h),
        cer_lower: metrics::cer_lower(r, h),
        sent,
    }
}

/// Aggregate of a (route, language) group.
#[derive(Default, Clone)]
struct Agg {
    route: String,
    language: String,
    n: usize,
    failed: usize,
    cer: f64,
    latex_cer: f64,
    exact_match: f64,
    cer_lower: f64,
    sentences: usize,
    sentence_wer: Option<f64>,
    sentence_cer: Option<f64>,
}

impl Agg {
    fn json(&self) -> serde_json::Value {
        let num = |x: f64| {
            if x.is_nan() {
                serde_json::Value::Null
            } else {
                json!(x)
            }
        };
        json!({
            "route": self.route, "language": self.language, "n": self.n, "failed": self.failed,
            "cer": num(self.cer), "latex_cer": num(self.latex_cer), "exact_match": num(self.exact_match),
            "cer_lower": num(self.cer_lower), "sentences": self.sentences,
            "sentence_wer": self.sentence_wer, "sentence_cer": self.sentence_cer,
        })
    }
}

fn aggregate(route: &str, language: &str, rows: &[&Scored]) -> Agg {
    let n = rows.len();
    let mean = |f: &dyn Fn(&Scored) -> f64| {
        if n == 0 {
            f64::NAN
        } else {
            rows.iter().map(|r| f(r)).sum::<f64>() / n as f64
        }
    };
    let sents: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.sent).collect();
    let smean = |f: &dyn Fn(&(f64, f64)) -> f64| {
        (!sents.is_empty()).then(|| sents.iter().map(f).sum::<f64>() / sents.len() as f64)
    };
    Agg {
        route: route.into(),
        language: language.into(),
        n,
        failed: rows.iter().filter(|r| r.failed).count(),
        cer: mean(&|r| r.cer),
        latex_cer: mean(&|r| r.latex_cer),
        exact_match: mean(&|r| f64::from(u8::from(r.exact))),
        cer_lower: mean(&|r| r.cer_lower),
        sentences: sents.len(),
        sentence_wer: smean(&|s| s.0),
        sentence_cer: smean(&|s| s.1),
    }
}

/// Stage timers (seconds).
#[derive(Default)]
struct Times {
    decode: f64,
    asr: f64,
    e2e: f64,
    llm: f64,
    rules: f64,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<Exit> {
    let t_total = Instant::now();
    let cols = Columns {
        audio: a.audio_column.clone(),
        latex: a.latex_column.clone(),
        text: a.text_column.clone(),
        lang: a.lang_column.clone(),
    };
    if a.examples.is_some() && a.latex_model.is_none() {
        bail!("--examples needs --latex-model");
    }
    let set = s2l::open(&a.dataset, a.split.as_deref(), &cols)?;
    let total = a.limit.map_or(set.len, |l| l.min(set.len));
    if !g.quiet {
        eprintln!(
            "{}: {:?} layout, {} items, columns: audio `{}`, latex `{}`, text {:?}, language {:?}",
            a.dataset.display(),
            set.layout,
            set.len,
            set.columns.audio,
            set.columns.latex,
            set.columns.text,
            set.columns.lang
        );
    }
    let has_text = set.columns.text.is_some();
    let layout = format!("{:?}", set.layout);

    // Load models first: an unloadable model is a usage error (exit 2).
    let path = super::transcribe_latex::latex_whisper_path(a.model.as_deref());
    let no_model = path.is_none()
        && voxtok_models::runtime::find_default_model(super::transcribe::DEFAULT_MODEL).is_none();
    if no_model && !a.rules_only {
        // Every available route: without any Whisper model only `rules` can run.
        eprintln!(
            "warning: no --model, no assets/s2l-small and no default {}: scoring the rules route only",
            super::transcribe::DEFAULT_MODEL
        );
    }
    let mut whisper = if a.rules_only || no_model {
        None
    } else {
        Some(super::transcribe::load_whisper(
            path.as_deref(),
            &a.device,
            &a.dtype,
        )?)
    };
    let corrector = match (&a.latex_model, a.rules_only || no_model) {
        (Some(dir), false) => Some(super::transcribe_latex::load_corrector(
            dir,
            a.examples.as_deref(),
            &a.device,
            &a.dtype,
        )?),
        _ => None,
    };
    let e2e_id = whisper
        .as_ref()
        .and_then(super::transcribe_latex::latex_task_id);

    let pb = progress(total as u64, g.quiet);
    let mut times = Times::default();
    let mut failures: Vec<String> = Vec::new();
    let mut items: Vec<S2lItem> = Vec::new();
    let mut audio: Vec<Option<Vec<f32>>> = Vec::new();
    for r in set.take(total) {
        match r.and_then(|it| it.check_reference().map(|_| it)) {
            Err(e) => failures.push(e.to_string()),
            Ok(it) => {
                let samples = if whisper.is_some() {
                    let t = Instant::now();
                    let s = it.load_audio();
                    times.decode += t.elapsed().as_secs_f64();
                    match s {
                        Ok(s) => Some(s),
                        Err(e) => {
                            failures.push(e.to_string());
                            continue;
                        }
                    }
                } else {
                    None
                };
                items.push(it);
                audio.push(samples);
            }
        }
    }
    for f in &failures {
        pb.suspend(|| eprintln!("error: {f}"));
    }
    let mut outputs: BTreeMap<&'static str, Vec<Result<String, String>>> = BTreeMap::new();

    // rules on the reference spoken text
    if has_text {
        let t = Instant::now();
        let out = items
            .iter()
            .map(|it| match &it.spoken {
                Some(s) => Ok(convert(s, lang_of(it, s)).latex),
                None => Err("no spoken text".to_string()),
            })
            .collect();
        times.rules += t.elapsed().as_secs_f64();
        outputs.insert("rules", out);
    }

    if let Some(w) = whisper.as_mut() {
        let samples: Vec<Vec<f32>> = audio
            .iter_mut()
            .map(|s| s.take().unwrap_or_default())
            .collect();
        // ASR transcripts (transcribe task)
        let t = Instant::now();
        let asr = transcribe(w, &items, &samples, &a, false, &pb)?;
        times.asr += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rules: Vec<Result<String, String>> = asr
            .iter()
            .zip(&items)
            .map(|(r, it)| {
                r.as_ref()
                    .map(|(text, lang)| {
                        let l = it
                            .language
                            .as_deref()
                            .and_then(Lang::parse)
                            .or_else(|| Lang::parse(lang))
                            .unwrap_or_else(|| Lang::detect(text));
                        convert(text.trim(), l).latex
                    })
                    .map_err(Clone::clone)
            })
            .collect();
        times.rules += t.elapsed().as_secs_f64();
        outputs.insert("asr+rules", rules);
        if let Some(c) = &corrector {
            let t = Instant::now();
            let inputs: Vec<String> = asr
                .iter()
                .map(|r| {
                    r.as_ref()
                        .map(|(t, _)| t.trim().to_string())
                        .unwrap_or_default()
                })
                .collect();
            let out = c
                .convert_batch(&inputs)
                .into_iter()
                .zip(&asr)
                .map(|(l, r)| match r {
                    Err(e) => Err(e.clone()),
                    Ok(_) => l.map_err(|e| e.to_string()),
                })
                .collect();
            times.llm += t.elapsed().as_secs_f64();
            outputs.insert("asr+llm", out);
        }
        if e2e_id.is_some() && super::transcribe_latex::use_latex_task(w) {
            let t = Instant::now();
            let e2e = transcribe(w, &items, &samples, &a, true, &pb)?;
            times.e2e += t.elapsed().as_secs_f64();
            outputs.insert(
                "e2e",
                e2e.into_iter()
                    .map(|r| r.map(|(t, _)| t.trim().to_string()))
                    .collect(),
            );
        }
    }
    pb.finish_and_clear();

    // Score.
    let t_score = Instant::now();
    let mut scored = Vec::new();
    let mut lines = Vec::new();
    // Report order: rules, asr+rules, asr+llm, e2e.
    let order = ["rules", "asr+rules", "asr+llm", "e2e"];
    let outputs: Vec<(&str, Vec<Result<String, String>>)> = order
        .iter()
        .filter_map(|r| outputs.remove(r).map(|o| (*r, o)))
        .collect();
    for (route, outs) in &outputs {
        for (it, o) in items.iter().zip(outs) {
            scored.push(score(route, it, o.as_deref().map_err(|e| e.as_str())));
            lines.push(json!({
                "route": route, "id": it.id, "language": it.language, "kind": it.kind,
                "reference": it.latex, "spoken": it.spoken,
                "output": o.as_ref().ok(), "error": o.as_ref().err(),
            }));
        }
    }
    let mut aggs = Vec::new();
    for (route, _) in &outputs {
        let mine: Vec<&Scored> = scored.iter().filter(|s| s.route == *route).collect();
        let mut langs: Vec<String> = mine.iter().map(|s| s.lang.clone()).collect();
        langs.sort();
        langs.dedup();
        for l in &langs {
            let rows: Vec<&Scored> = mine.iter().copied().filter(|s| &s.lang == l).collect();
            aggs.push(aggregate(route, l, &rows));
        }
        if langs.len() > 1 {
            aggs.push(aggregate(route, "all", &mine));
        }
    }
    let score_s = t_score.elapsed().as_secs_f64();

    // Reports.
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
    let md = markdown(&aggs, failures.len());
    let svg = svg(&aggs);
    let model_name = whisper.as_ref().map(|w| w.name.clone());
    let total_s = t_total.elapsed().as_secs_f64();
    let model_s = times.asr + times.e2e + times.llm + times.rules;
    let overhead = (total_s - model_s - times.decode).max(0.0);
    let report = json!({
        "dataset": a.dataset, "split": a.split, "layout": layout,
        "items": total, "scored": items.len(), "failed_items": failures.len(), "failures": failures,
        "model": model_name, "latex_model": a.latex_model, "routes": outputs.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        "results": aggs.iter().map(Agg::json).collect::<Vec<_>>(),
        "timing": {
            "total_s": total_s, "audio_decode_s": times.decode, "asr_s": times.asr, "e2e_s": times.e2e,
            "llm_s": times.llm, "rules_s": times.rules, "scoring_s": score_s,
            "overhead_s": overhead, "overhead_fraction": overhead / total_s.max(1e-9),
        },
        "peak_rss_mb": super::bench_asr::peak_rss_mib(),
    });
    let out = |name: &str, body: &str| -> anyhow::Result<()> {
        let p = a.out_dir.join(name);
        std::fs::write(&p, body).with_context(|| format!("cannot write {}", p.display()))
    };
    out("s2l.json", &serde_json::to_string_pretty(&report)?)?;
    out("s2l.md", &md)?;
    out("s2l.svg", &svg)?;
    let mut jl = String::new();
    for l in &lines {
        jl.push_str(&l.to_string());
        jl.push('\n');
    }
    out("s2l-items.jsonl", &jl)?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{md}")?;
    if !g.quiet {
        eprintln!(
            "total {total_s:.2} s: audio decode {:.2} s, asr {:.2} s, e2e {:.2} s, llm {:.2} s, rules {:.3} s; \
             benchmark overhead {overhead:.3} s ({:.2}%); reports in {}",
            times.decode,
            times.asr,
            times.e2e,
            times.llm,
            times.rules,
            100.0 * overhead / total_s.max(1e-9),
            a.out_dir.display()
        );
    }
    let route_failed: usize = scored.iter().filter(|s| s.failed).count();
    Ok(Exit::from_failures(failures.len() + route_failed))
}

fn lang_of(it: &S2lItem, text: &str) -> Lang {
    it.language
        .as_deref()
        .and_then(Lang::parse)
        .unwrap_or_else(|| Lang::detect(text))
}

fn progress(total: u64, quiet: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let target = if !quiet && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} items {elapsed_precise} {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// Transcribes every item (greedy, one temperature, no timestamps), grouped
/// by language so a multilingual model is told the language; `(text, language)`.
fn transcribe(
    w: &Whisper,
    items: &[S2lItem],
    samples: &[Vec<f32>],
    a: &Args,
    e2e: bool,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<Result<(String, String), String>>> {
    pb.set_length(items.len() as u64);
    pb.set_position(0);
    pb.set_message(if e2e { "e2e" } else { "asr" });
    let mut out: Vec<Option<Result<(String, String), String>>> = vec![None; items.len()];
    let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        let lang = it
            .language
            .clone()
            .filter(|l| w.tokenizer.multilingual && w.tokenizer.language_id(l).is_some());
        groups.entry(lang).or_default().push(i);
    }
    for (lang, idx) in groups {
        let mut o = TranscribeOptions {
            temperatures: vec![0.0],
            ..TranscribeOptions::default()
        };
        o.decode.language = lang;
        o.decode.without_timestamps = true;
        o.decode.sample_len = a.max_new_tokens;
        let mut tr = Transcriber::new(w, o)?;
        for chunk in idx.chunks(a.batch_size.max(1)) {
            let mut streams: Vec<Stream> = chunk
                .iter()
                .map(|&i| Stream::new(Box::new(InMemory::new(samples[i].clone()))))
                .collect();
            tr.run(&mut streams).context("decoding failed")?;
            for (&i, s) in chunk.iter().zip(streams) {
                out[i] = Some(s.into_result().map(|t| (t.text, t.language)));
                pb.inc(1);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("not transcribed".into())))
        .collect())
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}", 100.0 * x)
    }
}

fn markdown(aggs: &[Agg], failed_items: usize) -> String {
    let mut s = String::from(
        "| route | lang | n | failed | CER % | norm. LaTeX CER % | exact % | S2L cer_lower % | sent. WER % | sent. CER % |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for a in aggs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.route,
            a.language,
            a.n,
            a.failed,
            pct(a.cer),
            pct(a.latex_cer),
            pct(a.exact_match),
            pct(a.cer_lower),
            a.sentence_wer.map_or("-".into(), pct),
            a.sentence_cer.map_or("-".into(), pct),
        ));
    }
    s.push_str(&format!(
        "\nItems not scored (unreadable, undecodable audio, bad reference): {failed_items}\n"
    ));
    s
}

/// Bar chart: normalized-LaTeX CER and exact match per (route, language).
fn svg(aggs: &[Agg]) -> String {
    let bw = 18.0;
    let gap = 26.0;
    let left = 50.0;
    let top = 30.0;
    let ph = 200.0;
    let w = left + aggs.len() as f64 * (2.0 * bw + gap) + 20.0;
    let h = top + ph + 90.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"{left}\" y=\"16\" font-size=\"13\">S2L: normalized-LaTeX CER (red) and exact match (blue), %</text>\n"
    );
    for t in [0, 25, 50, 75, 100] {
        let y = top + ph - ph * t as f64 / 100.0;
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>\n",
            w - 10.0,
            left - 4.0,
            y + 4.0
        ));
    }
    for (i, a) in aggs.iter().enumerate() {
        let x = left + gap / 2.0 + i as f64 * (2.0 * bw + gap);
        for (k, (v, color)) in [(a.latex_cer, "#d62728"), (a.exact_match, "#1f77b4")]
            .into_iter()
            .enumerate()
        {
            let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            let bh = ph * v;
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{:.1}%</title></rect>\n",
                x + k as f64 * bw,
                top + ph - bh,
                100.0 * v
            ));
        }
        let lx = x + bw;
        let ly = top + ph + 12.0;
        s.push_str(&format!(
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-40 {lx:.1} {ly:.1})\">{} {}</text>\n",
            xml(&a.route),
            xml(&a.language)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
