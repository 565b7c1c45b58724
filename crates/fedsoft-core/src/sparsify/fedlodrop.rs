//! FedLoDrop (Xie et al.): whole rank components drawn at random, the same index set for `B`'s columns and
//! `A`'s rows, redrawn per client, round and module; no rescaling (SPEC D18).
//!
//! Its budget is a count of components, `max(1, round((1 - rho) r))`, so its payload equals the others' only
//! when `(1 - rho) r` is an integer; the ledger reports what it actually sends.

use super::{SelectInput, Selection, Sparsifier, check_inputs};
use crate::budget::DropRatio;
use crate::error::CoreError;
use rand::seq::index;

#[derive(Debug, Clone, Copy, Default)]
pub struct FedLoDrop;

/// Rank components FedLoDrop keeps in a module of rank `r`.
pub fn fedlodrop_components(r: usize, rho: DropRatio) -> usize {
    ((rho.kept() * r as f64).round() as usize).clamp(1, r)
}

impl Sparsifier for FedLoDrop {
    fn name(&self) -> &'static str {
        "fedlodrop"
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
                let comps = index::sample(&mut rng, s.r, fedlodrop_components(s.r, input.rho));
                let mut kept: Vec<u32> =
                    comps.into_iter().flat_map(|j| s.component_indices(j)).map(|i| i as u32).collect();
                kept.sort_unstable();
                kept
            })
            .collect();
        Ok(Selection { modules })
    }
}
