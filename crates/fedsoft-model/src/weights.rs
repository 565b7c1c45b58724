//! Named `f32` tensors from a checkpoint, taken out one by one with their shape checked.

use crate::error::ModelError;
use crate::onnx::{OnnxGraph, consumers};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// A checkpoint's tensors by name, converted to `f32`.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Where they came from, for error messages.
    pub origin: String,
}

impl TensorMap {
    /// Reads a safetensors file (F32, F16 or BF16 tensors).
    pub fn from_safetensors(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e.to_string()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::file(path, format!("not a safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => fedsoft_core::le::f32_from_le(data),
                Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                // Integer buffers (e.g. position ids) are not weights.
                _ => continue,
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(TensorMap { tensors, origin: path.display().to_string() })
    }

    /// The DINOv2 backbone inside an exported ONNX model, under HF `Dinov2Model` names. Linear weights are
    /// anonymous `MatMul` initialisers stored `[in, out]`; each is named after the node that consumes it
    /// (`/backbone/encoder/layer.3/mlp/fc1/MatMul` becomes `encoder.layer.3.mlp.fc1.weight`) and transposed to
    /// the checkpoint convention `[out, in]`. Takes the graph so that its tensors move rather than being
    /// copied: loading holds one copy of the weights at a time, not two.
    pub fn from_onnx_dinov2(graph: OnnxGraph, origin: &str) -> Result<Self, ModelError> {
        let OnnxGraph { nodes, initializers } = graph;
        let mut tensors = HashMap::new();
        let mut pos_cls = None;
        let mut pos_grid = None;
        for (name, init) in initializers {
            if init.data.is_empty() {
                continue;
            }
            if let Some(rest) = name.strip_prefix("backbone.") {
                tensors.insert(rest.to_string(), (init.dims, init.data));
            } else if name.starts_with("onnx::MatMul") {
                let Some(node) = consumers(&nodes, &name).find(|n| n.op_type == "MatMul") else { continue };
                let path = node.name.trim_matches('/').trim_end_matches("/MatMul");
                let Some(path) = path.strip_prefix("backbone/") else { continue };
                let hf = format!("{}.weight", path.replace('/', "."));
                let [rows, cols] = init.dims[..] else {
                    return Err(ModelError::tensor(&hf, format!("MatMul weight with dims {:?}", init.dims)));
                };
                tensors.insert(hf, (vec![cols, rows], transpose(&init.data, rows, cols)));
            } else if init.dims.len() == 3
                && init.dims[..2] == [1, 1]
                && consumers(&nodes, &name).any(|n| n.op_type == "Concat")
            {
                pos_cls = Some(init);
            } else if init.dims.len() == 3
                && init.dims[0] == 1
                && init.dims[1] > 1
                && consumers(&nodes, &name).any(|n| n.op_type == "Reshape")
            {
                pos_grid = Some(init);
            }
        }
        // The position table is split into the CLS row and the patch grid in the export; join them.
        let (Some(cls), Some(grid)) = (pos_cls, pos_grid) else {
            return Err(ModelError::tensor("embeddings.position_embeddings", format!("not found in {origin}")));
        };
        let h = cls.dims[2];
        let mut pos = cls.data;
        pos.extend_from_slice(&grid.data);
        tensors.insert("embeddings.position_embeddings".into(), (vec![1, 1 + grid.dims[1], h], pos));
        Ok(TensorMap { tensors, origin: origin.to_string() })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns tensor `name`, which must have exactly `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (dims, data) = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::tensor(name, format!("missing from {}", self.origin)))?;
        if dims != shape {
            return Err(ModelError::tensor(name, format!("has shape {dims:?} in {}, expected {shape:?}", self.origin)));
        }
        Ok(data)
    }

    /// Like [`TensorMap::take`], trying each name in turn (checkpoints differ: `LayerNorm.weight` vs `.gamma`).
    pub fn take_any(&mut self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        match names.iter().find(|n| self.contains(n)) {
            Some(n) => self.take(n, shape),
            None => Err(ModelError::tensor(names[0], format!("missing from {}", self.origin))),
        }
    }

    /// Strips a leading model prefix (`bert.`, `vit.`, ...) if every tensor has one of them.
    pub fn strip_prefix(&mut self, prefixes: &[&str]) {
        for p in prefixes {
            if self
                .tensors
                .keys()
                .filter(|k| !k.starts_with("classifier") && !k.starts_with("pooler"))
                .any(|k| k.starts_with(p))
            {
                self.tensors = std::mem::take(&mut self.tensors)
                    .into_iter()
                    .map(|(k, v)| (k.strip_prefix(p).map(str::to_string).unwrap_or(k), v))
                    .collect();
                return;
            }
        }
    }
}

/// `[out, in]` (checkpoint) to `[in, out]` (burn's `x.matmul(w)`).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; data.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = data[i * cols + j];
        }
    }
    t
}
