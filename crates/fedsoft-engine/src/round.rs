//! The round driver: the round of docs/algorithms.md §9, composed of the engine's roles. The [`Server`] opens
//! the round (schedule, channels, ratio); the pool's [`crate::client::Client`]s do the local work; the server
//! admits their uploads, closes the round (uplink, aggregate, controller) and makes its records; the
//! experiment evaluates on schedule; [`RunFiles`] writes the records and checkpoints.

use crate::error::EngineError;
use crate::experiment::{Experiment, RunOptions};
use crate::metrics::{RoundRecord, Summary, TimeSplit};
use crate::pool::{ClientPool, LocalClients};
use crate::runfiles::RunFiles;
use crate::server::Server;
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
        let (mut files, mut state) = RunFiles::open(self, opts)?;
        pool.restore(std::mem::take(&mut state.memories));
        let mut server = Server::new(self, state)?;
        let total = self.cfg.rounds.total;
        let end = opts.stop_after.map_or(total, |s| s.min(total));
        if server.next_round() == 0 && server.state().meta.initial_evaluation.is_none() {
            // Where training starts from: the figures' round-0 point, and the baseline every gain is read against.
            let (global, head) = server.global();
            server.set_initial_evaluation(self.evaluate(global, head)?);
        }
        for round in server.next_round()..end {
            let rec = self.play_round(pool, &mut server, &mut files, round)?;
            let checkpoint_due = round + 1 == total
                || (round + 1) % self.cfg.rounds.checkpoint_every == 0
                || opts.stop_after == Some(round + 1);
            if checkpoint_due {
                files.checkpoint(server.checkpoint_state(pool.memories()))?;
            }
            on_round(&rec);
        }
        files.finish(self, server.state())
    }

    /// One round, from the schedule to its records on disk (not yet checkpointed).
    fn play_round(
        &self,
        pool: &mut dyn ClientPool,
        server: &mut Server,
        files: &mut RunFiles,
        round: u64,
    ) -> Result<RoundRecord, EngineError> {
        let t_round = Instant::now();
        let mut split = TimeSplit::default();

        // Schedule, channels, a_t; the controller's ratio.
        let plan = server.open_round(round)?;

        // Local work in the pool, then the server's check and bounds of every upload.
        let t = Instant::now();
        let results = pool.run_round(self, &server.task(&plan), &plan.start.clients)?;
        let pool_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let admitted = server.admit(&plan, results)?;
        // The pool's time is the clients' training plus their sparsification and encoding (in process they
        // run one after another; remote clients run in parallel and the server waits for them).
        let local_sparsify_s = admitted.sparsify_s().min(pool_s);
        split.train_s += pool_s - local_sparsify_s;
        split.sparsify_s += local_sparsify_s + t.elapsed().as_secs_f64();

        // The uplink, the aggregate of what arrived in time, the controller's update.
        let t = Instant::now();
        let closed = server.close_round(plan, admitted)?;
        split.aggregate_s += t.elapsed().as_secs_f64();

        // Evaluation on schedule.
        let mut evaluation = None;
        if round + 1 == self.cfg.rounds.total || (round + 1).is_multiple_of(self.cfg.rounds.eval_every) {
            let t = Instant::now();
            let (global, head) = server.global();
            let (accuracy, loss) = self.evaluate(global, head)?;
            if !loss.is_finite() {
                return Err(EngineError::Diverged {
                    round,
                    what: format!("the global model's test loss is {loss}"),
                    hint: server.rules().divergence_hint(&closed.runaway(), true),
                });
            }
            split.eval_s += t.elapsed().as_secs_f64();
            evaluation = Some((accuracy, loss));
        }

        let records = server.record(closed, evaluation, split, t_round.elapsed().as_secs_f64());
        files.append(&records)?;
        Ok(records.round)
    }
}
