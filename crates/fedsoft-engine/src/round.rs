//! The round driver: the round of docs/algorithms.md §9, one step a call. Schedule the clients and let the controller choose the
//! ratio on this round's channels; collect the uploads from the pool and validate and bound them; simulate the
//! uplink; aggregate; evaluate on schedule; record; checkpoint. The run's files are opened and closed around
//! the rounds ([`crate::runlog`]).

use crate::ExperimentConfig;
use crate::checkpoint;
use crate::config::PayloadSize;
use crate::error::EngineError;
use crate::experiment::{Experiment, RunOptions};
use crate::metrics::{RoundRecord, Summary, TimeSplit};
use crate::pool::{Arrival, ClientPool, LocalClients, RoundTask};
use crate::runlog::{Outcome, RunLog};
use fedsoft_core::aggregate::{apply_deltas, average_sparse_models, covariance_norm, move_toward_average, weights};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::feedback::FeedbackMode;
use fedsoft_core::ledger::{BitModel, UploadCost};
use fedsoft_core::lora::LoraState;
use fedsoft_core::sparsify::SparseUpdate;
use fedsoft_model::adapters::Head;
use fedsoft_wireless::control::RoundContext;
use fedsoft_wireless::simulate::RoundStart;
use std::time::Instant;

impl Experiment {
    /// Runs (or resumes) the experiment with every client in this process, calling `on_round` after each
    /// round.
    pub fn run(&self, opts: &RunOptions, on_round: impl FnMut(&RoundRecord)) -> Result<Summary, EngineError> {
        self.run_with(&mut LocalClients::default(), opts, on_round)
    }

    /// Runs (or resumes) the experiment with the scheduled clients' local work done by `pool`: in this
    /// process ([`LocalClients`]) or on remote clients (the networked server). Everything else — sampling,
    /// control, validation, the uplink model, aggregation, the queue, evaluation, metrics, checkpoints — is
    /// the engine's.
    pub fn run_with(
        &self,
        pool: &mut dyn ClientPool,
        opts: &RunOptions,
        mut on_round: impl FnMut(&RoundRecord),
    ) -> Result<Summary, EngineError> {
        let mut log = RunLog::open(self, opts)?;
        pool.restore(std::mem::take(&mut log.state.memories));
        let total = self.cfg.rounds.total;
        let end = opts.stop_after.map_or(total, |s| s.min(total));
        if log.state.next_round == 0 && log.state.meta.initial_evaluation.is_none() {
            // Where training starts from: the figures' round-0 point, and the baseline every gain is read against.
            log.state.meta.initial_evaluation = Some(self.evaluate(&log.state.global, &log.state.head)?);
        }
        for round in log.state.next_round..end {
            let rec = self.play_round(pool, &mut log, round)?;
            let checkpoint_due = round + 1 == total
                || (round + 1) % self.cfg.rounds.checkpoint_every == 0
                || opts.stop_after == Some(round + 1);
            if checkpoint_due {
                log.state.memories = pool.memories();
                checkpoint::save(&opts.out_dir, &log.state)?;
            }
            on_round(&rec);
        }
        log.finish(self)
    }

