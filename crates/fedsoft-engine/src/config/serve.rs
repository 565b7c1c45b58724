//! `[serve]`: how `fedsoft serve` listens and waits for clients.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[serve]`: the networked server (`fedsoft serve`). Without `tls_cert`/`tls_key` the server starts only on a
/// loopback address and only when `--insecure` asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// PEM certificate chain and private key of the server.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// File holding the secret that per-client tokens are derived from (HMAC-SHA256).
    pub secret_file: Option<PathBuf>,
    /// Seconds the server waits for a round's uploads; a client that has not uploaded by then is dropped
    /// from the round.
    pub round_deadline_s: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:50051".into(),
            tls_cert: None,
            tls_key: None,
            secret_file: None,
            round_deadline_s: 600.0,
        }
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sv = self;
        if !(sv.round_deadline_s.is_finite() && sv.round_deadline_s > 0.0) {
            return Err(ConfigError::invalid(
                "serve.round_deadline_s",
                format!("must be positive seconds, got {}", sv.round_deadline_s),
            ));
        }
        if sv.tls_cert.is_some() != sv.tls_key.is_some() {
            return Err(ConfigError::invalid(
                "serve.tls_key",
                "give both serve.tls_cert and serve.tls_key, or neither",
            ));
        }
        Ok(())
    }
}
