//! The round engine (SPEC §9): sampling, local training, sparsification with error feedback, encoding,
//! the simulated uplink, aggregation, the TSFA queue, evaluation, metrics and checkpoints.
//!
//! One frozen backbone is shared by every client; a client's persistent state is only its error-feedback
//! memory. Every random draw is keyed by `(seed, round, client)`, so methods compared under one seed see the
//! same clients, batches and channels, and a resumed run continues exactly where it stopped.

use crate::checkpoint::{self, ClientMemory, Meta, RunState};
use crate::config::{ConfigError, ControllerKind, Execution, ExperimentConfig, OptimizerStateMode, PayloadSize};
use crate::data::{TaskData, load_task};
use crate::metrics::{ClientRecord, RoundRecord, Summary, TimeSplit};
use crate::plan::Planner;
use crate::workers::Workers;
use burn::tensor::Device;
use fedsoft_core::aggregate::{apply_deltas, average_sparse_models, covariance_norm, weights};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::encoding::{decode, encode};
use fedsoft_core::feedback::{FeedbackMode, compensate, residual};
use fedsoft_core::ledger::{BitModel, UploadCost};
use fedsoft_core::lora::LoraState;
use fedsoft_core::rng::{Purpose, stream};
use fedsoft_core::schedule::sample_clients;
use fedsoft_core::sparsify::{SelectInput, SparseUpdate, Sparsifier, build};
use fedsoft_data::assets;
use fedsoft_model::adapters::{AdapterPlan, Adapters, Head};
use fedsoft_model::backbone::{Backbone, Batch};
use fedsoft_model::device::parse_device;
use fedsoft_model::load::{adapter_plan, load_dinov2_onnx, load_hf_dir};
use fedsoft_model::train::{OptimizerState, TrainSettings, accuracy_and_loss, score_batch, train_steps};
use fedsoft_wireless::bandwidth::{allocate, delays};
use fedsoft_wireless::control::RoundContext;
use fedsoft_wireless::simulate::dense_round_delay;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

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
    pub cfg: ExperimentConfig,
    pub device: Device,
    pub backbone: Backbone,
    pub plan: AdapterPlan,
    pub task: TaskData,
    pub planner: Planner,
    pub rank: usize,
    sparsifier: Box<dyn Sparsifier>,
}

pub(crate) fn model_err(e: fedsoft_model::ModelError) -> ConfigError {
    ConfigError::Invalid { field: "model".into(), detail: e.to_string() }
}

/// Loads the configured backbone; returns it and the directory holding its tokenizer (text models).
pub fn load_backbone(
    cfg: &ExperimentConfig,
    cache: &Path,
    device: &Device,
) -> Result<(Backbone, Option<PathBuf>), ConfigError> {
    use crate::arch::Arch;
    let path = match (&cfg.model.path, cfg.model.arch) {
        (Some(p), _) => p.clone(),
        (None, Arch::MinilmL6) => {
            assets::ensure(cache, "minilm").map_err(|e| ConfigError::invalid("model.path", e.to_string()))?
        }
        (None, Arch::Dinov2S14) => assets::ensure(cache, "dinov2")
            .map_err(|e| ConfigError::invalid("model.path", e.to_string()))?
            .join("vit_s_focus.onnx"),
        (None, other) => {
            return Err(ConfigError::invalid("model.path", format!("{other} needs a checkpoint directory")));
        }
    };
    if !path.exists() {
        return Err(ConfigError::invalid("model.path", format!("{} does not exist", path.display())));
    }
    let backbone = if path.is_file() && path.extension().is_some_and(|e| e == "onnx") {
        load_dinov2_onnx(&path, device).map_err(model_err)?
    } else {
        load_hf_dir(&path, device).map_err(model_err)?
    };
    let g = cfg.geometry()?;
    let s = &backbone.spec;
    if (s.hidden, s.layers, s.intermediate) != (g.hidden, g.layers, g.intermediate) {
        return Err(ConfigError::invalid(
            "model.arch",
            format!(
                "{} expects hidden {} / {} layers / MLP {}, but {} has {} / {} / {}",
                cfg.model.arch,
                g.hidden,
                g.layers,
                g.intermediate,
                path.display(),
                s.hidden,
                s.layers,
                s.intermediate
            ),
        ));
    }
    let tokenizer = s
        .is_text()
        .then(|| if path.is_dir() { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() });
    Ok((backbone, tokenizer))
}

