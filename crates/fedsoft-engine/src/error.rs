//! What a run can fail with. A mistake in the config stays a [`ConfigError`] (it names the field); the rest
//! says which file or stage failed and keeps the underlying error as its source, so the CLI (which prints the
//! whole chain) shows both without repeating either.

use crate::config::ConfigError;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or directory of the run could not be read or written (full disk, permissions, ...).
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are unusable: a damaged checkpoint, an adapter of another shape.
    #[error("{}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
    /// The output directory does not fit what was asked (`--resume` without a checkpoint, a run already
    /// there without `--resume`, a checkpoint of another config).
    #[error("{}: {detail}", dir.display())]
    RunDirectory { dir: PathBuf, detail: String },
    #[error(transparent)]
    Model(#[from] fedsoft_model::ModelError),
    #[error(transparent)]
    Data(#[from] fedsoft_data::DataError),
    #[error(transparent)]
    Core(#[from] fedsoft_core::CoreError),
    #[error(transparent)]
    Wireless(#[from] fedsoft_wireless::WirelessError),
    /// The global model or its test loss became non-finite; the run stops before recording the round, so its
    /// last checkpoint stays good.
    #[error("{what} after round {round}; the run stops at its last checkpoint ({hint})")]
    Diverged { round: u64, what: String, hint: String },
    /// What carries tasks to clients that are reached by messages failed as a whole (not one client).
    #[error("round {round}: the clients could not be reached: {detail}")]
    Transport { round: u64, detail: String },
    /// A value a front door hands in (a client's broadcast from Python, say) that does not fit the experiment.
    #[error("{what}: {detail}")]
    Argument { what: String, detail: String },
}

impl EngineError {
    /// A configuration problem found while running (the field and what was expected).
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        EngineError::Config(ConfigError::invalid(field, detail))
    }

    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        EngineError::Io { action, path: path.to_path_buf(), source }
    }

    pub fn file(path: &Path, detail: impl ToString) -> Self {
        EngineError::File { path: path.to_path_buf(), detail: detail.to_string() }
    }

    pub fn run_directory(dir: &Path, detail: impl Into<String>) -> Self {
        EngineError::RunDirectory { dir: dir.to_path_buf(), detail: detail.into() }
    }
}
