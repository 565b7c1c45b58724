//! Uplink rate and delay (docs/algorithms.md §3, D11; WIRELESS.md).

use serde::{Deserialize, Serialize};

/// Guard on `log2(1 + gamma)` so a deep fade gives a huge but finite delay (docs/algorithms.md §8.7).
pub const MIN_SPECTRAL_EFFICIENCY: f64 = 1e-12;

/// How the allocated share of the band turns into a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateModel {
    /// `R = b B log2(1 + gamma)`: noise not scaled by the share. The only form under which the paper's
    /// bandwidth rule (41) is the min-max split and Lemma 2 has its closed form.
    #[default]
    Paper,
    /// `R = b B log2(1 + gamma / b)`: thermal noise over the allocated band, what a radio engineer expects.
    Physical,
}

impl RateModel {
    /// Rate in bit/s for share `b` of `bandwidth_hz` at full-band SNR `snr`.
    pub fn rate(self, share: f64, bandwidth_hz: f64, snr: f64) -> f64 {
        if share <= 0.0 {
            return 0.0;
        }
        let se = match self {
            RateModel::Paper => (1.0 + snr).log2(),
            RateModel::Physical => (1.0 + snr / share).log2(),
        };
        share * bandwidth_hz * se.max(MIN_SPECTRAL_EFFICIENCY)
    }

    /// Seconds to send `bits`; zero bits take no time, a zero share never finishes.
    pub fn delay(self, bits: f64, share: f64, bandwidth_hz: f64, snr: f64) -> f64 {
        if bits <= 0.0 {
            return 0.0;
        }
        let r = self.rate(share, bandwidth_hz, snr);
        if r > 0.0 { bits / r } else { f64::INFINITY }
    }
}

/// `log2(1 + gamma)` with the deep-fade guard.
pub fn spectral_efficiency(snr: f64) -> f64 {
    (1.0 + snr).log2().max(MIN_SPECTRAL_EFFICIENCY)
}