impl Experiment {
    /// Validates the config and prepares everything a run needs.
    pub fn prepare(cfg: &ExperimentConfig, cache: &Path) -> Result<Self, ConfigError> {
        cfg.validate()?;
        cfg.validate_run()?;
        let device = parse_device(&cfg.training.device).map_err(model_err)?;
        let planner = Planner::new(cfg)?;
        let rank = match cfg.controller.kind {
            ControllerKind::Tsfa => planner.offline.best_rank,
            ControllerKind::Osfa | ControllerKind::Fixed => cfg.lora.rank,
        };
        let (backbone, tokenizer) = load_backbone(cfg, cache, &device)?;
        let plan = adapter_plan(&backbone.spec, rank, cfg.lora.alpha, &cfg.lora.targets, cfg.lora.layers.as_deref())
            .map_err(model_err)?;
        let task = load_task(cfg, cache, tokenizer.as_deref())?;
        let sparsifier = build(cfg.method.name, cfg.method.options);
        Ok(Experiment { cfg: cfg.clone(), device, backbone, plan, task, planner, rank, sparsifier })
    }

    /// [`Experiment::prepare`] for a run writing to `opts.out_dir`: when `[tsfa.pilot]` is set (and the
    /// controller is TSFA), the pilot runs first in `<out>/pilot` and its measured `σ_r` profile replaces
    /// `tsfa.bound.sigma`, so the resolved `config.toml` records the profile the rank was chosen with.
    pub fn prepare_run(cfg: &ExperimentConfig, opts: &RunOptions) -> Result<Self, ConfigError> {
        cfg.validate()?;
        cfg.validate_run()?;
        let mut cfg = cfg.clone();
        if cfg.controller.kind == ControllerKind::Tsfa && cfg.tsfa.pilot.is_some() {
            let sigma = crate::pilot::measure_sigma(&cfg, &opts.cache, &opts.out_dir.join("pilot"))?;
            cfg.tsfa.bound.sigma = fedsoft_wireless::tsfa::SigmaProfile::Measured { singular_values: sigma };
        }
        Self::prepare(&cfg, &opts.cache)
    }

