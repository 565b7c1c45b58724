//! `[training]` and `[method]`: local training and the sparsification method, with the sizes no run may exceed.

use super::ConfigError;
use fedsoft_core::sparsify::MethodRules;
use serde::{Deserialize, Serialize};

/// What happens to a client's optimiser state between the rounds it takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerStateMode {
    /// A new AdamW every round, as in the paper.
    #[default]
    Fresh,
    /// Each client keeps its AdamW moments and step count from its previous round (held per client: two
    /// adapter-sized buffers for every client that has trained, and saved in checkpoints).
    Keep,
}

/// How the scheduled clients' local training is executed in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// Each client trains on its own, the clients side by side on `training.threads` cores; the results do
    /// not depend on the thread count.
    #[default]
    PerClient,
    /// All of a round's clients through one pass of the frozen backbone per step, each sample through its
    /// own client's adapters; equal to `per_client` up to float rounding (larger matrix products).
    Batched,
}

/// More threads than any machine this runs on has cores: a larger `training.threads` is a typo.
pub(crate) const MAX_THREADS: usize = 4096;
/// Sizes past which a config is a typo rather than an experiment: refused with the field named instead of
/// failing an allocation later.
pub(crate) const MAX_CLIENTS: usize = 1_000_000;
pub(crate) const MAX_EPOCHS: usize = 10_000;
pub(crate) const MAX_BATCH: usize = 1 << 20;
pub(crate) const MAX_IMAGE_SIZE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// `cpu` or `cuda:N` (CUDA needs a build with `--features cuda`).
    pub device: String,
    pub batch_size: usize,
    pub local_epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub epsilon: f64,
    /// Whether a client's AdamW moments start fresh every round it is scheduled (the paper) or carry over.
    pub optimizer_state: OptimizerStateMode,
    /// Orthogonality weight `lambda`; the method's default when absent (0.01 for SOFT, 0 otherwise).
    pub orthogonality: Option<f64>,
    pub pooling: fedsoft_model::backbone::Pooling,
    /// Samples per evaluation batch.
    pub eval_batch: usize,
    /// Clients trained one by one (side by side on the cores) or batched through one backbone pass.
    pub execution: Execution,
    /// Cores for the scheduled clients' local work and for evaluation; absent or 0: every core (one on a
    /// CUDA device). Results are identical for every value, so it is not part of what `--resume` checks.
    pub threads: Option<usize>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            device: "cpu".into(),
            batch_size: 8,
            local_epochs: 1,
            lr: 1e-3,
            weight_decay: 1e-2,
            epsilon: 1e-8,
            optimizer_state: OptimizerStateMode::Fresh,
            orthogonality: None,
            pooling: fedsoft_model::backbone::Pooling::Cls,
            eval_batch: 64,
            execution: Execution::PerClient,
            threads: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    pub name: fedsoft_core::sparsify::MethodKind,
    /// Error feedback; the method's default when absent (on for soft, svd, rlora).
    pub error_feedback: Option<bool>,
    pub feedback_mode: fedsoft_core::feedback::FeedbackMode,
    #[serde(flatten)]
    pub options: fedsoft_core::sparsify::SparsifierOptions,
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig {
            name: fedsoft_core::sparsify::MethodKind::Soft,
            error_feedback: None,
            feedback_mode: fedsoft_core::feedback::FeedbackMode::Delta,
            options: Default::default(),
        }
    }
}

impl MethodConfig {
    pub fn error_feedback(&self) -> bool {
        self.error_feedback.unwrap_or_else(|| self.name.default_error_feedback())
    }
}

impl TrainingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        if t.batch_size == 0 || t.local_epochs == 0 || t.eval_batch == 0 {
            return Err(ConfigError::invalid("training", "batch_size, local_epochs and eval_batch must be positive"));
        }
        if t.local_epochs > MAX_EPOCHS || t.batch_size > MAX_BATCH || t.eval_batch > MAX_BATCH {
            return Err(ConfigError::invalid(
                "training",
                format!(
                    "local_epochs {} / batch_size {} / eval_batch {}: at most {MAX_EPOCHS} epochs and batches of \
                     at most {MAX_BATCH} samples",
                    t.local_epochs, t.batch_size, t.eval_batch
                ),
            ));
        }
        if let Some(n) = t.threads.filter(|&n| n > MAX_THREADS) {
            return Err(ConfigError::invalid(
                "training.threads",
                format!("{n} is more than {MAX_THREADS}; use 0 (or leave it out) for every core"),
            ));
        }
        for (name, v) in [("training.lr", t.lr), ("training.epsilon", t.epsilon)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(name, format!("must be positive, got {v}")));
            }
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(ConfigError::invalid("training.weight_decay", format!("must be >= 0, got {}", t.weight_decay)));
        }
        if let Some(l) = t.orthogonality
            && !(l.is_finite() && l >= 0.0)
        {
            return Err(ConfigError::invalid("training.orthogonality", format!("must be >= 0, got {l}")));
        }
        if !(t.device == "cpu" || t.device == "cuda" || t.device.starts_with("cuda:")) {
            return Err(ConfigError::invalid("training.device", format!("{:?}: expected cpu or cuda:N", t.device)));
        }
        Ok(())
    }
}
