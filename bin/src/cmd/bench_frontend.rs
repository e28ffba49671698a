//! `voxtok bench frontend`: audio front-end throughput on one core.
//!
//! For each file: streaming decode + resample to 16 kHz (high quality), and
//! Whisper log-mel (80 bins) over consecutive 30 s windows, each timed
//! separately, in x real time (audio seconds per wall second). Everything
//! runs on this one thread. Beside it, references measured in the same run:
//! `sox IN -r 16000 -c 1 -t raw /dev/null` and
//! `ffmpeg -threads 1 -i IN -ar 16000 -ac 1 -f f32le /dev/null` (when found),
//! and, with `--python`, transformers' `WhisperFeatureExtractor` on 60 s of
//! the same 16 kHz signal (torch with one thread). Peak RSS (VmHWM) is reset
//! before each file, so it shows the memory of that file's streaming pass.
//!
//! Without `--input`, a `--minutes`-long 44.1 kHz stereo WAV and a 128 kb/s
//! MP3 made from it (ffmpeg) are generated in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use voxtok_codecs::decode::Decoder;
use voxtok_codecs::mel::{LogMel, MelPadding, N_SAMPLES_30S, WHISPER_SAMPLE_RATE};
use voxtok_codecs::resample::{Quality, Resampler};

use crate::{exit::Exit, Global};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Audio files to measure (default: generated WAV and MP3).
    #[arg(long = "input", value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Length of the generated test files, in minutes.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Resampling quality: fast, balanced or high.
    #[arg(long, default_value = "high")]
    pub quality: Quality,
    /// Python with transformers, to time HF's WhisperFeatureExtractor in the same run.
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Clone)]
struct Row {
    file: String,
    source_rate: u32,
    audio_s: f64,
    decode_resample_s: f64,
    decode_resample_xrt: f64,
    logmel_s: f64,
    logmel_xrt: f64,
    total_xrt: f64,
    peak_rss_mb: f64,
    sox_xrt: Option<f64>,
    ffmpeg_xrt: Option<f64>,
    hf_logmel_xrt: Option<f64>,
}

/// Peak resident set size (VmHWM) of this process in MiB.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux: `5` into /proc/self/clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn tool_exists(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Wall time of a command that must succeed.
fn time_cmd(cmd: &mut Command) -> Option<Duration> {
    let t = Instant::now();
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| t.elapsed())
}

/// A deterministic test signal: gliding tones, tone bursts and noise, stereo 44.1 kHz.
fn write_test_wav(path: &Path, seconds: f64) -> anyhow::Result<()> {
    let rate = 44100u32;
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    let n = (seconds * rate as f64) as u64;
    let mut seed = 0x9E3779B97F4A7C15u64;
    let two_pi = 2.0 * std::f64::consts::PI;
    let (mut p1, mut p2) = (0.0f64, 0.0f64);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let f1 = 300.0 + 200.0 * (two_pi * 0.05 * t).sin();
        p1 += two_pi * f1 / rate as f64;
        p2 += two_pi * 2500.0 / rate as f64;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let burst = if (t * 2.0).fract() < 0.3 {
            0.15 * p2.sin()
        } else {
            0.0
        };
        let l = 0.3 * p1.sin() + burst + 0.02 * noise;
        let r = 0.2 * (p1 * 1.5).sin() + 0.02 * noise;
        w.write_sample((l * 32767.0) as i16)?;
        w.write_sample((r * 32767.0) as i16)?;
    }
    w.finalize()?;
    Ok(())
}

fn measure(path: &Path, quality: Quality) -> anyhow::Result<Row> {
    reset_peak_rss();
    let mut dec = Decoder::open(path)?;
    let rate = dec.sample_rate();
    let mut rs = Resampler::new(rate, WHISPER_SAMPLE_RATE, quality)?;
    let mut mel = LogMel::new(80, MelPadding::Whisper30s)?;
    let mut window: Vec<f32> = Vec::with_capacity(N_SAMPLES_30S);
    let mut out = Vec::new();
    let (mut t_dec, mut t_mel) = (Duration::ZERO, Duration::ZERO);
    let mut n16 = 0u64;
    let mut frames_checksum = 0usize;
    let mut run_mel = |window: &mut Vec<f32>, t_mel: &mut Duration| {
        let t = Instant::now();
        let m = mel.compute(window);
        *t_mel += t.elapsed();
        frames_checksum += m.n_frames;
        window.clear();
    };
    loop {
        let t = Instant::now();
        let chunk = dec.next_chunk()?;
        out.clear();
        match &chunk {
            Some(c) => rs.process_into(c, &mut out)?,
            None => rs.finish_into(&mut out)?,
        }
        t_dec += t.elapsed();
        n16 += out.len() as u64;
        let mut rest = &out[..];
        while !rest.is_empty() {
            let k = (N_SAMPLES_30S - window.len()).min(rest.len());
            window.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            if window.len() == N_SAMPLES_30S {
                run_mel(&mut window, &mut t_mel);
            }
        }
        if chunk.is_none() {
            break;
        }
    }
    if !window.is_empty() {
        run_mel(&mut window, &mut t_mel);
    }
    anyhow::ensure!(frames_checksum > 0, "no features computed");
    let audio_s = n16 as f64 / WHISPER_SAMPLE_RATE as f64;
    let (d, m) = (t_dec.as_secs_f64(), t_mel.as_secs_f64());
    Ok(Row {
        file: path.display().to_string(),
        source_rate: rate,
        audio_s,
        decode_resample_s: d,
        decode_resample_xrt: audio_s / d,
        logmel_s: m,
        logmel_xrt: audio_s / m,
        total_xrt: audio_s / (d + m),
        peak_rss_mb: peak_rss_mb().unwrap_or(f64::NAN),
        ..Row::default()
    })
}

