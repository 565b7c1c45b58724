//! Error feedback identities and aggregation (docs/algorithms.md §2.3, §2.4, §4.4, §4.5).

use fedsoft_core::aggregate::{apply_deltas, average_dense, average_sparse_models, covariance_norm, weights};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::feedback::{Compression, FeedbackMode, compensate, residual};
use fedsoft_core::lora::{LoraState, ModuleShape};
use fedsoft_core::sparsify::{MethodKind, SelectInput, SparseUpdate, SparsifierOptions, UploadKey, build};
use proptest::prelude::*;

fn shapes() -> Vec<ModuleShape> {
    vec![ModuleShape::new("q", 9, 7, 3), ModuleShape::new("v", 5, 11, 3)]
}

fn sparsify(kind: MethodKind, u: &LoraState, local: &LoraState, rho: f64, client: u64) -> SparseUpdate {
    let input = SelectInput {
        update: u,
        local,
        key: UploadKey { rho: DropRatio::new(rho).unwrap(), seed: 1, round: 0, client },
    };
    let sel = build(kind, SparsifierOptions::default()).select(&input).unwrap();
    SparseUpdate::gather(u, &sel).unwrap()
}

/// What error feedback is for: the same update sent round after round through a top-k or random mask at
/// rho = 0.9. With feedback the entries a round drops are carried over, so the time-average of what was sent
/// converges to the update; without it, top-k keeps sending the same largest entries and the rest never
/// arrive, and a random mask delivers only the kept tenth on average.
#[test]
fn error_feedback_delivers_the_dropped_mass_over_rounds() {
    let sh = shapes();
    let update = LoraState::random(&sh, 3, 1.0).unwrap();
    let zero = LoraState::zeros(&sh).unwrap();
    let rounds = 200;
    let relative_error = |kind: MethodKind, feedback: bool| -> f64 {
        let sparsifier = build(kind, SparsifierOptions::default());
        let compression =
            Compression { mode: FeedbackMode::Delta, error_feedback: feedback, sparsifier: sparsifier.as_ref() };
        let mut memory: Option<LoraState> = None;
        let mut total = LoraState::zeros(&sh).unwrap();
        for round in 0..rounds {
            let key = UploadKey { rho: DropRatio::new(0.9).unwrap(), seed: 1, round, client: 0 };
            let out = compression.compress(&update, &zero, memory.as_ref(), key).unwrap();
            assert_eq!(out.memory.is_some(), feedback, "a memory is kept exactly when error feedback is on");
            // What is sent plus what is kept is the compensated update, bit for bit.
            let u = compensate(FeedbackMode::Delta, &update, &zero, memory.as_ref()).unwrap();
            if let Some(kept) = &out.memory {
                let mut whole = kept.clone();
                whole.add_scaled(&out.sent.to_dense(&u).unwrap(), 1.0).unwrap();
                assert_eq!(whole, u);
            }
            total.add_scaled(&out.sent.to_dense(&u).unwrap(), 1.0 / rounds as f32).unwrap();
            memory = out.memory;
        }
        let norm =
            |x: &LoraState| x.modules.iter().flat_map(|m| m.iter()).map(|v| (v as f64).powi(2)).sum::<f64>().sqrt();
        norm(&total.sub(&update).unwrap()) / norm(&update)
    };
    for kind in [MethodKind::Flasc, MethodKind::Soft, MethodKind::Rlora] {
        let with = relative_error(kind, true);
        let without = relative_error(kind, false);
        assert!(with < 0.1, "{kind}: with feedback the average misses by {with}");
        assert!(without > 0.5, "{kind}: without feedback the average misses by only {without}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// sent + E' == E + update, bit for bit, for every method, ratio and mode.
    #[test]
    fn error_feedback_conserves_the_update(seed in 0u64..10_000, rho in 0.0f64..0.99, model_mode in any::<bool>()) {
        let sh = shapes();
        let global = LoraState::random(&sh, seed, 1.0).unwrap();
        let local = LoraState::random(&sh, seed + 1, 1.0).unwrap();
        let memory = LoraState::random(&sh, seed + 2, 0.1).unwrap();
        let mode = if model_mode { FeedbackMode::Model } else { FeedbackMode::Delta };
        for kind in MethodKind::ALL {
            let u = compensate(mode, &local, &global, Some(&memory)).unwrap();
            let sent = sparsify(kind, &u, &local, rho, 0);
            let new_memory = residual(&u, &sent).unwrap();
            let mut reassembled = sent.to_dense(&u).unwrap();
            reassembled.add_scaled(&new_memory, 1.0).unwrap();
            // U itself is "old memory + update" as the client computes it.
            let mut expected = match mode {
                FeedbackMode::Delta => local.sub(&global).unwrap(),
                FeedbackMode::Model => local.clone(),
            };
            expected.add_scaled(&memory, 1.0).unwrap();
            prop_assert_eq!(&reassembled, &expected);
            // The memory is zero exactly where something was sent.
            for (m, sm) in sent.modules.iter().enumerate() {
                for &i in &sm.indices {
                    prop_assert_eq!(new_memory.modules[m].get(i as usize), 0.0);
                }
            }
        }
    }

    /// With rho = 0 every method sends everything, and delta aggregation is dense FedAvg (Eq. 5).
    #[test]
    fn rho_zero_is_dense_fedavg(seed in 0u64..10_000, sizes in prop::collection::vec(1usize..500, 1..6)) {
        let sh = shapes();
        let global = LoraState::random(&sh, seed, 1.0).unwrap();
        let locals: Vec<LoraState> = (0..sizes.len()).map(|i| LoraState::random(&sh, seed + 10 + i as u64, 1.0).unwrap()).collect();
        let w = weights(&sizes).unwrap();
        let fedavg = average_dense(&locals.iter().collect::<Vec<_>>(), &w).unwrap();
        for kind in MethodKind::ALL {
            let uploads: Vec<SparseUpdate> = locals
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let u = compensate(FeedbackMode::Delta, l, &global, None).unwrap();
                    sparsify(kind, &u, l, 0.0, i as u64)
                })
                .collect();
            let mut g = global.clone();
            apply_deltas(&mut g, &uploads.iter().collect::<Vec<_>>(), &w).unwrap();
            for (a, b) in g.modules.iter().zip(&fedavg.modules) {
                for (x, y) in a.iter().zip(b.iter()) {
                    prop_assert!((x - y).abs() <= 1e-5, "{} {} vs {}", kind, x, y);
                }
            }
            // Model mode at rho = 0 is the same average.
            let models: Vec<SparseUpdate> = locals.iter().enumerate().map(|(i, l)| sparsify(kind, l, l, 0.0, i as u64)).collect();
            let m = average_sparse_models(&global, &models.iter().collect::<Vec<_>>(), &w).unwrap();
            prop_assert_eq!(&m, &fedavg);
        }
    }

    /// The Gram-matrix covariance equals the direct d x k formula.
    #[test]
    fn covariance_matches_direct_formula(seed in 0u64..10_000, n in 1usize..6) {
        let sh = shapes();
        let states: Vec<LoraState> = (0..n).map(|i| LoraState::random(&sh, seed * 7 + i as u64, 1.0).unwrap()).collect();
        let sizes: Vec<usize> = (0..n).map(|i| 10 + 3 * i).collect();
        let w = weights(&sizes).unwrap();
        let fast = covariance_norm(&states.iter().collect::<Vec<_>>(), &w).unwrap();
        let mut sq = 0.0f64;
        for (m, s) in sh.iter().enumerate() {
            let prod = |st: &LoraState| -> Vec<f64> {
                let f = &st.modules[m];
                let mut p = vec![0.0; s.d * s.k];
                for i in 0..s.d { for c in 0..s.k { for j in 0..s.r {
                    p[i * s.k + c] += f.b[i * s.r + j] as f64 * f.a[j * s.k + c] as f64;
                }}}
                p
            };
            let mut mean_of_products = vec![0.0; s.d * s.k];
            for (st, wi) in states.iter().zip(&w) {
                for (x, y) in mean_of_products.iter_mut().zip(prod(st)) { *x += wi * y; }
            }
            let mut bbar = LoraState::zeros(&sh).unwrap();
            for (st, wi) in states.iter().zip(&w) {
                for (x, y) in bbar.modules[m].b.iter_mut().zip(&st.modules[m].b) { *x += (*wi as f32) * y; }
                for (x, y) in bbar.modules[m].a.iter_mut().zip(&st.modules[m].a) { *x += (*wi as f32) * y; }
            }
            let pbar = prod(&bbar);
            sq += mean_of_products.iter().zip(&pbar).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
        }
        let direct = sq.sqrt();
        prop_assert!((fast - direct).abs() <= 1e-4 * (1.0 + direct), "{} vs {}", fast, direct);
    }
}

#[test]
fn identical_clients_have_zero_covariance() {
    let sh = shapes();
    let s = LoraState::random(&sh, 4, 1.0).unwrap();
    let states = vec![&s, &s, &s];
    assert_eq!(covariance_norm(&states, &[0.2, 0.3, 0.5]).unwrap(), 0.0);
}

#[test]
fn aggregation_weights_follow_sample_counts() {
    assert_eq!(weights(&[100, 300]).unwrap(), vec![0.25, 0.75]);
    assert!(weights(&[0, 0]).is_err());
    let sh = shapes();
    let mut g = LoraState::zeros(&sh).unwrap();
    let mut u = SparseUpdate::default();
    for s in &sh {
        u.modules.push(fedsoft_core::sparsify::SparseModule { indices: vec![s.numel() as u32], values: vec![1.0] });
    }
    let err = apply_deltas(&mut g, &[&u], &[1.0]).unwrap_err().to_string();
    assert!(err.contains("beyond"), "{err}");
}
