//! Process-wide allocator policy for the binary to opt into.

/// glibc malloc: serve buffers up to 32 MiB from the heap and keep up to
/// 512 MiB of freed heap instead of returning it to the kernel, so large
/// per-layer buffers (the codecs' SEANet layers) are reused between layers
/// and calls instead of page-faulted and zeroed afresh each time (about 12%
/// of EnCodec's CPU time in the profile). It is process-wide, so the binary
/// calls it, not the models; once; `VOXTOK_MALLOC_TUNE=0` leaves malloc
/// alone (A/B runs). No-op off Linux/glibc.
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("VOXTOK_MALLOC_TUNE").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            extern "C" {
                fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
            }
            const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
            const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
            // SAFETY: mallopt only changes glibc's allocation thresholds.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 512 << 20);
            }
        }
    });
}