/// HF WhisperFeatureExtractor on 60 s of 16 kHz audio (torch, one thread), x real time.
fn hf_reference(python: &Path, path: &Path, dir: &Path) -> anyhow::Result<f64> {
    let a = voxtok_codecs::read_audio(path, Some(WHISPER_SAMPLE_RATE))?;
    let n = a.samples.len().min(60 * WHISPER_SAMPLE_RATE as usize);
    let raw = dir.join("hf_ref.f32");
    std::fs::write(
        &raw,
        a.samples[..n]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )?;
    let script = r#"
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from transformers import WhisperFeatureExtractor
x = np.fromfile(sys.argv[1], dtype="<f4")
fe = WhisperFeatureExtractor(feature_size=80)
w = [x[i:i + 480000] for i in range(0, len(x), 480000)]
fe(w[0], sampling_rate=16000, return_tensors="np")
t = time.perf_counter()
for c in w:
    fe(c, sampling_rate=16000, return_tensors="np")
print(len(x) / 16000 / (time.perf_counter() - t))
"#;
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&raw)
        .output()
        .context("running --python")?;
    if !o.status.success() {
        bail!(
            "HF reference failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().parse()?)
}

impl Row {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "file": self.file, "source_rate": self.source_rate, "audio_s": self.audio_s,
            "decode_resample_s": self.decode_resample_s, "decode_resample_xrt": self.decode_resample_xrt,
            "logmel_s": self.logmel_s, "logmel_xrt": self.logmel_xrt, "total_xrt": self.total_xrt,
            "peak_rss_mb": self.peak_rss_mb, "sox_xrt": self.sox_xrt, "ffmpeg_xrt": self.ffmpeg_xrt,
            "hf_logmel_xrt": self.hf_logmel_xrt,
        })
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.0}x"))
}

pub fn run(args: Args, g: &Global) -> anyhow::Result<Exit> {
    let tmp = tempfile_dir()?;
    let mut inputs = args.inputs.clone();
    if inputs.is_empty() {
        let wav = tmp.join("bench_44k_stereo.wav");
        if !g.quiet {
            eprintln!(
                "generating {:.1} min test signal in {}",
                args.minutes,
                tmp.display()
            );
        }
        write_test_wav(&wav, args.minutes * 60.0)?;
        inputs.push(wav.clone());
        let mp3 = tmp.join("bench_44k_stereo.mp3");
        let made = tool_exists("ffmpeg")
            && time_cmd(
                Command::new("ffmpeg")
                    .args(["-y", "-i"])
                    .arg(&wav)
                    .args(["-c:a", "libmp3lame", "-b:a", "128k"])
                    .arg(&mp3),
            )
            .is_some();
        if made {
            inputs.push(mp3);
        } else if !g.quiet {
            eprintln!("ffmpeg not found: no MP3 measured");
        }
    }
    let (has_sox, has_ffmpeg) = (tool_exists("sox"), tool_exists("ffmpeg"));
    let mut rows = Vec::new();
    for input in &inputs {
        let mut row = measure(input, args.quality)
            .with_context(|| format!("measuring {}", input.display()))?;
        if has_sox {
            row.sox_xrt = time_cmd(Command::new("sox").arg(input).args([
                "-r",
                "16000",
                "-c",
                "1",
                "-t",
                "raw",
                "/dev/null",
            ]))
            .map(|d| row.audio_s / d.as_secs_f64());
        }
        if has_ffmpeg {
            row.ffmpeg_xrt = time_cmd(
                Command::new("ffmpeg")
                    .args(["-nostdin", "-threads", "1", "-i"])
                    .arg(input)
                    .args(["-ar", "16000", "-ac", "1", "-f", "f32le", "-y", "/dev/null"]),
            )
            .map(|d| row.audio_s / d.as_secs_f64());
        }
        if let Some(py) = &args.python {
            match hf_reference(py, input, &tmp) {
                Ok(x) => row.hf_logmel_xrt = Some(x),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&tmp);

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "bench": "frontend", "quality": format!("{:?}", args.quality), "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>() })
            )?
        );
        return Ok(Exit::Ok);
    }
    println!("| file | rate | audio s | decode+resample | log-mel (80) | total | peak RSS MiB | sox | ffmpeg -threads 1 | HF log-mel |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let name = Path::new(&r.file)
            .file_name()
            .map_or(r.file.clone(), |s| s.to_string_lossy().into_owned());
        println!(
            "| {name} | {} | {:.0} | {:.0}x | {:.0}x | {:.0}x | {:.1} | {} | {} | {} |",
            r.source_rate,
            r.audio_s,
            r.decode_resample_xrt,
            r.logmel_xrt,
            r.total_xrt,
            r.peak_rss_mb,
            fmt_opt(r.sox_xrt),
            fmt_opt(r.ffmpeg_xrt),
            fmt_opt(r.hf_logmel_xrt)
        );
    }
    println!(
        "\nx real time = audio seconds / wall seconds, one thread; resampling to 16 kHz ({:?}); \
         references (sox, ffmpeg: decode + resample to 16 kHz mono; HF: WhisperFeatureExtractor) timed in the same run.",
        args.quality
    );
    Ok(Exit::Ok)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("voxtok-bench-frontend-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
