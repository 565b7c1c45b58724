//! The experiment layer of fedsoft: one TOML file describes an experiment ([`config`]); the TSFA planner
//! turns its wireless and bound settings into the offline table and the online controller ([`plan`]); the
//! round engine runs it ([`engine`]) on prepared data ([`data`]), writing metrics ([`metrics`]) and
//! checkpoints ([`checkpoint`]).

pub mod arch;
mod batched;
mod bounds;
pub mod checkpoint;
mod client;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod export;
pub mod fixtures;
pub mod handoff;
mod jsonl;
mod loading;
pub mod metrics;
pub mod pilot;
pub mod plan;
mod pool;
mod round;
pub mod rundir;
mod runfiles;
pub mod server;
mod validate;
pub mod workers;

pub use config::{ConfigError, ExperimentConfig};
pub use error::EngineError;
/// The classifier head as plain numbers (what crosses the network beside the factors); re-exported so that
/// the network layer reaches the model only through the engine.
pub use fedsoft_model::adapters::Head;
/// Subnormals flushed on the threads that train and evaluate, for front doors that start their own threads.
pub use fedsoft_model::subnormals;
