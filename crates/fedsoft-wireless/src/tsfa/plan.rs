//! TSFA planned from plain settings: the average channel of a cell, the latency budget, the offline table,
//! the calibrated `V` and the per-round ratio rule. The engine builds this from a run's config, the Python
//! package from keyword arguments; both then hold the same plan.

use super::{BoundConfig, Link, LyapunovController, OfflinePlan, calibrate_v, plan_offline};
use crate::bandwidth::BandwidthRule;
use crate::channel::Cell;
use crate::control::{FixedRatio, HorizonController, OnlineRule, RatioController};
use crate::error::WirelessError;
use crate::rate::RateModel;
use crate::simulate::{Scenario, dense_round_delay};
use crate::uplink::Uplink;
use fedsoft_core::rng::{Purpose, stream};
use rand::seq::index;
use serde::{Deserialize, Serialize};

/// `tau_bar`, in seconds or as the average-channel delay of an operating point `(rank, rho)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LatencyBudget {
    Seconds(f64),
    OperatingPoint { rank: usize, rho: f64 },
}

/// The TSFA settings that do not depend on the model or the data (the engine's `[tsfa]` table without its
/// pilot), with the defaults of docs/algorithms.md §13.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsfaSettings {
    pub latency_budget: LatencyBudget,
    pub rho_min: f64,
    pub rho_max: f64,
    pub candidate_ranks: Vec<usize>,
    /// `kappa_V` of the calibration `V w_sp = kappa tau_bar a_bar / Psi'(rho*)` (docs/algorithms.md §8.7).
    pub v_kappa: f64,
    /// Explicit `V w_sp`, overriding the calibration.
    pub v_wsp: Option<f64>,
    pub online: OnlineRule,
    pub bound: BoundConfig,
}

impl Default for TsfaSettings {
    fn default() -> Self {
        TsfaSettings {
            latency_budget: LatencyBudget::OperatingPoint { rank: 8, rho: 0.75 },
            rho_min: 0.5,
            rho_max: 0.99,
            candidate_ranks: vec![1, 2, 4, 8, 16, 32, 64],
            v_kappa: 1.0,
            v_wsp: None,
            online: OnlineRule::default(),
            bound: BoundConfig::default(),
        }
    }
}

/// The federation and its radio as the planner needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInputs {
    pub cell: Cell,
    pub uplink: Uplink,
    /// `q`, bits per sent value.
    pub value_bits: f64,
    /// Count `ceil(log2 M_r)` index bits per value.
    pub index_overhead: bool,
    /// `sum_l (d_l + k_l)` over the adapted modules.
    pub params_per_rank: usize,
    /// Clients scheduled per round.
    pub per_round: usize,
    /// The run seed (client sampling and fading).
    pub seed: u64,
}

/// How each round's ratio is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatioRule {
    /// A constant ratio.
    Fixed(f64),
    /// The online stage of TSFA/OSFA.
    Online(OnlineRule),
}

/// Everything TSFA derives before training starts.
#[derive(Debug, Clone)]
pub struct TsfaPlan {
    pub cell: Cell,
    pub link: Link,
    pub offline: OfflinePlan,
    /// `V w_sp`, shared by TSFA and every OSFA rank of one experiment (docs/algorithms.md §13 note).
    pub v_wsp: f64,
    pub uplink: Uplink,
    pub per_round: usize,
    pub seed: u64,
    pub settings: TsfaSettings,
}

/// Scheduled sets drawn to average a non-closed-form dense-upload delay over (D15).
const AVERAGE_SETS: u64 = 256;

/// The dense round delays the planner accepts, seconds. Every input can be in range on its own and still
/// multiply into a link no radio has (1e-300 Hz of bandwidth, a mean SNR of -300 dB): outside this range
/// `V` overflows or vanishes, and the message should name the link, not `V`.
const PLAUSIBLE_DELAY_S: std::ops::RangeInclusive<f64> = 1e-9..=1e9;

