//! A run's files (`RunFiles`): the run directory claimed (fresh, or resumed from its checkpoint), each
//! round's records appended to the JSONL logs, checkpoints, and the export and summary at the end. It decides
//! nothing about a round; the server's state passes through it only to be stored.

use crate::checkpoint::{self, RunState};
use crate::config::ControllerKind;
use crate::error::EngineError;
use crate::experiment::{Experiment, RunOptions};
use crate::jsonl::{append, check_covers, has_rounds, truncate_jsonl};
use crate::metrics::Summary;
use crate::rundir::{self, RunDirLock};
use crate::server::RoundRecords;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// An open run directory and its JSONL logs.
pub(crate) struct RunFiles {
    out: PathBuf,
    metrics_path: PathBuf,
    clients_path: PathBuf,
    metrics: File,
    clients: File,
    /// The directory is this run's while the files are open (released when the run ends, however it ends).
    _claim: RunDirLock,
}

impl RunFiles {
    /// Opens `opts.out_dir`: a fresh run, or (with `--resume`) the run its checkpoint continues, its logs cut
    /// back to what the checkpoint covers. Refuses what would lose recorded rounds. Returns the files and the
    /// state the run continues from.
    pub fn open(exp: &Experiment, opts: &RunOptions) -> Result<(Self, RunState), EngineError> {
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
        let files = RunFiles { out: out.clone(), metrics_path, clients_path, metrics, clients, _claim: claim };
        Ok((files, state))
    }

    /// Appends a round's records to the logs, flushed before the next round starts.
    pub fn append(&mut self, records: &RoundRecords) -> Result<(), EngineError> {
        writeln!(self.metrics, "{}", serde_json::to_string(&records.round).expect("record"))
            .map_err(|e| EngineError::io("write", &self.metrics_path, e))?;
        for c in &records.clients {
            writeln!(self.clients, "{}", serde_json::to_string(c).expect("record"))
                .map_err(|e| EngineError::io("write", &self.clients_path, e))?;
        }
        self.metrics.flush().map_err(|e| EngineError::io("write", &self.metrics_path, e))?;
        self.clients.flush().map_err(|e| EngineError::io("write", &self.clients_path, e))?;
        Ok(())
    }

    /// Replaces the run's checkpoint with `state`.
    pub fn checkpoint(&self, state: &RunState) -> Result<(), EngineError> {
        checkpoint::save(&self.out, state)
    }

    /// After the last round: the PEFT export (when the run is complete) and the summary.
    pub fn finish(self, exp: &Experiment, state: &RunState) -> Result<Summary, EngineError> {
        let (cfg, out) = (&exp.cfg, &self.out);
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
            crate::export::write_probe(exp, &out.join("adapter"), &state.global, &state.head)?;
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
