//! Graph overhead and scaling.
//!
//! - `noop_4stage`: items/s through source → 4 identity stages → sink.
//! - `latency`: one item at a time through the same graph (per-item hop cost).
//! - `decode_mel`: real work (WAV decode → resample 44.1→16 kHz → 80-bin log-mel)
//!   as a plain single-threaded loop, on the graph with one worker, and on the
//!   graph with 2 workers per stage.
//!
//! After the criterion groups, a summary prints the ratios (median of 5 runs,
//! same process) and peak RSS. `cargo bench -p voxtok-pipeline --bench graph`.

use criterion::{criterion_group, Criterion, Throughput};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::hash_map::{Entry, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use voxtok_codecs::mel::{whisper_mel_decoder, LogMel};
use voxtok_codecs::{read_audio, whisper_mel, Decoder, MelPadding, Quality, Resampler, WavFormat};
use voxtok_pipeline::*;

/// Counts the items that reach it.
struct CountSink<T>(u64, std::marker::PhantomData<fn(T)>);
impl<T: Send + 'static> Sink for CountSink<T> {
    type In = T;
    fn item(&mut self, it: Item<T>) -> Result<(), BoxError> {
        black_box(&it);
        self.0 += 1;
        Ok(())
    }
}
fn count<T>() -> CountSink<T> {
    CountSink(0, std::marker::PhantomData)
}

fn noop_graph(n: u64) -> u64 {
    let mut g = Graph::new(GraphOptions {
        capacity: 64,
        ..Default::default()
    });
    let mut p = g.source_iter("src", 0..n);
    for i in 0..4 {
        p = g.map(&format!("s{i}"), p, 1, |x: u64| Ok::<_, BoxError>(x));
    }
    let h = g.sink("sink", p, count(), false);
    g.run().unwrap();
    h.take().unwrap().0
}

/// Sends one item, waits for the sink to see it, repeats.
struct Ping(u64, Receiver<()>);
impl Source for Ping {
    type Out = Instant;
    fn run(&mut self, ctx: &mut SourceCtx<'_, Instant>) -> Result<(), BoxError> {
        for i in 0..self.0 {
            ctx.emit(i, Instant::now())?;
            ctx.end(i)?;
            self.1.recv()?;
        }
        Ok(())
    }
}
struct Pong(Sender<()>, Vec<Duration>);
impl Sink for Pong {
    type In = Instant;
    fn item(&mut self, it: Item<Instant>) -> Result<(), BoxError> {
        self.1.push(it.data.unwrap().elapsed());
        self.0.send(())?;
        Ok(())
    }
}

fn latencies(n: u64) -> Vec<Duration> {
    let (tx, rx) = bounded(1);
    let mut g = Graph::default();
    let mut p = g.source("ping", Ping(n, rx));
    for i in 0..4 {
        p = g.map(&format!("s{i}"), p, 1, |x: Instant| Ok::<_, BoxError>(x));
    }
    let h = g.sink("pong", p, Pong(tx, Vec::new()), false);
    g.run().unwrap();
    h.take().unwrap().1
}

const RATE: u32 = 44100;

/// Test audio: `n` WAV files of `secs` seconds (tones + noise), written once.
fn audio_files(n: usize, secs: f32) -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("voxtok-bench-{n}x{secs}"));
    std::fs::create_dir_all(&dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{i:03}.wav"));
            if !p.exists() {
                let mut x = 12345u32 + i as u32;
                let s: Vec<f32> = (0..(secs * RATE as f32) as usize)
                    .map(|t| {
                        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                        let noise = (x >> 8) as f32 / (1 << 24) as f32 - 0.5;
                        let f = 200.0 + 50.0 * i as f32;
                        0.3 * (t as f32 * f * std::f32::consts::TAU / RATE as f32).sin()
                            + 0.05 * noise
                    })
                    .collect();
                voxtok_codecs::write_wav(&p, &s, RATE, WavFormat::Pcm16).unwrap();
            }
            p
        })
        .collect()
}

