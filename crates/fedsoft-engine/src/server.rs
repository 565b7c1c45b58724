//! The server's half of a round (docs/algorithms.md §9, steps 1 and 5-7): the schedule, the channels and `a_t`,
//! the ratio; which uploads it takes; the uplink's delays and outage; the per-factor aggregate; the
//! controller's update; the round's records and the bit ledger. It owns the run's live state (global factors
//! and head, queue, sums, robust history) and trains and evaluates nothing, so any front door — the engine's
//! own driver, the networked server, a Flower strategy — runs the same round through the same calls:
//! [`Server::open_round`] → [`Server::task`] → [`Server::admit`] → [`Server::close_round`] →
//! [`Server::record`].

use crate::ExperimentConfig;
use crate::checkpoint::{ClientMemory, RunState};
use crate::config::{ControllerKind, PayloadSize, RobustConfig};
use crate::error::EngineError;
use crate::experiment::Experiment;
use crate::metrics::{ClientRecord, RoundRecord, TimeSplit};
use crate::pool::{ClientUpload, RoundTask};
use crate::validate::{Rejection, UploadCheck};
use fedsoft_core::aggregate::{apply_deltas, average_sparse_models, covariance_norm, move_toward_average, weights};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::feedback::FeedbackMode;
use fedsoft_core::head::Head;
use fedsoft_core::ledger::{BitModel, UploadCost};
use fedsoft_core::lora::LoraState;
use fedsoft_core::sparsify::{MethodKind, SparseUpdate};
use fedsoft_wireless::control::{RatioController, RoundContext};
use fedsoft_wireless::simulate::{RoundStart, Scenario};
use fedsoft_wireless::uplink::{RoundUplink, Uplink};
use std::collections::BTreeMap;

/// What the server's round follows from the run's config, and nothing else of it: the server never sees
/// the model, the data or the training settings.
#[derive(Debug, Clone)]
pub struct RoundRules {
    /// The horizon the ratio controller plans over.
    pub total_rounds: u64,
    /// Named in the round's record.
    pub method: MethodKind,
    pub controller: ControllerKind,
    /// Whether an upload is a change to the global factors or a sparse local model.
    pub feedback_mode: FeedbackMode,
    /// How an upload's bits are counted.
    pub bits: BitModel,
    /// Which count sets an upload's airtime.
    pub payload: PayloadSize,
    /// A client whose upload would take longer is lost to the simulated outage.
    pub outage_delay_s: Option<f64>,
    /// The bounds on what one upload may do.
    pub robust: RobustConfig,
    /// The clients' learning rate, named in the hint when their training diverges.
    pub lr: f64,
}

impl RoundRules {
    pub fn of(cfg: &ExperimentConfig) -> Self {
        let w = &cfg.wireless;
        RoundRules {
            total_rounds: cfg.rounds.total,
            method: cfg.method.name,
            controller: cfg.controller.kind,
            feedback_mode: cfg.method.feedback_mode,
            bits: BitModel { value_bits: w.value_bits, index_overhead: w.index_overhead },
            payload: w.payload,
            outage_delay_s: cfg.rounds.outage_delay_s,
            robust: cfg.robust.clone(),
            lr: cfg.training.lr,
        }
    }

    /// What to change when the run diverged. When `runaway` clients' own training ran away, the learning
    /// rate first; before any upload was aggregated (`aggregated_before` false) the model they trained from
    /// is the initial one, so it is the only cause. Otherwise the bound on what one upload may do.
    pub fn divergence_hint(&self, runaway: &[usize], aggregated_before: bool) -> String {
        let lr = format!("lower training.lr (now {:e}) if it is too large", self.lr);
        match (runaway.is_empty(), aggregated_before) {
            (true, _) => self.robust.divergence_hint().to_string(),
            (false, false) => {
                format!("the local training of client(s) {runaway:?} diverged from the initial model: {lr}")
            }
            (false, true) => format!(
                "the local training of client(s) {runaway:?} diverged: {lr}; if an earlier upload broke the model, {}",
                self.robust.divergence_hint()
            ),
        }
    }
}

/// The server of one run.
pub struct Server {
    rules: RoundRules,
    rank: usize,
    check: UploadCheck,
    /// Each client's sample count (the aggregation weights), or `None` where clients report their own.
    samples: Option<Vec<usize>>,
    uplink: Uplink,
    control: Box<dyn RatioController>,
    scenario: Scenario,
    state: RunState,
}

