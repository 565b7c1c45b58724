//! What a run writes: one record per round (`metrics.jsonl`), one per scheduled client per round
//! (`clients.jsonl`), and a summary (`summary.json`).

use serde::{Deserialize, Serialize};

/// Wall time of one round by phase.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimeSplit {
    pub train_s: f64,
    pub sparsify_s: f64,
    pub aggregate_s: f64,
    pub eval_s: f64,
    pub other_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub method: String,
    pub controller: String,
    pub rank: usize,
    pub rho: f64,
    /// `a_t`: this round's delay for a dense upload.
    pub dense_delay_s: f64,
    pub delay_s: f64,
    pub avg_delay_s: f64,
    pub queue: f64,
    pub uplink_bits_paper: u64,
    pub uplink_bits_encoded: u64,
    pub kept_entries: u64,
    pub clients: Vec<usize>,
    pub dropped: usize,
    /// `‖Cov‖` of the arrived clients' local models; `null` where they are not known (networked runs).
    pub covariance: Option<f64>,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_loss: Option<f64>,
    pub wall_s: f64,
    pub time: TimeSplit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub round: u64,
    pub client: usize,
    pub samples: usize,
    /// `|g|^2` this round.
    pub fading: f64,
    pub snr_db: f64,
    pub bandwidth_share: f64,
    pub kept_entries: u64,
    pub bits_paper: u64,
    pub bits_encoded: u64,
    pub delay_s: f64,
    pub train_loss: f64,
    pub dropped: bool,
    /// Why a dropped client's upload did not count (outage, crash, deadline, validation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Real seconds of local training, as the client measured them.
    #[serde(default)]
    pub train_wall_s: f64,
    /// Real seconds from task to upload (networked runs).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transfer_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub method: String,
    pub controller: String,
    pub rounds: u64,
    pub completed: bool,
    pub num_classes: usize,
    pub rank: usize,
    /// The orthogonality weight λ in force.
    pub orthogonality: f64,
    pub final_test_accuracy: f64,
    pub final_test_loss: f64,
    /// Time-average round delay. Under the paper's Lyapunov rule the budget is met as a long-run average
    /// only (it approaches `latency_budget_s` from above under Rayleigh fading), so a short run ends above it.
    pub avg_delay_s: f64,
    pub latency_budget_s: f64,
    /// The online rule (`lyapunov` or `horizon`); absent for a fixed ratio.
    pub online_rule: Option<String>,
    /// Mean of the rounds' drop ratios, beside the offline stage's `rho*` on the average channel: fading
    /// pushes the online ratio above `rho*`.
    pub avg_rho: f64,
    pub offline_rho: f64,
    pub uplink_bits_paper: u64,
    pub uplink_bits_encoded: u64,
    pub uploads: u64,
    pub wall_s: f64,
    pub out_dir: String,
}
