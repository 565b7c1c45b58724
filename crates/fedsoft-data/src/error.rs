//! Errors that name the file and the problem.

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    /// The system's reason is the source, so an error chain prints it once.
    #[error("cannot access {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("asset {asset}: {problem}")]
    Asset { asset: String, problem: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

impl DataError {
    pub fn file(path: &Path, problem: impl Into<String>) -> Self {
        DataError::File { path: path.to_path_buf(), problem: problem.into() }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DataError::Invalid { field: field.into(), problem: problem.into() }
    }
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}
