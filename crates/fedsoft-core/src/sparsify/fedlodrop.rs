//! FedLoDrop (Xie et al.): whole rank components drawn at random, the same index set for `B`'s columns and
//! `A`'s rows, redrawn per client, round and module; no rescaling (docs/algorithms.md D18).
//!
//! The paper's rule keeps `max(1, round((1 - rho) r))` whole components, which matches the other methods'
//! payload only when `(1 - rho) r` is an integer: at r = 8 and rho = 0.8 it sends 25 % more than they do, and
//! under TSFA's continuous rho it never matches the budget the controller's delay model assumes. By default
//! ([`FedLoDropBudget::Matched`]) it therefore sends exactly the module budget `K_l` of every other method:
//! `floor(K_l / (d + k))` whole random components, plus the remaining `K_l mod (d + k)` entries drawn at random
//! from one more random component. The literal rule stays available as [`FedLoDropBudget::WholeComponents`].

use super::{SelectInput, Selection, Sparsifier};
use crate::budget::{DropRatio, module_budget};
use crate::error::CoreError;
use crate::lora::ModuleShape;
use rand::seq::index;
use serde::{Deserialize, Serialize};

/// How many entries FedLoDrop sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FedLoDropBudget {
    /// Exactly the shared module budget: whole components plus one partial component (recommended).
    #[default]
    Matched,
    /// The paper's literal rule: `max(1, round((1 - rho) r))` whole components.
    WholeComponents,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FedLoDrop {
    pub budget: FedLoDropBudget,
}

/// Rank components the literal rule keeps in a module of rank `r`.
pub fn fedlodrop_components(r: usize, rho: DropRatio) -> usize {
    ((rho.kept() * r as f64).round() as usize).clamp(1, r)
}

/// Entries FedLoDrop sends for one module under `budget`.
pub fn fedlodrop_entries(shape: &ModuleShape, rho: DropRatio, budget: FedLoDropBudget) -> usize {
    match budget {
        FedLoDropBudget::Matched => module_budget(shape, rho),
        FedLoDropBudget::WholeComponents => fedlodrop_components(shape.r, rho) * shape.component_len(),
    }
}

impl Sparsifier for FedLoDrop {
    fn name(&self) -> &'static str {
        "fedlodrop"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| {
            let s = m.shape;
            let mut rng = input.mask_rng(m.index);
            let len = s.component_len();
            let entries = fedlodrop_entries(s, input.key.rho, self.budget);
            let (whole, partial) = (entries / len, entries % len);
            // One draw orders the components: the first `whole` go entire, the next gives `partial` entries.
            let order = index::sample(&mut rng, s.r, (whole + usize::from(partial > 0)).min(s.r));
            let mut kept: Vec<u32> =
                order.iter().take(whole).flat_map(|j| s.component_indices(j)).map(|i| i as u32).collect();
            if partial > 0 {
                let component: Vec<usize> = s.component_indices(order.index(whole)).collect();
                let picks = index::sample(&mut rng, len, partial);
                kept.extend(picks.iter().map(|p| component[p] as u32));
            }
            Ok(kept)
        })
    }
}
