//! Partitioners: every sample exactly once; shards and Dirichlet skew as their parameters say.

use fedsoft_core::partition::{Partition, Scheme, partition};
use proptest::prelude::*;

fn balanced_labels(classes: usize, per_class: usize) -> Vec<u32> {
    (0..classes * per_class).map(|i| (i % classes) as u32).collect()
}

fn assert_exact_cover(p: &Partition, n: usize) {
    let mut seen = vec![0u8; n];
    for c in &p.clients {
        for &i in c {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 1), "every sample must be assigned exactly once");
}

/// Mean over clients of the largest class share: 1/classes for perfect balance, 1 for one class each.
fn mean_max_share(p: &Partition) -> f64 {
    p.histograms.iter().map(|h| *h.iter().max().unwrap() as f64 / h.iter().sum::<usize>() as f64).sum::<f64>()
        / p.histograms.len() as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_scheme_is_an_exact_cover(seed in 0u64..1000, clients in 1usize..40, per_class in 5usize..40, scheme_id in 0usize..3) {
        let labels = balanced_labels(10, per_class);
        prop_assume!(clients * 2 <= labels.len());
        let scheme = match scheme_id {
            0 => Scheme::Iid,
            1 => Scheme::Shards { shards_per_client: 2 },
            _ => Scheme::Dirichlet { alpha: 0.5, min_size: 1 },
        };
        let p = partition(&labels, 10, clients, scheme, seed).unwrap();
        prop_assert_eq!(p.clients.len(), clients);
        assert_exact_cover(&p, labels.len());
        for (c, h) in p.clients.iter().zip(&p.histograms) {
            prop_assert_eq!(c.len(), h.iter().sum::<usize>());
        }
        if scheme_id == 0 {
            let sizes: Vec<usize> = p.clients.iter().map(Vec::len).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }
}

#[test]
fn shards_bound_the_labels_per_client_and_more_shards_mean_more_iid() {
    let labels = balanced_labels(10, 500); // 5000 samples, 100 clients x 50
    let two = partition(&labels, 10, 100, Scheme::Shards { shards_per_client: 2 }, 1).unwrap();
    assert_exact_cover(&two, labels.len());
    for h in &two.histograms {
        assert!(h.iter().filter(|&&c| c > 0).count() <= 2, "{h:?}");
        assert_eq!(h.iter().sum::<usize>(), 50);
    }
    let shares: Vec<f64> = [2, 5, 10]
        .iter()
        .map(|&m| mean_max_share(&partition(&labels, 10, 100, Scheme::Shards { shards_per_client: m }, 1).unwrap()))
        .collect();
    assert!(shares[0] > shares[1] && shares[1] > shares[2], "{shares:?}");
    let iid = mean_max_share(&partition(&labels, 10, 100, Scheme::Iid, 1).unwrap());
    assert!(iid < shares[1], "iid {iid} vs {shares:?}");
}

#[test]
fn dirichlet_alpha_controls_skew_and_min_size_holds() {
    let labels = balanced_labels(10, 600);
    let skewed = partition(&labels, 10, 50, Scheme::Dirichlet { alpha: 0.1, min_size: 10 }, 3).unwrap();
    let mild = partition(&labels, 10, 50, Scheme::Dirichlet { alpha: 100.0, min_size: 10 }, 3).unwrap();
    assert!(skewed.clients.iter().all(|c| c.len() >= 10));
    assert!(mean_max_share(&skewed) > 0.5, "{}", mean_max_share(&skewed));
    assert!(mean_max_share(&mild) < 0.2, "{}", mean_max_share(&mild));
}

#[test]
fn same_seed_same_partition() {
    let labels = balanced_labels(4, 50);
    for scheme in [Scheme::Iid, Scheme::Shards { shards_per_client: 3 }, Scheme::Dirichlet { alpha: 1.0, min_size: 2 }]
    {
        assert_eq!(partition(&labels, 4, 10, scheme, 5).unwrap(), partition(&labels, 4, 10, scheme, 5).unwrap());
        assert_ne!(
            partition(&labels, 4, 10, scheme, 5).unwrap().clients,
            partition(&labels, 4, 10, scheme, 6).unwrap().clients
        );
    }
}

#[test]
fn bad_parameters_are_named() {
    let labels = balanced_labels(2, 10);
    let e = |s, n| partition(&labels, 2, n, s, 0).unwrap_err().to_string();
    assert!(e(Scheme::Iid, 21).contains("21 clients"));
    assert!(e(Scheme::Shards { shards_per_client: 0 }, 4).contains("shards_per_client"));
    assert!(e(Scheme::Dirichlet { alpha: -1.0, min_size: 1 }, 4).contains("partition.alpha"));
    assert!(e(Scheme::Dirichlet { alpha: 1.0, min_size: 6 }, 4).contains("partition.min_size"));
    assert!(partition(&[0, 1, 5], 2, 1, Scheme::Iid, 0).unwrap_err().to_string().contains("label 5"));
}
