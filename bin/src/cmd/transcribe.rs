//! `voxtok transcribe`: Whisper speech recognition of files, directories or
//! stdin, batched across files, written as text, JSON, JSONL, SRT or VTT.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use voxtok_codecs::decode::Decoder as AudioDecoder;
use voxtok_codecs::resample::{Quality, Resampler};
use voxtok_models::runtime::{parse_dtype, DeviceSpec, ModelDir};
use voxtok_models::whisper::decoding::Suppress;
use voxtok_models::whisper::longform::{SampleSource, Stream, Transcriber};
use voxtok_models::whisper::{Task, TranscribeOptions, Transcript, Whisper};

/// Audio file extensions picked up when a directory is given.
const AUDIO_EXT: &[&str] = &[
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac", "mkv", "webm", "caf", "aif",
    "aiff",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Jsonl,
    Srt,
    Vtt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    Transcribe,
    Translate,
}

/// `transcribe --task`: [`TaskArg`] plus `latex` (see `transcribe_latex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TranscribeTask {
    Transcribe,
    Translate,
    /// Speech -> LaTeX: Whisper then the rules converter (or --latex-model);
    /// default model assets/s2l-small (end to end) when present.
    Latex,
}

/// The model used when `--model` is not given (see `scripts/setup.sh`).
pub const DEFAULT_MODEL: &str = "whisper-tiny.en";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Audio files, directories (searched recursively for audio files) or `-` for stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Whisper model directory (Hugging Face or CTranslate2 layout), or a name
    /// under $VOXTOK_MODELS. Default: whisper-tiny.en from $VOXTOK_MODELS,
    /// ./data/models or the checkout's data/models (put there by scripts/setup.sh).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// `latex`: speech -> LaTeX. Without --model it uses the shipped
    /// assets/s2l-small (or $VOXTOK_S2L_MODEL), which emits LaTeX itself;
    /// else the default Whisper model + the rules converter (en/ru).
    #[arg(long, value_enum, default_value = "transcribe")]
    pub task: TranscribeTask,
    /// Spoken language (code or name); detected per input when absent.
    #[arg(long)]
    pub language: Option<String>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Output file (srt/vtt with several inputs: a directory); stdout when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (half precision only on GPU), or int8 (CPU: the
    /// encoder's dense layers and the cross-attention keys/values in int8,
    /// as CTranslate2's int8 compute type).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Inputs decoded together, one batch row each.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Beam search width at temperature 0 (greedy when absent or 1).
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Samples drawn per window at temperature > 0 (the best is kept).
    #[arg(long, default_value_t = 5)]
    pub best_of: usize,
    /// Beam search patience (openai-whisper).
    #[arg(long, default_value_t = 1.0)]
    pub patience: f64,
    /// Sampling temperature. Given alone it disables fallback (0: plain greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Fallback step: temperatures T, T+inc, …, 1.0 (default 0.2 when --temperature is absent).
    #[arg(long)]
    pub temperature_increment_on_fallback: Option<f64>,
    /// Fall back when gzip compression ratio exceeds this (`none`: never).
    #[arg(long, default_value = "2.4")]
    pub compression_ratio_threshold: String,
    /// Fall back when the average log-probability is below this (`none`: never).
    #[arg(long, default_value = "-1.0")]
    pub logprob_threshold: String,
    /// Skip windows whose no-speech probability exceeds this (`none`: never).
    #[arg(long, default_value = "0.6")]
    pub no_speech_threshold: String,
    /// Tokens suppressed at every step: `default` (generation_config.json), `none`, or ids `1,2,3`.
    #[arg(long, default_value = "default")]
    pub suppress_tokens: String,
    /// Do not suppress a blank or end-of-text as the first token.
    #[arg(long)]
    pub no_suppress_blank: bool,
    /// Decode without timestamp tokens (one segment per 30 s window).
    #[arg(long)]
    pub without_timestamps: bool,
    /// Maximum tokens sampled per 30 s window.
    #[arg(long, default_value_t = 224)]
    pub max_new_tokens: usize,
    /// Skip non-speech before transcribing (built-in energy VAD; segment
    /// times stay those of the original file). Reads each input whole.
    #[arg(long)]
    pub vad: bool,
    /// Use Silero VAD from this safetensors file (implies --vad), e.g.
    /// data/models/silero-vad/silero_vad_16k.safetensors from scripts/setup.sh.
    #[arg(long)]
    pub vad_model: Option<PathBuf>,
    /// Text given to the first window as previous text (openai-whisper's --initial_prompt).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Prompt each window with the text so far (reset after a window decoded above temperature 0.5).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub condition_on_previous_text: bool,
    /// Word-level timestamps (cross-attention + DTW): JSON segments get `words`.
    #[arg(long)]
    pub word_timestamps: bool,
    #[command(flatten)]
    pub latex: super::transcribe_latex::LatexArgs,
}

