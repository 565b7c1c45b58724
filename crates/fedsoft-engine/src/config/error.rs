//! The engine's configuration errors: each names the field (or file) and what was expected.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read; the system's reason is the source (the CLI prints the chain).
    #[error("cannot read config {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("override {arg:?}: {message}")]
    Override { arg: String, message: String },
    #[error("config field {field}: {detail}")]
    Invalid { field: String, detail: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), detail: detail.into() }
    }

    /// A core check's refusal of a config section: the field the core names, or the section itself.
    pub fn from_core(section: &str, e: fedsoft_core::CoreError) -> Self {
        match e {
            fedsoft_core::CoreError::Invalid { what, detail } => ConfigError::invalid(what, detail),
            other => ConfigError::invalid(section, other.to_string()),
        }
    }
}

impl ConfigError {
    /// The model crate's refusal of the LoRA geometry (`fedsoft_model::geometry`), against the field it names.
    pub fn from_model(e: fedsoft_model::error::ModelError) -> Self {
        match e {
            fedsoft_model::error::ModelError::Invalid { field, problem } => ConfigError::invalid(field, problem),
            other => ConfigError::invalid("lora", other.to_string()),
        }
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
