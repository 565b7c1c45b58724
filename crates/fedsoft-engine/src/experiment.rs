//! A prepared experiment: the validated config, the frozen backbone and adapter plan, the partitioned data
//! and the TSFA planner, built once and shared by every round (docs/algorithms.md §9).
//!
//! One frozen backbone is shared by every client; a client's persistent state is only its error-feedback
//! memory (and, on request, its optimiser moments). Every random draw is keyed by `(seed, round, client)`,
//! so methods compared under one seed see the same clients, batches and channels, and a resumed run
//! continues exactly where it stopped. The roles that use it: the client's half of a round in
//! [`crate::client`], the server's half in [`crate::server`] (its check of an upload in [`crate::validate`]),
//! the run's files in [`crate::runfiles`]; the round driver that composes them in [`crate::round`].

use crate::checkpoint::{Meta, RunState};
use crate::config::{ControllerKind, ExperimentConfig};
use crate::data::{TaskData, load_task};
use crate::error::EngineError;
use crate::loading::load_backbone;
use crate::plan::Planner;
use crate::validate::UploadCheck;
use crate::workers::Workers;
use burn::tensor::Device;
use fedsoft_core::lora::LoraState;
use fedsoft_core::sparsify::{Sparsifier, build};
use fedsoft_model::adapters::{AdapterPlan, Adapters, Head};
use fedsoft_model::backbone::Backbone;
use fedsoft_model::device::parse_device;
use fedsoft_model::load::adapter_plan;
use fedsoft_model::train::{TrainSettings, accuracy_and_loss, score_batch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a run writes and reads.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub resume: bool,
    /// The asset cache.
    pub cache: PathBuf,
    /// Stop after this round (exclusive), leaving a checkpoint: for tests of interruption.
    pub stop_after: Option<u64>,
}

/// A prepared experiment: model, data, plan and uplink, ready to run rounds.
pub struct Experiment {
    pub(crate) cfg: ExperimentConfig,
    pub(crate) device: Device,
    pub(crate) backbone: Backbone,
    pub(crate) plan: AdapterPlan,
    pub(crate) task: TaskData,
    pub(crate) planner: Planner,
    pub(crate) rank: usize,
    pub(crate) sparsifier: Box<dyn Sparsifier>,
    pub(crate) check: UploadCheck,
}

/// What the outside (the network layer, tools, tests) may read of a prepared experiment.
impl Experiment {
    /// The resolved configuration (with a pilot's measured profile, if one ran).
    pub fn config(&self) -> &ExperimentConfig {
        &self.cfg
    }
    /// The adapted modules, in upload order.
    pub fn shapes(&self) -> &[fedsoft_core::lora::ModuleShape] {
        &self.plan.shapes
    }
    /// `(hidden, classes)`: the classification head's shape.
    pub fn head_dims(&self) -> (usize, usize) {
        (self.backbone.spec.hidden, self.task.classes.len())
    }
    /// The LoRA rank the run trains at (TSFA's `r*`, or the configured rank).
    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn planner(&self) -> &Planner {
        &self.planner
    }
    /// What the server requires of an upload (validation's one home).
    pub fn upload_check(&self) -> &UploadCheck {
        &self.check
    }
    /// Floating-point operations of the products of one training sample's step ([`fedsoft_model::flops`]),
    /// for image models, whose samples all have the same tokens; `None` for text, whose padded length varies
    /// by batch.
    pub fn training_flops_per_sample(&self) -> Option<f64> {
        use fedsoft_model::flops::{AdaptedLinear, StepShape, training_flops_per_sample};
        use fedsoft_model::spec::Family;
        let spec = &self.backbone.spec;
        if !matches!(spec.family, Family::Vit | Family::Dinov2) || spec.patch == 0 {
            return None;
        }
        let side = self.cfg.data.image_size / spec.patch;
        let lora = &self.cfg.lora;
        let blocks =
            fedsoft_model::geometry::adapted_modules(spec.layers, &lora.targets, lora.layers.as_deref()).ok()?;
        let adapted: Vec<AdaptedLinear> = blocks
            .iter()
            .zip(&self.plan.shapes)
            .map(|(&(block, _), shape)| AdaptedLinear { block, d: shape.d, k: shape.k })
            .collect();
        Some(training_flops_per_sample(&StepShape {
            spec,
            tokens: 1 + side * side,
            patch_inputs: spec.channels * spec.patch * spec.patch,
            adapted: &adapted,
            rank: self.rank,
            classes: self.task.classes.len(),
            first_token_only: self.cfg.training.pooling == fedsoft_model::backbone::Pooling::Cls,
        }))
    }
}