/// Everything a [`Server`] is made of, for a front door without a fedsoft [`Experiment`] (a Flower strategy
/// over a user's own model, which knows the adapted modules' shapes but not the model or the data).
pub struct ServerParts {
    pub rules: RoundRules,
    pub rank: usize,
    pub check: UploadCheck,
    /// Each client's sample count where the server knows the partition; `None` takes the count each upload
    /// reports ([`ClientUpload::samples`]) and refuses an upload without a positive one.
    pub samples: Option<Vec<usize>>,
    pub uplink: Uplink,
    /// The ratio rule at `rank`; it resumes from `state`'s queue.
    pub control: Box<dyn RatioController>,
    /// The schedule and channels at `rank`.
    pub scenario: Scenario,
    pub state: RunState,
}

/// A round the server opened: whom it scheduled, on what channels, and the ratio its controller chose.
#[derive(Debug, Clone)]
pub struct RoundPlan {
    pub round: u64,
    pub rho: DropRatio,
    pub start: RoundStart,
}

impl RoundPlan {
    fn context(&self, total_rounds: u64) -> RoundContext {
        RoundContext { round: self.round, total_rounds, a_t: self.start.a_t }
    }
}

/// An upload the server took this round.
pub(crate) struct Arrival {
    /// Position in the round's schedule.
    pub slot: usize,
    pub samples: usize,
    pub cost: UploadCost,
    pub upload: ClientUpload,
    pub update: SparseUpdate,
    /// What the server changed in the upload before using it (a `[robust]` clip), for its client record.
    pub note: Option<String>,
}

/// The round's uploads after the server's check and the `[robust]` bounds.
pub struct Admitted {
    pub(crate) arrived: Vec<Arrival>,
    /// Refused or failed clients by schedule slot, with the reason.
    pub failed: Vec<(usize, String)>,
}

impl Admitted {
    /// How many uploads were taken.
    pub fn taken(&self) -> usize {
        self.arrived.len()
    }
    /// The seconds the taken clients spent sparsifying and encoding, by their own clocks.
    pub fn sparsify_s(&self) -> f64 {
        self.arrived.iter().map(|a| a.upload.sparsify_s).sum()
    }
}

/// A closed round: what its records are made of, short of the evaluation and the time split.
pub struct ClosedRound {
    plan: RoundPlan,
    admitted: Admitted,
    uplink: RoundUplink,
    covariance: Option<f64>,
}

impl ClosedRound {
    /// The uplink's outcome: band shares, delays, the uploads kept, the round's delay.
    pub fn uplink(&self) -> &RoundUplink {
        &self.uplink
    }
    /// Clients of the round whose own training ran away (a training loss that is not finite).
    pub fn runaway(&self) -> Vec<usize> {
        runaway(&self.admitted.arrived)
    }
}

/// One round's records: the round's line of `metrics.jsonl` and one line of `clients.jsonl` per scheduled
/// client.
pub struct RoundRecords {
    pub round: RoundRecord,
    pub clients: Vec<ClientRecord>,
}

impl Server {
    /// The server of `exp`'s run, continuing `state` (a fresh one, or a checkpoint's); the controller resumes
    /// from the state's queue.
    pub fn new(exp: &Experiment, state: RunState) -> Result<Self, EngineError> {
        Self::from_parts(ServerParts {
            rules: RoundRules::of(&exp.cfg),
            rank: exp.rank,
            check: exp.upload_check().clone(),
            samples: Some(exp.client_samples()),
            uplink: exp.planner.tsfa.uplink,
            control: exp.planner.ratio_controller(exp.rank)?,
            scenario: exp.planner.scenario(exp.rank),
            state,
        })
    }

    /// A server from its parts; the clients' memories in `state` are left to whoever runs the clients.
    pub fn from_parts(parts: ServerParts) -> Result<Self, EngineError> {
        let ServerParts { rules, rank, check, samples, uplink, mut control, scenario, state } = parts;
        if let Some(s) = &samples
            && s.len() != scenario.cell.mean_snr.len()
        {
            return Err(EngineError::invalid(
                "clients",
                format!("{} sample counts for a cell of {} clients", s.len(), scenario.cell.mean_snr.len()),
            ));
        }
        control.restore(state.meta.queue);
        Ok(Server {
            rules,
            rank,
            check,
            samples,
            uplink,
            control,
            scenario,
            state: RunState { memories: BTreeMap::new(), ..state },
        })
    }

