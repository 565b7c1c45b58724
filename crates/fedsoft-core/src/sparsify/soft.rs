//! SOFT (docs/algorithms.md §4.2–4.3): split each module's budget over rank components by `s_j = ||b_j|| ||a_j||`, then keep
//! the largest entries inside each component.

use super::topk::top_k_by_magnitude;
use super::{SelectInput, Selection, Sparsifier};
use crate::budget::{Rounding, allocate};
use crate::error::CoreError;
use crate::lora::{ModuleFactors, ModuleShape};
use serde::{Deserialize, Serialize};

/// How a rank component's quota `k_j` is spent over its `b_j` and `a_j` parts (docs/algorithms.md D3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftSplit {
    /// One top-`k_j` over the concatenation `[b_j; a_j^T]` (recommended).
    #[default]
    Joint,
    /// `round(k_j d / (d + k))` entries from `b_j`, the rest from `a_j`.
    Proportional,
}

/// Sparsified orthogonal fine-tuning's selector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Soft {
    pub rounding: Rounding,
    pub split: SoftSplit,
}

impl Sparsifier for Soft {
    fn name(&self) -> &'static str {
        "soft"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| {
            let scores = input.local.rank_scores(m.index);
            Ok(select_by_rank_scores(m.shape, m.update, &scores, m.budget, self.rounding, self.split))
        })
    }
}

/// Allocates `budget` over rank components in proportion to `scores` and keeps the largest entries of `u`
/// inside each component. Shared by SOFT (proxy scores) and the exact selector (SVD-attributed scores).
pub(crate) fn select_by_rank_scores(
    shape: &ModuleShape,
    u: &ModuleFactors,
    scores: &[f64],
    budget: usize,
    rounding: Rounding,
    split: SoftSplit,
) -> Vec<u32> {
    let quotas = allocate(scores, budget, shape.component_len(), rounding);
    let mut kept = Vec::with_capacity(budget);
    let b_len = shape.b_len();
    let mut idx: Vec<u32> = Vec::with_capacity(shape.component_len());
    let mut vals: Vec<f32> = Vec::with_capacity(shape.component_len());
    for (j, &kj) in quotas.iter().enumerate() {
        if kj == 0 {
            continue;
        }
        idx.clear();
        idx.extend(shape.component_indices(j).map(|i| i as u32));
        vals.clear();
        vals.extend(idx.iter().map(|&i| u.get(i as usize)));
        match split {
            SoftSplit::Joint => kept.extend(top_k_by_magnitude(&idx, &vals, kj)),
            SoftSplit::Proportional => {
                let want_b = ((kj * shape.d) as f64 / shape.component_len() as f64).round() as usize;
                let k_a = (kj - want_b.min(kj)).min(shape.k);
                let k_b = kj - k_a;
                // Component indices list b_j's entries first, then a_j's.
                let nb = idx.iter().take_while(|&&i| (i as usize) < b_len).count();
                kept.extend(top_k_by_magnitude(&idx[..nb], &vals[..nb], k_b));
                kept.extend(top_k_by_magnitude(&idx[nb..], &vals[nb..], k_a));
            }
        }
    }
    kept.sort_unstable();
    kept
}
