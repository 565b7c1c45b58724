//! Where a round's clients do their local work: the [`ClientPool`] seam between the round driver and the
//! clients (in this process, or remote through `fedsoft-net`), and what crosses it.

use crate::checkpoint::ClientMemory;
use crate::client::Client;
use crate::config::Execution;
use crate::error::EngineError;
use crate::experiment::Experiment;
use fedsoft_core::budget::DropRatio;
use fedsoft_core::lora::LoraState;
use fedsoft_model::adapters::Head;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// This round's broadcast: what every scheduled client starts from.
pub struct RoundTask<'a> {
    pub round: u64,
    pub global: &'a LoraState,
    pub head: &'a Head,
    pub rho: DropRatio,
}

/// What a scheduled client sends back for one round.
#[derive(Debug, Clone)]
pub struct ClientUpload {
    pub client: usize,
    /// The sparse update in the wire format (`fedsoft_core::encoding`).
    pub bytes: Vec<u8>,
    /// The locally trained head (dense; it is small).
    pub head: Head,
    pub train_loss: f64,
    /// The dense local factors, known only in process (for the covariance metric).
    pub local: Option<LoraState>,
    /// The client's own count of its training samples, for a server that does not know the partition (a
    /// Flower strategy over a user's model); a server that knows it weighs by its own count.
    pub samples: Option<usize>,
    /// Seconds of local training and of sparsification + encoding, as the client measured them.
    pub train_s: f64,
    pub sparsify_s: f64,
    /// Real seconds from handing the task out to receiving the upload (networked clients).
    pub transfer_s: Option<f64>,
}

/// Where the scheduled clients of a round do their local work.
pub trait ClientPool {
    /// Every client of `clients`, in order: its upload, or why it has none (crashed, timed out,
    /// disconnected). A client without an upload is dropped from the round; an `Err` of the whole call
    /// stops the run.
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, EngineError>;
    /// The client memories this pool keeps, for checkpoints (empty when clients keep their own).
    fn memories(&self) -> BTreeMap<usize, ClientMemory>;
    /// Hands the pool the memories of a resumed checkpoint.
    fn restore(&mut self, memories: BTreeMap<usize, ClientMemory>);
}

/// Every client in this process, their memories kept here (and in checkpoints): side by side on
/// [`Experiment::workers`] (each client's work depends only on its own inputs and the uploads come back in
/// schedule order, so the round is the same whatever the thread count), or batched through one backbone pass
/// (`training.execution = "batched"`, [`Client::update_together`]).
#[derive(Default)]
pub struct LocalClients {
    memories: BTreeMap<usize, ClientMemory>,
}

impl ClientPool for LocalClients {
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, EngineError> {
        let mut scheduled: Vec<Client<'_>> =
            clients.iter().map(|&c| Client::new(exp, c, self.memories.remove(&c).unwrap_or_default())).collect();
        let uploads = match exp.cfg.training.execution {
            Execution::PerClient => {
                let slots: Vec<Mutex<&mut Client<'_>>> = scheduled.iter_mut().map(Mutex::new).collect();
                let done =
                    exp.workers().map(slots.len(), |i| slots[i].lock().unwrap_or_else(|p| p.into_inner()).update(task));
                done.into_iter().collect::<Result<Vec<_>, _>>()?
            }
            Execution::Batched => Client::update_together(&mut scheduled, task)?,
        };
        for client in scheduled {
            let id = client.id();
            let memory = client.into_memory();
            if !memory.is_empty() {
                self.memories.insert(id, memory);
            }
        }
        Ok(uploads.into_iter().map(Ok).collect())
    }
    fn memories(&self) -> BTreeMap<usize, ClientMemory> {
        self.memories.clone()
    }
    fn restore(&mut self, memories: BTreeMap<usize, ClientMemory>) {
        self.memories = memories;
    }
}

/// A sparsifier or feedback step refused its input: reported against the `[method]` section.
pub(crate) fn method_err(e: fedsoft_core::CoreError) -> EngineError {
    EngineError::invalid("method", e.to_string())
}
