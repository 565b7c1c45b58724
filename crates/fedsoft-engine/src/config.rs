//! One TOML file per experiment, validated with messages that name the field.
//!
//! Sections: `[model]`, `[lora]`, `[clients]`, `[wireless]` (with `[wireless.channel]`) and `[tsfa]` (with
//! `[tsfa.bound]`). Every field has a default except `model.arch`; unknown fields are errors, so a typo
//! never silently falls back to a default. `--set section.field=value` overrides are applied to the parsed
//! document before it is checked.

use crate::arch::{Arch, Target};
use fedsoft_core::lora::ModuleShape;
use fedsoft_wireless::bandwidth::BandwidthRule;
use fedsoft_wireless::channel::ChannelConfig;
use fedsoft_wireless::rate::RateModel;
use fedsoft_wireless::tsfa::BoundConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("override {arg:?}: {message}")]
    Override { arg: String, message: String },
    #[error("config field {field}: {detail}")]
    Invalid { field: String, detail: String },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), detail: detail.into() }
    }
}

impl From<fedsoft_wireless::WirelessError> for ConfigError {
    fn from(e: fedsoft_wireless::WirelessError) -> Self {
        match e {
            fedsoft_wireless::WirelessError::Invalid { field, detail } => ConfigError::Invalid { field, detail },
            other => ConfigError::invalid("wireless", other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default = "default_name")]
    pub name: String,
    /// One seed fixes data split, sampling, channels, initialisation and masks.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: ModelConfig,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default)]
    pub wireless: WirelessConfig,
    #[serde(default)]
    pub tsfa: TsfaConfig,
}

fn default_name() -> String {
    "experiment".into()
}
fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Widths for `arch = "custom"` (and checked against the known ones otherwise).
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub intermediate: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    /// Blocks that get adapters; all blocks when absent.
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, targets: vec![Target::Query, Target::Value], layers: None }
    }
}

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
    pub channel: ChannelConfig,
}

impl Default for WirelessConfig {
    fn default() -> Self {
        WirelessConfig {
            bandwidth_hz: 1e6,
            rate_model: RateModel::Paper,
            bandwidth_rule: BandwidthRule::MinMax,
            value_bits: 32,
            index_overhead: false,
            channel: ChannelConfig { mean_snr_db: Some(10.0), ..ChannelConfig::default() },
        }
    }
}

/// `tau_bar`, in seconds or as the average-channel delay of an operating point `(rank, rho)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LatencyBudget {
    Seconds(f64),
    OperatingPoint { rank: usize, rho: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsfaConfig {
    pub latency_budget: LatencyBudget,
    pub rho_min: f64,
    pub rho_max: f64,
    pub candidate_ranks: Vec<usize>,
    /// `kappa_V` of the calibration `V w_sp = kappa tau_bar a_bar / Psi'(rho*)` (SPEC §8.7).
    pub v_kappa: f64,
    /// Explicit `V w_sp`, overriding the calibration.
    pub v_wsp: Option<f64>,
    pub bound: BoundConfig,
}

impl Default for TsfaConfig {
    fn default() -> Self {
        TsfaConfig {
            latency_budget: LatencyBudget::OperatingPoint { rank: 8, rho: 0.75 },
            rho_min: 0.5,
            rho_max: 0.99,
            candidate_ranks: vec![1, 2, 4, 8, 16, 32, 64],
            v_kappa: 1.0,
            v_wsp: None,
            bound: BoundConfig::default(),
        }
    }
}

/// Resolved transformer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub hidden: usize,
    pub layers: usize,
    pub intermediate: usize,
}

impl ExperimentConfig {
    /// Reads, overrides and validates a config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse { path: origin.into(), message: e.to_string() };
        let cfg: ExperimentConfig = if overrides.is_empty() {
            toml::from_str(text).map_err(parse_err)?
        } else {
            let mut doc: toml::Table = toml::from_str(text).map_err(parse_err)?;
            for o in overrides {
                apply_override(&mut doc, o)?;
            }
            let merged = toml::to_string(&doc)
                .map_err(|e| ConfigError::Parse { path: origin.into(), message: e.to_string() })?;
            toml::from_str(&merged).map_err(|e| ConfigError::Parse {
                path: format!("{origin} (with --set overrides)"),
                message: e.to_string(),
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, every default spelled out: written beside results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    pub fn geometry(&self) -> Result<Geometry, ConfigError> {
        let m = &self.model;
        let given = (m.hidden, m.layers, m.intermediate);
        match self.model.arch.geometry() {
            Some((hidden, layers, intermediate)) => {
                for (name, v, want) in [
                    ("hidden", m.hidden, hidden),
                    ("layers", m.layers, layers),
                    ("intermediate", m.intermediate, intermediate),
                ] {
                    if let Some(v) = v
                        && v != want
                    {
                        return Err(ConfigError::invalid(
                            format!("model.{name}"),
                            format!("{} has {name} = {want}, got {v}; use arch = \"custom\" for other widths", m.arch),
                        ));
                    }
                }
                Ok(Geometry { hidden, layers, intermediate })
            }
            None => match given {
                (Some(hidden), Some(layers), Some(intermediate)) if hidden > 0 && layers > 0 && intermediate > 0 => {
                    Ok(Geometry { hidden, layers, intermediate })
                }
                _ => Err(ConfigError::invalid(
                    "model",
                    "arch = \"custom\" needs positive model.hidden, model.layers and model.intermediate",
                )),
            },
        }
    }

    /// Blocks that carry adapters.
    pub fn adapted_layers(&self) -> Result<Vec<usize>, ConfigError> {
        let g = self.geometry()?;
        let layers = self.lora.layers.clone().unwrap_or_else(|| (0..g.layers).collect());
        if let Some(&bad) = layers.iter().find(|&&l| l >= g.layers) {
            return Err(ConfigError::invalid(
                "lora.layers",
                format!("block {bad} does not exist: the model has {}", g.layers),
            ));
        }
        Ok(layers)
    }

    /// Adapted modules at rank `r`, named `layer.N.target`.
    pub fn lora_shapes(&self, r: usize) -> Result<Vec<ModuleShape>, ConfigError> {
        let g = self.geometry()?;
        let mut shapes = Vec::new();
        for l in self.adapted_layers()? {
            for t in &self.lora.targets {
                let (d, k) = t.dims(g.hidden, g.intermediate);
                shapes.push(ModuleShape::new(format!("layer.{l}.{}", t.as_str()), d, k, r));
            }
        }
        Ok(shapes)
    }

    /// `sum_l (d_l + k_l)`: LoRA entries per unit of rank.
    pub fn params_per_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d + s.k).sum())
    }

