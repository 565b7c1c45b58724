//! A run's files around its rounds: opening a run directory (fresh, or resumed from its checkpoint), writing
//! each round's records, and the summary and export at the end.

use crate::checkpoint::{self, RunState};
use crate::config::ControllerKind;
use crate::error::EngineError;
use crate::experiment::{Experiment, RunOptions};
use crate::metrics::{ClientRecord, RoundRecord, Summary, TimeSplit};
use crate::pool::Arrival;
use crate::rundir::{self, RunDirLock};
use crate::runfiles::{append, check_covers, has_rounds, truncate_jsonl};
use fedsoft_wireless::control::RatioController;
use fedsoft_wireless::simulate::{RoundStart, Scenario};
use fedsoft_wireless::uplink::RoundUplink;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// An open run: its state, its ratio rule and round scenario, and its JSONL logs.
pub(crate) struct RunLog {
    pub state: RunState,
    pub control: Box<dyn RatioController>,
    pub scenario: Scenario,
    out: PathBuf,
    metrics_path: PathBuf,
    clients_path: PathBuf,
    metrics: File,
    clients: File,
    /// The directory is this run's while the log is open (released when the run ends, however it ends).
    _claim: RunDirLock,
}

/// What happened in one round, for its records.
pub(crate) struct Outcome {
    pub round: u64,
    pub rho: f64,
    pub start: RoundStart,
    pub arrived: Vec<Arrival>,
    /// Refused or failed clients by schedule slot, with the reason.
    pub failed: Vec<(usize, String)>,
    pub uplink: RoundUplink,
    pub covariance: Option<f64>,
    /// Test accuracy and loss, on evaluation rounds.
    pub evaluation: Option<(f64, f64)>,
    pub split: TimeSplit,
    pub t_round: Instant,
}

