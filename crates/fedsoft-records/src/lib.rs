//! What a fedsoft run writes, as one schema: a record per round (`metrics.jsonl`), one per scheduled client
//! per round (`clients.jsonl`) and the run's summary (`summary.json`). The engine writes these types and the
//! report reads the same ones, so a field cannot drift between writer and reader; a value that can be
//! absent is an `Option` (written as `null` or left out), never a NaN, and fields added later default when
//! an older run is read.

mod files;

pub use files::write_atomic;
use serde::{Deserialize, Serialize};

/// How a run chose each round's sparsification ratio (the config's `controller.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerKind {
    /// TSFA: rank from the offline stage, ratio from the online controller.
    #[default]
    Tsfa,
    /// OSFA: the online controller at the configured `lora.rank`.
    Osfa,
    /// A constant ratio `controller.rho` at `lora.rank`; the uplink is still simulated and logged.
    Fixed,
}

impl ControllerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerKind::Tsfa => "tsfa",
            ControllerKind::Osfa => "osfa",
            ControllerKind::Fixed => "fixed",
        }
    }
    /// Whether the ratio is chosen per round (TSFA or OSFA).
    pub fn is_online(self) -> bool {
        self != ControllerKind::Fixed
    }
}

impl std::fmt::Display for ControllerKind {
    /// Padded, so that tables can set a column width (`{:<10}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The sparsification method of a run (the config's `method.name`). Its algorithm lives in fedsoft-core,
/// which re-exports this type; only the names are here, so a reader of run files needs no algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Soft,
    Flasc,
    Rlora,
    Hetlora,
    Fedlodrop,
    Ilora,
    Svd,
}

impl MethodKind {
    pub const ALL: [MethodKind; 7] = [
        MethodKind::Soft,
        MethodKind::Flasc,
        MethodKind::Rlora,
        MethodKind::Hetlora,
        MethodKind::Fedlodrop,
        MethodKind::Ilora,
        MethodKind::Svd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Soft => "soft",
            MethodKind::Flasc => "flasc",
            MethodKind::Rlora => "rlora",
            MethodKind::Hetlora => "hetlora",
            MethodKind::Fedlodrop => "fedlodrop",
            MethodKind::Ilora => "ilora",
            MethodKind::Svd => "svd",
        }
    }
}

impl std::fmt::Display for MethodKind {
    /// Padded, so that tables can set a column width (`{:<10}`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A method name that is none of [`MethodKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMethod(pub String);

impl std::fmt::Display for UnknownMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = MethodKind::ALL.iter().map(|m| m.as_str()).collect();
        write!(f, "unknown method {:?}; expected one of {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownMethod {}

impl std::str::FromStr for MethodKind {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MethodKind::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| UnknownMethod(s.to_string()))
    }
}

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
    pub method: MethodKind,
    pub controller: ControllerKind,
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
    #[serde(default)]
    pub covariance: Option<f64>,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_loss: Option<f64>,
    pub wall_s: f64,
    pub time: TimeSplit,
}

