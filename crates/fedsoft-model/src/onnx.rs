//! A minimal reader for ONNX files: just the graph's nodes (names, types, inputs) and its initialiser tensors,
//! straight from the protobuf wire format. Enough to lift pre-trained weights out of an exported model
//! without Python or an ONNX runtime.
//!
//! Field numbers (onnx.proto): ModelProto.graph = 7; GraphProto.node = 1, initializer = 5;
//! NodeProto.input = 1, output = 2, name = 3, op_type = 4; TensorProto.dims = 1, data_type = 2,
//! float_data = 4, name = 8, raw_data = 9.

use crate::error::ModelError;
use std::collections::HashMap;
use std::path::Path;

/// A graph node, as far as weight mapping needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// An initialiser converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// The parts of an ONNX model fedsoft reads.
#[derive(Debug, Clone, Default)]
pub struct OnnxGraph {
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, Initializer>,
}

impl OnnxGraph {
    /// The nodes that take `tensor` as an input.
    pub fn consumers<'a>(&'a self, tensor: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        consumers(&self.nodes, tensor)
    }
}

/// The nodes among `nodes` that take `tensor` as an input.
pub fn consumers<'a>(nodes: &'a [Node], tensor: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
    nodes.iter().filter(move |n| n.inputs.iter().any(|i| i == tensor))
}

struct Pb<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Pb<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Pb { buf, pos: 0 }
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            x |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err("varint too long".into())
    }
    fn next(&mut self) -> Option<Result<(u64, Value<'a>), String>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some((|| {
            let key = self.varint()?;
            let (field, wire) = (key >> 3, key & 7);
            let v = match wire {
                0 => Value::Varint(self.varint()?),
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    if self.buf.len() - self.pos < n {
                        return Err("truncated fixed field".into());
                    }
                    self.pos += n;
                    Value::Fixed
                }
                2 => {
                    let n = self.varint()? as usize;
                    if self.buf.len() - self.pos < n {
                        return Err(format!("field {field}: length {n} beyond the end"));
                    }
                    let s = &self.buf[self.pos..self.pos + n];
                    self.pos += n;
                    Value::Bytes(s)
                }
                w => return Err(format!("unsupported wire type {w}")),
            };
            Ok((field, v))
        })())
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "non-UTF-8 name".to_string())
}

fn parse_node(buf: &[u8]) -> Result<Node, String> {
    let mut n = Node::default();
    let mut pb = Pb::new(buf);
    while let Some(f) = pb.next() {
        match f? {
            (1, Value::Bytes(b)) => n.inputs.push(string(b)?),
            (2, Value::Bytes(b)) => n.outputs.push(string(b)?),
            (3, Value::Bytes(b)) => n.name = string(b)?,
            (4, Value::Bytes(b)) => n.op_type = string(b)?,
            _ => {}
        }
    }
    Ok(n)
}

fn parse_tensor(buf: &[u8]) -> Result<(String, Initializer), String> {
    let (mut name, mut dims, mut dtype, mut raw, mut floats) = (String::new(), Vec::new(), 0u64, None, Vec::new());
    let mut pb = Pb::new(buf);
    while let Some(f) = pb.next() {
        match f? {
            (1, Value::Varint(d)) => dims.push(d as usize),
            (1, Value::Bytes(b)) => {
                let mut p = Pb::new(b);
                while p.pos < b.len() {
                    dims.push(p.varint()? as usize);
                }
            }
            (2, Value::Varint(t)) => dtype = t,
            (4, Value::Bytes(b)) => floats.extend(fedsoft_core::le::f32_from_le(b)),
            (8, Value::Bytes(b)) => name = string(b)?,
            (9, Value::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    // Dimensions come from the file: their product may overflow, which no real tensor does.
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("initializer {name}: dims {dims:?} overflow"))?;
    let data: Vec<f32> = match (dtype, raw) {
        (1, Some(b)) => fedsoft_core::le::f32_from_le(b),
        (1, None) => floats,
        (10, Some(b)) => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        // Integer initialisers (shapes, indices) are not weights: keep their dims, no data.
        _ => return Ok((name, Initializer { dims, data: Vec::new() })),
    };
    if data.len() != numel {
        return Err(format!("initializer {name}: {} values for dims {dims:?}", data.len()));
    }
    Ok((name, Initializer { dims, data }))
}

/// Parses the nodes and float initialisers of an ONNX model file.
pub fn read_onnx(path: &Path) -> Result<OnnxGraph, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e.to_string()))?;
    parse_onnx(&bytes).map_err(|e| ModelError::file(path, format!("not a readable ONNX model: {e}")))
}

/// Parses ONNX bytes.
pub fn parse_onnx(bytes: &[u8]) -> Result<OnnxGraph, String> {
    let mut g = OnnxGraph::default();
    let mut found_graph = false;
    let mut pb = Pb::new(bytes);
    while let Some(f) = pb.next() {
        if let (7, Value::Bytes(graph)) = f? {
            found_graph = true;
            let mut gp = Pb::new(graph);
            while let Some(gf) = gp.next() {
                match gf? {
                    (1, Value::Bytes(b)) => g.nodes.push(parse_node(b)?),
                    (5, Value::Bytes(b)) => {
                        let (name, t) = parse_tensor(b)?;
                        g.initializers.insert(name, t);
                    }
                    _ => {}
                }
            }
        }
    }
    if !found_graph {
        return Err("no graph (field 7) in the model".into());
    }
    Ok(g)
}