    /// One round, from the schedule to its records on disk (not yet checkpointed).
    fn play_round(&self, pool: &mut dyn ClientPool, log: &mut RunLog, round: u64) -> Result<RoundRecord, EngineError> {
        let cfg = &self.cfg;
        let t_round = Instant::now();
        let mut split = TimeSplit::default();

        // Schedule, channels, a_t; the controller's ratio.
        let start = log.scenario.start(round)?;
        let ctx = RoundContext { round, total_rounds: cfg.rounds.total, a_t: start.a_t };
        let rho = log.control.choose(&ctx);
        let task = RoundTask { round, global: &log.state.global, head: &log.state.head, rho: DropRatio::new(rho)? };

        // Local work in the pool, then the server's validation and bounds of every upload.
        let t = Instant::now();
        let results = pool.run_round(self, &task, &start.clients)?;
        let pool_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (admitted, non_finite) = self.admit(&task, &start, results, &log.state);
        if !admitted.accepted_norms.is_empty() {
            log.state.meta.robust_history = admitted.accepted_norms;
        }
        let (arrived, failed) = (admitted.kept, admitted.dropped);
        // A round whose every upload was refused for non-finite values has no model to move and never will:
        // the clients' local training diverged. Going on would end "completed" at chance accuracy.
        if arrived.is_empty() && !non_finite.is_empty() && non_finite.len() == failed.len() {
            let what = format!("every upload of the round ({}) held non-finite values", failed.len());
            let hint = divergence_hint(cfg, &non_finite, log.state.meta.ledger.uploads > 0);
            return Err(EngineError::Diverged { round, what, hint });
        }
        // The pool's time is the clients' training plus their sparsification and encoding (in process they
        // run one after another; remote clients run in parallel and the server waits for them).
        let local_sparsify_s: f64 = arrived.iter().map(|a| a.upload.sparsify_s).sum::<f64>().min(pool_s);
        split.train_s += pool_s - local_sparsify_s;
        split.sparsify_s += local_sparsify_s + t.elapsed().as_secs_f64();

        // The uplink: bandwidth split over the arrived payloads, per-client delays, the slowest decides.
        let bits: Vec<f64> = arrived
            .iter()
            .map(|a| match cfg.wireless.payload {
                PayloadSize::Paper => a.cost.paper_bits as f64,
                PayloadSize::Encoded => a.cost.encoded_bits as f64,
            })
            .collect();
        let snr: Vec<f64> = arrived.iter().map(|a| start.channels[a.slot].snr).collect();
        let uplink = self.planner.tsfa.uplink.transmit(&bits, &snr, cfg.rounds.outage_delay_s)?;

        // Aggregation of what arrived in time; the run stops before recording a non-finite model.
        let t = Instant::now();
        let covariance = self.covariance(&arrived)?;
        self.aggregate(&mut log.state.global, &mut log.state.head, &arrived, &uplink.kept)?;
        split.aggregate_s += t.elapsed().as_secs_f64();
        if !log.state.global.all_finite()
            || !log.state.head.weight.iter().chain(&log.state.head.bias).all(|v| v.is_finite())
        {
            return Err(EngineError::Diverged {
                round,
                what: "the global model became non-finite".into(),
                hint: divergence_hint(cfg, &runaway(&arrived), true),
            });
        }
        log.control.observe(&ctx, uplink.round_delay_s);

        // Evaluation on schedule.
        let mut evaluation = None;
        if round + 1 == cfg.rounds.total || (round + 1).is_multiple_of(cfg.rounds.eval_every) {
            let t = Instant::now();
            let (accuracy, loss) = self.evaluate(&log.state.global, &log.state.head)?;
            if !loss.is_finite() {
                return Err(EngineError::Diverged {
                    round,
                    what: format!("the global model's test loss is {loss}"),
                    hint: divergence_hint(cfg, &runaway(&arrived), true),
                });
            }
            split.eval_s += t.elapsed().as_secs_f64();
            evaluation = Some((accuracy, loss));
        }

        let outcome = Outcome { round, rho, start, arrived, failed, uplink, covariance, evaluation, split, t_round };
        log.record(self, outcome)
    }