    fn fresh_state(&self) -> Result<RunState, ConfigError> {
        let global = LoraState::init_gaussian(&self.plan.shapes, self.cfg.seed)
            .map_err(|e| ConfigError::invalid("lora", e.to_string()))?;
        let head = Head::init(self.backbone.spec.hidden, self.task.classes.len(), self.cfg.seed);
        Ok(RunState {
            next_round: 0,
            global,
            head,
            memories: BTreeMap::new(),
            meta: Meta { rank: self.rank, config_hash: self.config_hash(), ..Default::default() },
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

    fn config_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        // The thread count and the export's naming change no result, so a run may resume with others.
        let mut cfg = self.cfg.clone();
        cfg.training.threads = None;
        cfg.export = Default::default();
        cfg.to_toml().hash(&mut h);
        h.finish()
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

    /// The cores this experiment's clients and evaluation run on (`training.threads`).
    pub fn workers(&self) -> Workers {
        let on_cpu = self.cfg.training.device.trim() == "cpu";
        Workers::new(self.cfg.training.threads.or(if on_cpu { None } else { Some(1) }))
    }

    /// Accuracy and loss of the given global model on the test set. Batches are scored side by side on
    /// [`Experiment::workers`] and tallied in batch order, so the result does not depend on the threads.
    pub fn evaluate(&self, global: &LoraState, head: &Head) -> Result<(f64, f64), ConfigError> {
        use burn::module::Module;
        let n = self.task.test_labels.len();
        let bs = self.cfg.training.eval_batch.max(1);
        let starts: Vec<usize> = (0..n).step_by(bs).collect();
        // One set of inference adapters (no autodiff) shared by every batch.
        let frozen = Adapters::from_state(global, head, &self.device).map_err(model_err)?.valid();
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
        let scores = scores.into_iter().collect::<Result<Vec<_>, _>>().map_err(model_err)?;
        accuracy_and_loss(&scores).map_err(model_err)
    }

    /// A client's local batches this round: sample indices and labels, epoch by epoch in the order its
    /// keyed shuffle gives.
    pub(crate) fn client_batches(&self, client: usize, round: u64) -> Result<LocalBatches, ConfigError> {
        let own = self.task.partition.clients.get(client).ok_or_else(|| {
            ConfigError::invalid(
                "client",
                format!("client {client} is not one of the {} clients", self.cfg.clients.total),
            )
        })?;
        let bs = self.cfg.training.batch_size;
        let mut order = Vec::with_capacity(own.len() * self.cfg.training.local_epochs);
        for epoch in 0..self.cfg.training.local_epochs {
            let mut idx = own.clone();
            idx.shuffle(&mut stream(self.cfg.seed, Purpose::Batches, &[round, client as u64, epoch as u64]));
            order.extend(idx.chunks(bs).map(<[usize]>::to_vec));
        }
        let labels = order.iter().map(|b| b.iter().map(|&i| self.task.train_labels[i]).collect()).collect();
        Ok(LocalBatches { indices: order, labels })
    }

    /// Batch `k` of a client's round as model input (seeded augmentation when configured).
    pub(crate) fn train_batch(&self, client: usize, round: u64, k: usize, idx: &[usize]) -> Batch {
        let key = self.cfg.data.augment.then_some((self.cfg.seed, round, (client as u64) << 20 | k as u64));
        self.task.train.batch(idx, &self.device, key)
    }

    /// Local training of one client from the global model.
    fn train_client(
        &self,
        client: usize,
        round: u64,
        global: &LoraState,
        head: &Head,
        optimizer: Option<&mut OptimizerState>,
    ) -> Result<(LoraState, Head, f64), ConfigError> {
        let ad = Adapters::from_state(global, head, &self.device).map_err(model_err)?;
        let LocalBatches { indices, labels } = self.client_batches(client, round)?;
        let batches = indices
            .iter()
            .zip(&labels)
            .enumerate()
            .map(|(k, (idx, l))| (self.train_batch(client, round, k, idx), l.as_slice()));
        let (ad, loss) =
            train_steps(&self.backbone, ad, &self.plan, batches, &self.settings(), optimizer).map_err(model_err)?;
        Ok((ad.to_state(&self.plan.shapes).map_err(model_err)?, ad.head(), loss))
    }

    /// One scheduled client's whole round, wherever it runs (in this process or behind `fedsoft join`):
    /// local training from the broadcast model (with its kept optimiser state, if configured), error-feedback
    /// compensation with its own memory, sparsification, and encoding in the wire format. Returns the upload
    /// and what the client carries to its next round.
    pub fn client_update(
        &self,
        client: usize,
        task: &RoundTask<'_>,
        memory: ClientMemory,
    ) -> Result<(ClientUpload, ClientMemory), ConfigError> {
        let t = Instant::now();
        let ClientMemory { feedback, optimizer } = memory;
        let mut optimizer = self.carried_optimizer(optimizer);
        let (local, head, train_loss) =
            self.train_client(client, task.round, task.global, task.head, optimizer.as_mut())?;
        let trained = Trained { local, head, train_loss, train_s: t.elapsed().as_secs_f64(), optimizer };
        self.finish_update(client, task, feedback, trained)
    }

    /// The optimiser state a client trains from: none with fresh optimisers, else what it kept.
    pub(crate) fn carried_optimizer(&self, kept: Option<OptimizerState>) -> Option<OptimizerState> {
        match self.cfg.training.optimizer_state {
            OptimizerStateMode::Fresh => None,
            OptimizerStateMode::Keep => Some(kept.unwrap_or_default()),
        }
    }

    /// A trained client's upload: error-feedback compensation with its memory, sparsification, encoding.
    pub(crate) fn finish_update(
        &self,
        client: usize,
        task: &RoundTask<'_>,
        feedback: Option<LoraState>,
        trained: Trained,
    ) -> Result<(ClientUpload, ClientMemory), ConfigError> {
        let t = Instant::now();
        let Trained { local, head, train_loss, train_s, optimizer } = trained;
        let ef = self.cfg.method.error_feedback();
        let mode = self.cfg.method.feedback_mode;
        let previous = if ef { feedback.as_ref() } else { None };
        let u = compensate(mode, &local, task.global, previous).map_err(method_err)?;
        let input = SelectInput {
            update: &u,
            local: &local,
            rho: task.rho,
            seed: self.cfg.seed,
            round: task.round,
            client: client as u64,
        };
        let sel = self.sparsifier.select(&input).map_err(method_err)?;
        let sent = SparseUpdate::gather(&u, &sel).map_err(method_err)?;
        let feedback = if ef { Some(residual(&u, &sent).map_err(method_err)?) } else { None };
        let bytes = encode(task.round as u32, client as u32, &self.plan.shapes, &sent).map_err(method_err)?;
        let upload = ClientUpload {
            client,
            bytes,
            head,
            train_loss,
            local: Some(local),
            train_s,
            sparsify_s: t.elapsed().as_secs_f64(),
            transfer_s: None,
            accepted: None,
        };
        Ok((upload, ClientMemory { feedback, optimizer }))
    }

    /// The server's check of one upload before it may reach the aggregate: the wire format (lengths,
    /// checksum, module shapes), the round and sender, finite values, and the method's budget at this
    /// round's ratio. The error is the logged reason for dropping it.
    pub fn accept(&self, task: &RoundTask<'_>, upload: &ClientUpload) -> Result<SparseUpdate, String> {
        // A decoding error already says "malformed upload"; say it once.
        let msg = decode(&upload.bytes, &self.plan.shapes).map_err(|e| match e {
            fedsoft_core::CoreError::Decode(_) => e.to_string(),
            other => format!("malformed upload: {other}"),
        })?;
        if u64::from(msg.round) != task.round {
            return Err(format!("stale upload: round {} while the server is in round {}", msg.round, task.round));
        }
        if msg.client as usize != upload.client {
            return Err(format!("upload names client {} but came from client {}", msg.client, upload.client));
        }
        let nnz = msg.update.nnz();
        let budget = self.cfg.method.name.upload_budget(&self.plan.shapes, task.rho, &self.cfg.method.options);
        if nnz > budget {
            return Err(format!(
                "over budget: {nnz} entries where {} at rho {} allows {budget}",
                self.cfg.method.name,
                task.rho.get()
            ));
        }
        if msg.update.modules.iter().any(|m| m.values.iter().any(|v| !v.is_finite())) {
            return Err("non-finite values in the update".into());
        }
        let (hw, hb) = (self.backbone.spec.hidden * self.task.classes.len(), self.task.classes.len());
        if upload.head.weight.len() != hw || upload.head.bias.len() != hb {
            return Err(format!(
                "head has {} + {} values, expected {hw} + {hb}",
                upload.head.weight.len(),
                upload.head.bias.len()
            ));
        }
        if upload.head.weight.iter().chain(&upload.head.bias).any(|v| !v.is_finite()) {
            return Err("non-finite values in the head".into());
        }
        Ok(msg.update)
    }

    /// Runs (or resumes) the experiment with every client in this process, calling `on_round` after each
    /// round.
    pub fn run(&self, opts: &RunOptions, on_round: impl FnMut(&RoundRecord)) -> Result<Summary, ConfigError> {
        self.run_with(&mut LocalClients::default(), opts, on_round)
    }

    /// Runs (or resumes) the experiment with the scheduled clients' local work done by `pool`: in this
    /// process ([`LocalClients`]) or on remote clients (the networked server). Everything else — sampling,
    /// control, validation, the uplink model, aggregation, the queue, evaluation, metrics, checkpoints — is
    /// this one function.
    pub fn run_with(
        &self,
        pool: &mut dyn ClientPool,
        opts: &RunOptions,
        mut on_round: impl FnMut(&RoundRecord),
    ) -> Result<Summary, ConfigError> {
        let out = &opts.out_dir;
        std::fs::create_dir_all(out).map_err(|e| ConfigError::invalid("output", format!("{}: {e}", out.display())))?;
        let mut state = match (opts.resume, checkpoint::load(out, &self.plan.shapes)?) {
            (true, Some(st)) => {
                if st.meta.config_hash != self.config_hash() {
                    return Err(ConfigError::invalid(
                        "--resume",
                        format!("{} was written by a different config", out.display()),
                    ));
                }
                st
            }
            (true, None) if has_rounds(&out.join("metrics.jsonl")) => {
                // Starting over would truncate the rounds already recorded.
                return Err(ConfigError::invalid(
                    "--resume",
                    format!(
                        "{} holds recorded rounds but no checkpoint ({}) to continue them from; \
                         leave out --resume and choose a new --out to start again",
                        out.display(),
                        checkpoint::CHECKPOINT
                    ),
                ));
            }
            (true, None) => self.fresh_state()?,
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    "--out",
                    format!(
                        "{} already holds a run; pass --resume to continue it or choose another directory",
                        out.display()
                    ),
                ));
            }
            (false, None) => self.fresh_state()?,
        };
        pool.restore(std::mem::take(&mut state.memories));
        checkpoint::write_atomic(&out.join("config.toml"), self.cfg.to_toml().as_bytes())?;
        let hist = serde_json::json!({"classes": self.task.classes, "clients": self.task.partition.histograms});
        checkpoint::write_atomic(&out.join("partition.json"), hist.to_string().as_bytes())?;
        let metrics_path = out.join("metrics.jsonl");
        let clients_path = out.join("clients.jsonl");
        truncate_jsonl(&metrics_path, state.next_round)?;
        truncate_jsonl(&clients_path, state.next_round)?;
        let mut metrics = append(&metrics_path)?;
        let mut clients_log = append(&clients_path)?;

        let cfg = &self.cfg;
        let w = &cfg.wireless;
        let bit_model = BitModel { value_bits: w.value_bits, index_overhead: w.index_overhead };
        let numel = LoraState::numel(&state.global);
        let dense_bits = bit_model.paper_bits(numel, numel) as f64;
        let mut control = self.planner.ratio_controller(self.rank)?;
        control.restore(state.meta.queue);
        let mode = cfg.method.feedback_mode;
        let total_rounds = cfg.rounds.total;
        let end = opts.stop_after.map_or(total_rounds, |s| s.min(total_rounds));
        for round in state.next_round..end {
            let t_round = Instant::now();
            let mut split = TimeSplit::default();
            let scheduled = sample_clients(cfg.seed, round, cfg.clients.total, cfg.clients.per_round)
                .map_err(|e| ConfigError::invalid("clients", e.to_string()))?;
            let channels = self.planner.cell.round_snr(cfg.seed, round, &scheduled);
            let a_t = dense_round_delay(
                w.rate_model,
                w.bandwidth_rule,
                dense_bits,
                &channels.iter().map(|c| c.snr).collect::<Vec<_>>(),
                w.bandwidth_hz,
            )
            .map_err(ConfigError::from)?;
            let ctx = RoundContext { round, total_rounds, a_t };
            let rho = control.choose(&ctx);
            let drop = DropRatio::new(rho).map_err(|e| ConfigError::invalid("controller.rho", e.to_string()))?;
            let task = RoundTask { round, global: &state.global, head: &state.head, rho: drop };

            // Local work, then the server's validation of every upload.
            let t = Instant::now();
            let results = pool.run_round(self, &task, &scheduled)?;
            let pool_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut arrived: Vec<Arrival> = Vec::new();
            let mut failed: Vec<(usize, String)> = Vec::new();
            for (slot, (&client, result)) in scheduled.iter().zip(results).enumerate() {
                let checked = result.and_then(|mut u| match u.accepted.take() {
                    Some(update) => Ok((u, update)),
                    None => self.accept(&task, &u).map(|update| (u, update)),
                });
                match checked {
                    Ok((upload, update)) => {
                        let cost = UploadCost {
                            entries: update.nnz() as u64,
                            paper_bits: bit_model.paper_bits(update.nnz(), numel),
                            encoded_bits: 8 * upload.bytes.len() as u64,
                        };
                        arrived.push(Arrival {
                            slot,
                            samples: self.task.partition.clients[client].len(),
                            cost,
                            upload,
                            update,
                        });
                    }
                    Err(reason) => failed.push((slot, reason)),
                }
            }
            let (arrived, over_bound) =
                crate::bounds::bound_arrivals(arrived, &state.global, &state.head, mode, &cfg.robust);
            failed.extend(over_bound);
            failed.sort_by_key(|f| f.0);
            // The pool's time is the clients' training plus their sparsification and encoding (in process they
            // run one after another; remote clients run in parallel and the server waits for them).
            let local_sparsify_s: f64 = arrived.iter().map(|a| a.upload.sparsify_s).sum::<f64>().min(pool_s);
            split.train_s += pool_s - local_sparsify_s;
            split.sparsify_s += local_sparsify_s + t.elapsed().as_secs_f64();

            // The uplink: bandwidth split over the arrived payloads, per-client delays, the slowest decides.
            let bits: Vec<f64> = arrived
                .iter()
                .map(|a| match w.payload {
                    PayloadSize::Paper => a.cost.paper_bits as f64,
                    PayloadSize::Encoded => a.cost.encoded_bits as f64,
                })
                .collect();
            let snr: Vec<f64> = arrived.iter().map(|a| channels[a.slot].snr).collect();
            let (shares, delay_each) = if arrived.is_empty() {
                (vec![], vec![])
            } else {
                let shares =
                    allocate(w.bandwidth_rule, w.rate_model, &bits, &snr, w.bandwidth_hz).map_err(ConfigError::from)?;
                let d = delays(w.rate_model, &bits, &shares, &snr, w.bandwidth_hz);
                (shares, d)
            };
            let cap = cfg.rounds.outage_delay_s;
            let kept: Vec<usize> = (0..arrived.len()).filter(|&i| cap.is_none_or(|c| delay_each[i] <= c)).collect();
            let round_delay = match cap {
                Some(c) if kept.len() < arrived.len() => c,
                _ => delay_each.iter().cloned().fold(0.0, f64::max),
            };

            let t = Instant::now();
            let covariance = self.covariance(&arrived)?;
            if !kept.is_empty() {
                let kw = weights(&kept.iter().map(|&i| arrived[i].samples).collect::<Vec<_>>())
                    .map_err(|e| ConfigError::invalid("clients", e.to_string()))?;
                let ups: Vec<&SparseUpdate> = kept.iter().map(|&i| &arrived[i].update).collect();
                match mode {
                    FeedbackMode::Delta => apply_deltas(&mut state.global, &ups, &kw),
                    FeedbackMode::Model => average_sparse_models(&state.global, &ups, &kw).map(|g| state.global = g),
                }
                .map_err(|e| ConfigError::invalid("aggregation", e.to_string()))?;
                let kept_heads: Vec<&Head> = kept.iter().map(|&i| &arrived[i].upload.head).collect();
                aggregate_head(&mut state.head, &kept_heads, &kw);
            }
            split.aggregate_s += t.elapsed().as_secs_f64();
            if !state.global.all_finite() || !state.head.weight.iter().chain(&state.head.bias).all(|v| v.is_finite()) {
                // Stopped before this round is recorded or checkpointed: the last checkpoint stays good.
                return Err(ConfigError::invalid(
                    "aggregation",
                    format!(
                        "the global model became non-finite in round {round}; the run stops at its last \
                         checkpoint (a [robust] bound keeps such uploads out)"
                    ),
                ));
            }
            control.observe(&ctx, round_delay);
            state.meta.queue = control.state();
            for &i in &kept {
                state.meta.ledger.record(arrived[i].cost);
            }
            state.meta.delay_sum_s += round_delay;
            state.meta.rho_sum += rho;

            let last = round + 1 == total_rounds;
            let (mut acc, mut test_loss) = (None, None);
            if last || (round + 1) % cfg.rounds.eval_every == 0 {
                let t = Instant::now();
                let (a, l) = self.evaluate(&state.global, &state.head)?;
                if !l.is_finite() {
                    return Err(ConfigError::invalid(
                        "aggregation",
                        format!(
                            "the global model's test loss is {l} after round {round}; the run stops at its last \
                             checkpoint (a [robust] bound keeps poisoned uploads out)"
                        ),
                    ));
                }
                split.eval_s += t.elapsed().as_secs_f64();
                acc = Some(a);
                test_loss = Some(l);
                state.meta.last_accuracy = acc;
                state.meta.last_test_loss = test_loss;
            }
            let wall = t_round.elapsed().as_secs_f64();
            split.other_s = (wall - split.train_s - split.sparsify_s - split.aggregate_s - split.eval_s).max(0.0);
            state.meta.wall_s += wall;
            let losses: Vec<f64> = arrived.iter().map(|a| a.upload.train_loss).collect();
            let rec = RoundRecord {
                round,
                method: cfg.method.name.to_string(),
                controller: format!("{:?}", cfg.controller.kind).to_lowercase(),
                rank: self.rank,
                rho,
                dense_delay_s: a_t,
                delay_s: round_delay,
                avg_delay_s: state.meta.delay_sum_s / (round + 1) as f64,
                queue: control.backlog(),
                uplink_bits_paper: kept.iter().map(|&i| arrived[i].cost.paper_bits).sum(),
                uplink_bits_encoded: kept.iter().map(|&i| arrived[i].cost.encoded_bits).sum(),
                kept_entries: kept.iter().map(|&i| arrived[i].cost.entries).sum(),
                clients: scheduled.clone(),
                dropped: scheduled.len() - kept.len(),
                covariance,
                train_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
                test_accuracy: acc,
                test_loss,
                wall_s: wall,
                time: split,
            };
            writeln!(metrics, "{}", serde_json::to_string(&rec).expect("record"))
                .map_err(|e| ConfigError::invalid("output", e.to_string()))?;
            let mut client_records: Vec<ClientRecord> = arrived
                .iter()
                .enumerate()
                .map(|(i, a)| ClientRecord {
                    round,
                    client: scheduled[a.slot],
                    samples: a.samples,
                    fading: channels[a.slot].fading,
                    snr_db: 10.0 * channels[a.slot].snr.log10(),
                    bandwidth_share: shares[i],
                    kept_entries: a.cost.entries,
                    bits_paper: a.cost.paper_bits,
                    bits_encoded: a.cost.encoded_bits,
                    delay_s: delay_each[i],
                    train_loss: a.upload.train_loss,
                    dropped: !kept.contains(&i),
                    reason: (!kept.contains(&i)).then(|| "simulated outage: delay above rounds.outage_delay_s".into()),
                    train_wall_s: a.upload.train_s,
                    transfer_s: a.upload.transfer_s,
                })
                .collect();
            for (slot, reason) in failed {
                let client = scheduled[slot];
                client_records.push(ClientRecord {
                    round,
                    client,
                    samples: self.task.partition.clients[client].len(),
                    fading: channels[slot].fading,
                    snr_db: 10.0 * channels[slot].snr.log10(),
                    bandwidth_share: 0.0,
                    kept_entries: 0,
                    bits_paper: 0,
                    bits_encoded: 0,
                    delay_s: 0.0,
                    train_loss: f64::NAN,
                    dropped: true,
                    reason: Some(reason),
                    train_wall_s: 0.0,
                    transfer_s: None,
                });
            }
            for c in &client_records {
                writeln!(clients_log, "{}", serde_json::to_string(c).expect("record"))
                    .map_err(|e| ConfigError::invalid("output", e.to_string()))?;
            }
            metrics.flush().map_err(|e| ConfigError::invalid("output", e.to_string()))?;
            clients_log.flush().map_err(|e| ConfigError::invalid("output", e.to_string()))?;
            state.next_round = round + 1;
            if last || state.next_round % cfg.rounds.checkpoint_every == 0 || opts.stop_after == Some(state.next_round)
            {
                state.memories = pool.memories();
                checkpoint::save(out, &state)?;
            }
            on_round(&rec);
        }
        if state.next_round == total_rounds {
            let base = cfg.export.base_model.clone().unwrap_or_else(|| {
                cfg.model.arch.hub_id().map(str::to_owned).unwrap_or_else(|| {
                    cfg.model.path.as_ref().map_or_else(|| cfg.model.arch.to_string(), |p| p.display().to_string())
                })
            });
            let modules = self.peft_modules();
            let info = crate::export::ExportInfo {
                base_model: &base,
                modules: &modules,
                alpha: cfg.lora.alpha,
                pooling: cfg.training.pooling,
                classes: &self.task.classes,
            };
            crate::export::export_peft(&out.join("adapter"), &state.global, &state.head, &info)?;
        }
        let summary = Summary {
            name: cfg.name.clone(),
            method: cfg.method.name.to_string(),
            controller: format!("{:?}", cfg.controller.kind).to_lowercase(),
            rounds: state.next_round,
            completed: state.next_round == total_rounds,
            num_classes: self.task.classes.len(),
            rank: self.rank,
            orthogonality: cfg.orthogonality(),
            final_test_accuracy: state.meta.last_accuracy.unwrap_or(f64::NAN),
            final_test_loss: state.meta.last_test_loss.unwrap_or(f64::NAN),
            avg_delay_s: state.meta.delay_sum_s / state.next_round.max(1) as f64,
            latency_budget_s: self.planner.link.tau_bar,
            online_rule: (cfg.controller.kind != ControllerKind::Fixed).then(|| cfg.tsfa.online.name().to_string()),
            avg_rho: state.meta.rho_sum / state.next_round.max(1) as f64,
            offline_rho: self.planner.offline.best_rho,
            uplink_bits_paper: state.meta.ledger.paper_bits,
            uplink_bits_encoded: state.meta.ledger.encoded_bits,
            uploads: state.meta.ledger.uploads,
            wall_s: state.meta.wall_s,
            out_dir: out.display().to_string(),
        };
        checkpoint::write_atomic(
            &out.join("summary.json"),
            serde_json::to_string_pretty(&summary).expect("summary").as_bytes(),
        )?;
        Ok(summary)
    }

