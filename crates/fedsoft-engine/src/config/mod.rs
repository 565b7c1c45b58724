//! One TOML file per experiment, validated with messages that name the field.
//!
//! Sections: `[model]`, `[lora]`, `[clients]`, `[wireless]` (with `[wireless.channel]`) and `[tsfa]` (with
//! `[tsfa.bound]`). Every field has a default except `model.arch`; unknown fields are errors, so a typo
//! never silently falls back to a default. `--set section.field=value` overrides are applied to the parsed
//! document before it is checked.

mod control;
mod data;
mod error;
mod model;
mod overrides;
mod robust;
mod serve;
mod training;
mod uplink;

pub use control::*;
pub use data::*;
pub use error::*;
pub use model::*;
pub use overrides::*;
pub use robust::*;
pub use serve::*;
pub use training::*;
use training::{MAX_BATCH, MAX_CLIENTS, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_THREADS};
pub use uplink::*;

use crate::arch::Arch;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub partition: PartitionConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub method: MethodConfig,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub rounds: RoundsConfig,
    /// How `fedsoft serve` listens; ignored by in-process runs.
    #[serde(default)]
    pub serve: ServeConfig,
    /// Server-side norm bounds on uploads (off unless a bound is given).
    #[serde(default)]
    pub robust: RobustConfig,
    /// How the final adapter is exported for PEFT.
    #[serde(default)]
    pub export: ExportConfig,
}

