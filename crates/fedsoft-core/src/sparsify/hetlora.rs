//! HetLoRA (Cho et al.) under a fixed budget: the leading rank components in full, the next one filled by
//! magnitude so the count is exact; the pattern is the same every round.

use super::topk::top_k_by_magnitude;
use super::{SelectInput, Selection, Sparsifier};
use crate::error::CoreError;

#[derive(Debug, Clone, Copy, Default)]
pub struct HetLora;

impl Sparsifier for HetLora {
    fn name(&self) -> &'static str {
        "hetlora"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| {
            let (s, f) = (m.shape, m.update);
            let full = (m.budget / s.component_len()).min(s.r);
            let mut kept: Vec<u32> = (0..full).flat_map(|j| s.component_indices(j)).map(|i| i as u32).collect();
            let rest = m.budget - full * s.component_len();
            if rest > 0 && full < s.r {
                let idx: Vec<u32> = s.component_indices(full).map(|i| i as u32).collect();
                let vals: Vec<f32> = idx.iter().map(|&i| f.get(i as usize)).collect();
                kept.extend(top_k_by_magnitude(&idx, &vals, rest));
            }
            Ok(kept)
        })
    }
}
