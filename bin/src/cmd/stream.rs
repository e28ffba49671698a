//! `voxtok stream`: live transcription (partial and final lines) from a
//! microphone, a file replayed at real-time pace, or raw PCM on stdin;
//! or, with `--codec`, audio codes frame by frame.
//!
//! The loop: a source thread delivers 16 kHz chunks stamped with their
//! arrival time; the main thread feeds them window by window (512 samples)
//! to the VAD, appends speech to the streaming Whisper buffer, re-decodes it
//! every `--step` seconds of new audio (LocalAgreement-2 confirms text), and
//! flushes the hypothesis as final when speech ends, the input ends or
//! Ctrl-C is pressed.
//!
//! VAD-controlled decoding (whisper_streaming's VAC mode, plus one
//! anticipation): no decode outside speech; when the VAD sees a pause in
//! speech (`--speech-pad-ms` below its exit threshold) the buffer is decoded
//! once up to the end of the speech and then not again during the pause, so
//! that when the pause reaches `--min-silence-ms` the hypothesis already
//! covers the whole utterance and is printed as final at once, with no
//! further decode; if speech resumes, that decode was an ordinary step. A
//! live source's backlog is always consumed before a decode (the loop skips
//! to the newest audio instead of decoding stale steps).

use crate::cmd::transcribe::{load_whisper, TaskArg};
use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::json;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use voxtok_codecs::decode::{RawPcm, RawSampleFormat};
use voxtok_codecs::live::{FileSource, LiveSource, Paced, PcmReader, LIVE_RATE};
use voxtok_models::vad::online::{OnlineSegmenter, VadEvent};
use voxtok_models::vad::{EnergyVad, SegmentParams, SileroVad, Vad, WINDOW};
use voxtok_models::whisper::streaming::{join, Confirmed, FinalReason, OnlineWhisper, Word};
use voxtok_models::whisper::{Task, TranscribeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Final lines (a terminal also shows the partial line, updated in place).
    Text,
    /// One JSON object a line: partial, final (and codes, stats).
    Jsonl,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Audio source: a file, `-` for raw PCM on stdin (see --rate,
    /// --channels, --sample-format), or `mic` (the default).
    #[arg(long, short)]
    pub input: Option<String>,
    /// Replay --input at real-time pace (without it a file is streamed as
    /// fast as it decodes, step by step: same output, no waiting).
    #[arg(long)]
    pub realtime: bool,
    /// Test-only: replay pace multiplier for --realtime.
    #[arg(long, hide = true, default_value_t = 1.0)]
    pub speedup: f64,
    /// Sample rate of raw PCM on stdin (Hz).
    #[arg(long, default_value_t = 16000)]
    pub rate: u32,
    /// Channels of raw PCM on stdin (mixed down to mono).
    #[arg(long, default_value_t = 1)]
    pub channels: u16,
    /// Sample format of raw PCM on stdin: s16le, s32le or f32le.
    #[arg(long, default_value = "s16le")]
    pub sample_format: String,
    /// List the audio capture devices and exit (needs the `mic` feature).
    #[arg(long)]
    pub list_devices: bool,
    /// Capture device: name, part of the name or backend id (see --list-devices). Default: the system's.
    #[arg(long)]
    pub input_device: Option<String>,
    /// Whisper model directory (default whisper-tiny.en, see `voxtok transcribe`);
    /// with --codec, the codec model directory.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Emit audio codes instead of text: encodec or mimi.
    #[arg(long)]
    pub codec: Option<String>,
    /// Codebooks per frame with --codec (default: the model's default).
    #[arg(long)]
    pub codebooks: Option<usize>,
    /// Target bandwidth in kbps with --codec (sets the codebooks).
    #[arg(long, conflicts_with = "codebooks")]
    pub bandwidth: Option<f64>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Re-decode after this many seconds of new audio (live sources: at
    /// least twice the last decode's wall time).
    #[arg(long, default_value_t = 1.0)]
    pub step: f64,
    /// Source chunk length in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub chunk_ms: u32,
    /// Trim the buffer at a confirmed segment end once it is longer than this (s).
    #[arg(long, default_value_t = 15.0)]
    pub trim: f64,
    /// Longest buffer (s, at most 30): beyond it the hypothesis is made final.
    #[arg(long, default_value_t = 25.0)]
    pub max_buffer: f64,
    /// Transcribe everything (no voice activity detection).
    #[arg(long, conflicts_with = "vad_model")]
    pub no_vad: bool,
    /// Silero VAD weights (safetensors) instead of the built-in energy VAD.
    #[arg(long)]
    pub vad_model: Option<PathBuf>,
    /// Speech probability threshold of the VAD.
    #[arg(long, default_value_t = 0.5)]
    pub vad_threshold: f32,
    /// Silence that ends speech (and flushes the hypothesis as final), ms.
    #[arg(long, default_value_t = 500)]
    pub min_silence_ms: u32,
    /// Speech shorter than this (with nothing printed yet) is ignored, ms.
    #[arg(long, default_value_t = 250)]
    pub min_speech_ms: u32,
    /// Audio kept before speech starts, ms.
    #[arg(long, default_value_t = 100)]
    pub speech_pad_ms: u32,
    #[arg(long, value_enum, default_value = "transcribe")]
    pub task: TaskArg,
    /// Spoken language (code or name); detected per decode when absent.
    #[arg(long)]
    pub language: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (half precision only on GPU).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Beam search width (greedy when absent or 1).
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Sampling temperature; given, it disables temperature fallback.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Maximum tokens sampled per decode.
    #[arg(long, default_value_t = 224)]
    pub max_new_tokens: usize,
    /// Text that starts every decode's prompt (e.g. vocabulary or style).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Prompt each decode with the last 200 characters of the final text
    /// before the buffer (as whisper_streaming does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub condition_on_previous_text: bool,
    /// Print latency (median/p90 end of speech -> final line) and the loop's
    /// real-time factor on stderr (and a stats line in jsonl).
    #[arg(long)]
    pub stats: bool,
}

/// What the source thread sends.
pub enum SrcMsg {
    Audio(Vec<f32>),
    End,
    Failed(String),
}

/// Set by the first Ctrl-C; a second one exits at once.
fn install_ctrlc() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let r = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = r {
        tracing::debug!("Ctrl-C handler not installed: {e}");
    }
    stop
}

/// Opens the source `--input` names at `rate` Hz.
pub fn open_source(a: &Args, rate: u32) -> anyhow::Result<Box<dyn LiveSource>> {
    if a.chunk_ms == 0 || !(a.speedup > 0.0 && a.speedup.is_finite()) {
        bail!("--chunk-ms and --speedup must be > 0");
    }
    let src: Box<dyn LiveSource> = match a.input.as_deref() {
        None | Some("mic") => return open_mic(a, rate),
        Some("-") => {
            let format: RawSampleFormat = a.sample_format.parse().map_err(anyhow::Error::msg)?;
            let layout = RawPcm {
                sample_rate: a.rate,
                channels: a.channels,
                format,
            };
            Box::new(PcmReader::new(
                Box::new(std::io::stdin()),
                "<stdin>",
                layout,
                rate,
                a.chunk_ms,
            )?)
        }
        Some(path) => Box::new(FileSource::open(path, rate, a.chunk_ms)?),
    };
    Ok(if a.realtime {
        Box::new(Paced::new(src, a.speedup))
    } else {
        src
    })
}

#[cfg(feature = "mic")]
fn open_mic(a: &Args, rate: u32) -> anyhow::Result<Box<dyn LiveSource>> {
    let mic = super::stream_mic::MicSource::open(a.input_device.as_deref(), rate, a.chunk_ms)
        .map_err(|e| anyhow::anyhow!("cannot record from the microphone: {e}"))?;
    Ok(Box::new(mic))
}

#[cfg(not(feature = "mic"))]
fn open_mic(_: &Args, _: u32) -> anyhow::Result<Box<dyn LiveSource>> {
    bail!("{}", NO_MIC)
}

#[cfg(not(feature = "mic"))]
const NO_MIC: &str = "this build of voxtok has no microphone support: rebuild it with \
`cargo build --release -p voxtok --features mic` (needs the ALSA headers: \
`apt-get install libasound2-dev` on Debian/Ubuntu), or stream a file \
(`--input FILE --realtime`) or raw PCM on stdin (`--input -`)";

/// Starts the source thread; chunks arrive on the returned channel.
pub fn spawn_source(mut src: Box<dyn LiveSource>) -> Receiver<SrcMsg> {
    // Non-live input is read ahead only a little (bounded memory); live
    // input must never block its producer.
    let cap = if src.is_live() { 1 << 20 } else { 16 };
    let (tx, rx) = mpsc::sync_channel(cap);
    std::thread::spawn(move || loop {
        let m = match src.next_chunk() {
            Ok(Some(c)) => SrcMsg::Audio(c),
            Ok(None) => SrcMsg::End,
            Err(e) => SrcMsg::Failed(e.to_string()),
        };
        let last = !matches!(m, SrcMsg::Audio(_));
        if tx.send(m).is_err() || last {
            break;
        }
    });
    rx
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    if args.list_devices {
        return list_devices();
    }
    if args.codec.is_some() {
        return super::stream_codes::run(&args, g);
    }
    if args.step.is_nan() || args.step <= 0.0 {
        bail!("--step must be > 0");
    }
    let opts = options(&args)?;
    let w = load_whisper(args.model.as_deref(), &args.device, &args.dtype)?;
    if let Some(l) = &opts.decode.language {
        if w.tokenizer.multilingual && w.tokenizer.language_id(l).is_none() {
            bail!("--language {l}: not a language of this model");
        }
    }
    let asr = OnlineWhisper::new(&w, opts, args.trim, args.max_buffer)?;
    let vad: Option<Box<dyn Vad>> = if args.no_vad {
        None
    } else if let Some(p) = &args.vad_model {
        Some(Box::new(SileroVad::load(p).with_context(|| {
            format!("cannot load the Silero VAD {}", p.display())
        })?))
    } else {
        Some(Box::new(EnergyVad::default()))
    };
    let params = SegmentParams {
        threshold: args.vad_threshold,
        min_silence_ms: args.min_silence_ms,
        min_speech_ms: args.min_speech_ms,
        speech_pad_ms: args.speech_pad_ms,
        ..SegmentParams::default()
    };
    let src = match open_source(&args, LIVE_RATE) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(
                if args.input.is_none() || args.input.as_deref() == Some("mic") {
                    Exit::Usage
                } else {
                    Exit::SomeFailed
                },
            );
        }
    };
    let live = src.is_live();
    let name = src.name();
    let stop = install_ctrlc();
    let rx = spawn_source(src);
    let mut e = Engine::new(asr, vad, &params, &args, live, g);
    let end = e.run(&rx, &stop);
    let end = match end {
        Ok(end) => end,
        Err(err) => {
            // Model failure mid-run: what was confirmed is out; report.
            e.out.clear_partial();
            eprintln!("error: {name}: {err:#}");
            End::Failed
        }
    };
    if args.stats {
        e.print_stats();
    }
    Ok(match end {
        End::Input => Exit::Ok,
        End::Interrupted => Exit::Interrupted,
        End::Failed => Exit::SomeFailed,
    })
}

