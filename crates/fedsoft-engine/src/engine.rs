//! The round engine's public face (docs/algorithms.md §9). The pieces live in their own modules: the prepared
//! [`Experiment`] ([`crate::experiment`]), backbone loading ([`crate::loading`]), the client's half of a round
//! ([`Client`], [`crate::client`]), the server's half ([`Server`], [`crate::server`]) with its upload check
//! ([`crate::validate`]), the client pools ([`crate::pool`]), the run's files ([`crate::runfiles`]) and the
//! round driver ([`crate::round`]).

pub use crate::client::Client;
pub use crate::experiment::{Experiment, RunOptions};
pub use crate::loading::load_backbone;
pub use crate::pool::{ClientPool, ClientUpload, LocalClients, RoundTask};
pub use crate::server::{Admitted, ClosedRound, RoundPlan, RoundRecords, Server};
pub use crate::validate::{Rejection, UploadCheck};