fn opt_f64(name: &str, v: &str) -> anyhow::Result<Option<f64>> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .with_context(|| format!("--{name}: expected a number or `none`, got `{v}`"))
}

/// The decoding options the flags describe.
pub fn options(a: &Args) -> anyhow::Result<TranscribeOptions> {
    let mut o = TranscribeOptions::default();
    let d = &mut o.decode;
    d.task = match a.task {
        TranscribeTask::Transcribe | TranscribeTask::Latex => Task::Transcribe,
        TranscribeTask::Translate => Task::Translate,
    };
    d.language = a.language.clone();
    d.beam_size = a.beam_size;
    if a.beam_size == Some(0) || a.best_of == 0 || a.batch_size == 0 {
        bail!("--beam-size, --best-of and --batch-size must be at least 1");
    }
    d.best_of = a.best_of;
    d.patience = a.patience;
    d.suppress = match a.suppress_tokens.trim() {
        "default" | "-1" => Suppress::Default,
        "none" | "" => Suppress::None,
        list => Suppress::List(
            list.split(',')
                .map(|t| t.trim().parse::<u32>())
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("--suppress-tokens: expected `default`, `none` or ids, got `{list}`")
                })?,
        ),
    };
    d.suppress_blank = !a.no_suppress_blank;
    d.without_timestamps = a.without_timestamps;
    d.sample_len = a.max_new_tokens;
    d.initial_prompt = a.initial_prompt.clone();
    d.condition_on_previous_text = a.condition_on_previous_text;
    d.word_timestamps = a.word_timestamps;
    if a.word_timestamps && a.without_timestamps {
        bail!("--word-timestamps needs timestamp tokens: drop --without-timestamps");
    }
    let start = a.temperature.unwrap_or(0.0);
    let inc = match (a.temperature, a.temperature_increment_on_fallback) {
        (_, Some(i)) => Some(i),
        (None, None) => Some(0.2),
        (Some(_), None) => None,
    };
    if !(0.0..=2.0).contains(&start) {
        bail!("--temperature must be in 0..=2");
    }
    o.temperatures = match inc {
        Some(i) if i > 0.0 => {
            let mut t = vec![];
            let mut x = start;
            while x <= 1.0 + 1e-6 {
                t.push((x * 1e6).round() / 1e6);
                x += i;
            }
            if t.is_empty() {
                t.push(start);
            }
            t
        }
        _ => vec![start],
    };
    o.compression_ratio_threshold = opt_f64(
        "compression-ratio-threshold",
        &a.compression_ratio_threshold,
    )?;
    o.logprob_threshold = opt_f64("logprob-threshold", &a.logprob_threshold)?;
    o.no_speech_threshold = opt_f64("no-speech-threshold", &a.no_speech_threshold)?;
    Ok(o)
}

/// Expands directories (recursively, sorted) into audio files.
fn expand_inputs(inputs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if i != "-" && p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files);
            files.sort();
            out.extend(files.into_iter().map(|f| f.display().to_string()));
        } else {
            out.push(i.clone());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| AUDIO_EXT.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

/// Streams a file (or stdin) as 16 kHz mono through the codecs crate.
struct FileSource {
    dec: AudioDecoder,
    rs: Resampler,
    finished: bool,
}

impl FileSource {
    fn open(input: &str) -> Result<Self, String> {
        let dec = if input == "-" {
            AudioDecoder::from_reader(std::io::stdin(), "<stdin>")
        } else {
            AudioDecoder::open(input)
        }
        .map_err(|e| e.to_string())?;
        let rs =
            Resampler::new(dec.sample_rate(), 16000, Quality::High).map_err(|e| e.to_string())?;
        Ok(Self {
            dec,
            rs,
            finished: false,
        })
    }
}

impl SampleSource for FileSource {
    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, String> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::new();
        match self.dec.next_chunk().map_err(|e| e.to_string())? {
            Some(c) => self
                .rs
                .process_into(&c, &mut out)
                .map_err(|e| e.to_string())?,
            None => {
                self.finished = true;
                self.rs.finish_into(&mut out).map_err(|e| e.to_string())?;
            }
        }
        Ok(Some(out))
    }
}

