//! Times Whisper's encoder on one padded window (batch `B`, default 1) of a
//! model directory (Hugging Face or CTranslate2 layout).
//! `cargo run --release -p voxtok-models --example whisper_encoder -- data/models/whisper-tiny.en [B] [REPS]`
use candle_core::{DType, Device, Tensor};
use std::time::Instant;
use voxtok_models::runtime::ModelDir;
use voxtok_models::whisper::Whisper;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("data/models/whisper-tiny.en");
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let w = Whisper::load(&ModelDir::open(dir)?, &Device::Cpu, DType::F32)?;
    let frames = 2 * w.model.config.max_source_positions;
    let mel = Tensor::randn(0f32, 1.0, (batch, w.n_mels(), frames), &Device::Cpu)?;
    let _ = w.model.encode(&mel)?;
    let t = Instant::now();
    for _ in 0..reps {
        let _ = w.model.encode(&mel)?;
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{dir}: encoder batch {batch} × {frames} frames: {:.1} ms per call, {:.1} ms per window",
        s * 1e3,
        s * 1e3 / batch as f64
    );
    Ok(())
}
