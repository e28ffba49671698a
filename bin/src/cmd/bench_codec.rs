//! `voxtok bench codec`: DASB-style evaluation of an audio tokenizer.
//!
//! Every file is encoded and decoded at each codebook setting; reported per
//! setting: bitrate, frame and token rate, SI-SDR, log-mel distance and
//! STOI between input and reconstruction, dWER when an ASR model is given
//! (WER of the greedy Whisper transcript of the reconstruction against that
//! of the original), and encode/decode throughput (x real time) plus peak
//! memory. Output: a Markdown table on stdout, optional JSON,
//! and an SVG of SI-SDR against bitrate.

use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Instant;
use voxtok_models::codec::{self, AudioTokenizer, CodecKind, LoadOptions};
use voxtok_models::runtime::{parse_device, parse_dtype, ModelDir};
use voxtok_models::whisper::decoding::Suppress;
use voxtok_models::whisper::longform::{InMemory, Stream, Transcriber};
use voxtok_models::whisper::{TranscribeOptions, Whisper};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Audio files or directories (searched recursively).
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub dataset: Vec<String>,
    /// encodec, dac, mimi or ssl (ssl: encode only, no quality metrics).
    #[arg(long)]
    pub codec: String,
    /// Model directory (Hugging Face layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Codebook settings to evaluate, e.g. 2,4,8 (default: the model's default).
    #[arg(long, value_delimiter = ',')]
    pub codebooks: Vec<usize>,
    /// SSL: layer and centroids (see `voxtok tokenize --help`).
    #[arg(long)]
    pub layer: Option<usize>,
    #[arg(long)]
    pub kmeans: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Timed passes over the dataset per setting (the fastest is reported);
    /// one untimed warm-up pass precedes them.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the Markdown table here (it is always printed).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write an SVG plot of SI-SDR against bitrate here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// EnCodec, Mimi: also time incremental (streaming) encoding in chunks of this
    /// many milliseconds, and check its codes equal whole-file encoding.
    #[arg(long, value_name = "MS")]
    pub stream_chunk_ms: Option<f64>,
    /// Whisper model directory (HF or CTranslate2 layout): report dWER, the
    /// WER (%) of the greedy transcript of each reconstruction against the
    /// transcript of its original.
    #[arg(long, value_name = "DIR")]
    pub asr_model: Option<PathBuf>,
}

/// Greedy English transcript of a 16 kHz buffer.
fn transcribe(tr: &mut Transcriber, x16: Vec<f32>) -> anyhow::Result<String> {
    let mut streams = vec![Stream::new(Box::new(InMemory::new(x16)))];
    tr.run(&mut streams)?;
    let s = streams.pop().expect("one stream");
    Ok(s.into_result().map_err(anyhow::Error::msg)?.text)
}

fn greedy_options(w: &Whisper) -> TranscribeOptions {
    let mut decode = TranscribeOptions::default().decode;
    if w.tokenizer.multilingual {
        decode.language = Some("en".into());
    }
    decode.without_timestamps = true;
    decode.suppress = Suppress::None;
    TranscribeOptions {
        temperatures: vec![0.0],
        compression_ratio_threshold: None,
        logprob_threshold: None,
        no_speech_threshold: None,
        decode,
    }
}

fn to_16k(x: &[f32], rate: u32) -> anyhow::Result<Vec<f32>> {
    if rate == 16000 {
        return Ok(x.to_vec());
    }
    Ok(voxtok_codecs::Resampler::process_all(
        rate,
        16000,
        voxtok_codecs::Quality::High,
        x,
    )?)
}

/// Streaming (EnCodec or Mimi) encode of every file in `chunk` samples:
/// (x real time of the fastest pass, codes identical to whole-file encoding).
fn stream_bench<'m>(
    model: &dyn AudioTokenizer,
    open: &dyn Fn(usize) -> voxtok_models::codec::Result<Box<dyn codec::CodeStream + 'm>>,
    audio: &[(String, Vec<f32>)],
    k: usize,
    chunk: usize,
    repeat: usize,
    rate: u32,
) -> anyhow::Result<(f64, bool)> {
    let mut identical = true;
    let mut best = f64::INFINITY;
    for pass in 0..=repeat {
        let mut secs = 0f64;
        for (name, x) in audio {
            let t0 = Instant::now();
            let mut st = open(k)?;
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); k];
            let mut add = |c: codec::Codes| {
                for (i, r) in rows.iter_mut().enumerate() {
                    r.extend_from_slice(c.row(i));
                }
            };
            for piece in x.chunks(chunk.max(1)) {
                add(st.push(piece).with_context(|| format!("{name}: stream"))?);
            }
            add(st.finish()?);
            secs += t0.elapsed().as_secs_f64();
            if pass == 0 {
                let whole = codec::encode_mono(model, x, k)?;
                identical &= rows.concat() == whole.ids;
            }
        }
        if pass > 0 || repeat == 0 {
            best = best.min(secs);
        }
    }
    let audio_s: f64 = audio.iter().map(|(_, x)| x.len() as f64).sum::<f64>() / rate as f64;
    Ok((audio_s / best, identical))
}

