//! The online stage (docs/algorithms.md §8): a virtual queue of excess latency and, each round, the sparsification ratio
//! that minimises `V w_sp Psi(rho) + Q(t) a_t (1 - rho)`.

use super::offline::check_rho_range;
use super::psi::Psi;
use crate::control::{RatioController, RoundContext};
use crate::error::{WirelessError, positive};
use serde::{Deserialize, Serialize};

/// `argmin_{rho in [rho_min, rho_max]} v_wsp Psi(rho) + queue a_t (1 - rho)`.
///
/// The objective is convex (Eq. 40), so the minimiser is where `Psi'(rho) = lambda = queue a_t / v_wsp`,
/// clipped to the range; the root is found by bisection (100 halvings: below `1e-30` of the range).
pub fn solve_rho(queue: f64, a_t: f64, v_wsp: f64, rho_min: f64, rho_max: f64, psi: Psi) -> f64 {
    let lambda = queue * a_t / v_wsp;
    if lambda.is_nan() || lambda <= psi.d1(rho_min) {
        return rho_min;
    }
    if psi.d1(rho_max) <= lambda {
        return rho_max;
    }
    let (mut lo, mut hi) = (rho_min, rho_max);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if psi.d1(mid) < lambda {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// docs/algorithms.md §8.7: `V w_sp = kappa tau_bar a_bar / Psi'(rho*)`, so that at `Q = tau_bar` on the average channel the
/// online ratio equals the offline one.
pub fn calibrate_v(kappa: f64, tau_bar: f64, a_bar: f64, psi: Psi, rho_star: f64) -> f64 {
    kappa * tau_bar * a_bar / psi.d1(rho_star)
}

/// The drift-plus-penalty controller of TSFA (and of OSFA, the same controller at a fixed rank).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LyapunovController {
    /// `V w_sp`: only the product matters.
    pub v_wsp: f64,
    pub psi: Psi,
    pub rho_min: f64,
    pub rho_max: f64,
    /// Long-term latency budget, seconds.
    pub tau_bar: f64,
    /// Virtual queue `Q(t)`, seconds of accumulated excess latency.
    pub queue: f64,
}

impl LyapunovController {
    pub fn new(v_wsp: f64, psi: Psi, rho_min: f64, rho_max: f64, tau_bar: f64) -> Result<Self, WirelessError> {
        positive("tsfa.v", v_wsp)?;
        positive("tsfa.latency_budget_s", tau_bar)?;
        check_rho_range(rho_min, rho_max)?;
        Ok(LyapunovController { v_wsp, psi, rho_min, rho_max, tau_bar, queue: 0.0 })
    }

    /// This round's ratio, given `a_t`, the delay a dense upload would take on this round's channels.
    pub fn choose(&self, a_t: f64) -> f64 {
        solve_rho(self.queue, a_t, self.v_wsp, self.rho_min, self.rho_max, self.psi)
    }

    /// Eq. (30): `Q <- max(Q + tau_t - tau_bar, 0)`.
    pub fn observe(&mut self, delay_s: f64) {
        self.queue = (self.queue + delay_s - self.tau_bar).max(0.0);
    }
}

impl RatioController for LyapunovController {
    fn choose(&self, ctx: &RoundContext) -> f64 {
        LyapunovController::choose(self, ctx.a_t)
    }
    fn observe(&mut self, _: &RoundContext, delay_s: f64) {
        LyapunovController::observe(self, delay_s)
    }
    fn backlog(&self) -> f64 {
        self.queue
    }
    fn state(&self) -> f64 {
        self.queue
    }
    fn restore(&mut self, state: f64) {
        self.queue = state;
    }
}
