//! The sparsification term `Psi(rho)` of the convergence bound (docs/algorithms.md §4.6, §8.4, D13): convex and increasing
//! on `[0, 1)`, blowing up as `rho -> 1`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Psi {
    /// `rho / (1 - rho)^2` (recommended).
    #[default]
    RhoOverOneMinusRhoSq,
    /// Stich et al.'s exact constant: `2 rho (1 + rho) / (1 - rho)^2`.
    StichExact,
    /// Squared product error: `rho^2 / (1 - rho)^4`.
    SquaredProduct,
}

impl Psi {
    pub fn value(self, p: f64) -> f64 {
        let q = 1.0 - p;
        match self {
            Psi::RhoOverOneMinusRhoSq => p / (q * q),
            Psi::StichExact => 2.0 * p * (1.0 + p) / (q * q),
            Psi::SquaredProduct => p * p / q.powi(4),
        }
    }
    /// First derivative.
    pub fn d1(self, p: f64) -> f64 {
        let q = 1.0 - p;
        match self {
            Psi::RhoOverOneMinusRhoSq => (1.0 + p) / q.powi(3),
            Psi::StichExact => 2.0 * (1.0 + 3.0 * p) / q.powi(3),
            Psi::SquaredProduct => 2.0 * p * (1.0 + p) / q.powi(5),
        }
    }
    /// Second derivative (positive on `[0, 1)`: the per-slot problem is convex, Eq. 40).
    pub fn d2(self, p: f64) -> f64 {
        let q = 1.0 - p;
        match self {
            Psi::RhoOverOneMinusRhoSq => 2.0 * (2.0 + p) / q.powi(4),
            Psi::StichExact => 12.0 * (1.0 + p) / q.powi(4),
            Psi::SquaredProduct => 2.0 * (1.0 + 6.0 * p + 3.0 * p * p) / q.powi(6),
        }
    }
}