    /// The covariance of the arrived clients' local models (SPEC §2.4), where their dense local factors are
    /// known: in process. Networked clients never send them, so the metric is absent there.
    fn covariance(&self, arrived: &[Arrival]) -> Result<Option<f64>, ConfigError> {
        let locals: Option<Vec<&LoraState>> = arrived.iter().map(|a| a.upload.local.as_ref()).collect();
        match locals {
            Some(l) if !l.is_empty() => {
                let w = weights(&arrived.iter().map(|a| a.samples).collect::<Vec<_>>())
                    .map_err(|e| ConfigError::invalid("clients", e.to_string()))?;
                covariance_norm(&l, &w).map(Some).map_err(|e| ConfigError::invalid("aggregation", e.to_string()))
            }
            _ => Ok(None),
        }
    }
}

/// A client's local batches of one round: sample indices and their labels.
pub(crate) struct LocalBatches {
    pub indices: Vec<Vec<usize>>,
    pub labels: Vec<Vec<u32>>,
}

/// A client's local training result, before compensation and sparsification.
pub(crate) struct Trained {
    pub local: LoraState,
    pub head: Head,
    pub train_loss: f64,
    pub train_s: f64,
    pub optimizer: Option<OptimizerState>,
}

/// This round's broadcast: what every scheduled client starts from.
pub struct RoundTask<'a> {
    pub round: u64,
    pub global: &'a LoraState,
    pub head: &'a Head,
    pub rho: DropRatio,
}

