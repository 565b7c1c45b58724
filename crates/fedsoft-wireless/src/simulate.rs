//! The TSFA controller alone, without training: many rounds of sampling, fading and control, to check that the
//! long-term latency constraint holds and to show the effect of `V` (`fedsoft plan --simulate`).

use crate::bandwidth::{BandwidthRule, allocate, delays, min_max_physical};
use crate::channel::{Cell, ClientChannel};
use crate::control::{RatioController, RoundContext};
use crate::error::WirelessError;
use crate::rate::{RateModel, spectral_efficiency};
use fedsoft_core::schedule::sample_clients;
use serde::{Deserialize, Serialize};

/// Delay of a dense payload of `bits` per client on these channels with the configured split: `a_t`.
/// Every client's payload scales with `1 - rho` and every rule's shares are the same for equal payloads, so
/// the round delay at ratio `rho` is `a_t (1 - rho)` under both rate models and every rule: the delay the
/// controller plans with is the one the round takes.
pub fn dense_round_delay(
    model: RateModel,
    rule: BandwidthRule,
    bits: f64,
    snr: &[f64],
    bandwidth_hz: f64,
) -> Result<f64, WirelessError> {
    match (rule, model) {
        // Eq. (41) equalises the delays under the paper's model: each is the sum below.
        (BandwidthRule::MinMax | BandwidthRule::InverseLog, RateModel::Paper) => {
            Ok(bits * snr.iter().map(|&g| 1.0 / spectral_efficiency(g)).sum::<f64>() / bandwidth_hz)
        }
        (BandwidthRule::MinMax, RateModel::Physical) => {
            Ok(min_max_physical(&vec![bits; snr.len()], snr, bandwidth_hz)?.1)
        }
        _ => {
            let payloads = vec![bits; snr.len()];
            let shares = allocate(rule, model, &payloads, snr, bandwidth_hz)?;
            Ok(delays(model, &payloads, &shares, snr, bandwidth_hz).into_iter().fold(0.0, f64::max))
        }
    }
}

/// A population of clients on a cell, and how many are scheduled.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub cell: Cell,
    pub seed: u64,
    pub per_round: usize,
    pub bandwidth_hz: f64,
    pub rate_model: RateModel,
    pub bandwidth_rule: BandwidthRule,
    /// `q M_r` (plus index bits when they are counted): bits of a dense upload.
    pub dense_bits: f64,
}

/// What the server knows as a round starts, before any client trains: who is scheduled, their channels, and
/// `a_t`, the delay a dense upload would take on them (what the ratio controller plans with).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundStart {
    /// The scheduled clients, in the order the round handles them.
    pub clients: Vec<usize>,
    /// Their channels this round, in the same order.
    pub channels: Vec<ClientChannel>,
    pub a_t: f64,
}

impl Scenario {
    /// The start of `round` (the round of docs/algorithms.md §9: schedule, then channels, then `a_t`): one function for the engine's
    /// round driver, the controller-only simulation and the Python strategy, so they cannot drift apart.
    pub fn start(&self, round: u64) -> Result<RoundStart, WirelessError> {
        let clients = sample_clients(self.seed, round, self.cell.mean_snr.len(), self.per_round)
            .map_err(|e| WirelessError::invalid("clients.per_round", e.to_string()))?;
        let channels = self.cell.round_snr(self.seed, round, &clients);
        let snr: Vec<f64> = channels.iter().map(|c| c.snr).collect();
        let a_t = dense_round_delay(self.rate_model, self.bandwidth_rule, self.dense_bits, &snr, self.bandwidth_hz)?;
        Ok(RoundStart { clients, channels, a_t })
    }

    /// `a_t` of `round`: the scheduled clients' dense-upload delay.
    pub fn dense_delay(&self, round: u64) -> Result<f64, WirelessError> {
        Ok(self.start(round)?.a_t)
    }
}

/// What a controller-only run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationSummary {
    pub rounds: u64,
    pub avg_delay_s: f64,
    pub avg_rho: f64,
    /// Largest backlog seen (the Lyapunov queue, or the spend beyond `t tau_bar`), seconds.
    pub max_queue: f64,
    pub final_queue: f64,
    /// Share of rounds at `rho_max` (deep fades the controller could not fully absorb).
    pub share_at_rho_max: f64,
}

/// Runs `controller` for `rounds` rounds of `scenario`, the horizon being `rounds`.
pub fn simulate(
    scenario: &Scenario,
    controller: &mut dyn RatioController,
    rho_max: f64,
    rounds: u64,
) -> Result<SimulationSummary, WirelessError> {
    let (mut sum_delay, mut sum_rho, mut max_queue, mut at_max) = (0.0, 0.0, f64::NEG_INFINITY, 0u64);
    for t in 0..rounds {
        let ctx = RoundContext { round: t, total_rounds: rounds, a_t: scenario.dense_delay(t)? };
        let rho = controller.choose(&ctx);
        let delay = ctx.a_t * (1.0 - rho);
        controller.observe(&ctx, delay);
        sum_delay += delay;
        sum_rho += rho;
        max_queue = max_queue.max(controller.backlog());
        at_max += u64::from(rho >= rho_max);
    }
    let n = rounds.max(1) as f64;
    Ok(SimulationSummary {
        rounds,
        avg_delay_s: sum_delay / n,
        avg_rho: sum_rho / n,
        max_queue: if rounds == 0 { 0.0 } else { max_queue },
        final_queue: controller.backlog(),
        share_at_rho_max: at_max as f64 / n,
    })
}