    /// What an upload must be for this server to take it.
    pub fn upload_check(&self) -> &UploadCheck {
        &self.check
    }

    /// Client `client`'s aggregation weight: the server's own count, or the one the upload reports.
    fn samples_of(&self, client: usize, upload: &ClientUpload) -> Result<usize, Rejection> {
        match &self.samples {
            Some(known) => Ok(known[client]),
            None => upload.samples.filter(|&n| n > 0).ok_or(Rejection::NoSamples),
        }
    }

    /// The rules this server's rounds follow.
    pub fn rules(&self) -> &RoundRules {
        &self.rules
    }

    /// The run's state as a checkpoint holds it, with the clients' `memories` (kept by whoever runs them).
    pub fn checkpoint_state(&mut self, memories: BTreeMap<usize, ClientMemory>) -> &RunState {
        self.state.memories = memories;
        &self.state
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The next round to play.
    pub fn next_round(&self) -> u64 {
        self.state.next_round
    }

    /// The global model: LoRA factors and head.
    pub fn global(&self) -> (&LoraState, &Head) {
        (&self.state.global, &self.state.head)
    }

    /// Keeps the model's accuracy and loss before any training, once per run.
    pub fn set_initial_evaluation(&mut self, evaluation: (f64, f64)) {
        self.state.meta.initial_evaluation.get_or_insert(evaluation);
    }

    /// Starts round `round`: schedules the clients, draws their channels and `a_t`, and lets the controller
    /// choose the ratio.
    pub fn open_round(&mut self, round: u64) -> Result<RoundPlan, EngineError> {
        let start = self.scenario.start(round)?;
        let ctx = RoundContext { round, total_rounds: self.rules.total_rounds, a_t: start.a_t };
        let rho = DropRatio::new(self.control.choose(&ctx))?;
        Ok(RoundPlan { round, rho, start })
    }

    /// The round's broadcast: what every scheduled client starts from.
    pub fn task(&self, plan: &RoundPlan) -> RoundTask<'_> {
        RoundTask { round: plan.round, global: &self.state.global, head: &self.state.head, rho: plan.rho }
    }

    /// Takes the round's results, one per scheduled client in schedule order (its upload, or why it has
    /// none): each upload checked ([`UploadCheck::accept`]) and costed, then the `[robust]` bounds. A round
    /// whose every upload was refused for non-finite values stops the run: the clients' training diverged,
    /// and going on would end "completed" at chance accuracy.
    pub fn admit(
        &mut self,
        plan: &RoundPlan,
        results: Vec<Result<ClientUpload, String>>,
    ) -> Result<Admitted, EngineError> {
        let bit_model = self.rules.bits;
        let numel = LoraState::numel(&self.state.global);
        let task = self.task(plan);
        let mut arrived = Vec::new();
        let mut failed = Vec::new();
        let mut non_finite = Vec::new();
        for (slot, (&client, result)) in plan.start.clients.iter().zip(results).enumerate() {
            let checked = result.and_then(|u| {
                let accepted = self.check.accept(&task, &u).and_then(|update| {
                    let samples = self.samples_of(client, &u)?;
                    Ok((update, samples))
                });
                accepted.map(|(update, samples)| (u, update, samples)).map_err(|r| {
                    if r.is_non_finite() {
                        non_finite.push(client);
                    }
                    r.to_string()
                })
            });
            match checked {
                Ok((upload, update, samples)) => {
                    let cost = UploadCost {
                        entries: update.nnz() as u64,
                        paper_bits: bit_model.paper_bits(update.nnz(), numel),
                        encoded_bits: 8 * upload.bytes.len() as u64,
                    };
                    arrived.push(Arrival { slot, samples, cost, upload, update, note: None });
                }
                Err(reason) => failed.push((slot, reason)),
            }
        }
        let bounded = crate::bounds::bound_arrivals(
            arrived,
            &self.state.global,
            &self.state.head,
            self.rules.feedback_mode,
            &self.rules.robust,
            &self.state.meta.robust_history,
        );
        failed.extend(bounded.dropped);
        failed.sort_by_key(|f| f.0);
        if !bounded.accepted_norms.is_empty() {
            self.state.meta.robust_history = bounded.accepted_norms;
        }
        let arrived = bounded.kept;
        if arrived.is_empty() && !non_finite.is_empty() && non_finite.len() == failed.len() {
            let what = format!("every upload of the round ({}) held non-finite values", failed.len());
            let hint = self.rules.divergence_hint(&non_finite, self.state.meta.ledger.uploads > 0);
            return Err(EngineError::Diverged { round: plan.round, what, hint });
        }
        Ok(Admitted { arrived, failed })
    }

