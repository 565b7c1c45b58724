//! A finite-horizon online rule (beyond the paper). The paper's Lyapunov controller meets `tau_bar` only as
//! a long-run average: under Rayleigh fading `E[1/log2(1 + gamma)]` diverges, so a 20-round run ends well
//! above the budget (docs/algorithms.md §8, issue #14). This rule treats the run's total, `T tau_bar`, as the budget.
//!
//! With known channels the best split of a total budget over rounds minimises `sum Psi(rho_t)` subject to
//! `sum a_t (1 - rho_t) <= B`; its optimum equalises the price `Psi'(rho_t) / a_t = lambda` over rounds.
//! Online, the future channels are unknown, so each round solves that problem for the current round plus
//! the remaining `R - 1` rounds at the average-channel delay `a_bar` (certainty equivalence), uses the
//! current round's ratio, and re-solves next round with what is left. The last round sees only its own
//! channel, so errors made earlier are absorbed by the end unless the range `[rho_min, rho_max]` binds.

use super::{RatioController, RoundContext};
use crate::error::{WirelessError, positive};
use crate::tsfa::offline::check_rho_range;
use crate::tsfa::psi::Psi;
use crate::tsfa::solve_rho;

#[derive(Debug, Clone, PartialEq)]
pub struct HorizonController {
    pub psi: Psi,
    pub rho_min: f64,
    pub rho_max: f64,
    /// Per-round budget, seconds.
    pub tau_bar: f64,
    /// Dense-upload delay on the average channel, seconds (the offline stage's `a_bar`).
    pub a_bar: f64,
    /// Delay spent so far, seconds.
    pub spent: f64,
    /// Rounds finished so far (set from the last observed round).
    pub rounds_done: u64,
}

impl HorizonController {
    pub fn new(psi: Psi, rho_min: f64, rho_max: f64, tau_bar: f64, a_bar: f64) -> Result<Self, WirelessError> {
        positive("tsfa.latency_budget_s", tau_bar)?;
        positive("average-channel dense delay", a_bar)?;
        check_rho_range(rho_min, rho_max)?;
        Ok(HorizonController { psi, rho_min, rho_max, tau_bar, a_bar, spent: 0.0, rounds_done: 0 })
    }

    /// The ratio at price `lambda` for a round whose dense delay is `a`.
    fn rho_at(&self, lambda: f64, a: f64) -> f64 {
        solve_rho(lambda, a, 1.0, self.rho_min, self.rho_max, self.psi)
    }
}

impl RatioController for HorizonController {
    fn choose(&self, ctx: &RoundContext) -> f64 {
        let remaining = ctx.total_rounds.saturating_sub(ctx.round).max(1) as f64;
        let budget = ctx.total_rounds as f64 * self.tau_bar - self.spent;
        let (a, a_bar) = (ctx.a_t, self.a_bar);
        if !(a.is_finite() && a > 0.0) {
            return self.rho_max;
        }
        let planned = |lambda: f64| {
            a * (1.0 - self.rho_at(lambda, a)) + (remaining - 1.0) * a_bar * (1.0 - self.rho_at(lambda, a_bar))
        };
        if planned(0.0) <= budget {
            return self.rho_min;
        }
        // Above this price every round sits at rho_max.
        let top = self.psi.d1(self.rho_max) / a.min(a_bar);
        if planned(top) > budget {
            return self.rho_max;
        }
        let (mut lo, mut hi) = (0.0, top);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if planned(mid) > budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.rho_at(hi, a)
    }

    fn observe(&mut self, ctx: &RoundContext, delay_s: f64) {
        self.spent += delay_s;
        self.rounds_done = ctx.round + 1;
    }

    fn backlog(&self) -> f64 {
        self.spent - self.rounds_done as f64 * self.tau_bar
    }

    fn state(&self) -> f64 {
        self.spent
    }

    /// The round count is not part of the state: the next observation sets it from its [`RoundContext`],
    /// before the backlog is next read.
    fn restore(&mut self, state: f64) {
        self.spent = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl() -> HorizonController {
        HorizonController::new(Psi::default(), 0.0, 0.95, 1.0, 4.0).unwrap()
    }

    #[test]
    fn on_the_average_channel_every_round_spends_exactly_its_share() {
        let mut c = ctl();
        let total = 20;
        for round in 0..total {
            let ctx = RoundContext { round, total_rounds: total, a_t: 4.0 };
            let rho = c.choose(&ctx);
            assert!((4.0 * (1.0 - rho) - 1.0).abs() < 1e-9, "round {round}: rho {rho}");
            c.observe(&ctx, 4.0 * (1.0 - rho));
        }
        assert!((c.spent - 20.0).abs() < 1e-8);
    }

    #[test]
    fn the_last_round_spends_what_is_left_and_a_good_channel_costs_less_sparsity() {
        let c = HorizonController { spent: 18.5, ..ctl() };
        let last = RoundContext { round: 19, total_rounds: 20, a_t: 6.0 };
        let rho = c.choose(&last);
        assert!((6.0 * (1.0 - rho) - 1.5).abs() < 1e-9, "rho {rho}");
        // Mid-run, a better channel than average gets a lower ratio than a worse one.
        let fresh = ctl();
        let good = fresh.choose(&RoundContext { round: 3, total_rounds: 20, a_t: 2.0 });
        let bad = fresh.choose(&RoundContext { round: 3, total_rounds: 20, a_t: 8.0 });
        assert!(good < bad, "{good} vs {bad}");
    }

    #[test]
    fn the_range_binds_at_both_ends() {
        let c = HorizonController { spent: 100.0, ..ctl() };
        assert_eq!(c.choose(&RoundContext { round: 5, total_rounds: 20, a_t: 4.0 }), 0.95);
        let rich = HorizonController { spent: -100.0, ..ctl() };
        assert_eq!(rich.choose(&RoundContext { round: 5, total_rounds: 20, a_t: 4.0 }), 0.0);
        assert_eq!(ctl().choose(&RoundContext { round: 0, total_rounds: 20, a_t: f64::NAN }), 0.95);
    }
}