/// One input's outcome.
struct Outcome {
    path: String,
    result: Result<Transcript, String>,
    /// Words of each segment (`--word-timestamps`; otherwise empty lists).
    words: Vec<Vec<voxtok_models::whisper::timing::Word>>,
}

/// Loads `--model` (or the default whisper-tiny.en) on `--device` as
/// `--dtype` (`int8`: float32 weights quantized at load, CPU only); errors
/// name the directory. Shared by the ASR commands.
pub fn load_whisper(model: Option<&Path>, device: &str, dtype: &str) -> anyhow::Result<Whisper> {
    let device = device.parse::<DeviceSpec>()?.open()?;
    let int8 = dtype.eq_ignore_ascii_case("int8");
    let dtype = if int8 {
        voxtok_models::runtime::DType::F32
    } else {
        parse_dtype(dtype)?
    };
    let path = match model {
        Some(m) => m.to_path_buf(),
        None => voxtok_models::runtime::find_default_model(DEFAULT_MODEL).with_context(|| {
            format!("no --model given and no default {DEFAULT_MODEL} found (run scripts/setup.sh, or set $VOXTOK_MODELS)")
        })?,
    };
    let mut w = Whisper::load(&ModelDir::open(&path)?, &device, dtype)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    if int8 {
        w.model
            .quantize_int8()
            .with_context(|| format!("--dtype int8: {}", path.display()))?;
    }
    Ok(w)
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let mut opts = options(&args)?;
    let (w, latex, model_name) = if args.task == TranscribeTask::Latex {
        let (w, route, name) = super::transcribe_latex::load(&args, &mut opts)?;
        (w, Some(route), name)
    } else {
        let w = load_whisper(args.model.as_deref(), &args.device, &args.dtype)?;
        let name = w.name.clone();
        (w, None, name)
    };
    if let Some(l) = &opts.decode.language {
        if w.tokenizer.multilingual && w.tokenizer.language_id(l).is_none() {
            bail!("--language {l}: not a language of this model");
        }
    }
    let inputs = expand_inputs(&args.inputs);
    if inputs.is_empty() {
        bail!("no audio files found in the given inputs");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let t0 = Instant::now();
    let mut writer = OutputWriter::new(&args, inputs.len(), &model_name)?;
    writer.latex = latex;
    let mut tr = Transcriber::new(&w, opts)?;
    // One detector serves every input: `speech_regions` resets it per signal.
    // A bad Silero file fails here, before any input, as a usage error (exit 2).
    let mut detector: Option<Box<dyn voxtok_models::vad::Vad>> = match (&args.vad_model, args.vad) {
        (Some(p), _) => Some(Box::new(voxtok_models::vad::SileroVad::load(p)?)),
        (None, true) => Some(Box::new(voxtok_models::vad::EnergyVad::default())),
        (None, false) => None,
    };
    let mut time_maps = std::collections::HashMap::new();
    let mut slots: Vec<(usize, Stream)> = Vec::new();
    let mut next = 0;
    let mut done: Vec<Option<Outcome>> = (0..inputs.len()).map(|_| None).collect();
    let mut written = 0;
    let (mut failed, mut audio_s, mut tokens) = (0usize, 0f64, 0usize);
    let mut interrupted = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        // Refill free batch rows with the next inputs (continuous batching).
        while slots.len() < args.batch_size && next < inputs.len() {
            let opened = FileSource::open(&inputs[next]).and_then(|src| match detector.as_mut() {
                None => Ok(Stream::new(Box::new(src))),
                Some(d) => {
                    let mut src = src;
                    let (speech, map) = super::transcribe_vad::speech_only(&mut src, d.as_mut())?;
                    time_maps.insert(next, map);
                    Ok(Stream::new(Box::new(
                        voxtok_models::whisper::longform::InMemory::new(speech),
                    )))
                }
            });
            match opened {
                Ok(stream) => slots.push((next, stream)),
                Err(e) => {
                    done[next] = Some(Outcome {
                        path: inputs[next].clone(),
                        result: Err(e),
                        words: Vec::new(),
                    })
                }
            }
            next += 1;
        }
        if slots.is_empty() {
            if next >= inputs.len() {
                break;
            }
            continue;
        }
        let (idx, mut streams): (Vec<usize>, Vec<Stream>) = slots.drain(..).unzip();
        tr.step(&mut streams).context("decoding failed")?;
        for (i, s) in idx.into_iter().zip(streams) {
            if s.is_done() {
                tokens += s.tokens_decoded();
                let (mut result, mut words) = match s.into_result_with_words() {
                    Ok((t, w)) => (Ok(t), w),
                    Err(e) => (Err(e), Vec::new()),
                };
                if let (Ok(t), Some(map)) = (&mut result, time_maps.remove(&i)) {
                    map.apply(t);
                    for w in words.iter_mut().flatten() {
                        w.start = map.to_original(w.start);
                        w.end = map.to_original(w.end);
                    }
                }
                done[i] = Some(Outcome {
                    path: inputs[i].clone(),
                    result,
                    words,
                });
            } else {
                slots.push((i, s));
            }
        }
        // Write finished outputs in input order.
        while written < inputs.len() {
            let Some(o) = done[written].take() else { break };
            match &o.result {
                Ok(t) => audio_s += t.duration_s,
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {}: {e}", o.path);
                }
            }
            if !writer.write(&o)? {
                failed += 1;
            }
            written += 1;
        }
    }
    writer.finish()?;
    if !g.quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "transcribed {}/{} inputs ({audio_s:.1} s of audio, {tokens} tokens) in {secs:.1} s: {:.1}x real time",
            written - failed,
            inputs.len(),
            audio_s / secs.max(1e-9)
        );
    }
    if interrupted {
        return Ok(Exit::Interrupted);
    }
    Ok(Exit::from_failures(failed))
}

