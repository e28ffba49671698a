//! Streaming Mimi encode on the current thread count (run it with
//! `RAYON_NUM_THREADS=1` for the one-core figure): whole-file encoding as the
//! reference, then streaming in chunks of each size, in one process, with
//! codes checked identical, time per push split by stage (SEANet layers,
//! transformer, downsampling, RVQ), the weight bytes a push reads and this
//! machine's one-thread read bandwidth (the floor those bytes set).
//!
//! `cargo run --release -p voxtok-models --example mimi_stream -- MODEL_DIR
//!  [SECONDS=4] [CODEBOOKS=8] [CHUNKS_MS=80,160,240,320] [REPEAT=2]`
use std::time::{Duration, Instant};
use voxtok_models::codec::mimi::Mimi;
use voxtok_models::codec::{decode_mono, encode_mono, AudioTokenizer};
use voxtok_models::runtime::{Device, ModelDir};

/// One-thread read bandwidth (GB/s): best of 5 sums of a 256 MiB buffer.
fn read_bandwidth() -> f64 {
    let x = vec![1f32; 64 << 20];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(sum(&x));
        best = best.min(t.elapsed().as_secs_f64());
    }
    (x.len() * 4) as f64 / best / 1e9
}

/// A sum with 16 independent lanes (AVX2 when present).
fn sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { sum_avx2(x) };
    }
    sum_lanes(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    sum_lanes(x)
}

#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    for c in x.chunks_exact(32) {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum()
}

/// A deterministic speech-like test signal (harmonics with a moving pitch,
/// syllable-rate envelope, a little noise).
fn signal(seconds: f64, sr: u32) -> Vec<f32> {
    let n = (seconds * sr as f64) as usize;
    let mut seed = 0x2545_f491_u64;
    (0..n)
        .map(|i| {
            let t = i as f64 / sr as f64;
            let f0 = 120.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let env = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            let tone: f64 = (1..6)
                .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
                .sum();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            (0.25 * env * tone + 0.02 * noise) as f32
        })
        .collect()
}

/// CPU seconds of every thread of this process so far (`schedstat`).
fn cpu_s() -> f64 {
    let mut ns = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// (wall, CPU) seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (t, c) = (Instant::now(), cpu_s());
    let out = f();
    (out, t.elapsed().as_secs_f64(), cpu_s() - c)
}

fn ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e3 / n.max(1) as f64
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(run)
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: mimi_stream MODEL_DIR [SECONDS] [CODEBOOKS] [CHUNKS_MS] [REPEAT]");
        std::process::exit(2);
    };
    let seconds: f64 = args.get(1).map_or(Ok(4.0), |s| s.parse())?;
    let k: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let chunks: Vec<f64> = args
        .get(3)
        .map_or("80,160,240,320", |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let repeat: usize = args.get(4).map_or(Ok(2), |s| s.parse())?;

    let bw = read_bandwidth();
    let model = Mimi::load(&ModelDir::open(dir)?, &Device::Cpu)?;
    let sr = model.info().sample_rate;
    let audio = signal(seconds, sr);
    let [b_sea, b_tr, b_down, b_rvq] = model.encoder_weight_bytes(k);
    let bytes = (b_sea + b_tr + b_down + b_rvq) as f64;
    println!(
        "threads {}, {seconds} s audio, {k} codebooks; one-thread read bandwidth {bw:.1} GB/s",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    println!(
        "encoder weights read per push: {:.1} MB (SEANet {:.1}, transformer {:.1}, downsample {:.1}, RVQ {:.1}); \
         at {bw:.1} GB/s that is {:.2} ms a push",
        bytes / 1e6,
        b_sea as f64 / 1e6,
        b_tr as f64 / 1e6,
        b_down as f64 / 1e6,
        b_rvq as f64 / 1e6,
        bytes / bw / 1e6
    );

    let whole = encode_mono(&model, &audio, k)?;
    let (mut best_whole, mut best_whole_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeat {
        let (r, wall, cpu) = timed(|| encode_mono(&model, &audio, k));
        std::hint::black_box(r?);
        best_whole = best_whole.min(wall);
        best_whole_cpu = best_whole_cpu.min(cpu);
    }
    let whole_xrt = seconds / best_whole;
    let whole_cpu = seconds / best_whole_cpu;
    // Warm-up: the first decode packs the decoder transformer's weights.
    std::hint::black_box(decode_mono(&model, &whole)?);
    let (mut best_dec, mut best_dec_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeat {
        let (r, wall, cpu) = timed(|| decode_mono(&model, &whole));
        std::hint::black_box(r?);
        best_dec = best_dec.min(wall);
        best_dec_cpu = best_dec_cpu.min(cpu);
    }
    println!(
        "whole-file encode: {whole_xrt:.2} x real time by wall time, {whole_cpu:.2} by CPU time; \
         decode: {:.2} by wall time, {:.2} by CPU time\n",
        seconds / best_dec,
        seconds / best_dec_cpu
    );

    let mut table = vec![
        "| chunk ms | stream xRT (CPU) | whole-file xRT (CPU) | ratio | stream xRT (wall) | whole-file xRT (wall) | identical | CPU ms/push | wall ms/push: SEANet | transformer | downsample | RVQ | weight-read floor xRT |".to_string(),
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    for &c in &chunks {
        let chunk = (c * sr as f64 / 1000.0).round() as usize;
        let mut best: Option<(f64, f64, voxtok_models::codec::mimi::StreamProfile)> = None;
        let mut identical = true;
        for _ in 0..repeat.max(1) {
            let (t, c0) = (Instant::now(), cpu_s());
            let mut st = model.stream(k)?;
            let mut rows = vec![Vec::new(); k];
            let mut add = |codes: voxtok_models::codec::Codes| {
                for (i, r) in rows.iter_mut().enumerate() {
                    r.extend_from_slice(codes.row(i));
                }
            };
            for piece in audio.chunks(chunk) {
                add(st.push(piece)?);
            }
            let prof = st.profile();
            add(st.finish()?);
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c0);
            identical &= rows.concat() == whole.ids;
            if best.as_ref().is_none_or(|(_, b, _)| cpu < *b) {
                best = Some((secs, cpu, prof));
            }
        }
        let (secs, cpu, p) = best.expect("one pass");
        let n = p.calls;
        let sea: Duration = p.seanet.iter().map(|(_, t)| *t).sum();
        let (xrt, xrt_cpu) = (seconds / secs, seconds / cpu);
        let floor = c / 1e3 / (bytes / bw / 1e9);
        table.push(format!(
            "| {c:.0} | {xrt_cpu:.2} | {whole_cpu:.2} | {:.2} | {xrt:.2} | {whole_xrt:.2} | {identical} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {floor:.1} |",
            xrt_cpu / whole_cpu,
            cpu * 1e3 / n as f64,
            ms(sea, n),
            ms(p.transformer, n),
            ms(p.downsample, n),
            ms(p.rvq, n),
        ));
        if c == chunks[0] {
            println!("SEANet layers, ms per push at {c:.0} ms chunks:");
            for (name, t) in &p.seanet {
                println!("  {:>7.3}  {name}", ms(*t, n));
            }
            println!();
        }
    }
    println!("{}", table.join("\n"));
    Ok(())
}
