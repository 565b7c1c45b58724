//! Splitting the band over the scheduled clients (docs/algorithms.md §8.6, WIRELESS.md).

use crate::error::WirelessError;
use crate::rate::{RateModel, spectral_efficiency};
use serde::{Deserialize, Serialize};
use std::f64::consts::LN_2;

/// Bandwidth allocation rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandwidthRule {
    /// Every scheduled client gets `1/n`.
    Equal,
    /// The paper's Eq. (41), `b_i ∝ S_i / log2(1 + gamma_i)`; equal delays under the paper's rate model.
    InverseLog,
    /// The split that minimises the slowest client's delay under the configured rate model: Eq. (41) for the
    /// paper model, the Lambert-W bisection for the physical one.
    #[default]
    MinMax,
}

/// Shares (summing to 1) for clients with payloads `bits` and full-band SNRs `snr`.
pub fn allocate(
    rule: BandwidthRule,
    model: RateModel,
    bits: &[f64],
    snr: &[f64],
    bandwidth_hz: f64,
) -> Result<Vec<f64>, WirelessError> {
    if bits.len() != snr.len() {
        return Err(WirelessError::Numerical(format!("{} payloads for {} channels", bits.len(), snr.len())));
    }
    if bits.is_empty() {
        return Ok(Vec::new());
    }
    match (rule, model) {
        (BandwidthRule::Equal, _) => Ok(vec![1.0 / bits.len() as f64; bits.len()]),
        (BandwidthRule::InverseLog, _) | (BandwidthRule::MinMax, RateModel::Paper) => Ok(inverse_log(bits, snr)),
        (BandwidthRule::MinMax, RateModel::Physical) => Ok(min_max_physical(bits, snr, bandwidth_hz)?.0),
    }
}

fn normalise(mut w: Vec<f64>) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    if total > 0.0 && total.is_finite() {
        w.iter_mut().for_each(|x| *x /= total);
        w
    } else {
        vec![1.0 / w.len() as f64; w.len()]
    }
}

fn inverse_log(bits: &[f64], snr: &[f64]) -> Vec<f64> {
    normalise(bits.iter().zip(snr).map(|(s, g)| s / spectral_efficiency(*g)).collect())
}

/// Share client needs to send `bits` in `t` seconds under the physical model, or infinity if even the whole
/// spectrum would not do (`a >= 1`). Solves `b log(1 + c/b) = bits ln2 / (B t)` in closed form:
/// `a = bits ln2 / (B c t)`, `y = -W_{-1}(-a e^{-a}) / a`, `b = c / (y - 1)`.
pub fn physical_share_for_deadline(bits: f64, snr: f64, bandwidth_hz: f64, t: f64) -> f64 {
    if bits <= 0.0 {
        return 0.0;
    }
    let a = bits * LN_2 / (bandwidth_hz * snr * t);
    if a.is_nan() || a >= 1.0 {
        return f64::INFINITY;
    }
    let w = lambert_w::lambert_wm1(-a * (-a).exp());
    let y = -w / a;
    if y.is_nan() || y <= 1.0 || !y.is_finite() {
        return f64::INFINITY;
    }
    snr / (y - 1.0)
}

/// Min-max-delay split under the physical model and the common delay it achieves: bisection on the round
/// time `T` until the required shares sum to one.
pub fn min_max_physical(bits: &[f64], snr: &[f64], bandwidth_hz: f64) -> Result<(Vec<f64>, f64), WirelessError> {
    if bits.iter().all(|&b| b <= 0.0) {
        return Ok((vec![1.0 / bits.len() as f64; bits.len()], 0.0));
    }
    let need = |t: f64| -> f64 {
        bits.iter().zip(snr).map(|(&s, &g)| physical_share_for_deadline(s, g, bandwidth_hz, t)).sum()
    };
    // Below t_lo some client cannot finish even with the whole band; at t_hi the equal split already works.
    let t_lo = bits
        .iter()
        .zip(snr)
        .filter(|(s, _)| **s > 0.0)
        .map(|(&s, &g)| s * LN_2 / (bandwidth_hz * g.max(f64::MIN_POSITIVE)))
        .fold(0.0, f64::max);
    let n = bits.len() as f64;
    let mut hi = bits
        .iter()
        .zip(snr)
        .map(|(&s, &g)| RateModel::Physical.delay(s, 1.0 / n, bandwidth_hz, g))
        .fold(0.0, f64::max)
        .max(t_lo * (1.0 + 1e-9));
    if !hi.is_finite() {
        return Err(WirelessError::Numerical("a scheduled client has no usable channel (SNR 0)".into()));
    }
    let mut lo = t_lo;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if need(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    let shares: Vec<f64> =
        bits.iter().zip(snr).map(|(&s, &g)| physical_share_for_deadline(s, g, bandwidth_hz, hi)).collect();
    Ok((normalise(shares), hi))
}

/// Per-client delays for given shares.
pub fn delays(model: RateModel, bits: &[f64], shares: &[f64], snr: &[f64], bandwidth_hz: f64) -> Vec<f64> {
    bits.iter().zip(shares).zip(snr).map(|((&s, &b), &g)| model.delay(s, b, bandwidth_hz, g)).collect()
}
