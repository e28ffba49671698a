//! Fixture helpers for the Whisper parity tests (tests/fixtures/whisper/,
//! written by tools/fixtures/gen_whisper.py).

use super::Whisper;
use crate::runtime::ModelDir;
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/whisper")
}

pub fn load(name: &str) -> Whisper {
    let dir = ModelDir::open(fixture_dir().join(name)).expect("fixture dir");
    Whisper::load(&dir, &Device::Cpu, DType::F32).expect("fixture model loads")
}

/// The parity input `features_<n_mels>_<signal>` as `[1, n_mels, 3000]` f32
/// (stored as u8: value = (q - 128) / 64).
pub fn features(n_mels: usize, signal: &str) -> Tensor {
    let all =
        candle_core::safetensors::load(fixture_dir().join("features.safetensors"), &Device::Cpu)
            .expect("features.safetensors");
    let q = &all[&format!("features_{n_mels}_{signal}")];
    let f = ((q.to_dtype(DType::F32).unwrap() - 128.0).unwrap() / 64.0).unwrap();
    f.unsqueeze(0).unwrap()
}

/// A reference tensor of `<name>/reference.safetensors`.
pub fn reference_tensor(name: &str, key: &str) -> Tensor {
    let all = candle_core::safetensors::load(
        fixture_dir().join(name).join("reference.safetensors"),
        &Device::Cpu,
    )
    .expect("reference.safetensors");
    all[key].clone()
}

/// `<name>/reference.json`.
pub fn reference_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
