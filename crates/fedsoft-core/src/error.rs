//! Typed errors of the core crate; the CLI turns them into messages for people.

use thiserror::Error;

/// Every way the core algorithms can refuse their input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// A value lies outside its allowed range; `what` names the parameter.
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// Two states that must describe the same modules do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape { what: String, expected: String, got: String },
    /// An encoded upload could not be decoded.
    #[error("malformed upload: {0}")]
    Decode(String),
    /// A well-formed upload holding a value that is not finite: what a client whose training diverged sends,
    /// told apart from damaged bytes so the server can say which it was.
    #[error("malformed upload: module {module}: non-finite value at entry {entry}")]
    NonFinite { module: String, entry: u64 },
}

impl CoreError {
    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        CoreError::Invalid { what: what.into(), detail: detail.into() }
    }
    pub(crate) fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        CoreError::Shape { what: what.into(), expected: expected.to_string(), got: got.to_string() }
    }
}