    /// Ends the round's transfers and moves the model: the band split over the taken payloads, each client's
    /// delay, the outage past `rounds.outage_delay_s` (the slowest kept client sets the round's delay); the
    /// covariance of the local models where they are known; FedAvg of the kept uploads, each factor
    /// separately; the controller told the round's delay. The run stops before a non-finite model is kept.
    pub fn close_round(&mut self, plan: RoundPlan, admitted: Admitted) -> Result<ClosedRound, EngineError> {
        let arrived = &admitted.arrived;
        let bits: Vec<f64> = arrived
            .iter()
            .map(|a| match self.rules.payload {
                PayloadSize::Paper => a.cost.paper_bits as f64,
                PayloadSize::Encoded => a.cost.encoded_bits as f64,
            })
            .collect();
        let snr: Vec<f64> = arrived.iter().map(|a| plan.start.channels[a.slot].snr).collect();
        let uplink = self.uplink.transmit(&bits, &snr, self.rules.outage_delay_s)?;
        let covariance = covariance(arrived)?;
        aggregate(&mut self.state.global, &mut self.state.head, arrived, &uplink.kept, self.rules.feedback_mode)?;
        let (global, head) = (&self.state.global, &self.state.head);
        if !global.all_finite() || !head.weight.iter().chain(&head.bias).all(|v| v.is_finite()) {
            return Err(EngineError::Diverged {
                round: plan.round,
                what: "the global model became non-finite".into(),
                hint: self.rules.divergence_hint(&runaway(arrived), true),
            });
        }
        self.control.observe(&plan.context(self.rules.total_rounds), uplink.round_delay_s);
        Ok(ClosedRound { plan, admitted, uplink, covariance })
    }

    /// Books a closed round into the run's state (the ledger over the uploads kept after the outage, the
    /// delay and ratio sums, the queue, the last evaluation) and makes its records. `wall_s` is the round's
    /// wall time; what `split` does not name of it is booked as `other_s`.
    pub fn record(
        &mut self,
        closed: ClosedRound,
        evaluation: Option<(f64, f64)>,
        split: TimeSplit,
        wall_s: f64,
    ) -> RoundRecords {
        let ClosedRound { plan, admitted, uplink, covariance } = closed;
        let arrived = &admitted.arrived;
        let round = plan.round;
        let meta = &mut self.state.meta;
        meta.queue = self.control.state();
        for &i in &uplink.kept {
            meta.ledger.record(arrived[i].cost);
        }
        meta.delay_sum_s += uplink.round_delay_s;
        meta.rho_sum += plan.rho.get();
        if let Some((accuracy, loss)) = evaluation {
            meta.last_accuracy = Some(accuracy);
            meta.last_test_loss = Some(loss);
        }
        let mut split = split;
        split.other_s = (wall_s - split.train_s - split.sparsify_s - split.aggregate_s - split.eval_s).max(0.0);
        meta.wall_s += wall_s;
        let kept = &uplink.kept;
        // The round's training loss is the plain mean over the uploads taken (kept or lost to the outage).
        let losses: Vec<f64> = arrived.iter().map(|a| a.upload.train_loss).collect();
        let record = RoundRecord {
            round,
            method: self.rules.method,
            controller: self.rules.controller,
            rank: self.rank,
            rho: plan.rho.get(),
            dense_delay_s: plan.start.a_t,
            delay_s: uplink.round_delay_s,
            avg_delay_s: meta.delay_sum_s / (round + 1) as f64,
            queue: self.control.backlog(),
            uplink_bits_paper: kept.iter().map(|&i| arrived[i].cost.paper_bits).sum(),
            uplink_bits_encoded: kept.iter().map(|&i| arrived[i].cost.encoded_bits).sum(),
            kept_entries: kept.iter().map(|&i| arrived[i].cost.entries).sum(),
            clients: plan.start.clients.clone(),
            dropped: plan.start.clients.len() - kept.len(),
            covariance,
            train_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            test_accuracy: evaluation.map(|e| e.0),
            test_loss: evaluation.map(|e| e.1),
            wall_s,
            time: split,
        };
        let clients = self.client_records(&plan, &admitted, &uplink);
        self.state.next_round = round + 1;
        RoundRecords { round: record, clients }
    }