impl RoundRecord {
    /// The one-line progress report a run prints as each round ends (1-based round number), the same from the
    /// binary and from Python.
    pub fn progress_line(&self) -> String {
        let accuracy = self.test_accuracy.map_or(String::new(), |a| format!(" accuracy {a:.4}"));
        format!(
            "round {}: rho {:.3} delay {:.3} s (avg {:.3}) dropped {}{accuracy}",
            self.round + 1,
            self.rho,
            self.delay_s,
            self.avg_delay_s,
            self.dropped
        )
    }
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
    /// Why a dropped client's upload did not count (outage, crash, deadline, validation, a norm bound).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// What the server changed in a kept upload before using it (a `[robust]` clip, with the norms).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
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
    pub method: MethodKind,
    pub controller: ControllerKind,
    pub rounds: u64,
    pub completed: bool,
    pub num_classes: usize,
    pub rank: usize,
    /// The orthogonality weight λ in force (absent in runs written before it was recorded).
    #[serde(default)]
    pub orthogonality: Option<f64>,
    /// Test accuracy and loss of the model before the first round (absent in runs written before it was
    /// measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_test_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_test_loss: Option<f64>,
    /// Test accuracy and loss at the last evaluation; `null` when the run never evaluated.
    pub final_test_accuracy: Option<f64>,
    pub final_test_loss: Option<f64>,
    /// Time-average round delay. Under the paper's Lyapunov rule the budget is met as a long-run average
    /// only (it approaches `latency_budget_s` from above under Rayleigh fading), so a short run ends above it.
    pub avg_delay_s: f64,
    pub latency_budget_s: f64,
    /// The online rule (`lyapunov` or `horizon`); absent for a fixed ratio.
    #[serde(default)]
    pub online_rule: Option<String>,
    /// Mean of the rounds' drop ratios, beside the offline stage's `rho*` on the average channel: fading
    /// pushes the online ratio above `rho*` (absent in older runs).
    #[serde(default)]
    pub avg_rho: Option<f64>,
    #[serde(default)]
    pub offline_rho: Option<f64>,
    pub uplink_bits_paper: u64,
    pub uplink_bits_encoded: u64,
    pub uploads: u64,
    pub wall_s: f64,
    pub out_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            name: "t".into(),
            method: MethodKind::Soft,
            controller: ControllerKind::Tsfa,
            rounds: 2,
            completed: true,
            num_classes: 10,
            rank: 8,
            orthogonality: Some(0.01),
            initial_test_accuracy: None,
            initial_test_loss: None,
            final_test_accuracy: None,
            final_test_loss: Some(1.5),
            avg_delay_s: 1.2,
            latency_budget_s: 1.1,
            online_rule: Some("lyapunov".into()),
            avg_rho: Some(0.8),
            offline_rho: Some(0.75),
            uplink_bits_paper: 10,
            uplink_bits_encoded: 12,
            uploads: 2,
            wall_s: 3.0,
            out_dir: "runs/t".into(),
        }
    }

    #[test]
    fn kind_names_fill_a_column_width() {
        // The run and compare tables align their first columns with `{:<10}` and `{:<6}`.
        assert_eq!(format!("{:<10}|", MethodKind::Soft), "soft      |");
        assert_eq!(format!("{:>6}|", ControllerKind::Tsfa), "  tsfa|");
        assert_eq!(MethodKind::Flasc.to_string(), "flasc");
    }

    #[test]
    fn a_run_that_never_evaluated_round_trips() {
        let s = summary();
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"final_test_accuracy\":null"), "{text}");
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), s);
    }

    #[test]
    fn older_summaries_and_records_still_read() {
        let mut v = serde_json::to_value(summary()).unwrap();
        for k in ["orthogonality", "online_rule", "avg_rho", "offline_rho"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let s: Summary = serde_json::from_value(v).unwrap();
        assert_eq!((s.orthogonality, s.avg_rho), (None, None));
        let line = r#"{"round":0,"method":"soft","controller":"fixed","rank":8,"rho":0.9,"dense_delay_s":2.0,"delay_s":0.2,"avg_delay_s":0.2,"queue":0.0,"uplink_bits_paper":1,"uplink_bits_encoded":1,"kept_entries":1,"clients":[1],"dropped":0,"train_loss":2.3,"wall_s":1.0,"time":{"train_s":1.0,"sparsify_s":0.0,"aggregate_s":0.0,"eval_s":0.0,"other_s":0.0}}"#;
        let r: RoundRecord = serde_json::from_str(line).unwrap();
        assert_eq!((r.covariance, r.test_accuracy), (None, None));
    }

    #[test]
    fn controller_kinds_are_written_by_their_config_names() {
        for (kind, name) in
            [(ControllerKind::Tsfa, "tsfa"), (ControllerKind::Osfa, "osfa"), (ControllerKind::Fixed, "fixed")]
        {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ControllerKind>(&format!("\"{name}\"")).unwrap(), kind);
            assert_eq!(kind.to_string(), name);
            assert_eq!(kind.is_online(), name != "fixed");
        }
        let err = serde_json::from_str::<Summary>(&serde_json::to_string(&summary()).unwrap().replace("tsfa", "lyap"));
        assert!(err.unwrap_err().to_string().contains("lyap"));
    }

    #[test]
    fn method_kinds_are_written_by_their_config_names_and_unknown_ones_refused() {
        for kind in MethodKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<MethodKind>(&json).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<MethodKind>().unwrap(), kind);
        }
        let err = "topk".parse::<MethodKind>().unwrap_err().to_string();
        assert!(err.contains("\"topk\"") && err.contains("soft, flasc"), "{err}");
        let text = serde_json::to_string(&summary()).unwrap().replace("\"soft\"", "\"topk\"");
        assert!(serde_json::from_str::<Summary>(&text).unwrap_err().to_string().contains("topk"));
    }
}
