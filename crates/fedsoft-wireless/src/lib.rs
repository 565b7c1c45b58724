//! The wireless side of fedsoft: the uplink model and the TSFA controller, with no tensor backend.
//!
//! - [`channel`]: client placement, path loss, shadowing and Rayleigh block fading, drawn from streams keyed
//!   by `(seed, round, client)` so every method in a comparison sees the same channels.
//! - [`rate`] and [`bandwidth`]: the paper's and the physical rate model, per-client delay, and the three
//!   bandwidth rules (equal, the paper's Eq. 41, min-max delay via Lambert W).
//! - [`tsfa`]: the offline rank selection (convergence bound, Lemma 2) and the online Lyapunov
//!   drift-plus-penalty control of the sparsification ratio.
//! - [`control`]: the per-round ratio rules behind one trait (fixed, Lyapunov, finite-horizon).
//! - [`uplink`]: one round's transmissions as a whole (band split, delays, outage, round time).
//! - [`tsfa::plan`]: the whole TSFA plan from plain settings (used by the engine and the Python package).
//! - [`simulate`]: the controller alone over many rounds, for `fedsoft plan --simulate` and the tests.

pub mod bandwidth;
pub mod channel;
pub mod control;
pub mod error;
pub mod rate;
pub mod simulate;
pub mod tsfa;
pub mod units;
pub mod uplink;

pub use error::WirelessError;
