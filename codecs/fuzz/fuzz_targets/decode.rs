//! Fuzz the decoder entry point: arbitrary bytes -> Decoder -> drain (also
//! through the resampler and log-mel). Errors are fine; a panic escaping the
//! API is a bug. libfuzzer-sys aborts on *any* panic, including those symphonia
//! raises and `voxtok_codecs` catches and turns into `CodecError::Malformed`;
//! so the hook is replaced by a counter, and only a panic that escapes
//! `voxtok_codecs` aborts (= a finding).
//!
//! Run: cd codecs/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=120
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use voxtok_codecs::decode::{decode_all, Decoder, RawPcm};
use voxtok_codecs::{LogMel, MelPadding, Quality};

static CAUGHT_INSIDE: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        std::panic::set_hook(Box::new(|_| {
            let n = CAUGHT_INSIDE.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                eprintln!("[fuzz] {n} panics inside symphonia caught by voxtok-codecs so far");
            }
        }))
    });
    if std::panic::catch_unwind(|| run(data)).is_err() {
        eprintln!("[fuzz] a panic escaped voxtok-codecs");
        std::process::abort();
    }
});

fn run(data: &[u8]) {
    // Containers from memory (seekable) and from a plain reader (not seekable).
    if let Ok(d) = Decoder::from_bytes(data.to_vec(), "fuzz") {
        if let Ok(a) = decode_all(d, Some(16000), Quality::Fast) {
            let n = a.samples.len().min(16000);
            let _ = LogMel::new(80, MelPadding::None).map(|mut m| m.compute(&a.samples[..n]));
        }
    }
    if let Ok(mut d) = Decoder::from_reader(std::io::Cursor::new(data.to_vec()), "fuzz-stream") {
        while let Ok(Some(_)) = d.next_chunk() {}
    }
    // Raw PCM: the first byte picks the layout.
    if let Some((&b, rest)) = data.split_first() {
        let layout = RawPcm { channels: 1 + (b & 3) as u16, ..RawPcm::default() };
        if let Ok(mut d) = Decoder::raw(std::io::Cursor::new(rest.to_vec()), "fuzz-raw", layout) {
            while let Ok(Some(_)) = d.next_chunk() {}
        }
    }
}