/// Writes outcomes in the chosen format.
struct OutputWriter {
    format: Format,
    out: Box<dyn Write>,
    dir: Option<PathBuf>,
    many: bool,
    model: String,
    /// `--word-timestamps`: segments carry `words`.
    words: bool,
    json_items: Vec<serde_json::Value>,
    /// `--task latex`: how transcripts become LaTeX.
    latex: Option<super::transcribe_latex::Route>,
}

impl OutputWriter {
    fn new(a: &Args, n: usize, model: &str) -> anyhow::Result<Self> {
        let subtitles = matches!(a.format, Format::Srt | Format::Vtt);
        let dir = match &a.output {
            Some(o) if subtitles && n > 1 => {
                std::fs::create_dir_all(o)
                    .with_context(|| format!("cannot create {}", o.display()))?;
                Some(o.clone())
            }
            _ => None,
        };
        let out: Box<dyn Write> = match (&a.output, &dir) {
            (Some(o), None) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(o)
                    .with_context(|| format!("cannot create {}", o.display()))?,
            )),
            _ => Box::new(std::io::stdout()),
        };
        Ok(Self {
            format: a.format,
            out,
            dir,
            many: n > 1,
            model: model.to_string(),
            words: a.word_timestamps,
            json_items: Vec::new(),
            latex: None,
        })
    }

    fn json(&self, o: &Outcome) -> serde_json::Value {
        match &o.result {
            Ok(t) => json!({
                "path": o.path,
                "text": t.text.trim(),
                "language": t.language,
                "segments": t.segments.iter().enumerate().map(|(k, s)| {
                    let mut v = json!({
                        "start": round3(s.start), "end": round3(s.end), "text": s.text.trim(), "tokens": s.tokens,
                        "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob,
                        "temperature": s.temperature, "compression_ratio": s.compression_ratio,
                    });
                    if let Some(ws) = o.words.get(k).filter(|_| self.words) {
                        v["words"] = ws.iter().map(|w| json!({
                            "word": w.word, "start": round3(w.start), "end": round3(w.end),
                            "probability": w.probability,
                        })).collect();
                    }
                    v
                }).collect::<Vec<_>>(),
                "duration_s": t.duration_s,
                "model": self.model,
                "error": null,
            }),
            Err(e) => json!({
                "path": o.path, "text": null, "language": null, "segments": [],
                "duration_s": null, "model": self.model, "error": e,
            }),
        }
    }

    /// Writes one outcome; `Ok(false)` when its LaTeX (--task latex) could not be made.
    fn write(&mut self, o: &Outcome) -> anyhow::Result<bool> {
        let latex =
            super::transcribe_latex::latex_of(self.latex.as_ref(), o.result.as_ref().ok(), &o.path);
        let with_latex = |mut v: serde_json::Value| {
            if let Some(l) = &latex {
                v["latex"] = l.as_ref().map_or(serde_json::Value::Null, |s| json!(s));
            }
            v
        };
        match self.format {
            Format::Jsonl => {
                let v = with_latex(self.json(o));
                writeln!(self.out, "{v}")?;
                self.out.flush()?;
            }
            Format::Json => {
                let v = with_latex(self.json(o));
                self.json_items.push(v);
            }
            Format::Text => {
                if let Ok(t) = &o.result {
                    let text = match &latex {
                        Some(l) => l.clone().unwrap_or_default(),
                        None => t.text.trim().to_string(),
                    };
                    if self.many {
                        writeln!(self.out, "{}: {text}", o.path)?;
                    } else {
                        writeln!(self.out, "{text}")?;
                    }
                    self.out.flush()?;
                }
            }
            Format::Srt | Format::Vtt => {
                let Ok(t) = &o.result else { return Ok(true) };
                let body = subtitles(t, self.format == Format::Vtt);
                if let Some(dir) = &self.dir {
                    let stem = Path::new(&o.path)
                        .file_stem()
                        .map_or("stdin".into(), |s| s.to_string_lossy().into_owned());
                    let ext = if self.format == Format::Vtt {
                        "vtt"
                    } else {
                        "srt"
                    };
                    let p = dir.join(format!("{stem}.{ext}"));
                    std::fs::write(&p, body)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                } else {
                    write!(self.out, "{body}")?;
                    self.out.flush()?;
                }
            }
        }
        Ok(!matches!(latex, Some(None)))
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if self.format == Format::Json {
            let v = if self.many || self.json_items.len() != 1 {
                serde_json::Value::Array(std::mem::take(&mut self.json_items))
            } else {
                self.json_items.pop().unwrap_or_default()
            };
            writeln!(self.out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        self.out.flush()?;
        Ok(())
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// SRT or WebVTT text of a transcript's segments.
fn subtitles(t: &Transcript, vtt: bool) -> String {
    let ts = |s: f64| {
        let ms = (s.max(0.0) * 1000.0).round() as u64;
        let (h, m, sec, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        if vtt {
            format!("{h:02}:{m:02}:{sec:02}.{ms:03}")
        } else {
            format!("{h:02}:{m:02}:{sec:02},{ms:03}")
        }
    };
    let mut out = String::new();
    if vtt {
        out.push_str("WEBVTT\n\n");
    }
    for (i, s) in t.segments.iter().enumerate() {
        if !vtt {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            ts(s.start),
            ts(s.end),
            s.text.trim()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitle_times() {
        let t = Transcript {
            segments: vec![voxtok_models::whisper::Segment {
                start: 3661.5,
                end: 3662.25,
                text: " hi".into(),
                tokens: vec![],
                avg_logprob: 0.0,
                no_speech_prob: 0.0,
                temperature: 0.0,
                compression_ratio: 1.0,
            }],
            ..Default::default()
        };
        assert_eq!(
            subtitles(&t, false),
            "1\n01:01:01,500 --> 01:01:02,250\nhi\n\n"
        );
        assert!(subtitles(&t, true).starts_with("WEBVTT\n\n01:01:01.500 --> 01:01:02.250\nhi"));
    }
}
