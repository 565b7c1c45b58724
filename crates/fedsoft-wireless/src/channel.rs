//! Channels (docs/algorithms.md §3, WIRELESS.md): the per-client average SNR from geometry, and Rayleigh block fading
//! redrawn every round.
//!
//! Every client's average SNR is expressed over the **whole** band `B` (`P h_bar / (N0 B NF)`); the rate
//! models in [`crate::rate`] decide how the allocated share changes it. Fading is `|g|^2 ~ Exp(1)`, drawn
//! from a stream keyed by `(seed, round, client)`: a client's channel in a round does not depend on which
//! other clients were scheduled, nor on the method being run.

use crate::error::{WirelessError, finite, positive};
use crate::units::{db_to_linear, dbm_to_watt};
use fedsoft_core::rng::{Purpose, stream};
use rand::RngExt;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

/// Large-scale path loss law.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PathLoss {
    /// 3GPP macro cell: `128.1 + 37.6 log10(d / 1 km)` dB.
    ThreeGpp,
    /// Generic: `ref_loss_db + 10 exponent log10(d / ref_distance_m)` dB.
    Exponent { exponent: f64, ref_loss_db: f64, ref_distance_m: f64 },
}

impl PathLoss {
    /// Path loss in dB at distance `d` metres.
    pub fn loss_db(&self, d: f64) -> f64 {
        match *self {
            PathLoss::ThreeGpp => 128.1 + 37.6 * (d / 1000.0).log10(),
            PathLoss::Exponent { exponent, ref_loss_db, ref_distance_m } => {
                ref_loss_db + 10.0 * exponent * (d / ref_distance_m).log10()
            }
        }
    }
}

/// Where clients stand and what their radios are; see WIRELESS.md for the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// If set, every client has this average SNR over the whole band (the paper's Fig. 3(c) setting), and
    /// geometry, power and noise are ignored.
    pub mean_snr_db: Option<f64>,
    /// Clients uniform in a disk of this radius around the server...
    pub cell_radius_m: f64,
    /// ...but no closer than this.
    pub min_distance_m: f64,
    /// Or explicit distances, one per client (overrides the disk).
    pub distances_m: Option<Vec<f64>>,
    pub path_loss: PathLoss,
    /// Log-normal shadowing standard deviation in dB, drawn once per client (0 = off).
    pub shadowing_db: f64,
    pub tx_power_dbm: f64,
    pub noise_psd_dbm_hz: f64,
    pub noise_figure_db: f64,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            mean_snr_db: None,
            cell_radius_m: 500.0,
            min_distance_m: 35.0,
            distances_m: None,
            path_loss: PathLoss::ThreeGpp,
            shadowing_db: 0.0,
            tx_power_dbm: 23.0,
            noise_psd_dbm_hz: -174.0,
            noise_figure_db: 0.0,
        }
    }
}

impl ChannelConfig {
    pub fn validate(&self, prefix: &str, num_clients: usize) -> Result<(), WirelessError> {
        let f = |name: &str| format!("{prefix}.{name}");
        if let Some(snr) = self.mean_snr_db {
            return finite(&f("mean_snr_db"), snr);
        }
        positive(&f("cell_radius_m"), self.cell_radius_m)?;
        positive(&f("min_distance_m"), self.min_distance_m)?;
        if self.min_distance_m >= self.cell_radius_m {
            return Err(WirelessError::invalid(
                f("min_distance_m"),
                format!("must be below cell_radius_m = {}, got {}", self.cell_radius_m, self.min_distance_m),
            ));
        }
        if let Some(d) = &self.distances_m {
            if d.len() != num_clients {
                return Err(WirelessError::invalid(
                    f("distances_m"),
                    format!("needs one distance per client ({num_clients}), got {}", d.len()),
                ));
            }
            if let Some(bad) = d.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(WirelessError::invalid(f("distances_m"), format!("distances must be positive, got {bad}")));
            }
        }
        if let PathLoss::Exponent { exponent, ref_loss_db, ref_distance_m } = self.path_loss {
            positive(&f("path_loss.exponent"), exponent)?;
            finite(&f("path_loss.ref_loss_db"), ref_loss_db)?;
            positive(&f("path_loss.ref_distance_m"), ref_distance_m)?;
        }
        if !(self.shadowing_db.is_finite() && self.shadowing_db >= 0.0) {
            return Err(WirelessError::invalid(f("shadowing_db"), format!("must be >= 0, got {}", self.shadowing_db)));
        }
        finite(&f("tx_power_dbm"), self.tx_power_dbm)?;
        finite(&f("noise_psd_dbm_hz"), self.noise_psd_dbm_hz)?;
        finite(&f("noise_figure_db"), self.noise_figure_db)
    }
}