    /// One record per scheduled client: the taken ones (kept, or dropped by the simulated outage), then the
    /// refused ones with their reason.
    fn client_records(&self, plan: &RoundPlan, admitted: &Admitted, uplink: &RoundUplink) -> Vec<ClientRecord> {
        let (round, channels) = (plan.round, &plan.start.channels);
        let mut records: Vec<ClientRecord> = admitted
            .arrived
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let dropped = !uplink.kept.contains(&i);
                ClientRecord {
                    round,
                    client: plan.start.clients[a.slot],
                    samples: a.samples,
                    fading: channels[a.slot].fading,
                    snr_db: 10.0 * channels[a.slot].snr.log10(),
                    bandwidth_share: uplink.shares[i],
                    kept_entries: a.cost.entries,
                    bits_paper: a.cost.paper_bits,
                    bits_encoded: a.cost.encoded_bits,
                    delay_s: uplink.delays_s[i],
                    train_loss: a.upload.train_loss,
                    dropped,
                    reason: dropped.then(|| "simulated outage: delay above rounds.outage_delay_s".into()),
                    note: a.note.clone(),
                    train_wall_s: a.upload.train_s,
                    transfer_s: a.upload.transfer_s,
                }
            })
            .collect();
        for (slot, reason) in &admitted.failed {
            let client = plan.start.clients[*slot];
            records.push(ClientRecord {
                round,
                client,
                samples: self.samples.as_ref().map_or(0, |s| s[client]),
                fading: channels[*slot].fading,
                snr_db: 10.0 * channels[*slot].snr.log10(),
                bandwidth_share: 0.0,
                kept_entries: 0,
                bits_paper: 0,
                bits_encoded: 0,
                delay_s: 0.0,
                train_loss: f64::NAN,
                dropped: true,
                reason: Some(reason.clone()),
                note: None,
                train_wall_s: 0.0,
                transfer_s: None,
            });
        }
        records
    }
}

/// FedAvg of the uploads that arrived in time (`kept`, positions into `arrived`), weighted by samples: each
/// LoRA factor separately (delta or model mode), the head moved to the clients' average.
fn aggregate(
    global: &mut LoraState,
    head: &mut Head,
    arrived: &[Arrival],
    kept: &[usize],
    mode: FeedbackMode,
) -> Result<(), EngineError> {
    if kept.is_empty() {
        return Ok(());
    }
    let kw = weights(&kept.iter().map(|&i| arrived[i].samples).collect::<Vec<_>>())?;
    let ups: Vec<&SparseUpdate> = kept.iter().map(|&i| &arrived[i].update).collect();
    match mode {
        FeedbackMode::Delta => apply_deltas(global, &ups, &kw)?,
        FeedbackMode::Model => *global = average_sparse_models(global, &ups, &kw)?,
    }
    let heads: Vec<&Head> = kept.iter().map(|&i| &arrived[i].upload.head).collect();
    let head_weights: Vec<&[f32]> = heads.iter().map(|h| h.weight.as_slice()).collect();
    let head_biases: Vec<&[f32]> = heads.iter().map(|h| h.bias.as_slice()).collect();
    move_toward_average(&mut head.weight, &head_weights, &kw)?;
    move_toward_average(&mut head.bias, &head_biases, &kw)?;
    Ok(())
}

/// The covariance of the taken clients' local models (docs/algorithms.md §2.4), where their dense local
/// factors are known: in process. Networked clients never send them, so the metric is absent there.
fn covariance(arrived: &[Arrival]) -> Result<Option<f64>, EngineError> {
    let locals: Option<Vec<&LoraState>> = arrived.iter().map(|a| a.upload.local.as_ref()).collect();
    match locals {
        Some(l) if !l.is_empty() => {
            let w = weights(&arrived.iter().map(|a| a.samples).collect::<Vec<_>>())?;
            Ok(Some(covariance_norm(&l, &w)?))
        }
        _ => Ok(None),
    }
}

/// Clients whose own training ran away (a training loss that is not finite).
fn runaway(arrived: &[Arrival]) -> Vec<usize> {
    arrived.iter().filter(|a| !a.upload.train_loss.is_finite()).map(|a| a.upload.client).collect()
}
