//! `[clients]` and `[wireless]`: the population, the scheduled share and the simulated uplink.

use super::ConfigError;
use super::training::MAX_CLIENTS;
use fedsoft_wireless::bandwidth::BandwidthRule;
use fedsoft_wireless::channel::ChannelConfig;
use fedsoft_wireless::rate::RateModel;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// `N`.
    pub total: usize,
    /// `K_s`, scheduled uniformly without replacement each round.
    pub per_round: usize,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig { total: 100, per_round: 10 }
    }
}

/// The uplink. Defaults are the paper's Fig. 3(c) setting of docs/algorithms.md §11 (1 MHz, q = 32, 10 dB mean SNR, the
/// paper's rate model); WIRELESS.md gives realistic cell defaults for `rate_model = "physical"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WirelessConfig {
    pub bandwidth_hz: f64,
    pub rate_model: RateModel,
    pub bandwidth_rule: BandwidthRule,
    /// `q`: bits per transmitted value.
    pub value_bits: u32,
    /// Count `ceil(log2 M)` position bits per kept value in the paper-style payload (D12).
    pub index_overhead: bool,
    /// Which size of an upload sets its simulated delay: the paper's count or the real encoded message.
    pub payload: PayloadSize,
    pub channel: ChannelConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSize {
    /// `q` bits per kept value (plus index bits with `index_overhead`).
    #[default]
    Paper,
    /// The encoded upload's real size (values, positions, header, checksum).
    Encoded,
}

impl Default for WirelessConfig {
    fn default() -> Self {
        WirelessConfig {
            bandwidth_hz: 1e6,
            rate_model: RateModel::Paper,
            bandwidth_rule: BandwidthRule::MinMax,
            value_bits: 32,
            index_overhead: false,
            payload: PayloadSize::Paper,
            channel: ChannelConfig { mean_snr_db: Some(10.0), ..ChannelConfig::default() },
        }
    }
}

impl ClientsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.total == 0 {
            return Err(ConfigError::invalid("clients.total", "must be at least 1"));
        }
        if c.total > MAX_CLIENTS {
            return Err(ConfigError::invalid(
                "clients.total",
                format!("{} is more than {MAX_CLIENTS} simulated clients, each holding its own samples", c.total),
            ));
        }
        if c.per_round == 0 || c.per_round > c.total {
            return Err(ConfigError::invalid(
                "clients.per_round",
                format!("must be between 1 and clients.total = {}, got {}", c.total, c.per_round),
            ));
        }
        Ok(())
    }
}

impl WirelessConfig {
    /// `clients` is the population size (a per-client mean SNR list must have that length).
    pub fn validate(&self, clients: usize) -> Result<(), ConfigError> {
        let w = self;
        if !(w.bandwidth_hz.is_finite() && w.bandwidth_hz > 0.0) {
            return Err(ConfigError::invalid(
                "wireless.bandwidth_hz",
                format!("must be positive, got {}", w.bandwidth_hz),
            ));
        }
        if w.value_bits == 0 || w.value_bits > 64 {
            return Err(ConfigError::invalid(
                "wireless.value_bits",
                format!("must be in 1..=64, got {}", w.value_bits),
            ));
        }
        w.channel.validate("wireless.channel", clients)?;
        Ok(())
    }
}
