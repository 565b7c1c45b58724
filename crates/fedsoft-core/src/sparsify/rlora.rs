//! RLoRA: `K_l` entries per module drawn uniformly without replacement, a fresh mask per client and round.

use super::{SelectInput, Selection, Sparsifier, check_inputs};
use crate::budget::module_budget;
use crate::error::CoreError;
use rand::seq::index;

#[derive(Debug, Clone, Copy, Default)]
pub struct RLora;

impl Sparsifier for RLora {
    fn name(&self) -> &'static str {
        "rlora"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        check_inputs(input)?;
        let modules = input
            .update
            .shapes
            .iter()
            .enumerate()
            .map(|(m, s)| {
                let mut rng = input.mask_rng(m);
                let mut idx: Vec<u32> = index::sample(&mut rng, s.numel(), module_budget(s, input.rho))
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                idx.sort_unstable();
                idx
            })
            .collect();
        Ok(Selection { modules })
    }
}