    /// The server's side of collecting: each pool result checked by [`Experiment::accept`] and costed, then
    /// the `[robust]` bounds. Returns the admitted arrivals (in schedule order), every refusal by slot, and the
    /// admitted uploads' part norms for the next round's bound (empty without one); beside them, the clients
    /// refused for non-finite values.
    fn admit(
        &self,
        task: &RoundTask<'_>,
        start: &RoundStart,
        results: Vec<Result<crate::pool::ClientUpload, String>>,
        state: &checkpoint::RunState,
    ) -> (crate::bounds::Bounded, Vec<usize>) {
        let w = &self.cfg.wireless;
        let bit_model = BitModel { value_bits: w.value_bits, index_overhead: w.index_overhead };
        let numel = LoraState::numel(&state.global);
        let mut arrived = Vec::new();
        let mut failed = Vec::new();
        let mut non_finite = Vec::new();
        for (slot, (&client, result)) in start.clients.iter().zip(results).enumerate() {
            let checked = result.and_then(|u| {
                self.accept(task, &u).map(|update| (u, update)).map_err(|r| {
                    if r.is_non_finite() {
                        non_finite.push(client);
                    }
                    r.to_string()
                })
            });
            match checked {
                Ok((upload, update)) => {
                    let cost = UploadCost {
                        entries: update.nnz() as u64,
                        paper_bits: bit_model.paper_bits(update.nnz(), numel),
                        encoded_bits: 8 * upload.bytes.len() as u64,
                    };
                    let samples = self.task.partition.clients[client].len();
                    arrived.push(Arrival { slot, samples, cost, upload, update, note: None });
                }
                Err(reason) => failed.push((slot, reason)),
            }
        }
        let mode = self.cfg.method.feedback_mode;
        let history = &state.meta.robust_history;
        let bounded =
            crate::bounds::bound_arrivals(arrived, &state.global, &state.head, mode, &self.cfg.robust, history);
        failed.extend(bounded.dropped);
        failed.sort_by_key(|f| f.0);
        (crate::bounds::Bounded { dropped: failed, ..bounded }, non_finite)
    }

    /// FedAvg of the uploads that arrived in time (`kept`, positions into `arrived`), weighted by samples: each
    /// LoRA factor separately (delta or model mode), the head moved to the clients' average.
    fn aggregate(
        &self,
        global: &mut LoraState,
        head: &mut Head,
        arrived: &[Arrival],
        kept: &[usize],
    ) -> Result<(), EngineError> {
        if kept.is_empty() {
            return Ok(());
        }
        let kw = weights(&kept.iter().map(|&i| arrived[i].samples).collect::<Vec<_>>())?;
        let ups: Vec<&SparseUpdate> = kept.iter().map(|&i| &arrived[i].update).collect();
        match self.cfg.method.feedback_mode {
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

    /// The covariance of the arrived clients' local models (docs/algorithms.md §2.4), where their dense local factors are
    /// known: in process. Networked clients never send them, so the metric is absent there.
    fn covariance(&self, arrived: &[Arrival]) -> Result<Option<f64>, EngineError> {
        let locals: Option<Vec<&LoraState>> = arrived.iter().map(|a| a.upload.local.as_ref()).collect();
        match locals {
            Some(l) if !l.is_empty() => {
                let w = weights(&arrived.iter().map(|a| a.samples).collect::<Vec<_>>())?;
                Ok(Some(covariance_norm(&l, &w)?))
            }
            _ => Ok(None),
        }
    }
}

/// Clients whose own training ran away (a training loss that is not finite).
fn runaway(arrived: &[Arrival]) -> Vec<usize> {
    arrived.iter().filter(|a| !a.upload.train_loss.is_finite()).map(|a| a.upload.client).collect()
}

/// What to change when the run diverged. When `runaway` clients' own training ran away, the learning rate
/// first; before any upload was aggregated (`aggregated_before` false) the model they trained from is the
/// initial one, so it is the only cause. Otherwise the bound on what one upload may do.
fn divergence_hint(cfg: &ExperimentConfig, runaway: &[usize], aggregated_before: bool) -> String {
    let lr = format!("lower training.lr (now {:e}) if it is too large", cfg.training.lr);
    match (runaway.is_empty(), aggregated_before) {
        (true, _) => cfg.robust.divergence_hint().to_string(),
        (false, false) => format!("the local training of client(s) {runaway:?} diverged from the initial model: {lr}"),
        (false, true) => format!(
            "the local training of client(s) {runaway:?} diverged: {lr}; if an earlier upload broke the model, {}",
            cfg.robust.divergence_hint()
        ),
    }
}