/// The fixed part of every client's channel: distance and average SNR over the whole band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Distance to the server in metres (`None` when SNRs were given directly).
    pub distances_m: Option<Vec<f64>>,
    /// Average SNR over the whole band, linear, per client.
    pub mean_snr: Vec<f64>,
}

impl Cell {
    /// Places `num_clients` clients and computes their average SNR over `bandwidth_hz`.
    pub fn new(cfg: &ChannelConfig, num_clients: usize, bandwidth_hz: f64, seed: u64) -> Result<Cell, WirelessError> {
        cfg.validate("wireless.channel", num_clients)?;
        positive("wireless.bandwidth_hz", bandwidth_hz)?;
        if let Some(snr_db) = cfg.mean_snr_db {
            return Ok(Cell { distances_m: None, mean_snr: vec![db_to_linear(snr_db); num_clients] });
        }
        let distances: Vec<f64> = match &cfg.distances_m {
            Some(d) => d.clone(),
            None => (0..num_clients)
                .map(|c| {
                    let mut rng = stream(seed, Purpose::Placement, &[c as u64]);
                    let (lo, hi) = (cfg.min_distance_m.powi(2), cfg.cell_radius_m.powi(2));
                    // Uniform in the annulus' area.
                    (lo + rng.random::<f64>() * (hi - lo)).sqrt()
                })
                .collect(),
        };
        let noise_w = dbm_to_watt(cfg.noise_psd_dbm_hz) * bandwidth_hz * db_to_linear(cfg.noise_figure_db);
        let p = dbm_to_watt(cfg.tx_power_dbm);
        let mean_snr = distances
            .iter()
            .enumerate()
            .map(|(c, &d)| {
                let shadow_db = if cfg.shadowing_db > 0.0 {
                    let z: f64 = StandardNormal.sample(&mut stream(seed, Purpose::Shadowing, &[c as u64]));
                    cfg.shadowing_db * z
                } else {
                    0.0
                };
                p * db_to_linear(-cfg.path_loss.loss_db(d) - shadow_db) / noise_w
            })
            .collect();
        Ok(Cell { distances_m: Some(distances), mean_snr })
    }

    /// Small-scale fading power `|g|^2 ~ Exp(1)` of `client` in `round`.
    pub fn fading(seed: u64, round: u64, client: usize) -> f64 {
        Exp1.sample(&mut stream(seed, Purpose::Channel, &[round, client as u64]))
    }

    /// The instantaneous full-band SNR of each listed client in `round`.
    pub fn round_snr(&self, seed: u64, round: u64, clients: &[usize]) -> Vec<ClientChannel> {
        clients
            .iter()
            .map(|&c| {
                let fading = Self::fading(seed, round, c);
                ClientChannel { client: c, fading, snr: self.mean_snr[c] * fading }
            })
            .collect()
    }
}

/// One scheduled client's channel in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientChannel {
    pub client: usize,
    /// `|g|^2`.
    pub fading: f64,
    /// Full-band SNR `gamma = mean_snr * |g|^2`, linear.
    pub snr: f64,
}
