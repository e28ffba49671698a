//! CPU time of `x·Wᵀ` (a Linear layer) on the shapes voxtok's models use:
//! candle's matmul beside `runtime::Linear` (which takes its small-m kernel
//! up to `SMALL_M` rows and candle's matmul above). Wall time per call, with
//! GFLOP/s and the weight-read rate (GB/s, the bound for decode steps).
//! `cargo run --release -p voxtok-models --example matmul [REPS_SCALE]`
use candle_core::{Device, Module, Tensor};
use std::time::Instant;
use voxtok_models::runtime::Linear;

/// Seconds per call of `f`, best of 3 timed batches (the machine is shared).
fn time(
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> candle_core::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(best)
}

fn main() -> candle_core::Result<()> {
    let scale: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let dev = Device::Cpu;
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("whisper-tiny enc qkv", 1500, 384, 384),
        ("whisper-tiny enc ffn", 1500, 384, 1536),
        ("whisper-tiny dec ffn b1", 1, 384, 1536),
        ("whisper-tiny dec ffn b8", 8, 384, 1536),
        ("whisper dec lm_head b1", 1, 384, 51864),
        ("whisper dec lm_head b8", 8, 384, 51864),
        ("qwen0.5b mlp b1", 1, 896, 4864),
        ("qwen0.5b mlp b8", 8, 896, 4864),
        ("qwen0.5b mlp b16", 16, 896, 4864),
        ("qwen0.5b down b8", 8, 4864, 896),
        ("qwen0.5b lm_head b1", 1, 896, 151936),
        ("qwen0.5b lm_head b8", 8, 896, 151936),
        ("qwen0.5b mlp prefill", 128, 896, 4864),
    ];
    println!(
        "{:26} {:>5} {:>5} {:>6} | {:>9} {:>7} | {:>9} {:>7} {:>6} | {:>7}",
        "shape", "m", "k", "n", "candle ms", "GFLOP/s", "Linear ms", "GFLOP/s", "GB/s", "speedup"
    );
    for &(name, m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let lin = Linear::new(w.clone(), None);
        let flop = 2.0 * (m * k * n) as f64;
        let reps = ((scale * 1e9 / flop) as usize).clamp(2, 1000);
        let tc = time(reps, || x.matmul(&w.t()?))?;
        let tl = time(reps, || lin.forward(&x))?;
        println!(
            "{name:26} {m:5} {k:5} {n:6} | {:9.3} {:7.1} | {:9.3} {:7.1} {:6.1} | {:6.2}x",
            tc * 1e3,
            flop / tc / 1e9,
            tl * 1e3,
            flop / tl / 1e9,
            (n * k * 4) as f64 / tl / 1e9,
            tc / tl
        );
    }
    Ok(())
}
