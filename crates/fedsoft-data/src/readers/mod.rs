//! Readers for the data sets fedsoft knows, in their official on-disk layouts.

pub mod agnews;
pub mod brown;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod spam;

use crate::error::DataError;
use std::path::{Path, PathBuf};

/// The entries of `dir` that `keep` accepts, sorted by path, so every reader sees files in one order.
pub(crate) fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    out.sort();
    Ok(out)
}
