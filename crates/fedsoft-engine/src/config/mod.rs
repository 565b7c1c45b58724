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
pub use uplink::*;

use fedsoft_core::sparsify::MethodRules;
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
                toml::from_str(&merged).map_err(|e| match field_of_error(doc) {
                    Some(field) => format!("{field}: {}", e.message()),
                    None => e.message().to_string(),
                })
            };
            // Every override is applied before the document is read, so a variant can be switched one field
            // at a time (`--set partition.kind="dirichlet" --set partition.alpha=0.3 ...`). When the result
            // does not parse, the error names the last override that turned a readable document into an
            // unreadable one (a line number in the merged document would point at text the user never wrote).
            for o in overrides {
                apply_override(&mut doc, o)?;
            }
            match parse(&doc) {
                Ok(cfg) => cfg,
                Err(message) => {
                    // Only on failure: replay the overrides to find the culprit.
                    let mut replay: toml::Table = toml::from_str(text).map_err(parse_err)?;
                    let (mut blamed, mut was_readable) = (overrides.len() - 1, true);
                    for (i, o) in overrides.iter().enumerate() {
                        apply_override(&mut replay, o)?;
                        let readable = parse(&replay).is_ok();
                        if was_readable && !readable {
                            blamed = i;
                        }
                        was_readable = readable;
                    }
                    let path = format!("{origin} with --set {}", overrides[blamed]);
                    return Err(ConfigError::Parse { path, message });
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, every default spelled out: written beside results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// SHA-256 (hex) of the resolved config with the fields that change no result (the thread count, the
    /// export's naming) reset: two runs with the same digest compute the same thing. Stable across Rust
    /// releases, unlike `std`'s hasher, so it can key stored runs.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.canonical_toml().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The resolved config as TOML with the fields that change no result reset: what two runs must share to
    /// compute the same thing (the digest above and the resume check hash it).
    pub fn canonical_toml(&self) -> String {
        let mut cfg = self.clone();
        cfg.training.threads = None;
        cfg.export = Default::default();
        cfg.to_toml()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.export.validate()?;
        self.robust.validate()?;
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
        self.serve.validate()?;
        self.lora.validate(|| self.max_feasible_rank())?;
        self.clients.validate()?;
        self.wireless.validate(self.clients.total)?;
        self.tsfa.validate(self.max_feasible_rank()?)?;
        Ok(())
    }
}

impl ExperimentConfig {
    /// Checks of the training sections (data, training, method, controller, rounds), needed by `run` but not
    /// by `plan`: a paper preset can be planned before its data is at hand.
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        self.data.validate(self.model.arch)?;
        self.partition.validate(self.clients.total, self.data.samples_per_client)?;
        self.model.validate_run()?;
        self.training.validate()?;
        self.controller.validate()?;
        self.rounds.validate()?;
        Ok(())
    }

    /// The orthogonality weight in force.
    pub fn orthogonality(&self) -> f64 {
        self.training.orthogonality.unwrap_or_else(|| self.method.name.default_orthogonality_weight())
    }
}

/// The dotted field that keeps `doc` from being a config (`lora.rank` for `--set lora.rank=abc`): a line
/// number in the merged document would point at text the user never wrote, and serde's message alone ("invalid
/// type: string \"abc\", expected usize") does not say where.
fn field_of_error(doc: &toml::Table) -> Option<String> {
    let err = serde_path_to_error::deserialize::<_, ExperimentConfig>(toml::Value::Table(doc.clone())).err()?;
    let path = err.path().to_string();
    (path != ".").then_some(path)
}
