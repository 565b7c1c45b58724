//! The client step (docs/algorithms.md §9, steps 2-4): a client's batches, local training from the broadcast model, error
//! feedback and sparsification into the upload it sends.

use crate::checkpoint::ClientMemory;
use crate::config::OptimizerStateMode;
use crate::error::EngineError;
use crate::experiment::Experiment;
use crate::pool::{ClientUpload, RoundTask, method_err};
use fedsoft_core::encoding::encode;
use fedsoft_core::feedback::{Compressed, Compression};
use fedsoft_core::lora::LoraState;
use fedsoft_core::rng::{Purpose, stream};
use fedsoft_core::sparsify::UploadKey;
use fedsoft_model::adapters::{Adapters, Head};
use fedsoft_model::backbone::Batch;
use fedsoft_model::train::{OptimizerState, train_steps};
use rand::seq::SliceRandom;
use std::time::Instant;

impl Experiment {
    /// A client's local batches this round: sample indices and labels, epoch by epoch in the order its
    /// keyed shuffle gives.
    pub(crate) fn client_batches(&self, client: usize, round: u64) -> Result<LocalBatches, EngineError> {
        let own = self.task.partition.clients.get(client).ok_or_else(|| {
            EngineError::invalid(
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
    ) -> Result<(LoraState, Head, f64), EngineError> {
        let ad = Adapters::from_state(global, head, &self.device)?;
        let LocalBatches { indices, labels } = self.client_batches(client, round)?;
        let batches = indices
            .iter()
            .zip(&labels)
            .enumerate()
            .map(|(k, (idx, l))| (self.train_batch(client, round, k, idx), l.as_slice()));
        let (ad, loss) = train_steps(&self.backbone, ad, &self.plan, batches, &self.settings(), optimizer)?;
        Ok((ad.to_state(&self.plan.shapes)?, ad.head(), loss))
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
    ) -> Result<(ClientUpload, ClientMemory), EngineError> {
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
    ) -> Result<(ClientUpload, ClientMemory), EngineError> {
        let t = Instant::now();
        let Trained { local, head, train_loss, train_s, optimizer } = trained;
        let compression = Compression {
            mode: self.cfg.method.feedback_mode,
            error_feedback: self.cfg.method.error_feedback(),
            sparsifier: self.sparsifier.as_ref(),
        };
        let key = UploadKey { rho: task.rho, seed: self.cfg.seed, round: task.round, client: client as u64 };
        let Compressed { sent, memory: feedback } =
            compression.compress(&local, task.global, feedback.as_ref(), key).map_err(method_err)?;
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
        };
        Ok((upload, ClientMemory { feedback, optimizer }))
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