impl Experiment {
    /// Validates the config and prepares everything a run needs.
    pub fn prepare(cfg: &ExperimentConfig, cache: &Path) -> Result<Self, EngineError> {
        cfg.validate()?;
        cfg.validate_run()?;
        let device = parse_device(&cfg.training.device)?;
        let planner = Planner::new(cfg)?;
        let rank = match cfg.controller.kind {
            ControllerKind::Tsfa => planner.tsfa.offline.best_rank,
            ControllerKind::Osfa | ControllerKind::Fixed => cfg.lora.rank,
        };
        let (backbone, tokenizer) = load_backbone(cfg, cache, &device)?;
        let plan = adapter_plan(&backbone.spec, rank, cfg.lora.alpha, &cfg.lora.targets, cfg.lora.layers.as_deref())?;
        let task = load_task(cfg, cache, tokenizer.as_deref())?;
        let sparsifier = build(cfg.method.name, cfg.method.options);
        let head = (backbone.spec.hidden, task.classes.len());
        let check = UploadCheck::new(plan.shapes.clone(), cfg.method.name, cfg.method.options, head);
        Ok(Experiment { cfg: cfg.clone(), device, backbone, plan, task, planner, rank, sparsifier, check })
    }

    /// [`Experiment::prepare`] for a run writing to `opts.out_dir`: when `[tsfa.pilot]` is set (and the
    /// controller is TSFA), the pilot runs first in `<out>/pilot` and its measured `σ_r` profile replaces
    /// `tsfa.bound.sigma`, so the resolved `config.toml` records the profile the rank was chosen with.
    pub fn prepare_run(cfg: &ExperimentConfig, opts: &RunOptions) -> Result<Self, EngineError> {
        cfg.validate()?;
        cfg.validate_run()?;
        let mut cfg = cfg.clone();
        if cfg.controller.kind == ControllerKind::Tsfa && cfg.tsfa.pilot.is_some() {
            let sigma = crate::pilot::measure_sigma(&cfg, &opts.cache, &opts.out_dir.join("pilot"))?;
            cfg.tsfa.settings.bound.sigma = fedsoft_wireless::tsfa::SigmaProfile::Measured { singular_values: sigma };
        }
        Self::prepare(&cfg, &opts.cache)
    }

    /// The run's state before its first round: the seeded initial factors and head, no memories.
    pub fn fresh_state(&self) -> Result<RunState, EngineError> {
        let global = LoraState::init_gaussian(&self.plan.shapes, self.cfg.seed)
            .map_err(|e| EngineError::invalid("lora", e.to_string()))?;
        let head = Head::init(self.backbone.spec.hidden, self.task.classes.len(), self.cfg.seed);
        Ok(RunState {
            next_round: 0,
            global,
            head,
            memories: BTreeMap::new(),
            meta: Meta { rank: self.rank, config_sha256: self.cfg.digest(), ..Default::default() },
        })
    }

    /// The PEFT module path of each adapted module, in the plan's order, for `[export] transformers`.
    pub fn peft_modules(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.plan.shapes.len()];
        for (&(layer, target), &i) in &self.plan.slots {
            names[i] = fedsoft_model::load::peft_module_name(
                self.backbone.spec.family,
                layer,
                target,
                self.cfg.export.transformers,
            );
        }
        names
    }

    /// Whether a checkpoint's meta was written under this experiment's config: by its SHA-256, or, for a
    /// checkpoint from before that was kept, by the old hash (accepted once: the next checkpoint carries the
    /// SHA-256).
    pub(crate) fn config_matches(&self, meta: &crate::checkpoint::Meta) -> bool {
        if !meta.config_sha256.is_empty() {
            return meta.config_sha256 == self.cfg.digest();
        }
        meta.config_hash == Some(crate::checkpoint::legacy_config_hash(&self.cfg.canonical_toml()))
    }

    pub(crate) fn settings(&self) -> TrainSettings {
        let t = &self.cfg.training;
        TrainSettings {
            lr: t.lr,
            weight_decay: t.weight_decay,
            epsilon: t.epsilon,
            orthogonality: self.cfg.orthogonality(),
            pooling: t.pooling,
        }
    }

    /// Each client's number of training samples (the aggregation weights), by client id.
    pub fn client_samples(&self) -> Vec<usize> {
        self.task.partition.clients.iter().map(Vec::len).collect()
    }

    /// The cores this experiment's clients and evaluation run on (`training.threads`).
    pub fn workers(&self) -> Workers {
        let on_cpu = self.cfg.training.device.trim() == "cpu";
        Workers::new(self.cfg.training.threads.or(if on_cpu { None } else { Some(1) }))
    }

    /// Accuracy and loss of the given global model on the test set. Batches are scored side by side on
    /// [`Experiment::workers`] and tallied in batch order, so the result does not depend on the threads.
    pub fn evaluate(&self, global: &LoraState, head: &Head) -> Result<(f64, f64), EngineError> {
        use burn::module::Module;
        let n = self.task.test_labels.len();
        let bs = self.cfg.training.eval_batch.max(1);
        let starts: Vec<usize> = (0..n).step_by(bs).collect();
        // One set of inference adapters (no autodiff) shared by every batch.
        let frozen = Adapters::from_state(global, head, &self.device)?.valid();
        let scores = self.workers().map(starts.len(), |j| {
            let (s, e) = (starts[j], (starts[j] + bs).min(n));
            let idx: Vec<usize> = (s..e).collect();
            let batch = self.task.test.batch(&idx, &self.device, None);
            score_batch(
                &self.backbone,
                &frozen,
                &self.plan,
                &batch,
                &self.task.test_labels[s..e],
                self.cfg.training.pooling,
            )
        });
        let scores = scores.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(accuracy_and_loss(&scores)?)
    }
}
