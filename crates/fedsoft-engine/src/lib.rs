//! The experiment layer of fedsoft: one TOML file describes an experiment ([`config`]); the TSFA planner
//! turns its wireless and bound settings into the offline table and the online controller ([`plan`]).

pub mod arch;
pub mod config;
pub mod plan;

pub use config::{ConfigError, ExperimentConfig};