fn options(a: &Args) -> anyhow::Result<TranscribeOptions> {
    let mut o = TranscribeOptions::default();
    o.decode.task = match a.task {
        TaskArg::Transcribe => Task::Transcribe,
        TaskArg::Translate => Task::Translate,
    };
    o.decode.language = a.language.clone();
    if a.beam_size == Some(0) {
        bail!("--beam-size must be at least 1");
    }
    o.decode.beam_size = a.beam_size;
    o.decode.sample_len = a.max_new_tokens;
    o.decode.initial_prompt = a.initial_prompt.clone();
    o.decode.condition_on_previous_text = a.condition_on_previous_text;
    if let Some(t) = a.temperature {
        if !(0.0..=2.0).contains(&t) {
            bail!("--temperature must be in 0..=2");
        }
        o.temperatures = vec![t];
    }
    Ok(o)
}

#[cfg(feature = "mic")]
fn list_devices() -> anyhow::Result<Exit> {
    super::stream_mic::list_devices()?;
    Ok(Exit::Ok)
}

#[cfg(not(feature = "mic"))]
fn list_devices() -> anyhow::Result<Exit> {
    bail!("{}", NO_MIC)
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Input,
    Interrupted,
    Failed,
}

struct VadState {
    det: Box<dyn Vad>,
    seg: OnlineSegmenter,
    /// The last `pad` samples before the current position (outside speech).
    preroll: VecDeque<f32>,
}

