//! How the C allocator treats the short-lived buffers of a training step.
//!
//! Every tensor operation allocates its output, so one local step allocates and frees thousands of
//! buffers of 0.1-3 MiB. glibc serves a request above its mmap threshold (128 KiB until a mapped block
//! is freed) with a fresh mapping, and hands any free heap top above 128 KiB back to the system; either
//! way the next buffer of that size is faulted in and zeroed page by page by the kernel. A profile of the
//! DINOv2 step showed that page-fault work at about a fifth of the step: raising both limits made the
//! step bench 1.28-1.32x faster at the same peak memory (DINOv2 112 px 0.472 s -> 0.357 s, MiniLM
//! 0.256 s -> 0.200 s, measured on their own; the default run's peak RSS is in
//! the README).

/// The largest block glibc still serves from its heaps instead of a private mapping (glibc's own ceiling
/// for this setting on 64-bit systems): larger than any activation of the shapes the experiments run.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// How much free memory a heap keeps at its top before returning it: a few steps' worth of activations.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 << 20;

/// Makes freed activation buffers reusable by the next operation instead of returning them to the system.
/// Call once, early in a process that trains (the CLI and the benchmarks do); harmless to call again. A
/// no-op where the C library is not glibc (their allocators keep freed blocks anyway, or are not tuned here).
pub fn reuse_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
