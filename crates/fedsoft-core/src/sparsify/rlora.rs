//! RLoRA: `K_l` entries per module drawn uniformly without replacement, a fresh mask per client and round.

use super::{SelectInput, Selection, Sparsifier};
use crate::error::CoreError;
use rand::seq::index;

#[derive(Debug, Clone, Copy, Default)]
pub struct RLora;

impl Sparsifier for RLora {
    fn name(&self) -> &'static str {
        "rlora"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| {
            let mut rng = input.mask_rng(m.index);
            Ok(index::sample(&mut rng, m.shape.numel(), m.budget).into_iter().map(|i| i as u32).collect())
        })
    }
}
