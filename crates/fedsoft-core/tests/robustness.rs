//! The upload decoder against damaged messages (`fedsoft_core::mutate`), resealed with a valid checksum so
//! the damage reaches the parser: never a panic, only well-formed results, and no allocation beyond what the
//! expected shapes justify however large a count or length field claims to be.
//! `FEDSOFT_FUZZ_CASES=1000000 cargo test -p fedsoft-core --release --test robustness` is the long run.

use fedsoft_core::budget::DropRatio;
use fedsoft_core::encoding::{decode, encode};
use fedsoft_core::lora::{LoraState, ModuleShape};
use fedsoft_core::mutate::{cases, damaged};
use fedsoft_core::sparsify::{MethodKind, SelectInput, SparseUpdate, SparsifierOptions, UploadKey, build};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation since the last reset (this test binary's allocator).
struct Largest;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

fn message(kind: MethodKind, rho: f64, seed: u64) -> (Vec<ModuleShape>, Vec<u8>) {
    let sh = vec![ModuleShape::new("q", 24, 16, 4), ModuleShape::new("v", 16, 24, 4), ModuleShape::new("o", 3, 2, 9)];
    let u = LoraState::random(&sh, seed, 1.0).unwrap();
    let input = SelectInput {
        update: &u,
        local: &u,
        key: UploadKey { rho: DropRatio::new(rho).unwrap(), seed, round: 3, client: 4 },
    };
    let sel = build(kind, SparsifierOptions::default()).select(&input).unwrap();
    let bytes = encode(3, 4, &sh, &SparseUpdate::gather(&u, &sel).unwrap()).unwrap();
    (sh, bytes)
}

#[test]
fn damaged_uploads_never_panic_or_over_allocate() {
    // Messages in every layout the encoder picks: dense, sparse index lists, bitmaps, rank masks.
    let valid: Vec<(Vec<ModuleShape>, Vec<u8>)> = [
        (MethodKind::Ilora, 0.0),
        (MethodKind::Soft, 0.9),
        (MethodKind::Flasc, 0.5),
        (MethodKind::Fedlodrop, 0.5),
        (MethodKind::Hetlora, 0.7),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (k, rho))| message(k, rho, i as u64))
    .collect();
    let numel: usize = valid[0].0.iter().map(ModuleShape::numel).sum();
    let mut reasons = std::collections::BTreeSet::new();
    for case in 0..cases(3000) {
        let (sh, bytes) = &valid[(case % valid.len() as u64) as usize];
        let mut body = damaged(&bytes[..bytes.len() - 4], case);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        LARGEST.store(0, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| decode(&body, sh));
        let largest = LARGEST.load(Ordering::Relaxed);
        let Ok(result) = result else { panic!("case {case}: the decoder panicked") };
        // Indices and values of every module at most: a length field cannot make it reserve more.
        assert!(largest <= 16 * numel + 4 * body.len() + 4096, "case {case}: allocated {largest} bytes");
        if let Err(e) = &result {
            reasons.insert(e.to_string().split(':').take(2).collect::<String>());
        }
        if let Ok(up) = result {
            for (m, s) in up.update.modules.iter().zip(sh) {
                assert!(m.indices.windows(2).all(|w| w[0] < w[1]), "case {case}");
                assert!(m.indices.iter().all(|&i| (i as usize) < s.numel()), "case {case}");
                assert!(m.values.iter().all(|v| v.is_finite()), "case {case}");
            }
        }
    }
    // The damage reached many different checks of the parser, not only the first one.
    assert!(reasons.len() >= 5, "{reasons:?}");
}