/// What a scheduled client sends back for one round.
pub struct ClientUpload {
    pub client: usize,
    /// The sparse update in the wire format (`fedsoft_core::encoding`).
    pub bytes: Vec<u8>,
    /// The locally trained head (dense; it is small).
    pub head: Head,
    pub train_loss: f64,
    /// The dense local factors, known only in process (for the covariance metric).
    pub local: Option<LoraState>,
    /// Seconds of local training and of sparsification + encoding, as the client measured them.
    pub train_s: f64,
    pub sparsify_s: f64,
    /// Real seconds from handing the task out to receiving the upload (networked clients).
    pub transfer_s: Option<f64>,
    /// The decoded update, where the pool has already run [`Experiment::accept`] on this upload (a server
    /// must answer its client before the round closes); the round then does not decode it again.
    pub accepted: Option<SparseUpdate>,
}

/// Where the scheduled clients of a round do their local work.
pub trait ClientPool {
    /// Every client of `clients`, in order: its upload, or why it has none (crashed, timed out,
    /// disconnected). A client without an upload is dropped from the round; an `Err` of the whole call
    /// stops the run.
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, ConfigError>;
    /// The client memories this pool keeps, for checkpoints (empty when clients keep their own).
    fn memories(&self) -> BTreeMap<usize, ClientMemory>;
    /// Hands the pool the memories of a resumed checkpoint.
    fn restore(&mut self, memories: BTreeMap<usize, ClientMemory>);
}

