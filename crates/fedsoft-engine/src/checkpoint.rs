//! Checkpoints: everything a run needs to continue bit for bit, written atomically.
//!
//! One file, `checkpoint.safetensors`: the tensors (global factors, head, every client's memory) and, in its
//! header, the scalars (round, queue, ledger, running sums). It is written to a temporary name and renamed
//! into place, so a crash at any moment leaves the previous checkpoint intact. `checkpoint.json` is a
//! readable copy of the scalars that is never read back.

use crate::error::EngineError;
use fedsoft_core::le::f32_to_le as f32_bytes;
use fedsoft_core::ledger::Ledger;
use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape};
use fedsoft_model::adapters::Head;
use fedsoft_model::train::OptimizerState;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The state of a run between rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// The next round to run.
    pub next_round: u64,
    pub global: LoraState,
    pub head: Head,
    /// What every client that has carried something over holds.
    pub memories: BTreeMap<usize, ClientMemory>,
    pub meta: Meta,
}

/// What a client carries from one of its rounds to its next: the error-feedback residual (methods with
/// error feedback) and the AdamW moments (`training.optimizer_state = "keep"`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientMemory {
    pub feedback: Option<LoraState>,
    pub optimizer: Option<OptimizerState>,
}

impl ClientMemory {
    pub fn is_empty(&self) -> bool {
        self.feedback.is_none() && self.optimizer.as_ref().is_none_or(OptimizerState::is_empty)
    }
}

/// The scalar part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Meta {
    pub next_round: u64,
    /// The ratio controller's state (`RatioController::state`): the Lyapunov queue, or the horizon rule's
    /// spent delay.
    pub queue: f64,
    pub ledger: Ledger,
    pub delay_sum_s: f64,
    /// Sum of the rounds' drop ratios (for the summary's average).
    #[serde(default)]
    pub rho_sum: f64,
    pub wall_s: f64,
    pub last_accuracy: Option<f64>,
    pub last_test_loss: Option<f64>,
    pub rank: usize,
    /// Per accepted upload of the last round that had any, its part norms (LoRA modules, then the head): the
    /// `[robust]` bound pools them with the next round's, so one or two uploads cannot set their own limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub robust_history: Vec<Vec<f64>>,
    /// Test accuracy and loss of the model before the first round (the figures' round-0 point); absent in
    /// checkpoints written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_evaluation: Option<(f64, f64)>,
    /// SHA-256 of the resolved config (`ExperimentConfig::digest`), so a resume with another config is refused.
    /// Stable across toolchains, unlike the hash checkpoints carried before it.
    #[serde(default)]
    pub config_sha256: String,
    /// The hash older checkpoints carry instead ([`legacy_config_hash`]); read so that their runs can resume
    /// once (a resumed run drops it, so its next checkpoint carries only the SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<u64>,
}

/// The config hash checkpoints carried before `config_sha256`: Rust's `DefaultHasher` over the canonical
/// config, which no Rust release promises to keep. Only for accepting those checkpoints under the toolchain
/// that wrote them.
pub fn legacy_config_hash(canonical_toml: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canonical_toml.hash(&mut h);
    h.finish()
}

/// Writes `bytes` to `path` atomically (`fedsoft_records::write_atomic`), naming the file on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    fedsoft_records::write_atomic(path, bytes).map_err(|e| EngineError::io("write", path, e))
}

/// Named tensors waiting to be serialised: name, dtype, shape, little-endian bytes.
pub(crate) type Owned = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

pub(crate) fn push_state(owned: &mut Owned, prefix: &str, s: &LoraState) {
    for (i, (shape, f)) in s.shapes.iter().zip(&s.modules).enumerate() {
        owned.push((format!("{prefix}.{i}.B"), Dtype::F32, vec![shape.d, shape.r], f32_bytes(&f.b)));
        owned.push((format!("{prefix}.{i}.A"), Dtype::F32, vec![shape.r, shape.k], f32_bytes(&f.a)));
    }
}

/// A client's memory as tensors `memory.{c}.{i}.B|A` (feedback) and `optimizer.{c}` (bytes).
pub(crate) fn push_memory(owned: &mut Owned, client: usize, m: &ClientMemory) {
    if let Some(f) = &m.feedback {
        push_state(owned, &format!("memory.{client}"), f);
    }
    if let Some(o) = m.optimizer.as_ref().filter(|o| !o.is_empty()) {
        owned.push((format!("optimizer.{client}"), Dtype::U8, vec![o.0.len()], o.0.clone()));
    }
}

pub(crate) fn serialize(
    owned: &Owned,
    header: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("consistent sizes")))
        .collect();
    safetensors::serialize(views, header).map_err(|e| e.to_string())
}

