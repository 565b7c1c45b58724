//! Errors that name the file, tensor or setting at fault.

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("tensor {name}: {problem}")]
    Tensor { name: String, problem: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error(transparent)]
    Core(#[from] fedsoft_core::CoreError),
}

impl ModelError {
    pub fn file(path: &Path, problem: impl Into<String>) -> Self {
        ModelError::File { path: path.to_path_buf(), problem: problem.into() }
    }
    pub fn tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        ModelError::Tensor { name: name.into(), problem: problem.into() }
    }
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ModelError::Invalid { field: field.into(), problem: problem.into() }
    }
}
