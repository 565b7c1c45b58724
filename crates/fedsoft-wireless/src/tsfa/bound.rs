//! The convergence-bound objective used by TSFA (docs/algorithms.md §5, D14):
//! `J(r, rho) = w_rank (R - r) sigma_r^2 + w_cov r sigma_max^2 + w_sp Psi(rho)`.
//! The first term falls with the rank (approximation error), the second grows with it (covariance of
//! separately averaged factors), the third grows with sparsification.

use super::psi::Psi;
use crate::error::{WirelessError, positive};
use serde::{Deserialize, Serialize};

/// Where the singular-value profile `sigma_r` comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SigmaProfile {
    /// `sigma_r^2 = sigma1_sq r^(-2 beta)`.
    PowerLaw { sigma1_sq: f64, beta: f64 },
    /// Singular values measured in a pilot run, largest first (`sigma_1, sigma_2, ...`).
    Measured { singular_values: Vec<f64> },
}

impl Default for SigmaProfile {
    fn default() -> Self {
        SigmaProfile::PowerLaw { sigma1_sq: 1.0, beta: 0.5 }
    }
}

/// Weights and profile of the bound; the defaults are the calibration of docs/algorithms.md §7.3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoundConfig {
    /// `R`: the rank of the full fine-tuning update; ranks above it are not considered.
    pub max_rank: usize,
    pub w_rank: f64,
    pub w_cov: f64,
    pub w_sp: f64,
    pub sigma: SigmaProfile,
    pub psi: Psi,
}

impl Default for BoundConfig {
    fn default() -> Self {
        BoundConfig {
            max_rank: 64,
            w_rank: 1.0,
            w_cov: 0.05,
            w_sp: 0.1,
            sigma: SigmaProfile::default(),
            psi: Psi::default(),
        }
    }
}

impl BoundConfig {
    pub fn validate(&self, prefix: &str) -> Result<(), WirelessError> {
        let f = |n: &str| format!("{prefix}.{n}");
        if self.max_rank == 0 {
            return Err(WirelessError::invalid(f("max_rank"), "must be at least 1"));
        }
        for (name, w) in [("w_rank", self.w_rank), ("w_cov", self.w_cov)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(WirelessError::invalid(f(name), format!("must be >= 0, got {w}")));
            }
        }
        positive(&f("w_sp"), self.w_sp)?;
        match &self.sigma {
            SigmaProfile::PowerLaw { sigma1_sq, beta } => {
                positive(&f("sigma.sigma1_sq"), *sigma1_sq)?;
                if !(beta.is_finite() && *beta >= 0.0) {
                    return Err(WirelessError::invalid(f("sigma.beta"), format!("must be >= 0, got {beta}")));
                }
            }
            SigmaProfile::Measured { singular_values } => {
                if singular_values.len() < self.max_rank {
                    return Err(WirelessError::invalid(
                        f("sigma.singular_values"),
                        format!("needs max_rank = {} values, got {}", self.max_rank, singular_values.len()),
                    ));
                }
                if singular_values.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
                    return Err(WirelessError::invalid(f("sigma.singular_values"), "values must be finite and >= 0"));
                }
            }
        }
        Ok(())
    }

    /// `sigma_r^2` for rank `r >= 1`.
    pub fn sigma_sq(&self, r: usize) -> f64 {
        match &self.sigma {
            SigmaProfile::PowerLaw { sigma1_sq, beta } => sigma1_sq * (r as f64).powf(-2.0 * beta),
            SigmaProfile::Measured { singular_values } => singular_values.get(r - 1).copied().unwrap_or(0.0).powi(2),
        }
    }

    /// `sigma_max^2 = sigma_1^2`.
    pub fn sigma_max_sq(&self) -> f64 {
        self.sigma_sq(1)
    }

    /// The three terms of `J(r, rho)`.
    pub fn terms(&self, r: usize, rho: f64) -> (f64, f64, f64) {
        let rank = self.w_rank * (self.max_rank.saturating_sub(r)) as f64 * self.sigma_sq(r);
        let cov = self.w_cov * r as f64 * self.sigma_max_sq();
        let sp = self.w_sp * self.psi.value(rho);
        (rank, cov, sp)
    }
}