type R<T> = Result<T, BoxError>;
fn decode(p: PathBuf) -> R<(Vec<f32>, u32)> {
    let a = read_audio(&p, None)?;
    Ok((a.samples, a.sample_rate))
}
fn resample((s, rate): (Vec<f32>, u32)) -> R<Vec<f32>> {
    Ok(Resampler::process_all(rate, 16000, Quality::default(), &s)?)
}
fn mel(s: Vec<f32>) -> R<usize> {
    Ok(whisper_mel(&s, 80, MelPadding::None)?.n_frames)
}
fn work(p: PathBuf) -> R<usize> {
    mel(resample(decode(p)?)?)
}

fn plain_loop(files: &[PathBuf]) -> usize {
    files.iter().map(|p| work(p.clone()).unwrap()).sum()
}

fn on_graph(files: &[PathBuf], workers: usize, split: bool) -> u64 {
    let mut g = Graph::new(GraphOptions {
        capacity: 4,
        ..Default::default()
    });
    let src = g.source_iter("files", files.to_vec());
    let out = if split {
        let a = g.map("decode", src, workers, decode);
        let b = g.map("resample", a, workers, resample);
        g.map("mel", b, workers, mel)
    } else {
        g.map("work", src, workers, work)
    };
    let h = g.sink("sink", out, count(), false);
    g.run().unwrap();
    h.take().unwrap().0
}

/// Streaming variant (what `voxtok features` runs): chunks flow through
/// per-stream stages with their own resampler / mel state.
struct DecodeChunks;
impl Stage for DecodeChunks {
    type In = PathBuf;
    type Out = (u32, Vec<f32>);
    fn process(&mut self, p: PathBuf, out: &mut Emit<'_, Self::Out>) -> R<()> {
        let mut d = Decoder::open(&p)?;
        let rate = d.sample_rate();
        while let Some(c) = d.next_chunk()? {
            out.push((rate, c));
        }
        Ok(())
    }
}
#[derive(Default)]
struct ResampleS(HashMap<StreamId, Resampler>);
impl Stage for ResampleS {
    type In = (u32, Vec<f32>);
    type Out = Vec<f32>;
    fn process(&mut self, (rate, c): (u32, Vec<f32>), out: &mut Emit<'_, Vec<f32>>) -> R<()> {
        let r = match self.0.entry(out.stream()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Resampler::new(rate, 16000, Quality::High)?),
        };
        let mut buf = Vec::new();
        r.process_into(&c, &mut buf)?;
        out.push(buf);
        Ok(())
    }
    fn flush(&mut self, out: &mut Emit<'_, Vec<f32>>) -> R<()> {
        if let Some(mut r) = self.0.remove(&out.stream()) {
            let mut buf = Vec::new();
            r.finish_into(&mut buf)?;
            out.push(buf);
        }
        Ok(())
    }
}
#[derive(Default)]
struct MelS(HashMap<StreamId, LogMel>);
impl Stage for MelS {
    type In = Vec<f32>;
    type Out = usize;
    fn process(&mut self, s: Vec<f32>, out: &mut Emit<'_, usize>) -> R<()> {
        let m = match self.0.entry(out.stream()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(LogMel::new(80, MelPadding::None)?),
        };
        m.push(&s);
        Ok(())
    }
    fn flush(&mut self, out: &mut Emit<'_, usize>) -> R<()> {
        if let Some(mut m) = self.0.remove(&out.stream()) {
            out.push(m.finish().n_frames);
        }
        Ok(())
    }
}

fn streaming_loop(files: &[PathBuf]) -> usize {
    files
        .iter()
        .map(|p| {
            whisper_mel_decoder(Decoder::open(p).unwrap(), 80, MelPadding::None)
                .unwrap()
                .n_frames
        })
        .sum()
}

fn streaming_graph(files: &[PathBuf], workers: usize) -> u64 {
    let mut g = Graph::new(GraphOptions {
        capacity: 2 * workers + 2,
        ..Default::default()
    });
    let src = g.source_iter("files", files.to_vec());
    let a = g.per_stream("decode", src, workers, || DecodeChunks);
    let b = g.per_stream("resample", a, workers, ResampleS::default);
    let c = g.per_stream("mel", b, workers, MelS::default);
    let h = g.sink("sink", c, count(), false);
    g.run().unwrap();
    h.take().unwrap().0
}

