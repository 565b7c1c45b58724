//! TSFA, the two-stage federated algorithm (docs/algorithms.md §6–8): choose the LoRA rank offline from the convergence
//! bound with the average channel, then choose the sparsification ratio and bandwidth online, every round,
//! by Lyapunov drift-plus-penalty under a long-term latency constraint.

pub mod bound;
pub mod offline;
pub mod online;
pub mod plan;
pub mod psi;

pub use bound::{BoundConfig, SigmaProfile};
pub use offline::{Link, OfflinePlan, OfflineRow, plan_offline};
pub use online::{LyapunovController, calibrate_v, solve_rho};
pub use plan::{LatencyBudget, PlanInputs, RatioRule, TsfaPlan, TsfaSettings, expected_gamma};
pub use psi::Psi;
