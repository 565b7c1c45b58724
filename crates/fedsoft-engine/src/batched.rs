//! A round's clients trained together (`training.execution = "batched"`): one pass of the frozen backbone
//! per local step over every client's batch, each sample through its own client's adapters
//! (`fedsoft_model::train::train_grouped`). Compensation, sparsification and encoding are then each
//! client's own, exactly as on the per-client path.

use crate::client::{Client, LocalBatches, Trained};
use crate::error::EngineError;
use crate::pool::{ClientUpload, RoundTask};
use fedsoft_model::adapters::Adapters;
use fedsoft_model::train::{GroupJob, train_grouped};
use std::sync::Mutex;
use std::time::Instant;

impl Client<'_> {
    /// Every client of `clients` trained in one batched pass from this round's broadcast, then each one's
    /// upload (in the given order), each client's memory updated as [`Client::update`] would. Each client's
    /// `train_s` is its share of the shared training time.
    pub fn update_together(clients: &mut [Client<'_>], task: &RoundTask<'_>) -> Result<Vec<ClientUpload>, EngineError> {
        let Some(exp) = clients.first().map(|c| c.exp) else {
            return Ok(Vec::new());
        };
        let t = Instant::now();
        let mut plans = Vec::with_capacity(clients.len());
        for client in clients.iter() {
            plans.push(client.batches(task.round)?);
        }
        let mut jobs = Vec::with_capacity(clients.len());
        for (client, LocalBatches { indices, labels }) in clients.iter_mut().zip(&plans) {
            jobs.push(GroupJob {
                adapters: Adapters::from_state(task.global, task.head, &exp.device)?,
                batches: indices
                    .iter()
                    .zip(labels)
                    .enumerate()
                    .map(|(k, (idx, l))| (client.batch(task.round, k, idx), l.as_slice()))
                    .collect(),
                carried: client.carried_optimizer(),
            });
        }
        // One job: the pass gets every thread for its (now larger) matrix products.
        let jobs = Mutex::new(jobs);
        let trained = exp
            .workers()
            .map(1, |_| {
                let jobs = std::mem::take(&mut *jobs.lock().unwrap_or_else(|p| p.into_inner()));
                train_grouped(&exp.backbone, jobs, &exp.plan, &exp.settings())
            })
            .pop()
            .expect("one job")?;
        let train_s = t.elapsed().as_secs_f64() / clients.len() as f64;
        let mut out = Vec::with_capacity(clients.len());
        for (client, result) in clients.iter_mut().zip(trained) {
            let done = Trained {
                local: result.adapters.to_state(&exp.plan.shapes)?,
                head: result.adapters.head(),
                train_loss: result.loss,
                train_s,
                optimizer: result.carried,
            };
            out.push(client.finish_update(task, done)?);
        }
        Ok(out)
    }
}