/// Streaming Mimi decode of every file's codes in pushes of `frames` code
/// frames: (x real time of the fastest pass, max abs difference to
/// whole-file decoding).
fn mimi_decode_stream_bench(
    m: &voxtok_models::codec::mimi::Mimi,
    audio: &[(String, Vec<f32>)],
    k: usize,
    frames: usize,
    repeat: usize,
    rate: u32,
) -> anyhow::Result<(f64, f64)> {
    use voxtok_models::runtime::Tensor;
    let mut items = Vec::new();
    for (name, x) in audio {
        let t = Tensor::from_slice(x, (1, x.len()), m.device())?;
        let codes = m.encode(&t, k).with_context(|| format!("{name}: encode"))?;
        let whole = m.decode(&codes)?.flatten_all()?.to_vec1::<f32>()?;
        items.push((name, codes, whole));
    }
    let (mut best, mut err, mut samples) = (f64::INFINITY, 0f64, 0usize);
    for pass in 0..=repeat {
        let t0 = Instant::now();
        for (name, codes, whole) in &items {
            let n = codes.dim(2)?;
            let mut st = m.decode_stream()?;
            let mut out = Vec::with_capacity(whole.len());
            for f0 in (0..n).step_by(frames) {
                let piece = codes.narrow(2, f0, frames.min(n - f0))?;
                out.extend(
                    st.push(&piece)
                        .with_context(|| format!("{name}: stream decode"))?,
                );
            }
            if pass == 0 {
                if out.len() != whole.len() {
                    bail!(
                        "{name}: streaming decode gave {} samples, whole-file {}",
                        out.len(),
                        whole.len()
                    );
                }
                samples += out.len();
                let e = out
                    .iter()
                    .zip(whole)
                    .map(|(a, b)| (a - b).abs() as f64)
                    .fold(0.0, f64::max);
                err = err.max(e);
            }
        }
        if pass > 0 || repeat == 0 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    Ok((samples as f64 / rate as f64 / best, err))
}

/// Scale-invariant SDR in dB of `est` against `reference` (same length).
pub fn si_sdr(reference: &[f32], est: &[f32]) -> f64 {
    let n = reference.len().min(est.len());
    let (r, e) = (&reference[..n], &est[..n]);
    let dot: f64 = r.iter().zip(e).map(|(&a, &b)| a as f64 * b as f64).sum();
    let rr: f64 = r.iter().map(|&a| a as f64 * a as f64).sum::<f64>() + 1e-12;
    let alpha = dot / rr;
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &b) in r.iter().zip(e) {
        let t = alpha * a as f64;
        num += t * t;
        den += (b as f64 - t).powi(2);
    }
    10.0 * ((num + 1e-12) / (den + 1e-12)).log10()
}

/// Mean absolute difference of Whisper log-mels (80 mels, 16 kHz) over the
/// common frames.
pub fn mel_distance(reference: &[f32], est: &[f32], rate: u32) -> anyhow::Result<f64> {
    let to16 = |x: &[f32]| -> anyhow::Result<Vec<f32>> {
        if rate == 16000 {
            return Ok(x.to_vec());
        }
        let mut rs = voxtok_codecs::Resampler::new(rate, 16000, voxtok_codecs::Quality::High)?;
        let mut out = rs.process(x)?;
        out.extend(rs.finish()?);
        Ok(out)
    };
    let n = reference.len().min(est.len());
    let a =
        voxtok_codecs::whisper_mel(&to16(&reference[..n])?, 80, voxtok_codecs::MelPadding::None)?;
    let b = voxtok_codecs::whisper_mel(&to16(&est[..n])?, 80, voxtok_codecs::MelPadding::None)?;
    let frames = a.n_frames.min(b.n_frames);
    if frames == 0 {
        bail!("too short for a mel frame");
    }
    let mut s = 0f64;
    for m in 0..80 {
        for f in 0..frames {
            s += (a.get(m, f) - b.get(m, f)).abs() as f64;
        }
    }
    Ok(s / (80 * frames) as f64)
}

