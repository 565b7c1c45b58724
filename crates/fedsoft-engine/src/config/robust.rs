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
        self.bound().validate().map_err(|e| ConfigError::from_core("robust", e))
    }

    /// What to try when the global model diverges: a bound if none is set; otherwise the one in force let the
    /// upload through (a lone first upload under a relative bound), or honest training itself diverged.
    pub fn divergence_hint(&self) -> &'static str {
        if self.bound().is_off() {
            "a [robust] bound (median_factor or max_norm) keeps huge uploads out"
        } else {
            "the [robust] bound in force did not prevent it: set robust.max_norm (a lone upload has no median to \
             compare with) or lower training.lr if honest training diverges"
        }
    }
}
