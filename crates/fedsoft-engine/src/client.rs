//! The client's half of a round (docs/algorithms.md §9, steps 2-4): its batches, local training from the
//! broadcast model, error feedback and sparsification into the upload it sends.

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

/// One client of a run: its local training, its compression, and what it carries between rounds (its
/// error-feedback memory and, with `training.optimizer_state = "keep"`, its AdamW moments). It reads the
/// shared frozen backbone and data of the experiment; only its memory is its own. The same client runs in
/// process ([`crate::pool::LocalClients`]) and behind `fedsoft join`.
pub struct Client<'e> {
    pub(crate) exp: &'e Experiment,
    id: usize,
    memory: ClientMemory,
}

impl<'e> Client<'e> {
    /// Client `id` of `exp`'s run, with the memory it kept from its last round (empty on its first).
    pub fn new(exp: &'e Experiment, id: usize, memory: ClientMemory) -> Self {
        Client { exp, id, memory }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// What the client carries to its next round.
    pub fn into_memory(self) -> ClientMemory {
        self.memory
    }

    /// The client's whole round: local training from the broadcast model (with its kept optimiser state,
    /// if configured), error-feedback compensation with its memory, sparsification, and encoding in the wire
    /// format. Its memory becomes what it carries to the next round.
    pub fn update(&mut self, task: &RoundTask<'_>) -> Result<ClientUpload, EngineError> {
        let t = Instant::now();
        let mut optimizer = self.carried_optimizer();
        let (local, head, train_loss) = self.train(task.round, task.global, task.head, optimizer.as_mut())?;
        let trained = Trained { local, head, train_loss, train_s: t.elapsed().as_secs_f64(), optimizer };
        self.finish_update(task, trained)
    }

    /// The client's local batches this round: sample indices and labels, epoch by epoch in the order its
    /// keyed shuffle gives.
    pub(crate) fn batches(&self, round: u64) -> Result<LocalBatches, EngineError> {
        let (exp, client) = (self.exp, self.id);
        let own = exp.task.partition.clients.get(client).ok_or_else(|| {
            EngineError::invalid(
                "client",
                format!("client {client} is not one of the {} clients", exp.cfg.clients.total),
            )
        })?;
        let bs = exp.cfg.training.batch_size;
        let mut order = Vec::with_capacity(own.len() * exp.cfg.training.local_epochs);
        for epoch in 0..exp.cfg.training.local_epochs {
            let mut idx = own.clone();
            idx.shuffle(&mut stream(exp.cfg.seed, Purpose::Batches, &[round, client as u64, epoch as u64]));
            order.extend(idx.chunks(bs).map(<[usize]>::to_vec));
        }
        let labels = order.iter().map(|b| b.iter().map(|&i| exp.task.train_labels[i]).collect()).collect();
        Ok(LocalBatches { indices: order, labels })
    }

    /// Batch `k` of the client's round as model input (seeded augmentation when configured).
    pub(crate) fn batch(&self, round: u64, k: usize, idx: &[usize]) -> Batch {
        let exp = self.exp;
        let key = exp.cfg.data.augment.then_some((exp.cfg.seed, round, (self.id as u64) << 20 | k as u64));
        exp.task.train.batch(idx, &exp.device, key)
    }

    /// Local training from the global model.
    fn train(
        &self,
        round: u64,
        global: &LoraState,
        head: &Head,
        optimizer: Option<&mut OptimizerState>,
    ) -> Result<(LoraState, Head, f64), EngineError> {
        let exp = self.exp;
        let ad = Adapters::from_state(global, head, &exp.device)?;
        let LocalBatches { indices, labels } = self.batches(round)?;
        let batches =
            indices.iter().zip(&labels).enumerate().map(|(k, (idx, l))| (self.batch(round, k, idx), l.as_slice()));
        let (ad, loss) = train_steps(&exp.backbone, ad, &exp.plan, batches, &exp.settings(), optimizer)?;
        Ok((ad.to_state(&exp.plan.shapes)?, ad.head(), loss))
    }

    /// The optimiser state the client trains from: none with fresh optimisers, else what it kept (taken
    /// out of its memory; the trained state goes back in with the upload).
    pub(crate) fn carried_optimizer(&mut self) -> Option<OptimizerState> {
        let kept = self.memory.optimizer.take();
        match self.exp.cfg.training.optimizer_state {
            OptimizerStateMode::Fresh => None,
            OptimizerStateMode::Keep => Some(kept.unwrap_or_default()),
        }
    }

    /// A trained client's upload: error-feedback compensation with its memory, sparsification, encoding.
    pub(crate) fn finish_update(
        &mut self,
        task: &RoundTask<'_>,
        trained: Trained,
    ) -> Result<ClientUpload, EngineError> {
        let (exp, client) = (self.exp, self.id);
        let t = Instant::now();
        let Trained { local, head, train_loss, train_s, optimizer } = trained;
        let compression = Compression {
            mode: exp.cfg.method.feedback_mode,
            error_feedback: exp.cfg.method.error_feedback(),
            sparsifier: exp.sparsifier.as_ref(),
        };
        let key = UploadKey { rho: task.rho, seed: exp.cfg.seed, round: task.round, client: client as u64 };
        let feedback = self.memory.feedback.take();
        let Compressed { sent, memory: feedback } =
            compression.compress(&local, task.global, feedback.as_ref(), key).map_err(method_err)?;
        let bytes = encode(task.round as u32, client as u32, &exp.plan.shapes, &sent).map_err(method_err)?;
        self.memory = ClientMemory { feedback, optimizer };
        Ok(ClientUpload {
            client,
            bytes,
            head,
            train_loss,
            local: Some(local),
            samples: None,
            train_s,
            sparsify_s: t.elapsed().as_secs_f64(),
            transfer_s: None,
        })
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
