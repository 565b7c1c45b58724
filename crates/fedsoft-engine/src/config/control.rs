//! `[controller]`, `[rounds]` and `[tsfa]`: how each round's ratio is chosen, how many rounds, and the TSFA
//! planner's budget, bound and pilot.

use fedsoft_wireless::tsfa::BoundConfig;
use serde::{Deserialize, Serialize};

/// How the sparsification ratio is chosen each round (one type with the run records).
pub use fedsoft_records::ControllerKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    pub kind: ControllerKind,
    /// The ratio of `kind = "fixed"`.
    pub rho: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { kind: ControllerKind::Tsfa, rho: 0.75 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundsConfig {
    pub total: u64,
    /// Evaluate every this many rounds (and always after the last).
    pub eval_every: u64,
    /// Write a checkpoint every this many rounds (and after the last).
    pub checkpoint_every: u64,
    /// Drop a scheduled client whose simulated upload would take longer than this (seconds).
    pub outage_delay_s: Option<f64>,
}

impl Default for RoundsConfig {
    fn default() -> Self {
        RoundsConfig { total: 30, eval_every: 5, checkpoint_every: 5, outage_delay_s: None }
    }
}

/// `tau_bar`, in seconds or as the average-channel delay of an operating point `(rank, rho)`.
pub use fedsoft_wireless::tsfa::LatencyBudget;

/// `[tsfa]`: the planner's settings (`fedsoft_wireless::tsfa::TsfaSettings`, whose defaults these are) and
/// the optional pilot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsfaConfig {
    pub latency_budget: LatencyBudget,
    pub rho_min: f64,
    pub rho_max: f64,
    pub candidate_ranks: Vec<usize>,
    /// `kappa_V` of the calibration `V w_sp = kappa tau_bar a_bar / Psi'(rho*)` (SPEC §8.7).
    pub v_kappa: f64,
    /// Explicit `V w_sp`, overriding the calibration.
    pub v_wsp: Option<f64>,
    /// The online rule: the paper's Lyapunov controller, or the finite-horizon one (beyond the paper).
    pub online: fedsoft_wireless::control::OnlineRule,
    pub bound: BoundConfig,
    /// Measure the singular-value profile of the bound in a short pilot run before choosing the rank.
    pub pilot: Option<PilotConfig>,
}

/// `[tsfa.pilot]`: ILoRA (no sparsification, no regulariser) at rank `tsfa.bound.max_rank` for `rounds`
/// rounds; the singular values of each module's resulting `BA`, pooled over modules and scaled so the
/// largest is 1, replace `tsfa.bound.sigma` for the offline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PilotConfig {
    pub rounds: u64,
    #[serde(default)]
    pub pooling: SigmaPooling,
}

/// How the pilot pools the modules' `j`-th singular values into one `σ_j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaPooling {
    /// SPEC §7.3: the module-averaged `j`-th singular value.
    #[default]
    Mean,
    /// Root-sum-square over modules, `sqrt(Σ_m σ_{m,j}²)`: the energy of every module's `j`-th direction,
    /// which lets the modules with the largest updates dominate the profile.
    Energy,
}

impl Default for TsfaConfig {
    fn default() -> Self {
        let s = fedsoft_wireless::tsfa::TsfaSettings::default();
        TsfaConfig {
            latency_budget: s.latency_budget,
            rho_min: s.rho_min,
            rho_max: s.rho_max,
            candidate_ranks: s.candidate_ranks,
            v_kappa: s.v_kappa,
            v_wsp: s.v_wsp,
            online: s.online,
            bound: s.bound,
            pilot: None,
        }
    }
}

impl TsfaConfig {
    /// The settings the planner reads.
    pub fn settings(&self) -> fedsoft_wireless::tsfa::TsfaSettings {
        fedsoft_wireless::tsfa::TsfaSettings {
            latency_budget: self.latency_budget,
            rho_min: self.rho_min,
            rho_max: self.rho_max,
            candidate_ranks: self.candidate_ranks.clone(),
            v_kappa: self.v_kappa,
            v_wsp: self.v_wsp,
            online: self.online,
            bound: self.bound.clone(),
        }
    }
}