/// Every client in this process, their memories kept here (and in checkpoints): side by side on
/// [`Experiment::workers`] (each client's work depends only on its own inputs and the uploads come back in
/// schedule order, so the round is the same whatever the thread count), or batched through one backbone pass
/// (`training.execution = "batched"`, [`Experiment::batched_updates`]).
#[derive(Default)]
pub struct LocalClients {
    memories: BTreeMap<usize, ClientMemory>,
}

impl ClientPool for LocalClients {
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, ConfigError> {
        let previous: Vec<ClientMemory> = clients.iter().map(|c| self.memories.remove(c).unwrap_or_default()).collect();
        let done = match exp.cfg.training.execution {
            Execution::PerClient => {
                let previous: Vec<Mutex<Option<ClientMemory>>> =
                    previous.into_iter().map(|m| Mutex::new(Some(m))).collect();
                exp.workers().map(clients.len(), |i| {
                    let memory = previous[i].lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
                    exp.client_update(clients[i], task, memory)
                })
            }
            Execution::Batched => exp.batched_updates(clients, task, previous)?.into_iter().map(Ok).collect(),
        };
        let mut out = Vec::with_capacity(clients.len());
        for (&client, result) in clients.iter().zip(done) {
            let (upload, memory) = result?;
            if !memory.is_empty() {
                self.memories.insert(client, memory);
            }
            out.push(Ok(upload));
        }
        Ok(out)
    }
    fn memories(&self) -> BTreeMap<usize, ClientMemory> {
        self.memories.clone()
    }
    fn restore(&mut self, memories: BTreeMap<usize, ClientMemory>) {
        self.memories = memories;
    }
}

