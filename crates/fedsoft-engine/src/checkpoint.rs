//! Checkpoints: everything a run needs to continue bit for bit, written atomically.
//!
//! Tensors (global factors, head, every client's error memory) go to `checkpoint.safetensors`, the rest
//! (round, queue, ledger, running sums) to `checkpoint.json`; each file is written to a temporary name and
//! renamed into place, the JSON last, so a crash at any moment leaves the previous checkpoint intact.

use crate::config::ConfigError;
use fedsoft_core::ledger::Ledger;
use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape};
use fedsoft_model::adapters::Head;
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
    /// Error-feedback memory of every client that has one.
    pub memories: BTreeMap<usize, LoraState>,
    pub meta: Meta,
}

/// The scalar part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Meta {
    pub next_round: u64,
    pub queue: f64,
    pub ledger: Ledger,
    pub delay_sum_s: f64,
    pub wall_s: f64,
    pub last_accuracy: Option<f64>,
    pub last_test_loss: Option<f64>,
    pub rank: usize,
    /// Hash of the resolved config, so a resume with another config is refused.
    pub config_hash: u64,
}

fn io(path: &Path, e: impl ToString) -> ConfigError {
    ConfigError::Invalid { field: "checkpoint".into(), detail: format!("{}: {}", path.display(), e.to_string()) }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    use std::io::Write;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn save(dir: &Path, st: &RunState) -> Result<(), ConfigError> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut push_state = |prefix: &str, s: &LoraState| {
        for (i, (shape, f)) in s.shapes.iter().zip(&s.modules).enumerate() {
            owned.push((format!("{prefix}.{i}.B"), vec![shape.d, shape.r], f32_bytes(&f.b)));
            owned.push((format!("{prefix}.{i}.A"), vec![shape.r, shape.k], f32_bytes(&f.a)));
        }
    };
    push_state("global", &st.global);
    for (c, m) in &st.memories {
        push_state(&format!("memory.{c}"), m);
    }
    owned.push(("head.weight".into(), vec![st.head.hidden, st.head.classes], f32_bytes(&st.head.weight)));
    owned.push(("head.bias".into(), vec![st.head.classes], f32_bytes(&st.head.bias)));
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent sizes")))
        .collect();
    // The metadata travels inside the tensor file, so one atomic rename switches the whole checkpoint: a
    // kill at any moment leaves either the old checkpoint or the new one, never a mix.
    let meta = Meta { next_round: st.next_round, ..st.meta.clone() };
    let meta_json = serde_json::to_string(&meta).expect("meta");
    let header = std::collections::HashMap::from([(META_KEY.to_string(), meta_json)]);
    let bytes = safetensors::serialize(views, Some(header)).map_err(|e| io(dir, e))?;
    write_atomic(&dir.join(CHECKPOINT), &bytes)?;
    // A readable copy for people; never read back.
    write_atomic(&dir.join("checkpoint.json"), serde_json::to_string_pretty(&meta).expect("meta").as_bytes())
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const META_KEY: &str = "fedsoft.meta";

/// Loads the checkpoint in `dir` for modules `shapes`, or `None` if there is none.
pub fn load(dir: &Path, shapes: &[ModuleShape]) -> Result<Option<RunState>, ConfigError> {
    let path = dir.join(CHECKPOINT);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| io(&path, e))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| io(&path, format!("no `{META_KEY}` entry in the header: not a fedsoft checkpoint")))?;
    let meta: Meta = serde_json::from_str(meta_json).map_err(|e| io(&path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| io(&path, e))?;
    let get = |name: &str, len: usize| -> Result<Vec<f32>, ConfigError> {
        let t = st.tensor(name).map_err(|_| io(&path, format!("missing tensor {name}")))?;
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
        if v.len() != len {
            return Err(io(&path, format!("tensor {name} has {} values, expected {len}", v.len())));
        }
        Ok(v)
    };
    let state = |prefix: &str| -> Result<LoraState, ConfigError> {
        let modules = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(ModuleFactors {
                    b: get(&format!("{prefix}.{i}.B"), s.b_len())?,
                    a: get(&format!("{prefix}.{i}.A"), s.a_len())?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        LoraState::from_parts(shapes.to_vec(), modules).map_err(|e| io(&path, e))
    };
    let global = state("global")?;
    let mut memories = BTreeMap::new();
    for name in st.names() {
        if let Some(rest) = name.strip_prefix("memory.")
            && rest.ends_with(".0.B")
        {
            let c: usize =
                rest.trim_end_matches(".0.B").parse().map_err(|_| io(&path, format!("bad tensor name {name}")))?;
            memories.insert(c, state(&format!("memory.{c}"))?);
        }
    }
    let head_shape = st.tensor("head.weight").map_err(|_| io(&path, "missing head.weight"))?.shape().to_vec();
    let (hidden, classes) = (head_shape[0], head_shape[1]);
    let head =
        Head { hidden, classes, weight: get("head.weight", hidden * classes)?, bias: get("head.bias", classes)? };
    Ok(Some(RunState { next_round: meta.next_round, global, head, memories, meta }))
}
