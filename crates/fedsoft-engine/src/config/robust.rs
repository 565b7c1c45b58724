//! `[robust]`: server-side norm bounds on uploads.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[robust]`: how far one upload may move each LoRA module and the head in a round
/// (`fedsoft_core::robust`). The limit of a part is `max_norm`, or `median_factor` times the round's median
/// norm of that part, whichever is smaller; `action` rejects an upload over a limit or clips it to the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RobustConfig {
    pub max_norm: Option<f64>,
    pub median_factor: Option<f64>,
    pub action: fedsoft_core::robust::BoundAction,
}

impl RobustConfig {
    pub fn bound(&self) -> fedsoft_core::robust::NormBound {
        fedsoft_core::robust::NormBound { max_norm: self.max_norm, median_factor: self.median_factor }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bound().validate().map_err(|e| match e {
            fedsoft_core::CoreError::Invalid { what, detail } => ConfigError::invalid(what, detail),
            other => ConfigError::invalid("robust", other.to_string()),
        })
    }
}
