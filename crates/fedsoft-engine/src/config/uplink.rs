//! `[clients]` and `[wireless]`: the population, the scheduled share and the simulated uplink.

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

/// The uplink. Defaults are the paper's Fig. 3(c) setting of SPEC §11 (1 MHz, q = 32, 10 dB mean SNR, the
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