    /// The narrowest adapted layer: no rank may exceed it.
    pub fn max_feasible_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d.min(s.k)).min().unwrap_or(0))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.geometry()?;
        let mut targets = self.lora.targets.clone();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(ConfigError::invalid("lora.targets", "is empty: name at least one layer to adapt"));
        }
        if targets.len() != self.lora.targets.len() {
            return Err(ConfigError::invalid("lora.targets", "lists a layer twice"));
        }
        if self.lora.layers.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::invalid("lora.layers", "is empty: omit it to adapt every block"));
        }
        let width = self.max_feasible_rank()?;
        if self.lora.rank == 0 || self.lora.rank > width {
            return Err(ConfigError::invalid(
                "lora.rank",
                format!("must be between 1 and the narrowest adapted layer width {width}, got {}", self.lora.rank),
            ));
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return Err(ConfigError::invalid("lora.alpha", format!("must be positive, got {}", self.lora.alpha)));
        }
        let c = &self.clients;
        if c.total == 0 {
            return Err(ConfigError::invalid("clients.total", "must be at least 1"));
        }
        if c.per_round == 0 || c.per_round > c.total {
            return Err(ConfigError::invalid(
                "clients.per_round",
                format!("must be between 1 and clients.total = {}, got {}", c.total, c.per_round),
            ));
        }
        let w = &self.wireless;
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
        w.channel.validate("wireless.channel", c.total)?;
        let t = &self.tsfa;
        if t.candidate_ranks.is_empty() {
            return Err(ConfigError::invalid("tsfa.candidate_ranks", "is empty: give at least one rank"));
        }
        if let Some(&bad) = t.candidate_ranks.iter().find(|&&r| r == 0 || r > width) {
            return Err(ConfigError::invalid(
                "tsfa.candidate_ranks",
                format!("rank {bad} is outside 1..={width} (the narrowest adapted layer)"),
            ));
        }
        match t.latency_budget {
            LatencyBudget::Seconds(s) if !(s.is_finite() && s > 0.0) => {
                return Err(ConfigError::invalid("tsfa.latency_budget", format!("must be positive seconds, got {s}")));
            }
            LatencyBudget::OperatingPoint { rank, rho } => {
                if rank == 0 || rank > width {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rank",
                        format!("must be in 1..={width}, got {rank}"),
                    ));
                }
                if !(0.0..1.0).contains(&rho) {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rho",
                        format!("must be in [0, 1), got {rho}"),
                    ));
                }
            }
            _ => {}
        }
        if !(t.v_kappa.is_finite() && t.v_kappa > 0.0) {
            return Err(ConfigError::invalid("tsfa.v_kappa", format!("must be positive, got {}", t.v_kappa)));
        }
        if let Some(v) = t.v_wsp
            && !(v.is_finite() && v > 0.0)
        {
            return Err(ConfigError::invalid("tsfa.v_wsp", format!("must be positive, got {v}")));
        }
        t.bound.validate("tsfa.bound")?;
        if !(0.0..1.0).contains(&t.rho_min) || !(0.0..1.0).contains(&t.rho_max) || t.rho_min >= t.rho_max {
            return Err(ConfigError::invalid(
                "tsfa.rho_min",
                format!("need 0 <= rho_min < rho_max < 1, got rho_min = {} and rho_max = {}", t.rho_min, t.rho_max),
            ));
        }
        Ok(())
    }
}

/// Applies `a.b.c=value`: `value` is read as a TOML value (number, bool, array, inline table, quoted
/// string) and, failing that, taken as a bare string.
pub fn apply_override(doc: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |m: &str| ConfigError::Override { arg: arg.into(), message: m.into() };
    let (key, raw) = arg.split_once('=').ok_or_else(|| err("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(err("the key must be a dotted path such as lora.rank"));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| err(&format!("{p} is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
