//! Subnormal floats flushed to zero on every thread that trains or evaluates.
//!
//! A text task's step makes subnormal intermediates (values below 2^-126 in magnitude), and on Intel cores an
//! operation on one takes a microcode assist of a hundred cycles or more. A MiniLM round of
//! `configs/cpu-fig7-minilm-brown.toml` (10 clients x 6 steps) trained in 71.5 s on a 2-core Xeon @ 2.80GHz,
//! and in 7.1 s with x86's FTZ (results flushed to zero) and DAZ (inputs read as zero) bits set, with every
//! record and the exported adapter bit for bit the same (and `scripts/behaviour-digest` identical for all 21
//! method x controller pairs of the default run): those values never reach a result's bits.
//!
//! The bits live in each thread's MXCSR, so three kinds of thread get them: the process's own threads
//! ([`flush_on_this_thread`], which threads started later inherit), the rayon pools' workers
//! ([`flush_on_this_thread`] as their start handler, and [`init_global_pool`] for rayon's global pool), and a
//! caller's thread while it trains or evaluates ([`Scoped`], which puts the caller's setting back, so a
//! Python process's own arithmetic is left as it was). Elsewhere than x86-64 these are no-ops.

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

#[cfg(target_arch = "x86_64")]
fn read() -> u32 {
    let mut csr = 0u32;
    // SAFETY: stores the 32-bit MXCSR into `csr`, which outlives the instruction.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write(csr: u32) {
    // SAFETY: loads a value read from MXCSR with only the FTZ and DAZ bits changed, both valid on every x86-64
    // CPU (DAZ since the Pentium 4), so no reserved bit is set.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags)) };
}

/// Sets FTZ and DAZ on the calling thread for good (and so on the threads it starts afterwards).
pub fn flush_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    write(read() | FTZ_DAZ);
}

/// Makes rayon's global pool (which burn's CPU operations use outside any other pool) start its threads
/// with subnormals flushed. Call before anything runs on that pool; a no-op if it already exists.
pub fn init_global_pool() {
    let _ = rayon::ThreadPoolBuilder::new().start_handler(|_| flush_on_this_thread()).build_global();
}

/// FTZ and DAZ on the calling thread until dropped, then the thread's own setting again.
#[must_use = "the setting lasts only as long as the guard"]
pub struct Scoped {
    #[cfg(target_arch = "x86_64")]
    previous: u32,
}

impl Scoped {
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let previous = read();
            write(previous | FTZ_DAZ);
            Scoped { previous }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Scoped {}
    }
}

impl Default for Scoped {
    fn default() -> Self {
        Scoped::new()
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest normal float halved: a subnormal, unless it is flushed.
    fn half_of_smallest_normal() -> f32 {
        std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_guard_flushes_subnormals_and_then_restores_the_threads_setting() {
        std::thread::spawn(|| {
            assert!(half_of_smallest_normal() > 0.0, "a fresh thread keeps subnormals (IEEE default)");
            {
                let _flush = Scoped::new();
                assert_eq!(half_of_smallest_normal(), 0.0);
            }
            assert!(half_of_smallest_normal() > 0.0, "the thread's own setting is back");
            flush_on_this_thread();
            assert_eq!(half_of_smallest_normal(), 0.0);
            // A thread started from a flushing thread flushes too.
            assert_eq!(std::thread::spawn(half_of_smallest_normal).join().unwrap(), 0.0);
        })
        .join()
        .unwrap();
    }
}
