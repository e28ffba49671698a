//! Helpers shared by the codec parity tests (fixtures, errors, streaming).

use super::CodeStream;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/fixtures/codecs/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/codecs")
        .join(name)
}

/// The fixture's reference tensors (`reference.safetensors`).
pub fn refs(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixture_dir(name).join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// Largest absolute difference.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    crate::runtime::testing::max_abs_diff(a, b)
}

/// Streams `audio` in `chunk`-sample pieces into `st` (`k` codebooks):
/// the code rows, and how many frames came out before `finish`.
pub fn stream_rows(
    mut st: Box<dyn CodeStream + '_>,
    audio: &[f32],
    chunk: usize,
    k: usize,
) -> (Vec<Vec<u32>>, usize) {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); k];
    let mut before_finish = 0;
    for piece in audio.chunks(chunk) {
        let c = st.push(piece).unwrap();
        before_finish += c.frames;
        for (i, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(c.row(i));
        }
    }
    let c = st.finish().unwrap();
    for (i, row) in rows.iter_mut().enumerate() {
        row.extend_from_slice(c.row(i));
    }
    (rows, before_finish)
}