/// One client's memory as a file of its own (what `fedsoft join` keeps on the client's disk), carrying a
/// SHA-256 of its client id and tensors like a checkpoint does: a memory damaged on the client's disk would
/// otherwise steer every later upload of that client, silently.
pub fn memory_to_bytes(client: usize, m: &ClientMemory) -> Vec<u8> {
    let mut owned = Owned::new();
    push_memory(&mut owned, client, m);
    let tensors = owned.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())).collect();
    let sum = digest(&memory_label(client), tensors);
    let header = std::collections::HashMap::from([(DIGEST_KEY.to_string(), sum)]);
    serialize(&owned, Some(header)).expect("memory tensors are consistent")
}

/// What a memory file's digest covers besides its tensors: whose memory it is.
fn memory_label(client: usize) -> String {
    format!("client {client} memory")
}

/// Reads what [`memory_to_bytes`] wrote, refusing a file whose digest is missing or does not match and
/// error-feedback values that are not finite; `path` only names the file in errors.
pub fn memory_from_bytes(
    bytes: &[u8],
    client: usize,
    shapes: &[ModuleShape],
    path: &Path,
) -> Result<ClientMemory, EngineError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| EngineError::file(path, e))?;
    let stored = header.metadata().as_ref().and_then(|m| m.get(DIGEST_KEY)).ok_or_else(|| {
        EngineError::file(
            path,
            format!(
                "no `{DIGEST_KEY}` entry in the header, so it cannot be checked (written by an older fedsoft, or \
                 not a client memory); remove it to start client {client}'s memory afresh"
            ),
        )
    })?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| EngineError::file(path, e))?;
    let views = st.tensors();
    let tensors = views.iter().map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())).collect();
    if digest(&memory_label(client), tensors) != *stored {
        return Err(EngineError::file(
            path,
            format!("its contents do not match the digest written with it (edited, damaged, or not client {client}'s)"),
        ));
    }
    let memory = read_memory(&st, client, shapes, path)?;
    if memory.feedback.as_ref().is_some_and(|f| !f.all_finite()) {
        return Err(EngineError::file(path, "the error-feedback memory holds non-finite values"));
    }
    Ok(memory)
}

pub(crate) fn read_f32(st: &SafeTensors, name: &str, len: usize, path: &Path) -> Result<Vec<f32>, EngineError> {
    let t = st.tensor(name).map_err(|_| EngineError::file(path, format!("missing tensor {name}")))?;
    if t.dtype() != Dtype::F32 {
        return Err(EngineError::file(path, format!("tensor {name} is {:?}, expected F32", t.dtype())));
    }
    let v = fedsoft_core::le::f32_from_le(t.data());
    if v.len() != len {
        return Err(EngineError::file(path, format!("tensor {name} has {} values, expected {len}", v.len())));
    }
    Ok(v)
}

