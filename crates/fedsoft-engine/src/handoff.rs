//! A round's work carried as bytes, for front doors that move opaque messages between the server's process
//! and the clients' (the Flower app, `python/examples/fedsoft-app`): a client's task, its reply, the pool that
//! sends the one and reads the other ([`HandoffPool`]), and the client's side ([`work`]).
//!
//! Both messages are safetensors files: tensors (the global factors, the head and the client's memory; the
//! encoded update, the trained head, the dense local factors and the new memory) and, in the header, the
//! scalars. The server hands each client its memory with the task and keeps what comes back, as in-process
//! clients do: any node may train any client, a checkpoint holds every memory, and the run is the in-process
//! run bit for bit. The update itself is the wire format of `fedsoft_core::encoding`, checked by the server
//! like any other.

use crate::checkpoint::{ClientMemory, Owned, push_memory, push_state, read_f32, read_memory, read_state, serialize};
use crate::client::Client;
use crate::error::EngineError;
use crate::experiment::Experiment;
use crate::pool::{ClientPool, ClientUpload, RoundTask};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::head::Head;
use fedsoft_core::le::f32_to_le;
use fedsoft_core::lora::describe_shapes;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Names the message in errors (it has no file).
const TASK: &str = "<task message>";
const REPLY: &str = "<reply message>";

/// Client `client`'s task of a round: the broadcast, the ratio, the client's memory, and the digest of the
/// config the server runs, so a client prepared under another config refuses it.
pub fn task_bytes(task: &RoundTask<'_>, client: usize, memory: &ClientMemory, config_sha256: &str) -> Vec<u8> {
    let mut owned = Owned::new();
    push_state(&mut owned, "global", task.global);
    push_head(&mut owned, task.head);
    push_memory(&mut owned, client, memory);
    let header = HashMap::from([
        ("round".to_string(), task.round.to_string()),
        ("client".to_string(), client.to_string()),
        ("rho".to_string(), task.rho.get().to_string()),
        ("config_sha256".to_string(), config_sha256.to_string()),
    ]);
    serialize(&owned, Some(header)).expect("task tensors are consistent")
}

/// The client's side of a handed-off task: the task read and checked against `exp`, the client's round
/// ([`Client::update`]), and its reply. `config_sha256` is the digest of the config `exp` was prepared from
/// as the server resolved it: a client may change what only sets its speed (`training.threads`, to the cores
/// it was given), which changes no result.
pub fn work(exp: &Experiment, config_sha256: &str, task: &[u8]) -> Result<Vec<u8>, EngineError> {
    let path = Path::new(TASK);
    let st = SafeTensors::deserialize(task).map_err(|e| EngineError::file(path, e))?;
    let header = header(task, path)?;
    let digest = field(&header, "config_sha256", path)?;
    if digest != config_sha256 {
        return Err(EngineError::file(
            path,
            format!(
                "was made under config {digest}, but this client was prepared under {config_sha256}: the server \
                 and its clients must run one config"
            ),
        ));
    }
    let round: u64 = parse(&header, "round", path)?;
    let client: usize = parse(&header, "client", path)?;
    let rho = DropRatio::new(parse(&header, "rho", path)?).map_err(|e| EngineError::file(path, e))?;
    let global = read_state(&st, "global", exp.shapes(), path)?;
    let head = read_head(&st, exp.head_dims(), path)?;
    let memory = read_memory(&st, client, exp.shapes(), path)?;
    let (upload, memory) = train_one(exp, client, memory, &RoundTask { round, global: &global, head: &head, rho })?;
    Ok(reply_bytes(&upload, &memory))
}

/// One client's round on `exp` from plain values, for front doors that hold the model and the memories
/// themselves (the handed-off task above, `fedsoft.Client` in Python): the broadcast checked against `exp`'s
/// modules and head, then [`Client::update`]. Returns the upload and what the client carries to its next round.
pub fn train_one(
    exp: &Experiment,
    client: usize,
    memory: ClientMemory,
    task: &RoundTask<'_>,
) -> Result<(ClientUpload, ClientMemory), EngineError> {
    if task.global.shapes != exp.shapes() {
        return Err(EngineError::Argument {
            what: "global factors".into(),
            detail: format!(
                "the factors' modules are [{}]; this experiment's are [{}]",
                describe_shapes(&task.global.shapes),
                describe_shapes(exp.shapes())
            ),
        });
    }
    let (hidden, classes) = exp.head_dims();
    if task.head.weight.len() != hidden * classes || task.head.bias.len() != classes {
        return Err(EngineError::Argument {
            what: "head".into(),
            detail: format!(
                "{} weights and {} biases; this experiment's head has {hidden} x {classes} weights and {classes} biases",
                task.head.weight.len(),
                task.head.bias.len()
            ),
        });
    }
    let mut worker = Client::new(exp, client, memory);
    // On the experiment's own threads (`training.threads`; one under a Ray actor's one CPU), as `fedsoft run`
    // trains a client: from the caller's thread the kernels spread over the process-wide pool instead, a thread
    // per core in every actor, and two actors' clients trained 25-30% slower on 2 cores, fighting for them.
    let upload = exp.workers().install(|| worker.update(task))?;
    Ok((upload, worker.into_memory()))
}