impl RunLog {
    /// Opens `opts.out_dir`: a fresh run, or (with `--resume`) the run its checkpoint continues, its logs cut
    /// back to what the checkpoint covers. Refuses what would lose recorded rounds.
    pub fn open(exp: &Experiment, opts: &RunOptions) -> Result<Self, EngineError> {
        let out = &opts.out_dir;
        let claim = rundir::claim(out, &exp.cfg.digest(), opts.resume)?;
        let state = match (opts.resume, checkpoint::load(out, &exp.plan.shapes)?) {
            (true, Some(mut st)) => {
                if !exp.config_matches(&st.meta) {
                    return Err(EngineError::run_directory(
                        out,
                        "was written by a different config; --resume continues a run only under its own config",
                    ));
                }
                st.meta.config_sha256 = exp.cfg.digest();
                st.meta.config_hash = None;
                st
            }
            (true, None) if has_rounds(&out.join("metrics.jsonl")) => {
                // Starting over would truncate the rounds already recorded.
                return Err(EngineError::run_directory(
                    out,
                    format!(
                        "holds recorded rounds but no checkpoint ({}) to continue them from; leave out --resume \
                         to start the run again here",
                        checkpoint::CHECKPOINT
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err(EngineError::run_directory(
                    out,
                    "already holds a run (--out); pass --resume to continue it or choose another directory",
                ));
            }
            (_, None) => exp.fresh_state()?,
        };
        checkpoint::write_atomic(&out.join("config.toml"), exp.cfg.to_toml().as_bytes())?;
        let hist = serde_json::json!({"classes": exp.task.classes, "clients": exp.task.partition.histograms});
        checkpoint::write_atomic(&out.join("partition.json"), hist.to_string().as_bytes())?;
        let metrics_path = out.join("metrics.jsonl");
        let clients_path = out.join("clients.jsonl");
        check_covers(&metrics_path, state.next_round)?;
        check_covers(&clients_path, state.next_round)?;
        truncate_jsonl(&metrics_path, state.next_round)?;
        truncate_jsonl(&clients_path, state.next_round)?;
        let metrics = append(&metrics_path)?;
        let clients = append(&clients_path)?;
        let mut control = exp.planner.ratio_controller(exp.rank)?;
        control.restore(state.meta.queue);
        let scenario = exp.planner.scenario(exp.rank);
        Ok(RunLog {
            state,
            control,
            scenario,
            out: out.clone(),
            metrics_path,
            clients_path,
            metrics,
            clients,
            _claim: claim,
        })
    }

    /// Books a round into the run's state (ledger, sums, queue) and appends its records to the logs.
    pub fn record(&mut self, exp: &Experiment, o: Outcome) -> Result<RoundRecord, EngineError> {
        let cfg = &exp.cfg;
        let meta = &mut self.state.meta;
        meta.queue = self.control.state();
        for &i in &o.uplink.kept {
            meta.ledger.record(o.arrived[i].cost);
        }
        meta.delay_sum_s += o.uplink.round_delay_s;
        meta.rho_sum += o.rho;
        if let Some((accuracy, loss)) = o.evaluation {
            meta.last_accuracy = Some(accuracy);
            meta.last_test_loss = Some(loss);
        }
        let mut split = o.split;
        let wall = o.t_round.elapsed().as_secs_f64();
        split.other_s = (wall - split.train_s - split.sparsify_s - split.aggregate_s - split.eval_s).max(0.0);
        meta.wall_s += wall;
        let kept = &o.uplink.kept;
        let losses: Vec<f64> = o.arrived.iter().map(|a| a.upload.train_loss).collect();
        let rec = RoundRecord {
            round: o.round,
            method: cfg.method.name,
            controller: cfg.controller.kind,
            rank: exp.rank,
            rho: o.rho,
            dense_delay_s: o.start.a_t,
            delay_s: o.uplink.round_delay_s,
            avg_delay_s: meta.delay_sum_s / (o.round + 1) as f64,
            queue: self.control.backlog(),
            uplink_bits_paper: kept.iter().map(|&i| o.arrived[i].cost.paper_bits).sum(),
            uplink_bits_encoded: kept.iter().map(|&i| o.arrived[i].cost.encoded_bits).sum(),
            kept_entries: kept.iter().map(|&i| o.arrived[i].cost.entries).sum(),
            clients: o.start.clients.clone(),
            dropped: o.start.clients.len() - kept.len(),
            covariance: o.covariance,
            train_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            test_accuracy: o.evaluation.map(|e| e.0),
            test_loss: o.evaluation.map(|e| e.1),
            wall_s: wall,
            time: split,
        };
        writeln!(self.metrics, "{}", serde_json::to_string(&rec).expect("record"))
            .map_err(|e| EngineError::io("write", &self.metrics_path, e))?;
        for c in client_records(exp, &o) {
            writeln!(self.clients, "{}", serde_json::to_string(&c).expect("record"))
                .map_err(|e| EngineError::io("write", &self.clients_path, e))?;
        }
        self.metrics.flush().map_err(|e| EngineError::io("write", &self.metrics_path, e))?;
        self.clients.flush().map_err(|e| EngineError::io("write", &self.clients_path, e))?;
        self.state.next_round = o.round + 1;
        Ok(rec)
    }

    /// After the last round: the PEFT export (when the run is complete) and the summary.
    pub fn finish(self, exp: &Experiment) -> Result<Summary, EngineError> {
        let (cfg, state, out) = (&exp.cfg, &self.state, &self.out);
        let total_rounds = cfg.rounds.total;
        if state.next_round == total_rounds {
            let base = cfg.export.base_model.clone().unwrap_or_else(|| {
                cfg.model.arch.hub_id().map(str::to_owned).unwrap_or_else(|| {
                    cfg.model.path.as_ref().map_or_else(|| cfg.model.arch.to_string(), |p| p.display().to_string())
                })
            });
            let modules = exp.peft_modules();
            let info = crate::export::ExportInfo {
                base_model: &base,
                modules: &modules,
                alpha: cfg.lora.alpha,
                pooling: cfg.training.pooling,
                classes: &exp.task.classes,
            };
            crate::export::export_peft(&out.join("adapter"), &state.global, &state.head, &info)?;
            exp.write_probe(&out.join("adapter"), &state.global, &state.head)?;
        }
        let summary = Summary {
            name: cfg.name.clone(),
            method: cfg.method.name,
            controller: cfg.controller.kind,
            rounds: state.next_round,
            completed: state.next_round == total_rounds,
            num_classes: exp.task.classes.len(),
            rank: exp.rank,
            orthogonality: Some(cfg.orthogonality()),
            initial_test_accuracy: state.meta.initial_evaluation.map(|(a, _)| a),
            initial_test_loss: state.meta.initial_evaluation.map(|(_, l)| l),
            final_test_accuracy: state.meta.last_accuracy,
            final_test_loss: state.meta.last_test_loss,
            avg_delay_s: state.meta.delay_sum_s / state.next_round.max(1) as f64,
            latency_budget_s: exp.planner.tsfa.link.tau_bar,
            online_rule: (cfg.controller.kind != ControllerKind::Fixed)
                .then(|| cfg.tsfa.settings.online.name().to_string()),
            avg_rho: Some(state.meta.rho_sum / state.next_round.max(1) as f64),
            offline_rho: Some(exp.planner.tsfa.offline.best_rho),
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
}

/// One record per scheduled client: the arrived ones (kept, or dropped by the simulated outage), then the
/// refused ones with their reason.
fn client_records(exp: &Experiment, o: &Outcome) -> Vec<ClientRecord> {
    let channels = &o.start.channels;
    let mut records: Vec<ClientRecord> = o
        .arrived
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let dropped = !o.uplink.kept.contains(&i);
            ClientRecord {
                round: o.round,
                client: o.start.clients[a.slot],
                samples: a.samples,
                fading: channels[a.slot].fading,
                snr_db: 10.0 * channels[a.slot].snr.log10(),
                bandwidth_share: o.uplink.shares[i],
                kept_entries: a.cost.entries,
                bits_paper: a.cost.paper_bits,
                bits_encoded: a.cost.encoded_bits,
                delay_s: o.uplink.delays_s[i],
                train_loss: a.upload.train_loss,
                dropped,
                reason: dropped.then(|| "simulated outage: delay above rounds.outage_delay_s".into()),
                note: a.note.clone(),
                train_wall_s: a.upload.train_s,
                transfer_s: a.upload.transfer_s,
            }
        })
        .collect();
    for (slot, reason) in &o.failed {
        let client = o.start.clients[*slot];
        records.push(ClientRecord {
            round: o.round,
            client,
            samples: exp.task.partition.clients[client].len(),
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