pub(crate) fn read_state(
    st: &SafeTensors,
    prefix: &str,
    shapes: &[ModuleShape],
    path: &Path,
) -> Result<LoraState, EngineError> {
    let modules = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(ModuleFactors {
                b: read_f32(st, &format!("{prefix}.{i}.B"), s.b_len(), path)?,
                a: read_f32(st, &format!("{prefix}.{i}.A"), s.a_len(), path)?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    LoraState::from_parts(shapes.to_vec(), modules).map_err(|e| EngineError::file(path, e))
}

pub(crate) fn read_memory(
    st: &SafeTensors,
    client: usize,
    shapes: &[ModuleShape],
    path: &Path,
) -> Result<ClientMemory, EngineError> {
    // A lookup by name, not a scan of all names: a checkpoint holds every client's memory.
    let feedback = if st.tensor(&format!("memory.{client}.0.B")).is_ok() {
        Some(read_state(st, &format!("memory.{client}"), shapes, path)?)
    } else {
        None
    };
    let optimizer = match st.tensor(&format!("optimizer.{client}")) {
        Ok(t) if t.dtype() == Dtype::U8 => Some(OptimizerState(t.data().to_vec())),
        Ok(t) => {
            return Err(EngineError::file(path, format!("tensor optimizer.{client} is {:?}, expected U8", t.dtype())));
        }
        Err(_) => None,
    };
    Ok(ClientMemory { feedback, optimizer })
}

pub fn save(dir: &Path, st: &RunState) -> Result<(), EngineError> {
    let mut owned = Owned::new();
    push_state(&mut owned, "global", &st.global);
    for (c, m) in &st.memories {
        push_memory(&mut owned, *c, m);
    }
    owned.push(("head.weight".into(), Dtype::F32, vec![st.head.hidden, st.head.classes], f32_bytes(&st.head.weight)));
    owned.push(("head.bias".into(), Dtype::F32, vec![st.head.classes], f32_bytes(&st.head.bias)));
    // The metadata travels inside the tensor file, so one atomic rename switches the whole checkpoint: a
    // kill at any moment leaves either the old checkpoint or the new one, never a mix.
    let meta = Meta { next_round: st.next_round, ..st.meta.clone() };
    let meta_json = serde_json::to_string(&meta).expect("meta");
    let tensors: Vec<(&str, Dtype, &[usize], &[u8])> =
        owned.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())).collect();
    let sum = digest(&meta_json, tensors);
    let header = std::collections::HashMap::from([(META_KEY.to_string(), meta_json), (DIGEST_KEY.to_string(), sum)]);
    let bytes = serialize(&owned, Some(header)).map_err(|e| EngineError::file(dir, e))?;
    write_atomic(&dir.join(CHECKPOINT), &bytes)?;
    // A readable copy for people; never read back.
    write_atomic(&dir.join("checkpoint.json"), serde_json::to_string_pretty(&meta).expect("meta").as_bytes())
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
const META_KEY: &str = "fedsoft.meta";
const DIGEST_KEY: &str = "fedsoft.sha256";

/// SHA-256 over the metadata and every tensor (name, dtype, shape, bytes) in name order: a checkpoint edited
/// or damaged after it was written no longer matches, and resuming from it is refused.
fn digest<'a>(meta_json: &str, mut tensors: Vec<(&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(b"fedsoft checkpoint v1\0");
    h.update((meta_json.len() as u64).to_le_bytes());
    h.update(meta_json.as_bytes());
    for (name, dtype, shape, data) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads the checkpoint in `dir` for modules `shapes`, or `None` if there is none.
pub fn load(dir: &Path, shapes: &[ModuleShape]) -> Result<Option<RunState>, EngineError> {
    let path = dir.join(CHECKPOINT);
    if !path.exists() {
        return Ok(None);
    }
    if !path.is_file() {
        return Err(EngineError::file(&path, "is not a file: a checkpoint is expected here"));
    }
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io("read", &path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| EngineError::file(&path, e))?;
    let meta_json = header.metadata().as_ref().and_then(|m| m.get(META_KEY)).ok_or_else(|| {
        EngineError::file(&path, format!("no `{META_KEY}` entry in the header: not a fedsoft checkpoint"))
    })?;
    let stored = header.metadata().as_ref().and_then(|m| m.get(DIGEST_KEY)).ok_or_else(|| {
        EngineError::file(&path, format!("no `{DIGEST_KEY}` entry in the header: it cannot be checked"))
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| EngineError::file(&path, e))?;
    let views = st.tensors();
    let tensors = views.iter().map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())).collect();
    if digest(meta_json, tensors) != *stored {
        return Err(EngineError::file(
            &path,
            "its contents do not match the digest written with it: edited or damaged",
        ));
    }
    let meta: Meta = serde_json::from_str(meta_json).map_err(|e| EngineError::file(&path, e))?;
    let global = read_state(&st, "global", shapes, &path)?;
    if !global.all_finite() {
        return Err(EngineError::file(&path, "the global model holds non-finite values"));
    }
    let mut clients = std::collections::BTreeSet::new();
    for name in st.names() {
        let id = name
            .strip_prefix("memory.")
            .and_then(|rest| rest.split('.').next())
            .or_else(|| name.strip_prefix("optimizer."));
        if let Some(id) = id {
            clients
                .insert(id.parse::<usize>().map_err(|_| EngineError::file(&path, format!("bad tensor name {name}")))?);
        }
    }
    let mut memories = BTreeMap::new();
    for c in clients {
        memories.insert(c, read_memory(&st, c, shapes, &path)?);
    }
    let head_shape =
        st.tensor("head.weight").map_err(|_| EngineError::file(&path, "missing head.weight"))?.shape().to_vec();
    if head_shape.len() != 2 {
        return Err(EngineError::file(
            &path,
            format!("head.weight has shape {head_shape:?}, expected [hidden, classes]"),
        ));
    }
    let (hidden, classes) = (head_shape[0], head_shape[1]);
    let head = Head {
        hidden,
        classes,
        weight: read_f32(&st, "head.weight", hidden * classes, &path)?,
        bias: read_f32(&st, "head.bias", classes, &path)?,
    };
    if !head.weight.iter().chain(&head.bias).all(|v| v.is_finite()) {
        return Err(EngineError::file(&path, "the head holds non-finite values"));
    }
    if let Some((c, _)) = memories.iter().find(|(_, m)| m.feedback.as_ref().is_some_and(|f| !f.all_finite())) {
        return Err(EngineError::file(&path, format!("client {c}'s error-feedback memory holds non-finite values")));
    }
    Ok(Some(RunState { next_round: meta.next_round, global, head, memories, meta }))
}
