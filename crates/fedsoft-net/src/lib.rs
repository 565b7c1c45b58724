//! fedsoft over the network: `fedsoft serve` drives the round engine with its scheduled clients' local work
//! done by remote `fedsoft join` processes, over gRPC (tonic) with TLS (rustls) and per-client tokens.
//!
//! The server is the engine's own round loop ([`fedsoft_engine::engine::Experiment::run_with`]) with a
//! [`server::RemoteClients`] pool; a client runs the engine's own client step
//! ([`fedsoft_engine::engine::Client::update`]). Nothing of a round is implemented twice.

pub mod auth;
pub mod client;
pub mod memory;
pub mod server;
pub mod wire;

/// The generated protocol (`proto/fedsoft.proto`).
pub mod proto {
    tonic::include_proto!("fedsoft.v1");
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Config(#[from] fedsoft_engine::ConfigError),
    #[error(transparent)]
    Engine(#[from] fedsoft_engine::EngineError),
    /// A setting that makes the server or client unsafe or impossible to start.
    #[error("{field}: {detail}")]
    Setup { field: String, detail: String },
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    /// The server refused this client (bad token, unknown id); retrying cannot help.
    #[error("the server refused client {client}: {detail}")]
    Refused { client: u32, detail: String },
    /// No contact with the server for longer than the client's patience.
    #[error("no contact with {server} for {seconds:.1} s (--patience {patience} s): {detail}")]
    Unreachable { server: String, seconds: f64, patience: f64, detail: String },
}

impl NetError {
    pub(crate) fn setup(field: &str, detail: impl ToString) -> Self {
        NetError::Setup { field: field.into(), detail: detail.to_string() }
    }
    pub(crate) fn io(path: &std::path::Path, e: impl ToString) -> Self {
        NetError::Io { path: path.display().to_string(), detail: e.to_string() }
    }
}

/// An error and its sources as one line (`a: b: c`), for errors whose `Display` alone says only "transport
/// error" and whose `Debug` is Rust's struct syntax.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
}

/// Metadata keys of the two authentication entries.
pub const CLIENT_KEY: &str = "fedsoft-client";
pub const AUTH_KEY: &str = "authorization";
/// Metadata key of the session a join handed out (`JoinReply.session`).
pub const SESSION_KEY: &str = "fedsoft-session";
