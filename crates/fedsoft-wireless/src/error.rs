//! Typed errors of the wireless crate.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum WirelessError {
    /// A setting is out of range; `field` is its dotted config path.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// A numerical procedure could not meet its target.
    #[error("{0}")]
    Numerical(String),
}

impl WirelessError {
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        WirelessError::Invalid { field: field.into(), detail: detail.into() }
    }
}

/// Fails with a message naming `field` unless `x` is finite and `> 0`.
pub(crate) fn positive(field: &str, x: f64) -> Result<(), WirelessError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(WirelessError::invalid(field, format!("must be a positive number, got {x}")))
    }
}

/// Fails with a message naming `field` unless `x` is finite.
pub(crate) fn finite(field: &str, x: f64) -> Result<(), WirelessError> {
    if x.is_finite() { Ok(()) } else { Err(WirelessError::invalid(field, format!("must be a finite number, got {x}"))) }
}
