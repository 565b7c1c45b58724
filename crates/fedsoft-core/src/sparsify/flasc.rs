//! FLASC (Kuo et al.): magnitude top-K of the update, as its reference code does.

use super::topk::top_k_positions;
use super::{SelectInput, Selection, Sparsifier, check_inputs};
use crate::budget::total_budget;
use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// Whether FLASC's top-K runs over the whole upload or module by module (docs/algorithms.md D7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlascScope {
    /// One top-K over all LoRA entries of the client (FLASC's code; recommended).
    #[default]
    Global,
    /// Top-`K_l` inside each module.
    PerModule,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Flasc {
    pub scope: FlascScope,
}

impl Sparsifier for Flasc {
    fn name(&self) -> &'static str {
        "flasc"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        check_inputs(input)?;
        let st = input.update;
        match self.scope {
            FlascScope::PerModule => input.per_module(|m| {
                let vals: Vec<f32> = m.update.iter().collect();
                Ok(top_k_positions(&vals, m.budget).into_iter().map(|p| p as u32).collect())
            }),
            FlascScope::Global => {
                // Number entries across modules so the tie-break stays "lower position first".
                let offsets: Vec<usize> = st
                    .shapes
                    .iter()
                    .scan(0usize, |acc, s| {
                        let o = *acc;
                        *acc += s.numel();
                        Some(o)
                    })
                    .collect();
                if st.numel() > u32::MAX as usize {
                    return Err(CoreError::invalid("flasc", "more than 2^32 LoRA entries in one upload"));
                }
                let vals: Vec<f32> = st.modules.iter().flat_map(|f| f.iter()).collect();
                let kept = top_k_positions(&vals, total_budget(&st.shapes, input.key.rho));
                let mut modules: Vec<Vec<u32>> = vec![Vec::new(); st.modules.len()];
                let mut m = 0;
                for g in kept {
                    while m + 1 < offsets.len() && g >= offsets[m + 1] {
                        m += 1;
                    }
                    modules[m].push((g - offsets[m]) as u32);
                }
                Ok(Selection { modules })
            }
        }
    }
}
