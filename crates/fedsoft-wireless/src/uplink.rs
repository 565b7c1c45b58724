//! One round's uplink as a whole: the payloads of the clients that arrived and their channels in, the band
//! split, every client's delay, who missed the outage deadline and how long the round took out. The engine,
//! the controller-only simulation and the Python package all call this, so a round costs the same everywhere.

use crate::bandwidth::{BandwidthRule, allocate, delays};
use crate::error::{WirelessError, positive};
use crate::rate::RateModel;
use crate::simulate::dense_round_delay;
use serde::{Deserialize, Serialize};

/// The band and the two modelling choices that turn payloads into delays.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Uplink {
    pub bandwidth_hz: f64,
    pub rate_model: RateModel,
    pub bandwidth_rule: BandwidthRule,
}

/// What one round's transmissions cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundUplink {
    /// Share of the band each client got (sums to 1).
    pub shares: Vec<f64>,
    /// Each client's upload delay, seconds.
    pub delays_s: Vec<f64>,
    /// Positions (into the inputs) of the clients whose upload beat the outage deadline, ascending.
    pub kept: Vec<usize>,
    /// The round's uplink time: the slowest client, or the deadline when someone missed it.
    pub round_delay_s: f64,
}

impl Uplink {
    pub fn validate(&self) -> Result<(), WirelessError> {
        positive("wireless.bandwidth_hz", self.bandwidth_hz)
    }

    /// `a_t`: the delay of a dense upload of `dense_bits` from every client on these full-band SNRs. At drop
    /// ratio `rho` the round takes `a_t (1 - rho)` (see [`dense_round_delay`]).
    pub fn dense_delay(&self, dense_bits: f64, snr: &[f64]) -> Result<f64, WirelessError> {
        dense_round_delay(self.rate_model, self.bandwidth_rule, dense_bits, snr, self.bandwidth_hz)
    }

    /// Splits the band over clients sending `bits` on full-band SNRs `snr`; a client slower than
    /// `outage_delay_s` is dropped from the round, which then lasts exactly the deadline.
    pub fn transmit(
        &self,
        bits: &[f64],
        snr: &[f64],
        outage_delay_s: Option<f64>,
    ) -> Result<RoundUplink, WirelessError> {
        if bits.len() != snr.len() {
            return Err(WirelessError::Numerical(format!("{} payloads for {} channels", bits.len(), snr.len())));
        }
        if let Some(bad) = bits.iter().chain(snr).find(|x| !(x.is_finite() && **x >= 0.0)) {
            return Err(WirelessError::invalid(
                "uplink",
                format!("payloads and SNRs must be finite and >= 0, got {bad}"),
            ));
        }
        if bits.is_empty() {
            return Ok(RoundUplink { shares: vec![], delays_s: vec![], kept: vec![], round_delay_s: 0.0 });
        }
        let shares = allocate(self.bandwidth_rule, self.rate_model, bits, snr, self.bandwidth_hz)?;
        let delays_s = delays(self.rate_model, bits, &shares, snr, self.bandwidth_hz);
        let kept: Vec<usize> = (0..bits.len()).filter(|&i| outage_delay_s.is_none_or(|c| delays_s[i] <= c)).collect();
        let round_delay_s = match outage_delay_s {
            Some(c) if kept.len() < bits.len() => c,
            _ => delays_s.iter().cloned().fold(0.0, f64::max),
        };
        Ok(RoundUplink { shares, delays_s, kept, round_delay_s })
    }
}
