//! The upload wire format: exact round trips, the cheapest layout, and rejection of every corruption.

use fedsoft_core::budget::DropRatio;
use fedsoft_core::encoding::{decode, encode, encoded_len};
use fedsoft_core::lora::{LoraState, ModuleShape};
use fedsoft_core::sparsify::{
    MethodKind, SelectInput, SparseModule, SparseUpdate, SparsifierOptions, UploadKey, build,
};
use proptest::prelude::*;

fn shapes() -> Vec<ModuleShape> {
    vec![ModuleShape::new("q", 24, 16, 4), ModuleShape::new("v", 16, 24, 4), ModuleShape::new("o", 3, 2, 9)]
}

fn upload(kind: MethodKind, rho: f64, seed: u64) -> (Vec<ModuleShape>, SparseUpdate) {
    let sh = shapes();
    let u = LoraState::random(&sh, seed, 1.0).unwrap();
    let input = SelectInput {
        update: &u,
        local: &u,
        key: UploadKey { rho: DropRatio::new(rho).unwrap(), seed, round: 3, client: 4 },
    };
    let sel = build(kind, SparsifierOptions::default()).select(&input).unwrap();
    (sh, SparseUpdate::gather(&u, &sel).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn roundtrip_is_exact(seed in 0u64..10_000, rho in 0.0f64..0.999, kind in prop::sample::select(MethodKind::ALL.to_vec())) {
        let (sh, up) = upload(kind, rho, seed);
        let bytes = encode(7, 42, &sh, &up).unwrap();
        prop_assert_eq!(bytes.len(), encoded_len(&sh, &up).unwrap());
        let back = decode(&bytes, &sh).unwrap();
        prop_assert_eq!(back.round, 7);
        prop_assert_eq!(back.client, 42);
        prop_assert_eq!(back.update, up);
    }

    /// Any single flipped bit, and any truncation, is rejected with an error (never a panic).
    #[test]
    fn corruption_is_rejected(seed in 0u64..10_000, rho in 0.0f64..0.99, pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
        let (sh, up) = upload(MethodKind::Soft, rho, seed);
        let bytes = encode(1, 2, &sh, &up).unwrap();
        let mut flipped = bytes.clone();
        flipped[pos.index(bytes.len())] ^= 1 << bit;
        prop_assert!(decode(&flipped, &sh).is_err());
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode(truncated, &sh).is_err());
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &shapes());
    }

    /// A message with a valid checksum but hostile contents is still rejected.
    #[test]
    fn resealed_corruption_is_rejected_or_decodes_consistently(seed in 0u64..1000, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (sh, up) = upload(MethodKind::Flasc, 0.8, seed);
        let mut bytes = encode(1, 2, &sh, &up).unwrap();
        let n = bytes.len() - 4;
        let p = pos.index(n);
        bytes[p] = byte;
        let crc = crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(dec) = decode(&bytes, &sh) {
            // Whatever decodes must be a well-formed upload for these shapes.
            for (m, s) in dec.update.modules.iter().zip(&sh) {
                prop_assert!(m.indices.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(m.indices.iter().all(|&i| (i as usize) < s.numel()));
                prop_assert!(m.values.iter().all(|v| v.is_finite()));
            }
        }
    }
}

fn crc32(b: &[u8]) -> u32 {
    // Same polynomial as the format (IEEE), computed bitwise so the test does not trust the encoder's code.
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn cheapest_layout_is_chosen() {
    let sh = vec![ModuleShape::new("m", 64, 64, 8)];
    let numel = sh[0].numel();
    let header = 20 + 4;
    let module_header = 17;
    // Whole rank components: one mask byte.
    let (_, fedlodrop) = {
        let u = LoraState::random(&sh, 1, 1.0).unwrap();
        let input = SelectInput {
            update: &u,
            local: &u,
            key: UploadKey { rho: DropRatio::new(0.75).unwrap(), seed: 1, round: 0, client: 0 },
        };
        let sel = build(MethodKind::Fedlodrop, SparsifierOptions::default()).select(&input).unwrap();
        (sel.clone(), SparseUpdate::gather(&u, &sel).unwrap())
    };
    assert_eq!(encoded_len(&sh, &fedlodrop).unwrap(), header + module_header + 1 + 4 * fedlodrop.nnz());
    // Half the entries scattered: a bitmap (numel / 8 bytes) beats gap varints.
    let every_other = SparseUpdate {
        modules: vec![SparseModule { indices: (0..numel as u32).step_by(2).collect(), values: vec![1.0; numel / 2] }],
    };
    assert_eq!(encoded_len(&sh, &every_other).unwrap(), header + module_header + numel / 8 + 4 * (numel / 2));
    // A few entries: one-byte gaps.
    let few = SparseUpdate { modules: vec![SparseModule { indices: vec![3, 9, 100], values: vec![1.0, 2.0, 3.0] }] };
    assert_eq!(encoded_len(&sh, &few).unwrap(), header + module_header + 3 + 12);
    // Everything: no positions at all.
    let dense =
        SparseUpdate { modules: vec![SparseModule { indices: (0..numel as u32).collect(), values: vec![0.5; numel] }] };
    assert_eq!(encoded_len(&sh, &dense).unwrap(), header + module_header + 4 * numel);
    for up in [&fedlodrop, &every_other, &few, &dense] {
        assert_eq!(&decode(&encode(0, 0, &sh, up).unwrap(), &sh).unwrap().update, up);
    }
}

#[test]
fn wrong_shapes_and_bad_values_are_named() {
    let (sh, up) = upload(MethodKind::Soft, 0.5, 1);
    let bytes = encode(0, 0, &sh, &up).unwrap();
    let mut other = sh.clone();
    other[1].r = 5;
    let err = decode(&bytes, &other).unwrap_err().to_string();
    assert!(err.contains("module v") && err.contains("r=4"), "{err}");
    let err = decode(&bytes, &sh[..2]).unwrap_err().to_string();
    assert!(err.contains("3 modules, expected 2"), "{err}");

    let mut nan = up.clone();
    nan.modules[0].values[0] = f32::NAN;
    let err = decode(&encode(0, 0, &sh, &nan).unwrap(), &sh).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");

    let mut unsorted = up.clone();
    unsorted.modules[0].indices.swap(0, 1);
    assert!(encode(0, 0, &sh, &unsorted).unwrap_err().to_string().contains("strictly increasing"));

    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert!(decode(&bad_magic, &sh).unwrap_err().to_string().contains("checksum"));
}