impl TsfaPlan {
    pub fn new(inputs: PlanInputs, settings: TsfaSettings) -> Result<Self, WirelessError> {
        let PlanInputs { cell, uplink, value_bits, index_overhead, params_per_rank, per_round, seed } = inputs;
        uplink.validate()?;
        if per_round == 0 || per_round > cell.mean_snr.len() {
            return Err(WirelessError::invalid(
                "clients.per_round",
                format!("must be between 1 and the {} clients of the cell, got {per_round}", cell.mean_snr.len()),
            ));
        }
        let gamma_bar = expected_gamma(&uplink, &cell, per_round, seed)?;
        let mut link = Link {
            bandwidth_hz: uplink.bandwidth_hz,
            value_bits,
            params_per_rank,
            gamma_bar,
            tau_bar: 1.0,
            index_overhead,
        };
        link.tau_bar = match settings.latency_budget {
            LatencyBudget::Seconds(s) => s,
            LatencyBudget::OperatingPoint { rank, rho } => link.delay(rank, rho),
        };
        let s = &settings;
        let offline = plan_offline(&s.bound, &link, &s.candidate_ranks, s.rho_min, s.rho_max)?;
        let dense = link.dense_delay(offline.best_rank);
        if !(dense.is_finite() && PLAUSIBLE_DELAY_S.contains(&dense)) {
            let snrs: Vec<f64> = cell.mean_snr.iter().map(|&g| crate::units::linear_to_db(g)).collect();
            let (lo, hi) = snrs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
            return Err(WirelessError::invalid(
                "wireless",
                format!(
                    "bandwidth_hz = {:e} with the cell's mean SNRs ({lo:.1} to {hi:.1} dB) gives a dense upload at \
                     rank {} a round delay of {dense:.3e} s; the planner works with delays of {:e} to {:e} s: check \
                     wireless.bandwidth_hz and wireless.channel",
                    uplink.bandwidth_hz,
                    offline.best_rank,
                    PLAUSIBLE_DELAY_S.start(),
                    PLAUSIBLE_DELAY_S.end()
                ),
            ));
        }
        let mut plan = TsfaPlan { cell, link, offline, v_wsp: 0.0, uplink, per_round, seed, settings };
        plan.v_wsp = match plan.settings.v_wsp {
            Some(v) => v,
            None => {
                let v = plan.calibrated_v(plan.settings.v_kappa);
                if !(v.is_finite() && v > 0.0) {
                    return Err(WirelessError::invalid(
                        "tsfa.v_kappa",
                        format!(
                            "calibrates V w_sp to {v:e} (budget {:.3e} s, dense delay {dense:.3e} s at rank {}); \
                             set tsfa.v_wsp directly or bring the budget near the link's delays",
                            plan.link.tau_bar, plan.offline.best_rank
                        ),
                    ));
                }
                v
            }
        };
        Ok(plan)
    }

    /// The paper's online controller with this plan's `V`, range and budget.
    pub fn lyapunov(&self) -> Result<LyapunovController, WirelessError> {
        self.lyapunov_with_v(self.v_wsp)
    }

    /// The same controller with another `V w_sp` (`fedsoft plan --kappa` compares several).
    pub fn lyapunov_with_v(&self, v_wsp: f64) -> Result<LyapunovController, WirelessError> {
        let s = &self.settings;
        LyapunovController::new(v_wsp, s.bound.psi, s.rho_min, s.rho_max, self.link.tau_bar)
    }

    /// `V w_sp` calibrated with `kappa` at this plan's operating point (`r*`, `rho*`), as the plan's own `V`
    /// is from `tsfa.v_kappa`.
    pub fn calibrated_v(&self, kappa: f64) -> f64 {
        let r = self.offline.best_rank;
        calibrate_v(kappa, self.link.tau_bar, self.link.dense_delay(r), self.settings.bound.psi, self.offline.best_rho)
    }

    /// The registry of ratio rules: `rule` at `rank` (a new rule is one arm here).
    pub fn ratio_controller(&self, rule: RatioRule, rank: usize) -> Result<Box<dyn RatioController>, WirelessError> {
        let s = &self.settings;
        Ok(match rule {
            RatioRule::Fixed(rho) => Box::new(FixedRatio(rho)),
            RatioRule::Online(OnlineRule::Lyapunov) => Box::new(self.lyapunov()?),
            RatioRule::Online(OnlineRule::Horizon) => Box::new(HorizonController::new(
                s.bound.psi,
                s.rho_min,
                s.rho_max,
                self.link.tau_bar,
                self.link.dense_delay(rank),
            )?),
        })
    }

    /// Bits of one client's dense upload at rank `r` (`q M_r`, plus index bits when counted).
    pub fn dense_bits(&self, r: usize) -> f64 {
        self.link.bits_per_value(r) * self.link.params(r)
    }

    /// The controller-only scenario at rank `r`.
    pub fn scenario(&self, r: usize) -> Scenario {
        Scenario {
            cell: self.cell.clone(),
            seed: self.seed,
            per_round: self.per_round,
            bandwidth_hz: self.uplink.bandwidth_hz,
            rate_model: self.uplink.rate_model,
            bandwidth_rule: self.uplink.bandwidth_rule,
            dense_bits: self.dense_bits(r),
        }
    }
}

/// `Gamma_bar` such that the dense upload of rank `r` takes `q M_r Gamma_bar / B` on the average channel with
/// the configured split, the same split the online `a_t` and the realised delays use. Closed form under the
/// paper's rate model with Eq. (41) (min-max or inverse-log); otherwise the round delay is still linear in
/// the payload, so it is averaged over random scheduled sets at the mean SNRs.
pub fn expected_gamma(uplink: &Uplink, cell: &Cell, per_round: usize, seed: u64) -> Result<f64, WirelessError> {
    let rule = uplink.bandwidth_rule;
    match (uplink.rate_model, rule) {
        (RateModel::Paper, BandwidthRule::MinMax | BandwidthRule::InverseLog) => {
            Ok(Link::expected_gamma(&cell.mean_snr, per_round))
        }
        (model, _) => {
            let bw = uplink.bandwidth_hz;
            let mut total = 0.0;
            for s in 0..AVERAGE_SETS {
                let mut rng = stream(seed, Purpose::ClientSampling, &[u64::MAX, s]);
                let set = index::sample(&mut rng, cell.mean_snr.len(), per_round);
                let snr: Vec<f64> = set.iter().map(|c| cell.mean_snr[c]).collect();
                total += dense_round_delay(model, rule, 1.0, &snr, bw)? * bw;
            }
            Ok(total / AVERAGE_SETS as f64)
        }
    }
}