fn default_name() -> String {
    "experiment".into()
}
fn default_seed() -> u64 {
    1
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
            let parse = |doc: &toml::Table| -> Result<ExperimentConfig, String> {
                let merged = toml::to_string(doc).map_err(|e| e.to_string())?;
                toml::from_str(&merged).map_err(|e| e.message().to_string())
            };
            // Applied one at a time, so an error names the override that caused it (a line number in the
            // merged document would point at text the user never wrote).
            let mut parsed = None;
            for o in overrides {
                apply_override(&mut doc, o)?;
                parsed = Some(
                    parse(&doc)
                        .map_err(|message| ConfigError::Parse { path: format!("{origin} with --set {o}"), message })?,
                );
            }
            parsed.expect("this branch has at least one override")
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, every default spelled out: written beside results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.export.transformers, 4 | 5) {
            return Err(ConfigError::invalid(
                "export.transformers",
                format!("must be 4 or 5 (the transformers major version), got {}", self.export.transformers),
            ));
        }
        self.robust.bound().validate().map_err(|e| match e {
            fedsoft_core::CoreError::Invalid { what, detail } => ConfigError::invalid(what, detail),
            other => ConfigError::invalid("robust", other.to_string()),
        })?;
        // The name becomes a directory under runs/: a path there would write elsewhere.
        let separator = |c: char| c == '/' || c == '\\' || c.is_control();
        if self.name.trim().is_empty() || self.name.starts_with('.') || self.name.contains(separator) {
            return Err(ConfigError::invalid(
                "name",
                format!(
                    "{:?} is not a plain run name: no path separators and no leading '.'; choose where a run \
                     goes with --out",
                    self.name
                ),
            ));
        }
        self.geometry()?;
        let sv = &self.serve;
        if !(sv.round_deadline_s.is_finite() && sv.round_deadline_s > 0.0) {
            return Err(ConfigError::invalid(
                "serve.round_deadline_s",
                format!("must be positive seconds, got {}", sv.round_deadline_s),
            ));
        }
        if sv.tls_cert.is_some() != sv.tls_key.is_some() {
            return Err(ConfigError::invalid(
                "serve.tls_key",
                "give both serve.tls_cert and serve.tls_key, or neither",
            ));
        }
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
        if t.pilot.is_some_and(|p| p.rounds == 0) {
            return Err(ConfigError::invalid("tsfa.pilot.rounds", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.rho_min) || !(0.0..1.0).contains(&t.rho_max) || t.rho_min >= t.rho_max {
            return Err(ConfigError::invalid(
                "tsfa.rho_min",
                format!("need 0 <= rho_min < rho_max < 1, got rho_min = {} and rho_max = {}", t.rho_min, t.rho_max),
            ));
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Checks of the training sections (data, training, method, controller, rounds), needed by `run` but not
    /// by `plan`: a paper preset can be planned before its data is at hand.
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        // A custom geometry's kind is known only from its checkpoint; the engine checks it there.
        let text_model = matches!(self.model.arch, Arch::MinilmL6 | Arch::BertBase | Arch::DistilbertBase);
        let vision_model = matches!(self.model.arch, Arch::VitB16 | Arch::Dinov2S14);
        if (text_model && !d.dataset.is_text()) || (vision_model && d.dataset.is_text()) {
            return Err(ConfigError::invalid(
                "data.dataset",
                format!("{:?} does not suit model.arch = {}", d.dataset, self.model.arch),
            ));
        }
        if d.asset().is_none() && d.path.is_none() {
            return Err(ConfigError::invalid(
                "data.path",
                format!("{:?} is not packaged: give the directory or file that holds it", d.dataset),
            ));
        }
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            return Err(ConfigError::invalid(
                "data.test_fraction",
                format!("must be in (0, 1), got {}", d.test_fraction),
            ));
        }
        if d.samples_per_client == Some(0) || d.test_samples == Some(0) {
            return Err(ConfigError::invalid("data", "samples_per_client and test_samples must be positive"));
        }
        if d.image_size == 0 || d.max_len < 2 || d.sentences_per_sample == 0 {
            return Err(ConfigError::invalid(
                "data",
                "image_size, max_len (>= 2) and sentences_per_sample must be positive",
            ));
        }
        if self.model.arch == Arch::Custom && self.model.path.is_none() {
            return Err(ConfigError::invalid(
                "model.path",
                "arch = \"custom\" is trained from a checkpoint: give its directory",
            ));
        }
        if self.model.path.is_none() && !matches!(self.model.arch, Arch::MinilmL6 | Arch::Dinov2S14) {
            return Err(ConfigError::invalid(
                "model.path",
                format!(
                    "{} is not packaged: give its checkpoint directory (config.json + model.safetensors)",
                    self.model.arch
                ),
            ));
        }
        let t = &self.training;
        if t.batch_size == 0 || t.local_epochs == 0 || t.eval_batch == 0 {
            return Err(ConfigError::invalid("training", "batch_size, local_epochs and eval_batch must be positive"));
        }
        if t.local_epochs > MAX_EPOCHS || t.batch_size > MAX_BATCH || t.eval_batch > MAX_BATCH {
            return Err(ConfigError::invalid(
                "training",
                format!(
                    "local_epochs {} / batch_size {} / eval_batch {}: at most {MAX_EPOCHS} epochs and batches of \
                     at most {MAX_BATCH} samples",
                    t.local_epochs, t.batch_size, t.eval_batch
                ),
            ));
        }
        if self.data.image_size > MAX_IMAGE_SIZE {
            return Err(ConfigError::invalid(
                "data.image_size",
                format!("{} pixels is more than {MAX_IMAGE_SIZE} per side", self.data.image_size),
            ));
        }
        if let Some(n) = t.threads.filter(|&n| n > MAX_THREADS) {
            return Err(ConfigError::invalid(
                "training.threads",
                format!("{n} is more than {MAX_THREADS}; use 0 (or leave it out) for every core"),
            ));
        }
        for (name, v) in [("training.lr", t.lr), ("training.epsilon", t.epsilon)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(name, format!("must be positive, got {v}")));
            }
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(ConfigError::invalid("training.weight_decay", format!("must be >= 0, got {}", t.weight_decay)));
        }
        if let Some(l) = t.orthogonality
            && !(l.is_finite() && l >= 0.0)
        {
            return Err(ConfigError::invalid("training.orthogonality", format!("must be >= 0, got {l}")));
        }
        if !(t.device == "cpu" || t.device == "cuda" || t.device.starts_with("cuda:")) {
            return Err(ConfigError::invalid("training.device", format!("{:?}: expected cpu or cuda:N", t.device)));
        }
        let c = &self.controller;
        if !(0.0..1.0).contains(&c.rho) {
            return Err(ConfigError::invalid(
                "controller.rho",
                format!("the dropped fraction must be in [0, 1), got {}", c.rho),
            ));
        }
        let r = &self.rounds;
        if r.total == 0 || r.eval_every == 0 || r.checkpoint_every == 0 {
            return Err(ConfigError::invalid("rounds", "total, eval_every and checkpoint_every must be positive"));
        }
        if let Some(o) = r.outage_delay_s
            && !(o.is_finite() && o > 0.0)
        {
            return Err(ConfigError::invalid("rounds.outage_delay_s", format!("must be positive, got {o}")));
        }
        Ok(())
    }

    /// The orthogonality weight in force.
    pub fn orthogonality(&self) -> f64 {
        self.training.orthogonality.unwrap_or_else(|| self.method.name.default_orthogonality_weight())
    }
}
