//! Sparsifiers: which LoRA entries a client uploads under a budget (docs/algorithms.md §4.3 and §10).
//!
//! Every method answers the same question — given the error-compensated update `U` and the client's local
//! factors, which flat entries of each module are sent — so the engine, the server and the benchmarks treat
//! them alike. Adding a method is one file implementing [`Sparsifier`] plus one arm in [`build`].

mod fedlodrop;
mod flasc;
mod hetlora;
mod ilora;
mod rlora;
mod soft;
pub mod svd;
mod topk;

pub use fedlodrop::{FedLoDrop, FedLoDropBudget, fedlodrop_components, fedlodrop_entries};
pub use flasc::{Flasc, FlascScope};
pub use hetlora::HetLora;
pub use ilora::ILora;
pub use rlora::RLora;
pub use soft::{Soft, SoftSplit};
pub use svd::ExactSvd;

use crate::budget::{DropRatio, Rounding};
use crate::error::CoreError;
use crate::lora::{LoraState, ModuleFactors, ModuleShape};
use crate::rng::{Purpose, stream};
use rand::rngs::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Everything a sparsifier may look at for one client in one round.
pub struct SelectInput<'a> {
    /// What will be sent: the error-compensated update (delta mode) or model (model mode).
    pub update: &'a LoraState,
    /// The client's factors after local training, which SOFT and the exact selector score.
    pub local: &'a LoraState,
    /// The ratio to drop at and the key of the random masks.
    pub key: UploadKey,
}

/// Which upload this is: its drop ratio, and the run seed, round and client that key its random masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadKey {
    /// Fraction of entries to drop.
    pub rho: DropRatio,
    pub seed: u64,
    pub round: u64,
    pub client: u64,
}

impl SelectInput<'_> {
    /// The mask stream of module `m` for this client and round: independent of every other draw of the run.
    pub fn mask_rng(&self, m: usize) -> ChaCha8Rng {
        let k = &self.key;
        stream(k.seed, Purpose::Mask, &[k.round, k.client, m as u64])
    }

    /// The loop every per-module method shares: checks the inputs, hands `pick` each module (its index and
    /// shape, the factors to send and the trained ones, its budget at this ratio) and returns what it kept,
    /// sorted, as the selection.
    pub fn per_module(
        &self,
        mut pick: impl FnMut(ModuleView<'_>) -> Result<Vec<u32>, CoreError>,
    ) -> Result<Selection, CoreError> {
        check_inputs(self)?;
        let modules = (0..self.update.shapes.len())
            .map(|index| {
                let shape = &self.update.shapes[index];
                let view = ModuleView {
                    index,
                    shape,
                    update: &self.update.modules[index],
                    local: &self.local.modules[index],
                    budget: crate::budget::module_budget(shape, self.key.rho),
                };
                let mut kept = pick(view)?;
                kept.sort_unstable();
                Ok(kept)
            })
            .collect::<Result<_, CoreError>>()?;
        Ok(Selection { modules })
    }
}

/// One module as [`SelectInput::per_module`] hands it to a method.
pub struct ModuleView<'a> {
    /// Position among the upload's modules (the key of [`SelectInput::mask_rng`]).
    pub index: usize,
    pub shape: &'a ModuleShape,
    /// The factors that will be sent (error-compensated).
    pub update: &'a ModuleFactors,
    /// The client's trained factors (what SOFT and the exact selector score).
    pub local: &'a ModuleFactors,
    /// `K_l`, the module's share of the budget.
    pub budget: usize,
}

/// The entries kept from each module: strictly increasing flat indices (`B` then `A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub modules: Vec<Vec<u32>>,
}

impl Selection {
    /// Kept entries over all modules.
    pub fn count(&self) -> usize {
        self.modules.iter().map(Vec::len).sum()
    }
}

/// A sparsification method.
pub trait Sparsifier: Send + Sync {
    /// The method's name in configs and reports.
    fn name(&self) -> &'static str;
    /// Entries to keep, per module.
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError>;
}

/// One module's kept entries and their values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseModule {
    /// Strictly increasing flat indices.
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// One client's sparse upload for all modules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseUpdate {
    pub modules: Vec<SparseModule>,
}

impl SparseUpdate {
    /// Reads the selected entries of `state`.
    pub fn gather(state: &LoraState, sel: &Selection) -> Result<Self, CoreError> {
        if sel.modules.len() != state.modules.len() {
            return Err(CoreError::shape("selection module count", state.modules.len(), sel.modules.len()));
        }
        let modules = state
            .modules
            .iter()
            .zip(&sel.modules)
            .map(|(f, idx)| SparseModule {
                indices: idx.clone(),
                values: idx.iter().map(|&i| f.get(i as usize)).collect(),
            })
            .collect();
        Ok(SparseUpdate { modules })
    }