fn benches(c: &mut Criterion) {
    let n = 20_000u64;
    let mut g = c.benchmark_group("graph");
    g.throughput(Throughput::Elements(n));
    g.bench_function("noop_4stage", |b| b.iter(|| assert_eq!(noop_graph(n), n)));
    g.finish();

    let mut g = c.benchmark_group("latency");
    g.bench_function("noop_4stage_one_item", |b| {
        b.iter_custom(|iters| latencies(iters).iter().sum::<Duration>())
    });
    g.finish();

    let files = audio_files(16, 4.0);
    let mut g = c.benchmark_group("decode_mel");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("loop_1thread", |b| b.iter(|| plain_loop(&files)));
    g.bench_function("graph_1worker", |b| b.iter(|| on_graph(&files, 1, false)));
    g.bench_function("graph_3stages_2workers", |b| {
        b.iter(|| on_graph(&files, 2, true))
    });
    g.bench_function("streaming_loop_1thread", |b| {
        b.iter(|| streaming_loop(&files))
    });
    g.bench_function("streaming_graph_2workers", |b| {
        b.iter(|| streaming_graph(&files, 2))
    });
    g.finish();
}

criterion_group!(all, benches);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(f: impl Fn()) -> f64 {
    f(); // warm up
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn summary() {
    let n = 20_000u64;
    let t = time(|| {
        noop_graph(n);
    });
    println!(
        "summary: noop 4-stage graph: {:.0} items/s ({:.2} us/item end to end)",
        n as f64 / t,
        t * 1e6 / n as f64
    );
    let mut l = latencies(2000);
    l.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "summary: one item at a time through 4 stages: p50 {:.1} us, p99 {:.1} us",
        us(l[l.len() / 2]),
        us(l[l.len() * 99 / 100])
    );
    let files = audio_files(32, 8.0);
    let audio_s = files.len() as f64 * 8.0;
    let base = time(|| {
        plain_loop(&files);
    });
    let one = time(|| {
        on_graph(&files, 1, false);
    });
    let two_split = time(|| {
        on_graph(&files, 2, true);
    });
    let two = time(|| {
        on_graph(&files, 2, false);
    });
    println!(
        "summary: decode+resample+mel, {} files x 8 s at 44.1 kHz",
        files.len()
    );
    println!(
        "summary:   loop, 1 thread            {base:.3} s ({:.0}x real time) = reference",
        audio_s / base
    );
    println!(
        "summary:   graph, 1 worker            {one:.3} s: overhead {:+.2}%",
        100.0 * (one / base - 1.0)
    );
    println!(
        "summary:   graph, 3 stages x 2 workers {two_split:.3} s: {:.2}x the loop",
        base / two_split
    );
    println!(
        "summary:   graph, 1 stage x 2 workers  {two:.3} s: {:.2}x the loop",
        base / two
    );
    let sbase = time(|| {
        streaming_loop(&files);
    });
    let s1 = time(|| {
        streaming_graph(&files, 1);
    });
    let s2 = time(|| {
        streaming_graph(&files, 2);
    });
    println!(
        "summary: streaming in chunks (as `voxtok features`), whisper_mel_decoder loop = reference"
    );
    println!(
        "summary:   loop, 1 thread                       {sbase:.3} s ({:.0}x real time)",
        audio_s / sbase
    );
    println!(
        "summary:   graph, 3 per-stream stages x 1 worker  {s1:.3} s: {:.2}x the loop",
        sbase / s1
    );
    println!(
        "summary:   graph, 3 per-stream stages x 2 workers {s2:.3} s: {:.2}x the loop",
        sbase / s2
    );
    println!(
        "summary: peak RSS {:.0} MB; cores available: {}",
        peak_rss_mb(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    all();
    if bench_mode {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
