//! Per-round choice of the sparsification ratio: one trait, one file per rule.
//!
//! A controller sees each round's dense-upload delay `a_t` (the delay at `rho = 0` on this round's channels
//! with the min-max split; at ratio `rho` the round takes `a_t (1 - rho)`), picks `rho`, and is then told the
//! delay the round really took. Adding a rule means one file here implementing [`RatioController`] and one arm
//! in the engine's registry (`Planner::ratio_controller`).

mod fixed;
mod horizon;

pub use crate::tsfa::online::LyapunovController;
pub use fixed::FixedRatio;
pub use horizon::HorizonController;

use serde::{Deserialize, Serialize};

/// What a controller knows when it chooses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundContext {
    /// 0-based round index.
    pub round: u64,
    /// Rounds in the whole run (the horizon `T`).
    pub total_rounds: u64,
    /// Dense-upload delay on this round's channels, seconds.
    pub a_t: f64,
}

/// A rule for the ratio of each round.
pub trait RatioController: Send + std::fmt::Debug {
    /// This round's drop ratio, in the rule's allowed range.
    fn choose(&self, ctx: &RoundContext) -> f64;
    /// The delay the round chosen for `ctx` took.
    fn observe(&mut self, ctx: &RoundContext, delay_s: f64);
    /// Seconds of latency owed against the budget so far, logged each round as `queue`: the Lyapunov virtual
    /// queue `Q(t)`; for rules that track the budget directly, the spend beyond `t tau_bar` (negative when
    /// ahead); zero for rules without a budget.
    fn backlog(&self) -> f64;
    /// The scalar a checkpoint keeps so that a resumed run chooses exactly as the uninterrupted one.
    fn state(&self) -> f64;
    fn restore(&mut self, state: f64);
}

/// How the online stage of TSFA/OSFA picks each round's ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineRule {
    /// The paper's drift-plus-penalty controller (Eq. 39): meets `tau_bar` as a long-run average.
    #[default]
    Lyapunov,
    /// Beyond the paper: spends the run's total budget `T tau_bar` over its own horizon (see
    /// [`HorizonController`]).
    Horizon,
}

impl OnlineRule {
    pub fn name(self) -> &'static str {
        match self {
            OnlineRule::Lyapunov => "lyapunov",
            OnlineRule::Horizon => "horizon",
        }
    }
}
