//! Federated data partitioners: which sample indices each client holds.

use crate::error::CoreError;
use crate::rng::{Purpose, stream};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

/// How samples are spread over clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheme {
    /// Uniformly at random, client sizes differing by at most one (docs/algorithms.md D19).
    Iid,
    /// Sort by label, cut into `clients * shards_per_client` equal shards, deal them at random (docs/algorithms.md D20: more
    /// shards per client means closer to IID).
    Shards { shards_per_client: usize },
    /// Per class, proportions over clients drawn from `Dirichlet(alpha)`; redrawn until every client holds at
    /// least `min_size` samples. Small `alpha` means strong label skew.
    Dirichlet { alpha: f64, min_size: usize },
}

impl Scheme {
    /// Checks the scheme's own parameters against `num_clients` clients sharing `samples` samples (pass
    /// `usize::MAX` when the count is not known yet, as when a config is read before its data): the one home
    /// of these checks, for the config's validation before anything loads and for [`partition`] itself.
    pub fn check(&self, num_clients: usize, samples: usize) -> Result<(), CoreError> {
        match *self {
            Scheme::Iid => Ok(()),
            Scheme::Shards { shards_per_client } => {
                if shards_per_client == 0 {
                    return Err(CoreError::invalid("partition.shards_per_client", "must be at least 1"));
                }
                let shards = num_clients.saturating_mul(shards_per_client);
                if shards > samples {
                    return Err(CoreError::invalid(
                        "partition.shards_per_client",
                        format!("{shards} shards for {samples} samples: shards would be empty"),
                    ));
                }
                Ok(())
            }
            Scheme::Dirichlet { alpha, min_size } => {
                if !(alpha.is_finite() && alpha > 0.0) {
                    return Err(CoreError::invalid(
                        "partition.alpha",
                        format!("must be a positive number, got {alpha}"),
                    ));
                }
                if min_size.saturating_mul(num_clients) > samples {
                    return Err(CoreError::invalid(
                        "partition.min_size",
                        format!("{num_clients} clients x {min_size} samples exceeds the {samples} samples available"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Per-client sample indices and label histograms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub clients: Vec<Vec<usize>>,
    pub histograms: Vec<Vec<usize>>,
}

/// Partitions samples with the given labels (`< num_classes`) over `num_clients` clients.
pub fn partition(
    labels: &[u32],
    num_classes: usize,
    num_clients: usize,
    scheme: Scheme,
    seed: u64,
) -> Result<Partition, CoreError> {
    if num_clients == 0 {
        return Err(CoreError::invalid("clients", "need at least one client"));
    }
    if labels.len() < num_clients {
        return Err(CoreError::invalid(
            "clients",
            format!("{num_clients} clients but only {} samples: every client needs data", labels.len()),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(CoreError::invalid("labels", format!("label {bad} is not below num_classes = {num_classes}")));
    }
    scheme.check(num_clients, labels.len())?;
    let mut rng = stream(seed, Purpose::Partition, &[]);
    let clients = match scheme {
        Scheme::Iid => {
            let mut idx: Vec<usize> = (0..labels.len()).collect();
            idx.shuffle(&mut rng);
            deal_contiguous(&idx, num_clients)
        }
        Scheme::Shards { shards_per_client } => {
            let shards = num_clients * shards_per_client;
            // Shuffle first so that samples of one label are in random order, then sort by label (stable).
            let mut idx: Vec<usize> = (0..labels.len()).collect();
            idx.shuffle(&mut rng);
            idx.sort_by_key(|&i| labels[i]);
            let pieces = deal_contiguous(&idx, shards);
            let mut order: Vec<usize> = (0..shards).collect();
            order.shuffle(&mut rng);
            order
                .chunks(shards_per_client)
                .map(|ids| {
                    let mut v: Vec<usize> = ids.iter().flat_map(|&s| pieces[s].iter().copied()).collect();
                    v.sort_unstable();
                    v
                })
                .collect()
        }
        Scheme::Dirichlet { alpha, min_size } => {
            dirichlet(labels, num_classes, num_clients, alpha, min_size, &mut rng)?
        }
    };
    let histograms = clients
        .iter()
        .map(|c| {
            let mut h = vec![0usize; num_classes];
            for &i in c {
                h[labels[i] as usize] += 1;
            }
            h
        })
        .collect();
    Ok(Partition { clients, histograms })
}

/// Splits `idx` into `parts` contiguous pieces whose sizes differ by at most one.
fn deal_contiguous(idx: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let base = idx.len() / parts;
    let extra = idx.len() % parts;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = base + usize::from(p < extra);
        out.push(idx[start..start + len].to_vec());
        start += len;
    }
    out
}

fn dirichlet(
    labels: &[u32],
    num_classes: usize,
    num_clients: usize,
    alpha: f64,
    min_size: usize,
    rng: &mut rand::rngs::ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, CoreError> {
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| CoreError::invalid("partition.alpha", e.to_string()))?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    const ATTEMPTS: usize = 1000;
    for _ in 0..ATTEMPTS {
        let mut clients: Vec<Vec<usize>> = vec![Vec::new(); num_clients];
        for members in &by_class {
            let mut members = members.clone();
            members.shuffle(rng);
            let mut w: Vec<f64> = (0..num_clients).map(|_| gamma.sample(rng)).collect();
            let total: f64 = w.iter().sum();
            if total <= 0.0 || !total.is_finite() {
                // Every draw underflowed (tiny alpha): give the class to one client.
                w.iter_mut().for_each(|x| *x = 0.0);
                w[rng.random_range(0..num_clients)] = 1.0;
            }
            let total: f64 = w.iter().sum();
            let mut cum = 0.0;
            let mut start = 0usize;
            for (c, wc) in w.iter().enumerate() {
                cum += wc / total;
                let end = if c + 1 == num_clients {
                    members.len()
                } else {
                    ((cum * members.len() as f64).round() as usize).min(members.len())
                };
                let end = end.max(start);
                clients[c].extend_from_slice(&members[start..end]);
                start = end;
            }
        }
        if clients.iter().all(|c| c.len() >= min_size.max(1)) {
            for c in clients.iter_mut() {
                c.sort_unstable();
            }
            return Ok(clients);
        }
    }
    Err(CoreError::invalid(
        "partition.min_size",
        format!(
            "no Dirichlet(alpha={alpha}) draw in {ATTEMPTS} gave every client at least {min_size} samples; raise alpha or lower min_size"
        ),
    ))
}
