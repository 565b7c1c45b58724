//! The round driver: SPEC's round as one loop. Schedule the clients, let the controller choose the ratio on
//! this round's channels, collect the uploads from the pool, validate and bound them, simulate the uplink,
//! aggregate, record, checkpoint; evaluate on schedule; export the adapter at the end.

use crate::checkpoint::{self};
use crate::config::{ConfigError, ControllerKind, PayloadSize};
use crate::experiment::{Experiment, RunOptions};
use crate::metrics::{ClientRecord, RoundRecord, Summary, TimeSplit};
use crate::pool::{Arrival, ClientPool, LocalClients, RoundTask};
use crate::runfiles::{append, has_rounds, truncate_jsonl};
use fedsoft_core::aggregate::move_toward_average;
use fedsoft_core::aggregate::{apply_deltas, average_sparse_models, covariance_norm, weights};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::feedback::FeedbackMode;
use fedsoft_core::ledger::{BitModel, UploadCost};
use fedsoft_core::lora::LoraState;
use fedsoft_core::schedule::sample_clients;
use fedsoft_core::sparsify::SparseUpdate;
use fedsoft_model::adapters::Head;
use fedsoft_wireless::control::RoundContext;
use fedsoft_wireless::uplink::RoundUplink;
use std::io::Write;
use std::time::Instant;

impl Experiment {
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
        let uplink = self.planner.tsfa.uplink;
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
            let channels = self.planner.tsfa.cell.round_snr(cfg.seed, round, &scheduled);
            let snr_all: Vec<f64> = channels.iter().map(|c| c.snr).collect();
            let a_t = uplink.dense_delay(dense_bits, &snr_all).map_err(ConfigError::from)?;
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
                let checked =
                    result.and_then(|u| self.accept(&task, &u).map(|update| (u, update)).map_err(|r| r.to_string()));
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
            let RoundUplink { shares, delays_s: delay_each, kept, round_delay_s: round_delay } =
                uplink.transmit(&bits, &snr, cfg.rounds.outage_delay_s).map_err(ConfigError::from)?;

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
                let weights: Vec<&[f32]> = kept_heads.iter().map(|h| h.weight.as_slice()).collect();
                let biases: Vec<&[f32]> = kept_heads.iter().map(|h| h.bias.as_slice()).collect();
                move_toward_average(&mut state.head.weight, &weights, &kw).map_err(aggregation_err)?;
                move_toward_average(&mut state.head.bias, &biases, &kw).map_err(aggregation_err)?;
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
                controller: cfg.controller.kind,
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
            self.write_probe(&out.join("adapter"), &state.global, &state.head)?;
        }
        let summary = Summary {
            name: cfg.name.clone(),
            method: cfg.method.name.to_string(),
            controller: cfg.controller.kind,
            rounds: state.next_round,
            completed: state.next_round == total_rounds,
            num_classes: self.task.classes.len(),
            rank: self.rank,
            orthogonality: Some(cfg.orthogonality()),
            final_test_accuracy: state.meta.last_accuracy,
            final_test_loss: state.meta.last_test_loss,
            avg_delay_s: state.meta.delay_sum_s / state.next_round.max(1) as f64,
            latency_budget_s: self.planner.tsfa.link.tau_bar,
            online_rule: (cfg.controller.kind != ControllerKind::Fixed).then(|| cfg.tsfa.online.name().to_string()),
            avg_rho: Some(state.meta.rho_sum / state.next_round.max(1) as f64),
            offline_rho: Some(self.planner.tsfa.offline.best_rho),
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

fn aggregation_err(e: fedsoft_core::CoreError) -> ConfigError {
    ConfigError::invalid("aggregation", e.to_string())
}
