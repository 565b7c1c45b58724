//! A round's clients trained together (`training.execution = "batched"`): one pass of the frozen backbone
//! per local step over every client's batch, each sample through its own client's adapters
//! (`fedsoft_model::train::train_grouped`). Compensation, sparsification and encoding are then each
//! client's own, exactly as on the per-client path.

use crate::checkpoint::ClientMemory;
use crate::engine::{ClientUpload, Experiment, LocalBatches, RoundTask, Trained};
use crate::error::EngineError;
use fedsoft_model::adapters::Adapters;
use fedsoft_model::train::{GroupJob, train_grouped};
use std::sync::Mutex;
use std::time::Instant;

impl Experiment {
    /// Every client of `clients` trained in one batched pass from this round's broadcast, then its upload and
    /// its new memory, in schedule order. `memories` are the clients' memories in the same order. Each
    /// client's `train_s` is its share of the shared training time.
    pub fn batched_updates(
        &self,
        clients: &[usize],
        task: &RoundTask<'_>,
        memories: Vec<ClientMemory>,
    ) -> Result<Vec<(ClientUpload, ClientMemory)>, EngineError> {
        let t = Instant::now();
        let mut plans = Vec::with_capacity(clients.len());
        for &client in clients {
            plans.push(self.client_batches(client, task.round)?);
        }
        let mut feedback = Vec::with_capacity(clients.len());
        let mut jobs = Vec::with_capacity(clients.len());
        for ((&client, LocalBatches { indices, labels }), memory) in clients.iter().zip(&plans).zip(memories) {
            let ClientMemory { feedback: kept, optimizer } = memory;
            feedback.push(kept);
            jobs.push(GroupJob {
                adapters: Adapters::from_state(task.global, task.head, &self.device)?,
                batches: indices
                    .iter()
                    .zip(labels)
                    .enumerate()
                    .map(|(k, (idx, l))| (self.train_batch(client, task.round, k, idx), l.as_slice()))
                    .collect(),
                carried: self.carried_optimizer(optimizer),
            });
        }
        // One job: the pass gets every thread for its (now larger) matrix products.
        let jobs = Mutex::new(jobs);
        let trained = self
            .workers()
            .map(1, |_| {
                let jobs = std::mem::take(&mut *jobs.lock().unwrap_or_else(|p| p.into_inner()));
                train_grouped(&self.backbone, jobs, &self.plan, &self.settings())
            })
            .pop()
            .expect("one job")?;
        let train_s = t.elapsed().as_secs_f64() / clients.len().max(1) as f64;
        let mut out = Vec::with_capacity(clients.len());
        for ((&client, result), kept) in clients.iter().zip(trained).zip(feedback) {
            let local = result.adapters.to_state(&self.plan.shapes)?;
            let done = Trained {
                local,
                head: result.adapters.head(),
                train_loss: result.loss,
                train_s,
                optimizer: result.carried,
            };
            out.push(self.finish_update(client, task, kept, done)?);
        }
        Ok(out)
    }
}