/// Peak resident memory of this process (MiB), from /proc (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Debug, Clone)]
struct Row {
    codebooks: usize,
    bitrate_kbps: f64,
    frame_rate: f64,
    token_rate: f64,
    files: usize,
    audio_s: f64,
    encode_s: f64,
    decode_s: Option<f64>,
    encode_xrt: f64,
    decode_xrt: Option<f64>,
    si_sdr_db: Option<f64>,
    mel_distance: Option<f64>,
    stoi: Option<f64>,
    dwer: Option<f64>,
}

impl Row {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "codebooks": self.codebooks, "bitrate_kbps": self.bitrate_kbps, "frame_rate": self.frame_rate,
            "token_rate": self.token_rate, "files": self.files, "audio_s": self.audio_s,
            "encode_s": self.encode_s, "decode_s": self.decode_s, "encode_xrt": self.encode_xrt,
            "decode_xrt": self.decode_xrt, "si_sdr_db": self.si_sdr_db, "mel_distance": self.mel_distance,
            "stoi": self.stoi, "dwer": self.dwer,
        })
    }
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let kind: CodecKind = args.codec.parse()?;
    let device = parse_device(&args.device)?;
    let dir = ModelDir::open(&args.model)?;
    let opts = LoadOptions {
        layer: args.layer,
        kmeans: args.kmeans.clone(),
        dedup: false,
    };
    let tok = codec::load(kind, &dir, &opts, &device).with_context(|| {
        format!(
            "cannot load the {} model from {}",
            kind.name(),
            args.model.display()
        )
    })?;
    let info = tok.info().clone();
    let inputs = voxtok_pipeline::inputs::expand(
        &args.dataset,
        None,
        voxtok_pipeline::inputs::AUDIO_EXTENSIONS,
    )?;
    let mut audio: Vec<(String, Vec<f32>)> = Vec::new();
    let mut failed = 0;
    for inp in &inputs {
        let voxtok_pipeline::inputs::Input::Path(p) = inp else {
            continue;
        };
        match voxtok_codecs::read_audio(p, Some(info.sample_rate)) {
            Ok(a) if !a.samples.is_empty() => audio.push((inp.key(), a.samples)),
            Ok(_) => {
                failed += 1;
                eprintln!("error: {}: no samples", p.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", p.display());
            }
        }
    }
    if audio.is_empty() {
        bail!("no readable audio in {:?}", args.dataset);
    }
    let audio_s: f64 =
        audio.iter().map(|(_, x)| x.len() as f64).sum::<f64>() / info.sample_rate as f64;
    let settings = if args.codebooks.is_empty() {
        vec![info.default_codebooks]
    } else {
        args.codebooks.clone()
    };
    let progress = if g.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((settings.len() * audio.len() * (args.repeat + 1)) as u64)
    };
    let whisper = match &args.asr_model {
        Some(p) if info.has_decoder => {
            let dir = ModelDir::open(p)?;
            Some(
                Whisper::load(&dir, &device, parse_dtype("f32")?)
                    .with_context(|| format!("cannot load ASR model {}", p.display()))?,
            )
        }
        _ => None,
    };
    let mut asr = match &whisper {
        Some(w) => Some(Transcriber::new(w, greedy_options(w))?),
        None => None,
    };
    let mut ref_text = Vec::new();
    if let Some(tr) = asr.as_mut() {
        for (name, x) in &audio {
            let t = transcribe(tr, to_16k(x, info.sample_rate)?)
                .with_context(|| format!("{name}: transcribe the original"))?;
            ref_text.push(t);
        }
    }
    let mut rows = Vec::new();
    for &k in &settings {
        if k == 0 || k > info.max_codebooks {
            bail!(
                "--codebooks {k}: the {} model has 1..={}",
                info.codec,
                info.max_codebooks
            );
        }
        let (mut best_enc, mut best_dec) = (f64::INFINITY, f64::INFINITY);
        let (mut sdr, mut mel, mut n_ok) = (0f64, 0f64, 0usize);
        let (mut stoi_sum, mut n_stoi) = (0f64, 0usize);
        let (mut errs, mut words) = (0usize, 0usize);
        for pass in 0..=args.repeat {
            let (mut enc_s, mut dec_s) = (0f64, 0f64);
            for (fi, (name, x)) in audio.iter().enumerate() {
                let t0 = Instant::now();
                let codes = codec::encode_mono(tok.as_ref(), x, k)
                    .with_context(|| format!("{name}: encode"))?;
                enc_s += t0.elapsed().as_secs_f64();
                if info.has_decoder {
                    let t0 = Instant::now();
                    let y = codec::decode_mono(tok.as_ref(), &codes)
                        .with_context(|| format!("{name}: decode"))?;
                    dec_s += t0.elapsed().as_secs_f64();
                    if pass == 0 {
                        sdr += si_sdr(x, &y);
                        mel += mel_distance(x, &y, info.sample_rate)?;
                        n_ok += 1;
                        if let Some(v) = voxtok_codecs::stoi::stoi(x, &y, info.sample_rate) {
                            stoi_sum += v;
                            n_stoi += 1;
                        }
                        if let Some(tr) = asr.as_mut() {
                            let n = x.len().min(y.len());
                            let hyp = transcribe(tr, to_16k(&y[..n], info.sample_rate)?)
                                .with_context(|| {
                                    format!("{name}: transcribe the reconstruction")
                                })?;
                            let (e, w) = voxtok_datasets::english::wer_counts(&ref_text[fi], &hyp);
                            errs += e;
                            words += w;
                        }
                    }
                }
                progress.inc(1);
            }
            if pass > 0 || args.repeat == 0 {
                best_enc = best_enc.min(enc_s);
                best_dec = best_dec.min(dec_s);
            }
        }
        let has = info.has_decoder;
        rows.push(Row {
            codebooks: k,
            bitrate_kbps: info.bitrate(k) / 1000.0,
            frame_rate: info.frame_rate,
            token_rate: info.frame_rate * k as f64,
            files: audio.len(),
            audio_s,
            encode_s: best_enc,
            decode_s: has.then_some(best_dec),
            encode_xrt: audio_s / best_enc,
            decode_xrt: has.then_some(audio_s / best_dec),
            si_sdr_db: (has && n_ok > 0).then(|| sdr / n_ok as f64),
            mel_distance: (has && n_ok > 0).then(|| mel / n_ok as f64),
            stoi: (n_stoi > 0).then(|| stoi_sum / n_stoi as f64),
            // Corpus-level; an empty original transcript counts as one word.
            dwer: asr
                .is_some()
                .then(|| 100.0 * errs as f64 / words.max(1) as f64),
        });
    }
    progress.finish_and_clear();
    let mut streaming = Vec::new();
    if let Some(ms) = args.stream_chunk_ms {
        let chunk = (ms / 1000.0 * info.sample_rate as f64).round() as usize;
        type Open<'a> = Box<dyn Fn(usize) -> codec::Result<Box<dyn codec::CodeStream + 'a>> + 'a>;
        let (enc, mimi);
        let mut mimi_ref: Option<&voxtok_models::codec::mimi::Mimi> = None;
        let (model, open): (&dyn AudioTokenizer, Open) = match kind {
            CodecKind::Encodec => {
                enc = voxtok_models::codec::encodec::Encodec::load(&dir, &device)?;
                let m = &enc;
                (
                    m,
                    Box::new(move |k| Ok(Box::new(m.stream(k)?) as Box<dyn codec::CodeStream>)),
                )
            }
            CodecKind::Mimi => {
                mimi = voxtok_models::codec::mimi::Mimi::load(&dir, &device)?;
                let m = &mimi;
                mimi_ref = Some(m);
                (
                    m,
                    Box::new(move |k| Ok(Box::new(m.stream(k)?) as Box<dyn codec::CodeStream>)),
                )
            }
            _ => bail!("--stream-chunk-ms: streaming encode is implemented for encodec and mimi"),
        };
        for &k in &settings {
            let (xrt, same) = stream_bench(
                model,
                &*open,
                &audio,
                k,
                chunk,
                args.repeat,
                info.sample_rate,
            )?;
            let mut row = serde_json::json!({
                "codebooks": k, "chunk_ms": ms, "encode_xrt": xrt, "identical_to_whole_file": same,
            });
            if let Some(m) = mimi_ref {
                let frames = ((ms * info.frame_rate / 1000.0).round() as usize).max(1);
                let (dxrt, err) =
                    mimi_decode_stream_bench(m, &audio, k, frames, args.repeat, info.sample_rate)?;
                row["decode_frames_per_push"] = frames.into();
                row["decode_xrt"] = dxrt.into();
                row["decode_max_abs_vs_whole_file"] = err.into();
            }
            streaming.push(row);
        }
    }
    let peak = peak_rss_mib();
    let mut md = markdown(info.codec, &args.model.display().to_string(), &rows, peak);
    for s in &streaming {
        md += &format!(
            "\nstreaming encode, {} codebooks, {} ms chunks: {:.1} x real time; codes identical to whole-file encoding: {}\n",
            s["codebooks"], s["chunk_ms"], s["encode_xrt"].as_f64().unwrap_or(0.0),
            if s["identical_to_whole_file"] == true { "yes" } else { "NO" }
        );
        if let Some(d) = s["decode_xrt"].as_f64() {
            md += &format!(
                "streaming decode, {} frames a push: {:.1} x real time; max abs difference to whole-file decoding: {:.1e}\n",
                s["decode_frames_per_push"], d, s["decode_max_abs_vs_whole_file"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    print!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.json {
        let v = serde_json::json!({
            "codec": info.codec, "model": args.model, "sample_rate": info.sample_rate,
            "codebook_size": info.codebook_size, "device": args.device, "threads": threads(),
            "peak_rss_mib": peak, "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "streaming": streaming,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, svg(info.codec, &rows))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(Exit::from_failures(failed))
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "–".into())
}

fn markdown(codec: &str, model: &str, rows: &[Row], peak: Option<f64>) -> String {
    let mut s = format!(
        "\n{codec} ({model}), {} files, {:.1} s of audio, {} threads, peak RSS {} MiB\n\n",
        rows.first().map_or(0, |r| r.files),
        rows.first().map_or(0.0, |r| r.audio_s),
        threads(),
        opt(peak, 0)
    );
    s += "| codebooks | kbps | frames/s | tokens/s | SI-SDR dB | mel dist | STOI | dWER % | encode xRT | decode xRT |\n";
    s += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {:.1} | {} |\n",
            r.codebooks,
            r.bitrate_kbps,
            r.frame_rate,
            r.token_rate,
            opt(r.si_sdr_db, 2),
            opt(r.mel_distance, 3),
            opt(r.stoi, 3),
            opt(r.dwer, 1),
            r.encode_xrt,
            opt(r.decode_xrt, 1)
        );
    }
    s
}

/// Small line plots of each quality metric present (SI-SDR, mel distance,
/// STOI, dWER) against bitrate (kbps), one panel per metric, two per row.
fn svg(codec: &str, rows: &[Row]) -> String {
    type Metric = fn(&Row) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("SI-SDR (dB, higher is better)", |r| r.si_sdr_db),
        ("mel distance (lower is better)", |r| r.mel_distance),
        ("STOI (higher is better)", |r| r.stoi),
        ("dWER % (lower is better)", |r| r.dwer),
    ];
    let panels: Vec<(&str, Vec<(f64, f64)>)> = metrics
        .iter()
        .map(|(name, f)| {
            let pts = rows
                .iter()
                .filter_map(|r| f(r).filter(|y| y.is_finite()).map(|y| (r.bitrate_kbps, y)))
                .collect::<Vec<_>>();
            (*name, pts)
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    // Without any metric, still draw the (empty) SI-SDR axes.
    let panels = if panels.is_empty() {
        vec![(metrics[0].0, Vec::new())]
    } else {
        panels
    };
    let (pw, ph) = (400.0, 280.0);
    let cols = panels.len().min(2);
    let nrows = panels.len().div_ceil(2);
    let (w, h) = (pw * cols as f64, 36.0 + ph * nrows as f64);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{cx}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{codec}: quality vs bitrate</text>\n",
        cx = w / 2.0
    );
    for (i, (name, pts)) in panels.iter().enumerate() {
        let (ox, oy) = (pw * (i % 2) as f64, 36.0 + ph * (i / 2) as f64);
        s += &panel(name, pts, ox, oy, pw, ph);
    }
    s + "</svg>\n"
}

/// One panel at `(ox, oy)` of size `w × h`: axes, 5 ticks each, the line.
fn panel(name: &str, pts: &[(f64, f64)], ox: f64, oy: f64, w: f64, h: f64) -> String {
    let (ml, mr, mt, mb) = (56.0, 16.0, 24.0, 40.0);
    let fold = |f: fn(&(f64, f64)) -> f64| {
        pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(f(p)), a.1.max(f(p)))
        })
    };
    let ((_, x1), (y0, y1)) = (fold(|p| p.0), fold(|p| p.1));
    let (x0, x1) = if pts.is_empty() {
        (0.0, 1.0)
    } else {
        (0.0, x1.max(1e-9) * 1.1)
    };
    let (y0, y1) = if pts.is_empty() {
        (0.0, 1.0)
    } else {
        let pad = ((y1 - y0) * 0.1).max(1e-3 * y1.abs().max(1.0));
        (y0 - pad, y1 + pad)
    };
    let (l, r, t, b) = (ox + ml, ox + w - mr, oy + mt, oy + h - mb);
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (r - l);
    let py = |y: f64| b - (y - y0) / (y1 - y0) * (b - t);
    let mut s = format!(
        "<g>\n<text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{name}</text>\n\
         <line x1=\"{l:.1}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"black\"/>\n\
         <line x1=\"{l:.1}\" y1=\"{t:.1}\" x2=\"{l:.1}\" y2=\"{b:.1}\" stroke=\"black\"/>\n\
         <text x=\"{cx:.1}\" y=\"{xl:.1}\" text-anchor=\"middle\">bitrate (kbps)</text>\n",
        cx = (l + r) / 2.0,
        ty = oy + 14.0,
        xl = oy + h - 6.0,
    );
    for i in 0..=4 {
        let xv = x0 + (x1 - x0) * i as f64 / 4.0;
        let yv = y0 + (y1 - y0) * i as f64 / 4.0;
        let yp = if (y1 - y0).abs() < 0.1 { 3 } else { 1 };
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{xv:.2}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.yp$}</text>\n",
            px(xv),
            b + 16.0,
            l - 4.0,
            py(yv) + 4.0
        );
    }
    let path: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    s += &format!(
        "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{}\"/>\n",
        path.join(" ")
    );
    for &(x, y) in pts {
        s += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"steelblue\"/>\n",
            px(x),
            py(y)
        );
    }
    s + "</g>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_sdr_is_scale_invariant_and_orders_noise() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.05).sin()).collect();
        let y: Vec<f32> = x.iter().map(|v| 0.5 * v).collect();
        assert!(si_sdr(&x, &y) > 100.0);
        let noisy: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.1 * ((i * 7919) % 13) as f32 / 13.0)
            .collect();
        let noisier: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.5 * ((i * 7919) % 13) as f32 / 13.0)
            .collect();
        assert!(si_sdr(&x, &noisy) > si_sdr(&x, &noisier));
    }

    fn row(kbps: f64, sdr: f64, stoi: Option<f64>) -> Row {
        Row {
            codebooks: 1,
            bitrate_kbps: kbps,
            frame_rate: 75.0,
            token_rate: 75.0,
            files: 1,
            audio_s: 1.0,
            encode_s: 0.1,
            decode_s: Some(0.1),
            encode_xrt: 10.0,
            decode_xrt: Some(10.0),
            si_sdr_db: Some(sdr),
            mel_distance: Some(1.0 / kbps),
            stoi,
            dwer: None,
        }
    }

    /// One panel per metric that has values (dWER absent here), each with
    /// its points, and no NaN coordinates.
    #[test]
    fn svg_plots_every_present_metric() {
        let rows = [
            row(1.5, 2.0, Some(0.7)),
            row(3.0, 5.0, Some(0.8)),
            row(6.0, 7.5, Some(0.9)),
        ];
        let s = svg("encodec", &rows);
        assert_eq!(s.matches("<polyline").count(), 3);
        assert_eq!(s.matches("<circle").count(), 9);
        for name in ["SI-SDR", "mel distance", "STOI"] {
            assert!(s.contains(name), "{name} panel missing");
        }
        assert!(!s.contains("dWER"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // Only SI-SDR present: one panel.
        let one = [Row {
            mel_distance: None,
            ..row(1.5, 2.0, None)
        }];
        assert_eq!(svg("dac", &one).matches("<polyline").count(), 1);
    }
}
