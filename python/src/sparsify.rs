//! The sparsifiers and their exact budgets.

use crate::convert::{from_json, parse_name, value_error};
use crate::state::{Factors, Shape, Sparse, shapes_of};
use fedsoft_core::budget::{self, DropRatio, Rounding};
use fedsoft_core::feedback::{Compressed, Compression, FeedbackMode};
use fedsoft_core::sparsify::{MethodKind, MethodRules, SelectInput, SparseUpdate, SparsifierOptions, UploadKey, build};
use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(sparsify, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(upload_budget, m)?)?;
    m.add_function(wrap_pyfunction!(allocate_budget, m)?)?;
    m.add_function(wrap_pyfunction!(default_error_feedback, m)?)?;
    m.add_function(wrap_pyfunction!(default_orthogonality_weight, m)?)?;
    Ok(())
}

fn method(name: &str) -> PyResult<MethodKind> {
    name.parse().map_err(value_error)
}

fn ratio(rho: f64) -> PyResult<DropRatio> {
    DropRatio::new(rho).map_err(value_error)
}

/// The method names, in the engine's order.
#[pyfunction]
fn methods() -> Vec<&'static str> {
    MethodKind::ALL.iter().map(|m| m.as_str()).collect()
}

/// Selects and gathers what one client sends: the entries `method` keeps from `update` at drop ratio `rho`.
/// `local` is the client's trained factors (what SOFT and the exact selector score); the random methods draw
/// their masks from the `(seed, round, client)` stream the engine uses.
#[pyfunction]
#[pyo3(signature = (method, update, local, rho, seed, round, client, options=None))]
#[allow(clippy::too_many_arguments)]
fn sparsify(
    py: Python<'_>,
    method: &str,
    update: &Factors,
    local: &Factors,
    rho: f64,
    seed: u64,
    round: u64,
    client: u64,
    options: Option<&str>,
) -> PyResult<Sparse> {
    let kind = self::method(method)?;
    let opts: SparsifierOptions = from_json(options, "sparsifier options")?;
    let rho = ratio(rho)?;
    let (update, local) = (&update.0, &local.0);
    // Selection is pure Rust on data Python cannot touch meanwhile: let other Python threads run.
    py.detach(|| {
        let input = SelectInput { update, local, key: UploadKey { rho, seed, round, client } };
        let selection = build(kind, opts).select(&input)?;
        SparseUpdate::gather(update, &selection)
    })
    .map(Sparse)
    .map_err(value_error)
}

/// One client's upload as the engine's client step makes it (`fedsoft_core::feedback::Compression`):
/// compensate with `memory`, select with `method`, gather; returns what is sent and, with error feedback,
/// the memory to keep for the next round.
#[pyfunction]
#[pyo3(signature = (method, local, global_, memory, rho, seed, round, client, error_feedback, mode="delta", options=None))]
#[allow(clippy::too_many_arguments)]
fn compress(
    py: Python<'_>,
    method: &str,
    local: &Factors,
    global_: &Factors,
    memory: Option<&Factors>,
    rho: f64,
    seed: u64,
    round: u64,
    client: u64,
    error_feedback: bool,
    mode: &str,
    options: Option<&str>,
) -> PyResult<(Sparse, Option<Factors>)> {
    let sparsifier = build(self::method(method)?, from_json(options, "sparsifier options")?);
    let mode: FeedbackMode = parse_name(mode, "feedback mode")?;
    let key = UploadKey { rho: ratio(rho)?, seed, round, client };
    let (local, global, memory) = (&local.0, &global_.0, memory.map(|m| &m.0));
    py.detach(|| {
        Compression { mode, error_feedback, sparsifier: sparsifier.as_ref() }.compress(local, global, memory, key)
    })
    .map(|Compressed { sent, memory }| (Sparse(sent), memory.map(Factors)))
    .map_err(value_error)
}

/// The entries one upload of `method` carries at `rho` over these modules: every method sends exactly this.
#[pyfunction]
#[pyo3(signature = (method, shapes, rho, options=None))]
fn upload_budget(method: &str, shapes: Vec<Shape>, rho: f64, options: Option<&str>) -> PyResult<usize> {
    let opts: SparsifierOptions = from_json(options, "sparsifier options")?;
    Ok(self::method(method)?.upload_budget(&shapes_of(&shapes), ratio(rho)?, &opts))
}

/// SOFT's split of an integer budget over ranks by score (the paper's Eq. (9)): each rank gets at most `cap`, the
/// counts sum to `min(budget, r cap)`. `rounding`: "largest_remainder" (default) or "floor".
#[pyfunction]
#[pyo3(signature = (scores, budget, cap, rounding="largest_remainder"))]
fn allocate_budget(scores: Vec<f64>, budget: usize, cap: usize, rounding: &str) -> PyResult<Vec<usize>> {
    let rounding: Rounding = parse_name(rounding, "rounding")?;
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(value_error(format!("scores must be finite, got {bad}")));
    }
    Ok(budget::allocate(&scores, budget, cap, rounding))
}

/// Whether the method uses error feedback by default (docs/algorithms.md D10).
#[pyfunction]
fn default_error_feedback(method: &str) -> PyResult<bool> {
    Ok(self::method(method)?.default_error_feedback())
}

/// The orthogonality weight the method trains with by default (only SOFT's is non-zero).
#[pyfunction]
fn default_orthogonality_weight(method: &str) -> PyResult<f64> {
    Ok(self::method(method)?.default_orthogonality_weight())
}