/// The streaming loop's state.
struct Engine<'a> {
    asr: OnlineWhisper<'a>,
    vad: Option<VadState>,
    out: Printer,
    live: bool,
    step: f64,
    min_speech: usize,
    /// Received samples not yet fed to the VAD / buffer.
    incoming: VecDeque<f32>,
    /// Samples fed so far (absolute position).
    pos: usize,
    /// Samples received so far.
    received: usize,
    /// (samples received after a chunk, when it arrived).
    arrivals: Vec<(usize, Instant)>,
    /// Start of the current speech region, and whether it printed anything.
    speech_start: usize,
    emitted: bool,
    busy: Duration,
    latencies: Vec<f64>,
    /// Process CPU time when the loop started (Linux).
    cpu0: Option<f64>,
    /// (wall s, CPU s) of each decode.
    decode_costs: Vec<(f64, Option<f64>)>,
    /// Final lines at speech ends, and how many of them needed a decode.
    speech_end_finals: usize,
    speech_end_decodes: usize,
    /// Decodes at pauses in speech.
    pause_decodes: usize,
    /// Most audio (s) waiting to be processed at any time (live sources).
    max_lag: f64,
    /// When the input's first sample was spoken (live sources; at 1x pace).
    origin: Option<Instant>,
}

impl<'a> Engine<'a> {
    fn new(
        mut asr: OnlineWhisper<'a>,
        det: Option<Box<dyn Vad>>,
        params: &SegmentParams,
        a: &Args,
        live: bool,
        g: &Global,
    ) -> Self {
        asr.reset(0);
        let vad = det.map(|mut det| {
            det.reset();
            VadState {
                det,
                seg: OnlineSegmenter::new(params),
                preroll: VecDeque::new(),
            }
        });
        Engine {
            asr,
            vad,
            out: Printer::new(a.format, g.quiet),
            live,
            step: a.step,
            min_speech: (LIVE_RATE as usize * a.min_speech_ms as usize) / 1000,
            incoming: VecDeque::new(),
            pos: 0,
            received: 0,
            arrivals: Vec::new(),
            speech_start: 0,
            emitted: false,
            busy: Duration::ZERO,
            latencies: Vec::new(),
            cpu0: process_cpu_s(),
            decode_costs: Vec::new(),
            speech_end_finals: 0,
            speech_end_decodes: 0,
            pause_decodes: 0,
            max_lag: 0.0,
            origin: None,
        }
    }

