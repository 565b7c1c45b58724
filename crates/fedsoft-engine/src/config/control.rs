//! `[controller]`, `[rounds]` and `[tsfa]`: how each round's ratio is chosen, how many rounds, and the TSFA
//! planner's budget, bound and pilot.

use super::ConfigError;
use fedsoft_wireless::tsfa::TsfaSettings;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// `[tsfa]`: the planner's own settings (`fedsoft_wireless::tsfa::TsfaSettings`, declared once, there) and the
/// optional pilot, which only the engine can run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TsfaConfig {
    #[serde(flatten)]
    pub settings: TsfaSettings,
    /// Measure the singular-value profile of the bound in a short pilot run before choosing the rank.
    #[serde(default)]
    pub pilot: Option<PilotConfig>,
    /// Keys no setting claims. serde cannot combine `deny_unknown_fields` with `flatten`, so they are
    /// collected here and refused by [`TsfaConfig::validate`]: a misspelt key never falls back to a default.
    #[serde(flatten, skip_serializing)]
    unknown: BTreeMap<String, IgnoredAny>,
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
    /// docs/algorithms.md §7.3: the module-averaged `j`-th singular value.
    #[default]
    Mean,
    /// Root-sum-square over modules, `sqrt(Σ_m σ_{m,j}²)`: the energy of every module's `j`-th direction,
    /// which lets the modules with the largest updates dominate the profile.
    Energy,
}

impl TsfaConfig {
    /// `width` is the narrowest adapted layer, the largest rank the model allows.
    pub fn validate(&self, width: usize) -> Result<(), ConfigError> {
        if let Some(key) = self.unknown.keys().next() {
            return Err(ConfigError::invalid(
                format!("tsfa.{key}"),
                "is not a [tsfa] setting; expected latency_budget, rho_min, rho_max, candidate_ranks, v_kappa, \
                 v_wsp, online, bound or pilot",
            ));
        }
        let t = &self.settings;
        if t.candidate_ranks.is_empty() {
            return Err(ConfigError::invalid("tsfa.candidate_ranks", "is empty: give at least one rank"));
        }
        if let Some(&bad) = t.candidate_ranks.iter().find(|&&r| r == 0 || r > width) {
            return Err(ConfigError::invalid(
                "tsfa.candidate_ranks",
                format!("rank {bad} is outside 1..={width} (the narrowest adapted layer)"),
            ));
        }
        match t.latency_budget {
            LatencyBudget::Seconds(s) if !(s.is_finite() && s > 0.0) => {
                return Err(ConfigError::invalid("tsfa.latency_budget", format!("must be positive seconds, got {s}")));
            }
            LatencyBudget::OperatingPoint { rank, rho } => {
                if rank == 0 || rank > width {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rank",
                        format!("must be in 1..={width}, got {rank}"),
                    ));
                }
                if !(0.0..1.0).contains(&rho) {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rho",
                        format!("must be in [0, 1), got {rho}"),
                    ));
                }
            }
            _ => {}
        }
        if !(t.v_kappa.is_finite() && t.v_kappa > 0.0) {
            return Err(ConfigError::invalid("tsfa.v_kappa", format!("must be positive, got {}", t.v_kappa)));
        }
        if let Some(v) = t.v_wsp
            && !(v.is_finite() && v > 0.0)
        {
            return Err(ConfigError::invalid("tsfa.v_wsp", format!("must be positive, got {v}")));
        }
        t.bound.validate("tsfa.bound")?;
        if self.pilot.is_some_and(|p| p.rounds == 0) {
            return Err(ConfigError::invalid("tsfa.pilot.rounds", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.rho_min) || !(0.0..1.0).contains(&t.rho_max) || t.rho_min >= t.rho_max {
            return Err(ConfigError::invalid(
                "tsfa.rho_min",
                format!("need 0 <= rho_min < rho_max < 1, got rho_min = {} and rho_max = {}", t.rho_min, t.rho_max),
            ));
        }
        Ok(())
    }
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if !(0.0..1.0).contains(&c.rho) {
            return Err(ConfigError::invalid(
                "controller.rho",
                format!("the dropped fraction must be in [0, 1), got {}", c.rho),
            ));
        }
        Ok(())
    }
}

impl RoundsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if r.total == 0 || r.eval_every == 0 || r.checkpoint_every == 0 {
            return Err(ConfigError::invalid("rounds", "total, eval_every and checkpoint_every must be positive"));
        }
        if let Some(o) = r.outage_delay_s
            && !(o.is_finite() && o > 0.0)
        {
            return Err(ConfigError::invalid("rounds.outage_delay_s", format!("must be positive, got {o}")));
        }
        Ok(())
    }
}
