//! `voxtok stream --codec encodec|mimi --model DIR`: audio codes frame by frame
//! as the streaming encoder produces them.

use super::stream::{open_source, spawn_source, Args, Format, SrcMsg};
use crate::{exit::Exit, Global};
use anyhow::{bail, Context};
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use voxtok_models::codec::encodec::{Encodec, EncodecStream};
use voxtok_models::codec::mimi::{Mimi, MimiStream};
use voxtok_models::codec::{AudioTokenizer, Codes, TokenizerInfo};
use voxtok_models::runtime::{DeviceSpec, ModelDir};

/// A streaming encoder of any codec that has one.
enum Enc<'a> {
    Encodec(Option<EncodecStream<'a>>),
    Mimi(Option<MimiStream<'a>>),
}

impl Enc<'_> {
    fn push(&mut self, x: &[f32]) -> anyhow::Result<Codes> {
        match self {
            Enc::Encodec(s) => Ok(s.as_mut().expect("not finished").push(x)?),
            Enc::Mimi(s) => Ok(s.as_mut().expect("not finished").push(x)?),
        }
    }
    fn finish(&mut self) -> anyhow::Result<Codes> {
        match self {
            Enc::Encodec(s) => Ok(s.take().expect("finished once").finish()?),
            Enc::Mimi(s) => Ok(s.take().expect("finished once").finish()?),
        }
    }
}

pub fn run(a: &Args, g: &Global) -> anyhow::Result<Exit> {
    let kind = a.codec.as_deref().unwrap_or_default().to_ascii_lowercase();
    let Some(model) = &a.model else {
        bail!("--codec {kind} needs --model DIR (a codec model directory)");
    };
    let device = a.device.parse::<DeviceSpec>()?.open()?;
    let dir = ModelDir::open(model)?;
    match kind.as_str() {
        "encodec" => {
            let m = Encodec::load(&dir, &device)
                .with_context(|| format!("cannot load EnCodec model {}", model.display()))?;
            let info = m.info().clone();
            let k = codebooks(a, &info)?;
            let enc = Enc::Encodec(Some(m.stream(k)?));
            drive(a, g, &info, enc)
        }
        "mimi" => {
            let m = Mimi::load(&dir, &device)
                .with_context(|| format!("cannot load Mimi model {}", model.display()))?;
            let info = m.info().clone();
            let k = codebooks(a, &info)?;
            let enc = Enc::Mimi(Some(m.stream(k)?));
            drive(a, g, &info, enc)
        }
        other => bail!("--codec {other}: streaming codes need encodec or mimi"),
    }
}

fn codebooks(a: &Args, info: &TokenizerInfo) -> anyhow::Result<usize> {
    let k = match (a.codebooks, a.bandwidth) {
        (Some(k), _) => k,
        (None, Some(b)) => info.codebooks_for_bandwidth(b)?,
        (None, None) => info.default_codebooks,
    };
    info.check_codebooks(k)?;
    Ok(k)
}

fn drive(a: &Args, g: &Global, info: &TokenizerInfo, mut enc: Enc<'_>) -> anyhow::Result<Exit> {
    let src = match open_source(a, info.sample_rate) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(if a.input.is_none() || a.input.as_deref() == Some("mic") {
                Exit::Usage
            } else {
                Exit::SomeFailed
            });
        }
    };
    let live = src.is_live();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    let rx = spawn_source(src);
    let mut out = CodePrinter {
        format: a.format,
        frame: 0,
        hop: info.sample_rate as f64 / info.frame_rate,
        frame_rate: info.frame_rate,
        received: 0,
        arrivals: Vec::new(),
        latencies: Vec::new(),
    };
    let mut busy = Duration::ZERO;
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break Exit::Interrupted;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(SrcMsg::Audio(c)) => {
                out.received += c.len();
                out.arrivals.push((out.received, Instant::now()));
                let t0 = Instant::now();
                let codes = enc.push(&c)?;
                busy += t0.elapsed();
                out.emit(&codes);
            }
            Ok(SrcMsg::End) | Err(RecvTimeoutError::Disconnected) => break Exit::Ok,
            Ok(SrcMsg::Failed(e)) => {
                eprintln!("error: {e}");
                break Exit::SomeFailed;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    if out.received > 0 {
        let t0 = Instant::now();
        let codes = enc.finish()?;
        busy += t0.elapsed();
        out.emit(&codes);
    }
    if a.stats {
        let audio_s = out.received as f64 / info.sample_rate as f64;
        let mut l = out.latencies.clone();
        l.sort_by(f64::total_cmp);
        let q = |q: f64| {
            (!l.is_empty()).then(|| l[((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1])
        };
        let rtf = if audio_s > 0.0 {
            busy.as_secs_f64() / audio_s
        } else {
            0.0
        };
        if a.format == Format::Jsonl {
            println!(
                "{}",
                json!({"type": "stats", "frames": out.frame, "latency_median_s": q(0.5),
                       "latency_p90_s": q(0.9), "realtime_source": live, "audio_s": audio_s,
                       "processing_s": busy.as_secs_f64(), "rtf": rtf})
            );
        }
        if !g.quiet || a.stats {
            eprintln!(
                "stream stats: {} frames; audio -> code latency median {:?} s, p90 {:?} s; real-time factor {rtf:.3}",
                out.frame,
                q(0.5),
                q(0.9)
            );
        }
    }
    Ok(end)
}

struct CodePrinter {
    format: Format,
    frame: usize,
    hop: f64,
    frame_rate: f64,
    received: usize,
    arrivals: Vec<(usize, Instant)>,
    latencies: Vec<f64>,
}

impl CodePrinter {
    fn emit(&mut self, c: &Codes) {
        let mut o = std::io::stdout().lock();
        for j in 0..c.frames {
            let codes: Vec<u32> = (0..c.codebooks).map(|k| c.row(k)[j]).collect();
            let t = self.frame as f64 / self.frame_rate;
            let _ = match self.format {
                Format::Jsonl => writeln!(
                    o,
                    "{}",
                    json!({"type": "codes", "frame": self.frame, "t_s": (t * 1e4).round() / 1e4, "codes": codes})
                ),
                Format::Text => writeln!(
                    o,
                    "{}\t{:.4}\t{}",
                    self.frame,
                    t,
                    codes
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            // Latency: from the arrival of the frame's last input sample.
            let end = ((self.frame + 1) as f64 * self.hop).ceil() as usize;
            let idx = end.min(self.received).saturating_sub(1);
            let i = self.arrivals.partition_point(|&(e, _)| e <= idx);
            if let Some(&(_, at)) = self
                .arrivals
                .get(i.min(self.arrivals.len().saturating_sub(1)))
            {
                self.latencies.push(at.elapsed().as_secs_f64());
            }
            self.frame += 1;
        }
        let _ = o.flush();
    }
}