    /// Runs `f` on the recognizer, recording the cost if it decoded.
    fn asr_call<T>(
        &mut self,
        f: impl FnOnce(&mut OnlineWhisper<'a>) -> voxtok_models::whisper::Result<T>,
    ) -> anyhow::Result<T> {
        let n0 = self.asr.decode_stats().1;
        let (t0, c0) = (Instant::now(), process_cpu_s());
        let r = f(&mut self.asr)?;
        if self.asr.decode_stats().1 > n0 {
            let cpu = process_cpu_s().zip(c0).map(|(a, b)| a - b);
            self.decode_costs.push((t0.elapsed().as_secs_f64(), cpu));
        }
        Ok(r)
    }

    /// The absolute sample up to which the buffer should be decoded now, if
    /// a decode is due: in speech after `--step` s of new audio; in a pause
    /// once, up to the end of the speech (plus padding), when the last
    /// decode did not reach it.
    /// Also says whether it is a pause decode.
    fn due(&self) -> Option<(usize, bool)> {
        if !self.in_speech() {
            return None;
        }
        if let Some(v) = &self.vad {
            if let Some(te) = v.seg.pause_start() {
                let end = te + v.seg.pad();
                let due = self.pos >= end && self.asr.decoded_end() < end;
                return due.then_some((end, true));
            }
        }
        // Live: step decodes take at most about half of real time (a slow
        // machine decodes less often instead of falling behind).
        let step = if self.live {
            self.step
                .max(2.0 * self.decode_costs.last().map_or(0.0, |c| c.0))
        } else {
            self.step
        };
        (self.asr.pending_s() >= step).then(|| (self.asr.end_sample(), false))
    }

    fn in_speech(&self) -> bool {
        self.vad.as_ref().is_none_or(|v| v.seg.in_speech())
    }

    fn receive(&mut self, m: SrcMsg) -> Option<Result<(), String>> {
        match m {
            SrcMsg::Audio(c) => {
                let now = Instant::now();
                self.origin.get_or_insert_with(|| {
                    now.checked_sub(Duration::from_secs_f64(c.len() as f64 / LIVE_RATE as f64))
                        .unwrap_or(now)
                });
                self.received += c.len();
                self.arrivals.push((self.received, now));
                self.incoming.extend(c);
                None
            }
            SrcMsg::End => Some(Ok(())),
            SrcMsg::Failed(e) => Some(Err(e)),
        }
    }

    fn run(&mut self, rx: &Receiver<SrcMsg>, stop: &AtomicBool) -> anyhow::Result<End> {
        let mut ended: Option<Result<(), String>> = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                self.flush(FlushWhy::Interrupted)?;
                return Ok(End::Interrupted);
            }
            if ended.is_none() && self.incoming.len() < WINDOW {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => ended = self.receive(m),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => ended = Some(Ok(())),
                }
            }
            while ended.is_none() {
                match rx.try_recv() {
                    Ok(m) => ended = self.receive(m),
                    Err(_) => break,
                }
            }
            if self.live {
                let lag = self.incoming.len() as f64 / LIVE_RATE as f64;
                self.max_lag = self.max_lag.max(lag);
            }
            let t0 = Instant::now();
            self.consume()?;
            if let Some((end, pause)) = self.due() {
                self.pause_decodes += usize::from(pause);
                let u = self.asr_call(|a| a.process_upto(end))?;
                for c in &u.finals {
                    self.final_line(c, reason_name(c.reason));
                }
                self.out.partial(&u.partial);
            }
            self.busy += t0.elapsed();
            if let Some(end) = &ended {
                if self.incoming.len() < WINDOW {
                    let t0 = Instant::now();
                    self.finish_input()?;
                    self.busy += t0.elapsed();
                    return Ok(match end {
                        Ok(()) => End::Input,
                        Err(msg) => {
                            eprintln!("error: {msg}");
                            End::Failed
                        }
                    });
                }
            }
        }
    }

    /// Feeds whole windows: all of them from a live source; from a file,
    /// until a decode is due (so decodes happen at exact step boundaries).
    fn consume(&mut self) -> anyhow::Result<()> {
        while self.incoming.len() >= WINDOW {
            let win: Vec<f32> = self.incoming.drain(..WINDOW).collect();
            self.window(&win, false)?;
            if !self.live && self.due().is_some() {
                break;
            }
        }
        Ok(())
    }

    /// One window of audio (the last one of the input may be shorter).
    fn window(&mut self, win: &[f32], last: bool) -> anyhow::Result<()> {
        let pos = self.pos;
        self.pos += win.len();
        let Some(v) = &mut self.vad else {
            self.asr.push(win);
            return Ok(());
        };
        let mut probs = v.det.feed(win)?;
        if last {
            probs.extend(v.det.flush()?);
        }
        let was = v.seg.in_speech();
        let mut event = None;
        for p in probs {
            if let Some(e) = v.seg.push(p) {
                event = Some(e);
            }
        }
        match event {
            Some(VadEvent::Start(s)) => {
                let n = pos.saturating_sub(s).min(v.preroll.len());
                let pre: Vec<f32> = v
                    .preroll
                    .iter()
                    .skip(v.preroll.len() - n)
                    .copied()
                    .collect();
                v.preroll.clear();
                self.asr.reset(pos - n);
                self.asr.push(&pre);
                self.asr.push(win);
                self.speech_start = pos - n;
                self.emitted = false;
            }
            Some(VadEvent::End(e)) => {
                let _ = was;
                self.end_speech(e)?;
            }
            None if v.seg.in_speech() => self.asr.push(win),
            None => {
                let keep = v.seg.pad() + WINDOW;
                v.preroll.extend(win.iter().copied());
                let extra = v.preroll.len().saturating_sub(keep);
                v.preroll.drain(..extra);
            }
        }
        Ok(())
    }

    fn end_speech(&mut self, end: usize) -> anyhow::Result<()> {
        if end.saturating_sub(self.speech_start) < self.min_speech && !self.emitted {
            // Too short to be speech: drop it silently.
            let at = self.pos;
            self.asr.reset(at);
            self.out.partial(&[]);
            return Ok(());
        }
        self.flush(FlushWhy::SpeechEnd(end))
    }

    fn finish_input(&mut self) -> anyhow::Result<()> {
        let rest: Vec<f32> = self.incoming.drain(..).collect();
        if !rest.is_empty() || self.vad.is_some() {
            self.window(&rest, true)?;
        }
        if let Some(v) = &mut self.vad {
            match v.seg.finish(self.pos) {
                Some(VadEvent::End(e)) => self.end_speech(e)?,
                _ => self.out.partial(&[]),
            }
            return Ok(());
        }
        self.flush(FlushWhy::EndOfInput)
    }

    fn flush(&mut self, why: FlushWhy) -> anyhow::Result<()> {
        if !self.in_speech() && why == FlushWhy::Interrupted {
            self.out.partial(&[]);
            return Ok(());
        }
        let (c, decoded) = match why {
            FlushWhy::SpeechEnd(end) => self.asr_call(|a| a.finish_at(end))?,
            _ => self.asr_call(|a| a.finish().map(|c| (c, true)))?,
        };
        if let Some(c) = c {
            if matches!(why, FlushWhy::SpeechEnd(_)) {
                self.speech_end_finals += 1;
                self.speech_end_decodes += usize::from(decoded);
            }
            self.final_line(&c, why.name());
        }
        self.out.partial(&[]);
        Ok(())
    }

    fn final_line(&mut self, c: &Confirmed, reason: &str) {
        self.emitted = true;
        // Latency only means something when audio arrives in real time.
        let since = if self.live {
            self.latency_ref(c.end_s())
        } else {
            None
        };
        let at = self
            .origin
            .filter(|_| self.live)
            .map(|o| o.elapsed().as_secs_f64());
        let printed = self.out.final_line(c, reason, since, at);
        if let Some(l) = printed {
            self.latencies.push(l);
        }
    }

    /// When the audio at `t` seconds was delivered by the source.
    fn latency_ref(&self, t: f64) -> Option<Instant> {
        if self.arrivals.is_empty() {
            return None;
        }
        let idx = ((t * LIVE_RATE as f64).round() as usize).min(self.received.saturating_sub(1));
        let i = self.arrivals.partition_point(|&(end, _)| end <= idx);
        Some(self.arrivals[i.min(self.arrivals.len() - 1)].1)
    }

    fn print_stats(&mut self) {
        let audio_s = self.pos as f64 / LIVE_RATE as f64;
        let busy = self.busy.as_secs_f64();
        let rtf = if audio_s > 0.0 { busy / audio_s } else { 0.0 };
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        let med = quantile(&l, 0.5);
        let p90 = quantile(&l, 0.9);
        let (dt, n) = self.asr.decode_stats();
        let cpu = process_cpu_s().zip(self.cpu0).map(|(a, b)| a - b);
        let mut walls: Vec<f64> = self.decode_costs.iter().map(|c| c.0).collect();
        walls.sort_by(f64::total_cmp);
        let mut cpus: Vec<f64> = self.decode_costs.iter().filter_map(|c| c.1).collect();
        cpus.sort_by(f64::total_cmp);
        let decode_cpu: Option<f64> =
            (cpus.len() == self.decode_costs.len()).then(|| cpus.iter().sum());
        self.out.stats(json!({
            "type": "stats",
            "finals": l.len(),
            "latency_median_s": med.map(round3),
            "latency_p90_s": p90.map(round3),
            "realtime_source": self.live,
            "audio_s": round3(audio_s),
            "processing_s": round3(busy),
            "rtf": round3(rtf),
            "decodes": n,
            "decode_s": round3(dt.as_secs_f64()),
            "cpu_s": cpu.map(round3),
            "rtf_cpu": cpu.filter(|_| audio_s > 0.0).map(|c| round3(c / audio_s)),
            "decode_wall_median_s": quantile(&walls, 0.5).map(round3),
            "decode_cpu_s": decode_cpu.map(round3),
            "decode_cpu_median_s": quantile(&cpus, 0.5).map(round3),
            "speech_end_finals": self.speech_end_finals,
            "speech_end_decodes": self.speech_end_decodes,
            "pause_decodes": self.pause_decodes,
            "max_lag_s": self.live.then_some(round3(self.max_lag)),
        }));
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3} s"));
        eprintln!(
            "stream stats: {} final lines; end-of-speech -> final latency median {}, p90 {}{}; \
             real-time factor {:.3} ({:.2} s processing / {:.2} s audio; {} decodes, {:.2} s decoding){}; \
             per decode: median {} wall, {} CPU; {} of {} speech-end finals needed a decode{}",
            l.len(),
            f(med),
            f(p90),
            if self.live { "" } else { " (source not real time: latency not meaningful)" },
            rtf,
            busy,
            audio_s,
            n,
            dt.as_secs_f64(),
            cpu.map_or(String::new(), |c| format!(
                "; CPU time {c:.2} s = {:.3} x audio",
                c / audio_s.max(1e-9)
            )),
            f(quantile(&walls, 0.5)),
            f(quantile(&cpus, 0.5)),
            self.speech_end_decodes,
            self.speech_end_finals,
            if self.live {
                format!("; most audio waiting {:.2} s", self.max_lag)
            } else {
                String::new()
            },
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushWhy {
    /// The VAD ended speech at this sample.
    SpeechEnd(usize),
    EndOfInput,
    Interrupted,
}

impl FlushWhy {
    fn name(self) -> &'static str {
        match self {
            FlushWhy::SpeechEnd(_) => "speech_end",
            FlushWhy::EndOfInput => "end_of_input",
            FlushWhy::Interrupted => "interrupted",
        }
    }
}

