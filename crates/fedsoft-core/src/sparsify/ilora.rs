//! ILoRA: no sparsification, the upper bound that ignores the uplink.

use super::{SelectInput, Selection, Sparsifier, check_inputs};
use crate::error::CoreError;

#[derive(Debug, Clone, Copy, Default)]
pub struct ILora;

impl Sparsifier for ILora {
    fn name(&self) -> &'static str {
        "ilora"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        check_inputs(input)?;
        Ok(Selection { modules: input.update.shapes.iter().map(|s| (0..s.numel() as u32).collect()).collect() })
    }
}
