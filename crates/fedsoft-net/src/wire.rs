//! Tensors on the wire: f32 little-endian, the factors in the plan's module order (`B` then `A`).

use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape};

pub use fedsoft_core::le::f32_to_le as f32_bytes;

pub fn f32s(bytes: &[u8], what: &str) -> Result<Vec<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("{what}: {} bytes is not a whole number of f32 values", bytes.len()));
    }
    Ok(fedsoft_core::le::f32_from_le(bytes))
}

pub fn factors_bytes(state: &LoraState) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * state.numel());
    for m in &state.modules {
        out.extend(f32_bytes(&m.b));
        out.extend(f32_bytes(&m.a));
    }
    out
}

/// The factors of `shapes` from `bytes`, refusing any other length.
pub fn factors(shapes: &[ModuleShape], bytes: &[u8]) -> Result<LoraState, String> {
    let values = f32s(bytes, "factors")?;
    let want: usize = shapes.iter().map(ModuleShape::numel).sum();
    if values.len() != want {
        return Err(format!("factors: {} values where the model's adapters have {want}", values.len()));
    }
    let mut at = 0;
    let mut modules = Vec::with_capacity(shapes.len());
    for s in shapes {
        let b = values[at..at + s.b_len()].to_vec();
        at += s.b_len();
        let a = values[at..at + s.a_len()].to_vec();
        at += s.a_len();
        modules.push(ModuleFactors { b, a });
    }
    LoraState::from_parts(shapes.to_vec(), modules).map_err(|e| e.to_string())
}
