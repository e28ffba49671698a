//! GFLOP/s of candle's CPU matmul on the shapes voxtok's models use (x @ w^T, as a Linear layer).
//! `cargo run --release -p voxtok-models --example matmul`
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("whisper-tiny enc qkv", 1500, 384, 384),
        ("whisper-tiny enc ffn", 1500, 384, 1536),
        ("whisper-base enc ffn", 1500, 512, 2048),
        ("whisper dec lm_head b1", 1, 384, 51864),
        ("whisper dec lm_head b8", 8, 384, 51864),
        ("qwen0.5b mlp b1", 1, 896, 4864),
        ("qwen0.5b mlp b8", 8, 896, 4864),
        ("qwen0.5b mlp prefill", 128, 896, 4864),
    ];
    for &(name, m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let _ = x.matmul(&w.t()?)?;
        let reps = ((2e9 / (2.0 * (m * k * n) as f64)) as usize).clamp(3, 2000);
        let t = Instant::now();
        for _ in 0..reps {
            let _ = x.matmul(&w.t()?)?;
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{name:28} m={m:5} k={k:4} n={n:6}  {:8.3} ms  {:6.1} GFLOP/s",
            s * 1e3,
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
    let _ = DType::F32;
    Ok(())
}
