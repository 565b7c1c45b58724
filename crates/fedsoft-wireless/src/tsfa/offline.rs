//! The offline stage (docs/algorithms.md §7): for each candidate rank, the smallest sparsification ratio that meets the
//! latency budget at the average channel (Lemma 2), the bound at that point, and the best rank.

use super::bound::BoundConfig;
use crate::error::{WirelessError, positive};
use crate::rate::spectral_efficiency;
use serde::{Deserialize, Serialize};

/// The uplink as the offline stage sees it: the average channel, not this round's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub bandwidth_hz: f64,
    /// `q`, bits per transmitted value.
    pub value_bits: f64,
    /// `sum_l (d_l + k_l)`: LoRA entries per unit of rank, so `M_r = r * params_per_rank`.
    pub params_per_rank: usize,
    /// `Gamma_bar`: the expected `sum_{i in S} 1 / log2(1 + gamma_i)` over a scheduled set (D15).
    pub gamma_bar: f64,
    /// `tau_bar`: the long-term average latency budget, seconds.
    pub tau_bar: f64,
    /// Count `ceil(log2 M_r)` index bits per value, as the online ledger does (`wireless.index_overhead`).
    #[serde(default)]
    pub index_overhead: bool,
}

impl Link {
    /// `Gamma_bar = (K / N) sum_i 1 / log2(1 + gamma_bar_i)` for per-client average SNRs.
    pub fn expected_gamma(mean_snr: &[f64], per_round: usize) -> f64 {
        let n = mean_snr.len() as f64;
        per_round as f64 / n * mean_snr.iter().map(|&g| 1.0 / spectral_efficiency(g)).sum::<f64>()
    }
    /// `M_r`.
    pub fn params(&self, r: usize) -> f64 {
        (r * self.params_per_rank) as f64
    }
    /// Bits per sent value at rank `r`: `q`, plus the index of the value among the `M_r` entries when index
    /// overhead is counted (the same count as the online ledger's `BitModel::paper_bits`).
    pub fn bits_per_value(&self, r: usize) -> f64 {
        let index = if self.index_overhead { self.params(r).max(2.0).log2().ceil() } else { 0.0 };
        self.value_bits + index
    }
    /// Delay of a dense rank-`r` upload at the average channel with the configured split:
    /// `q M_r Gamma_bar / B`.
    pub fn dense_delay(&self, r: usize) -> f64 {
        self.bits_per_value(r) * self.params(r) * self.gamma_bar / self.bandwidth_hz
    }
    /// Delay at rank `r` and ratio `rho`.
    pub fn delay(&self, r: usize, rho: f64) -> f64 {
        self.dense_delay(r) * (1.0 - rho)
    }
    /// Lemma 2 before clipping: `1 - tau_bar B / (q M_r Gamma_bar)`.
    pub fn rho_unclipped(&self, r: usize) -> f64 {
        1.0 - self.tau_bar / self.dense_delay(r)
    }
    pub fn validate(&self) -> Result<(), WirelessError> {
        positive("wireless.bandwidth_hz", self.bandwidth_hz)?;
        positive("wireless.value_bits", self.value_bits)?;
        positive("tsfa.latency_budget_s", self.tau_bar)?;
        positive("wireless (average 1/log2(1+snr))", self.gamma_bar)?;
        if self.params_per_rank == 0 {
            return Err(WirelessError::invalid("lora", "no adapted modules: nothing to send"));
        }
        Ok(())
    }
}

/// One line of the offline table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflineRow {
    pub rank: usize,
    /// `M_r`, LoRA entries at this rank.
    pub params: usize,
    pub rho_unclipped: f64,
    /// `rho*(r)`, clipped to `[rho_min, rho_max]`.
    pub rho: f64,
    /// False when even `rho_max` cannot meet the budget at this rank.
    pub feasible: bool,
    pub rank_term: f64,
    pub cov_term: f64,
    pub sparsity_term: f64,
    /// `J(r, rho*(r))`.
    pub objective: f64,
    /// Delay at `rho*(r)` on the average channel.
    pub delay_s: f64,
}

/// The offline table and its choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflinePlan {
    pub rows: Vec<OfflineRow>,
    pub best_rank: usize,
    pub best_rho: f64,
}

/// Evaluates every candidate rank and picks the one with the smallest bound (ties: the smaller rank).
pub fn plan_offline(
    bound: &BoundConfig,
    link: &Link,
    candidates: &[usize],
    rho_min: f64,
    rho_max: f64,
) -> Result<OfflinePlan, WirelessError> {
    bound.validate("tsfa.bound")?;
    link.validate()?;
    check_rho_range(rho_min, rho_max)?;
    if candidates.is_empty() {
        return Err(WirelessError::invalid("tsfa.candidate_ranks", "is empty: give at least one rank"));
    }
    let mut ranks = candidates.to_vec();
    ranks.sort_unstable();
    ranks.dedup();
    if let Some(&bad) = ranks.iter().find(|&&r| r == 0 || r > bound.max_rank) {
        return Err(WirelessError::invalid(
            "tsfa.candidate_ranks",
            format!("rank {bad} is outside 1..={} (tsfa.bound.max_rank)", bound.max_rank),
        ));
    }
    let mut rows = Vec::with_capacity(ranks.len());
    let mut best: Option<(f64, usize, f64)> = None;
    for r in ranks {
        let raw = link.rho_unclipped(r);
        let feasible = raw <= rho_max;
        let rho = raw.clamp(rho_min, rho_max);
        let (rank_term, cov_term, sparsity_term) = bound.terms(r, rho);
        let objective = rank_term + cov_term + sparsity_term;
        if feasible && best.is_none_or(|(j, _, _)| objective < j) {
            best = Some((objective, r, rho));
        }
        rows.push(OfflineRow {
            rank: r,
            params: r * link.params_per_rank,
            rho_unclipped: raw,
            rho,
            feasible,
            rank_term,
            cov_term,
            sparsity_term,
            objective,
            delay_s: link.delay(r, rho),
        });
    }
    let (_, best_rank, best_rho) = best.ok_or_else(|| {
        WirelessError::invalid(
            "tsfa.latency_budget_s",
            format!("{} s cannot be met by any candidate rank even at rho_max = {rho_max}", link.tau_bar),
        )
    })?;
    Ok(OfflinePlan { rows, best_rank, best_rho })
}

pub(crate) fn check_rho_range(rho_min: f64, rho_max: f64) -> Result<(), WirelessError> {
    if !(0.0..1.0).contains(&rho_min) {
        return Err(WirelessError::invalid("tsfa.rho_min", format!("must be in [0, 1), got {rho_min}")));
    }
    if !(0.0..1.0).contains(&rho_max) {
        return Err(WirelessError::invalid("tsfa.rho_max", format!("must be in [0, 1), got {rho_max}")));
    }
    if rho_min >= rho_max {
        return Err(WirelessError::invalid(
            "tsfa.rho_min",
            format!("must be below tsfa.rho_max = {rho_max}, got {rho_min}"),
        ));
    }
    Ok(())
}
