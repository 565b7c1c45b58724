//! The round engine's public face (docs/algorithms.md §9). The pieces live in their own modules: the prepared
//! [`Experiment`] ([`crate::experiment`]), backbone loading ([`crate::loading`]), the client step
//! ([`crate::client`]), upload validation ([`crate::validate`]), the client pools ([`crate::pool`]) and the
//! round driver ([`crate::round`]).

pub(crate) use crate::client::{LocalBatches, Trained};
pub use crate::experiment::{Experiment, RunOptions};
pub use crate::loading::load_backbone;
pub(crate) use crate::pool::{Arrival, method_err};
pub use crate::pool::{ClientPool, ClientUpload, LocalClients, RoundTask};
pub use crate::validate::Rejection;
