//! Damaged copies of valid inputs, for the robustness tests of every decoder and reader of untrusted bytes
//! (uploads, checkpoints, model files, data sets): flipped bits, length and count fields overwritten with
//! extremes, truncations, insertions, repeats and plain noise. Seeded, so a failing case can be replayed.

use crate::rng::{Purpose, stream};
use rand::RngExt;

/// How many damaged copies each robustness test tries: `FEDSOFT_FUZZ_CASES`, else `default` (a few
/// thousand in the test suite; set it to 1000000 or more for a long run).
pub fn cases(default: u64) -> u64 {
    std::env::var("FEDSOFT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Case `case` of the damaged copies of `valid`.
pub fn damaged(valid: &[u8], case: u64) -> Vec<u8> {
    let mut rng = stream(0x6675_7a7a, Purpose::Init, &[u64::MAX - 7, case]);
    let mut out = valid.to_vec();
    let rounds = 1 + rng.random_range(0..3u32);
    for _ in 0..rounds {
        let n = out.len();
        match rng.random_range(0..7u32) {
            0 if n > 0 => {
                for _ in 0..rng.random_range(1..9u32) {
                    let i = rng.random_range(0..n);
                    out[i] ^= 1 << rng.random_range(0..8u32);
                }
            }
            1 if n >= 4 => {
                let extremes = [0u32, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0x0100_0000, 0xffff];
                let v = extremes[rng.random_range(0..extremes.len())];
                let i = rng.random_range(0..=n - 4);
                out[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            2 if n > 0 => out.truncate(rng.random_range(0..n)),
            3 => {
                let i = rng.random_range(0..=n);
                let extra: Vec<u8> = (0..rng.random_range(1..64u32)).map(|_| rng.random()).collect();
                out.splice(i..i, extra);
            }
            4 if n > 0 => {
                let i = rng.random_range(0..n);
                let len = rng.random_range(1..=(n - i).min(256));
                let chunk = out[i..i + len].to_vec();
                out.splice(i..i, chunk);
            }
            5 if n > 0 => {
                let i = rng.random_range(0..n);
                out[i] = [0u8, 0xff, 0x80, 0x7f][rng.random_range(0..4)];
            }
            _ => {
                let len = rng.random_range(0..=2 * n.max(16));
                out = (0..len).map(|_| rng.random()).collect();
            }
        }
    }
    out
}