/// An upload the server accepted this round.
pub(crate) struct Arrival {
    /// Position in the round's schedule.
    pub slot: usize,
    pub samples: usize,
    pub cost: UploadCost,
    pub upload: ClientUpload,
    pub update: SparseUpdate,
}

/// A sparsifier or feedback step refused its input: reported against the `[method]` section.
pub(crate) fn method_err(e: fedsoft_core::CoreError) -> ConfigError {
    ConfigError::invalid("method", e.to_string())
}

/// `head += sum_i p_i (head_i - head)`, summed in f64 like the LoRA factors.
fn aggregate_head(head: &mut Head, locals: &[&Head], p: &[f64]) {
    let mut dw = vec![0.0f64; head.weight.len()];
    let mut db = vec![0.0f64; head.bias.len()];
    for (h, &pi) in locals.iter().zip(p) {
        for (acc, (x, g)) in dw.iter_mut().zip(h.weight.iter().zip(&head.weight)) {
            *acc += pi * (*x - *g) as f64;
        }
        for (acc, (x, g)) in db.iter_mut().zip(h.bias.iter().zip(&head.bias)) {
            *acc += pi * (*x - *g) as f64;
        }
    }
    for (g, d) in head.weight.iter_mut().zip(dw).chain(head.bias.iter_mut().zip(db)) {
        *g = (*g as f64 + d) as f32;
    }
}

/// Whether a JSONL file holds at least one record.
fn has_rounds(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| !l.trim().is_empty()))
}

fn append(path: &Path) -> Result<std::fs::File, ConfigError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ConfigError::invalid("output", format!("{}: {e}", path.display())))
}

/// Keeps only the lines of rounds before `next_round` (what the checkpoint covers).
fn truncate_jsonl(path: &Path, next_round: u64) -> Result<(), ConfigError> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid("output", format!("{}: {e}", path.display())))?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("round").and_then(serde_json::Value::as_u64))
                .is_some_and(|r| r < next_round)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}