    /// Kept entries over all modules.
    pub fn nnz(&self) -> usize {
        self.modules.iter().map(|m| m.indices.len()).sum()
    }

    /// The dense state this update stands for (zeros where nothing was sent).
    pub fn to_dense(&self, like: &LoraState) -> Result<LoraState, CoreError> {
        let mut out = LoraState::zeros(&like.shapes)?;
        self.add_into(&mut out, 1.0)?;
        Ok(out)
    }

    /// `target += w * self`, entry by entry; checks every index against the module's size.
    pub fn add_into(&self, target: &mut LoraState, w: f32) -> Result<(), CoreError> {
        if self.modules.len() != target.modules.len() {
            return Err(CoreError::shape("upload module count", target.modules.len(), self.modules.len()));
        }
        for ((m, f), s) in self.modules.iter().zip(target.modules.iter_mut()).zip(&target.shapes) {
            add_module(m, f, s.numel(), w, &s.name)?;
        }
        Ok(())
    }
}

fn add_module(m: &SparseModule, f: &mut ModuleFactors, numel: usize, w: f32, name: &str) -> Result<(), CoreError> {
    if m.indices.len() != m.values.len() {
        return Err(CoreError::shape(format!("{name}: values"), m.indices.len(), m.values.len()));
    }
    for (&i, &v) in m.indices.iter().zip(&m.values) {
        if i as usize >= numel {
            return Err(CoreError::invalid(name, format!("entry index {i} beyond the module's {numel} entries")));
        }
        *f.get_mut(i as usize) += w * v;
    }
    Ok(())
}

/// The methods fedsoft knows, by their config names (the name type is shared with the run records).
pub use fedsoft_records::{MethodKind, UnknownMethod};

/// What each method sends and which defaults it trains with: the rules behind a [`MethodKind`].
pub trait MethodRules {
    /// The entries one upload of this method carries at drop ratio `rho` (all methods keep exactly this
    /// many): the most a server accepts.
    fn upload_budget(self, shapes: &[ModuleShape], rho: DropRatio, opts: &SparsifierOptions) -> usize;
    /// Error feedback by default (docs/algorithms.md D10): on for SOFT, the exact selector and RLoRA.
    fn default_error_feedback(self) -> bool;
    /// Orthogonality weight by default: only SOFT trains with the regulariser (docs/algorithms.md §4.1, §10).
    fn default_orthogonality_weight(self) -> f64;
}

impl MethodRules for MethodKind {
    fn upload_budget(self, shapes: &[ModuleShape], rho: DropRatio, opts: &SparsifierOptions) -> usize {
        match self {
            MethodKind::Ilora => shapes.iter().map(|s| s.numel()).sum(),
            MethodKind::Fedlodrop => shapes.iter().map(|s| fedlodrop_entries(s, rho, opts.fedlodrop_budget)).sum(),
            _ => crate::budget::total_budget(shapes, rho),
        }
    }
    fn default_error_feedback(self) -> bool {
        matches!(self, MethodKind::Soft | MethodKind::Svd | MethodKind::Rlora)
    }
    fn default_orthogonality_weight(self) -> f64 {
        if self == MethodKind::Soft { 1e-2 } else { 0.0 }
    }
}

/// Method-specific switches, with the recommended defaults of docs/algorithms.md §13.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparsifierOptions {
    /// SOFT / exact selector: rounding of the per-rank quotas (D8).
    pub rounding: Rounding,
    /// SOFT / exact selector: joint top-k over `[b_j; a_j]` or a proportional B/A split (D3).
    pub soft_split: SoftSplit,
    /// FLASC: one top-K over the whole upload or one per module (D7).
    pub flasc_scope: FlascScope,
    /// FedLoDrop: the shared budget (default) or the paper's whole-component count.
    pub fedlodrop_budget: FedLoDropBudget,
}

/// The registry: a method's config name to its implementation.
pub fn build(kind: MethodKind, opts: SparsifierOptions) -> Box<dyn Sparsifier> {
    match kind {
        MethodKind::Soft => Box::new(Soft { rounding: opts.rounding, split: opts.soft_split }),
        MethodKind::Flasc => Box::new(Flasc { scope: opts.flasc_scope }),
        MethodKind::Rlora => Box::new(RLora),
        MethodKind::Hetlora => Box::new(HetLora),
        MethodKind::Fedlodrop => Box::new(FedLoDrop { budget: opts.fedlodrop_budget }),
        MethodKind::Ilora => Box::new(ILora),
        MethodKind::Svd => Box::new(ExactSvd { rounding: opts.rounding, split: opts.soft_split }),
    }
}

pub(crate) fn check_inputs(input: &SelectInput<'_>) -> Result<(), CoreError> {
    input.update.check_compatible(input.local, "update vs local factors")
}