fn reason_name(r: FinalReason) -> &'static str {
    match r {
        FinalReason::Agreed => "agreed",
        FinalReason::Flushed => "flushed",
        FinalReason::BufferFull => "buffer_full",
    }
}

/// CPU time (user + system, all threads) of this process so far, from
/// /proc/self/stat (Linux; USER_HZ = 100). Unlike wall time it does not grow
/// when other processes take the cores.
fn process_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime); `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Quantile by the nearest-rank method of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Writes partial and final lines to stdout.
struct Printer {
    format: Format,
    tty: bool,
    quiet: bool,
    /// The partial text currently shown (terminal) or last written (jsonl).
    shown: String,
}

impl Printer {
    fn new(format: Format, quiet: bool) -> Self {
        Printer {
            format,
            tty: std::io::stdout().is_terminal(),
            quiet,
            shown: String::new(),
        }
    }

    fn write(&mut self, s: &str) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
        let _ = o.flush();
    }

    /// Shows the unconfirmed tail (in place on a terminal; a jsonl line when it changed).
    fn partial(&mut self, words: &[Word]) {
        let text = join(words);
        if text == self.shown {
            return;
        }
        match self.format {
            Format::Jsonl => {
                if !text.is_empty() {
                    let line = json!({
                        "type": "partial",
                        "start_s": round3(words[0].start),
                        "end_s": round3(words[words.len() - 1].end),
                        "text": text,
                    });
                    self.write(&format!("{line}\n"));
                }
            }
            Format::Text if self.tty && !self.quiet => {
                let width = std::env::var("COLUMNS")
                    .ok()
                    .and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(80)
                    .max(10);
                let chars: Vec<char> = text.chars().collect();
                let shown: String = if chars.len() >= width {
                    std::iter::once('…')
                        .chain(chars[chars.len() + 2 - width..].iter().copied())
                        .collect()
                } else {
                    text.clone()
                };
                self.write(&format!("\r\x1b[2K\x1b[2m{shown}\x1b[0m"));
            }
            Format::Text => {}
        }
        self.shown = text;
    }

    fn clear_partial(&mut self) {
        if self.format == Format::Text && self.tty && !self.shown.is_empty() {
            self.write("\r\x1b[2K");
        }
        self.shown.clear();
    }

    /// Prints a final line (`at`: seconds since the input started, live
    /// sources); returns the latency from `since` to now.
    fn final_line(
        &mut self,
        c: &Confirmed,
        reason: &str,
        since: Option<Instant>,
        at: Option<f64>,
    ) -> Option<f64> {
        let text = c.text();
        let latency = since.map(|t| t.elapsed().as_secs_f64());
        match self.format {
            Format::Jsonl => {
                let line = json!({
                    "type": "final",
                    "start_s": round3(c.start_s()),
                    "end_s": round3(c.end_s()),
                    "text": text,
                    "reason": reason,
                    "latency_s": latency.map(round3),
                    "at_s": at.map(round3),
                });
                self.write(&format!("{line}\n"));
                self.shown.clear();
            }
            Format::Text => {
                self.clear_partial();
                self.write(&format!("{text}\n"));
            }
        }
        latency
    }

    fn stats(&mut self, v: serde_json::Value) {
        if self.format == Format::Jsonl {
            self.write(&format!("{v}\n"));
        }
    }
}
