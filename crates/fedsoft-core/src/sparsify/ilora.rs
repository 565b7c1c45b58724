//! ILoRA: no sparsification, the upper bound that ignores the uplink.

use super::{SelectInput, Selection, Sparsifier};
use crate::error::CoreError;

#[derive(Debug, Clone, Copy, Default)]
pub struct ILora;

impl Sparsifier for ILora {
    fn name(&self) -> &'static str {
        "ilora"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| Ok((0..m.shape.numel() as u32).collect()))
    }
}