fn reply_bytes(upload: &ClientUpload, memory: &ClientMemory) -> Vec<u8> {
    let mut owned = Owned::new();
    owned.push(("update".into(), Dtype::U8, vec![upload.bytes.len()], upload.bytes.clone()));
    push_head(&mut owned, &upload.head);
    if let Some(local) = &upload.local {
        push_state(&mut owned, "local", local);
    }
    push_memory(&mut owned, upload.client, memory);
    let header = HashMap::from([
        ("client".to_string(), upload.client.to_string()),
        ("train_loss".to_string(), upload.train_loss.to_string()),
        ("train_s".to_string(), upload.train_s.to_string()),
        ("sparsify_s".to_string(), upload.sparsify_s.to_string()),
    ]);
    serialize(&owned, Some(header)).expect("reply tensors are consistent")
}

/// Reads client `client`'s reply; a reply that is not one (or is another client's) is the client's failure,
/// recorded with its reason, not the run's.
fn read_reply(exp: &Experiment, client: usize, bytes: &[u8]) -> Result<(ClientUpload, ClientMemory), String> {
    let path = Path::new(REPLY);
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("malformed reply: {e}"))?;
    let header = header(bytes, path).map_err(|e| e.to_string())?;
    let from: usize = parse(&header, "client", path).map_err(|e| e.to_string())?;
    if from != client {
        return Err(format!("reply names client {from} but answers client {client}'s task"));
    }
    let scalar = |name: &str| parse::<f64>(&header, name, path).map_err(|e| e.to_string());
    let update = st.tensor("update").map_err(|_| "malformed reply: no update".to_string())?;
    let local = if st.tensor("local.0.B").is_ok() {
        Some(read_state(&st, "local", exp.shapes(), path).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let upload = ClientUpload {
        client,
        bytes: update.data().to_vec(),
        head: read_head(&st, exp.head_dims(), path).map_err(|e| e.to_string())?,
        train_loss: scalar("train_loss")?,
        local,
        samples: None,
        train_s: scalar("train_s")?,
        sparsify_s: scalar("sparsify_s")?,
        transfer_s: None,
    };
    let memory = read_memory(&st, client, exp.shapes(), path).map_err(|e| e.to_string())?;
    Ok((upload, memory))
}

fn push_head(owned: &mut Owned, head: &Head) {
    owned.push(("head.weight".into(), Dtype::F32, vec![head.classes, head.hidden], f32_to_le(&head.weight)));
    owned.push(("head.bias".into(), Dtype::F32, vec![head.classes], f32_to_le(&head.bias)));
}

fn read_head(st: &SafeTensors, (hidden, classes): (usize, usize), path: &Path) -> Result<Head, EngineError> {
    Ok(Head {
        hidden,
        classes,
        weight: read_f32(st, "head.weight", hidden * classes, path)?,
        bias: read_f32(st, "head.bias", classes, path)?,
    })
}

fn header(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>, EngineError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| EngineError::file(path, e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

fn field<'h>(header: &'h HashMap<String, String>, name: &str, path: &Path) -> Result<&'h str, EngineError> {
    header.get(name).map(String::as_str).ok_or_else(|| EngineError::file(path, format!("no `{name}` in its header")))
}

fn parse<T: std::str::FromStr>(header: &HashMap<String, String>, name: &str, path: &Path) -> Result<T, EngineError> {
    let text = field(header, name, path)?;
    text.parse().map_err(|_| EngineError::file(path, format!("`{name}` is {text:?}, not a number")))
}

/// What carries a round's tasks to the clients and brings their replies back: called once a round with each
/// scheduled client's task, it answers, in the same order, each one's reply or why there is none. An `Err`
/// stops the run.
pub type Carrier<'a> = dyn FnMut(u64, Vec<(usize, Vec<u8>)>) -> Result<Vec<Result<Vec<u8>, String>>, EngineError> + 'a;

/// A [`ClientPool`] whose clients are reached by messages: each scheduled client's task made with its memory,
/// handed to `send`, the replies read back and the new memories kept (and checkpointed) here.
pub struct HandoffPool<'a> {
    send: Box<Carrier<'a>>,
    memories: BTreeMap<usize, ClientMemory>,
}

impl<'a> HandoffPool<'a> {
    pub fn new(send: Box<Carrier<'a>>) -> Self {
        HandoffPool { send, memories: BTreeMap::new() }
    }
}

impl ClientPool for HandoffPool<'_> {
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, EngineError> {
        let digest = exp.config().digest();
        let tasks = clients
            .iter()
            .map(|&c| (c, task_bytes(task, c, self.memories.get(&c).unwrap_or(&ClientMemory::default()), &digest)))
            .collect();
        let replies = (self.send)(task.round, tasks)?;
        if replies.len() != clients.len() {
            return Err(EngineError::Transport {
                round: task.round + 1,
                detail: format!("{} replies to {} tasks", replies.len(), clients.len()),
            });
        }
        let mut out = Vec::with_capacity(clients.len());
        for (&client, reply) in clients.iter().zip(replies) {
            match reply.and_then(|bytes| read_reply(exp, client, &bytes)) {
                Ok((upload, memory)) => {
                    if memory.is_empty() {
                        self.memories.remove(&client);
                    } else {
                        self.memories.insert(client, memory);
                    }
                    out.push(Ok(upload));
                }
                Err(reason) => out.push(Err(reason)),
            }
        }
        Ok(out)
    }
    fn memories(&self) -> BTreeMap<usize, ClientMemory> {
        self.memories.clone()
    }
    fn restore(&mut self, memories: BTreeMap<usize, ClientMemory>) {
        self.memories = memories;
    }
}
