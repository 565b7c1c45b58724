//! Error feedback, aggregation and the covariance metric, and the paper's bit count.

use crate::convert::{parse_name, value_error};
use crate::state::{Factors, Sparse};
use fedsoft_core::aggregate;
use fedsoft_core::feedback::{self, FeedbackMode};
use fedsoft_core::ledger::BitModel;
use fedsoft_core::sparsify::SparseUpdate;
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::borrow::Cow;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compensate, m)?)?;
    m.add_function(wrap_pyfunction!(residual, m)?)?;
    m.add_function(wrap_pyfunction!(aggregation_weights, m)?)?;
    m.add_function(wrap_pyfunction!(apply_deltas, m)?)?;
    m.add_function(wrap_pyfunction!(average_sparse_models, m)?)?;
    m.add_function(wrap_pyfunction!(average_dense, m)?)?;
    m.add_function(wrap_pyfunction!(covariance_norm, m)?)?;
    m.add_function(wrap_pyfunction!(move_toward_average, m)?)?;
    m.add_function(wrap_pyfunction!(paper_bits, m)?)?;
    Ok(())
}

/// What is compressed: `(local - global) + memory` in `"delta"` mode, `local + memory` in `"model"` mode.
#[pyfunction]
#[pyo3(signature = (local, global_, memory=None, mode="delta"))]
fn compensate(local: &Factors, global_: &Factors, memory: Option<&Factors>, mode: &str) -> PyResult<Factors> {
    let mode: FeedbackMode = parse_name(mode, "feedback mode")?;
    feedback::compensate(mode, &local.0, &global_.0, memory.map(|m| &m.0)).map(Factors).map_err(value_error)
}

/// The new memory: `update` with the sent entries zeroed (so `sent + memory == update` exactly).
#[pyfunction]
fn residual(update: &Factors, sent: &Sparse) -> PyResult<Factors> {
    feedback::residual(&update.0, &sent.0).map(Factors).map_err(value_error)
}

/// FedAvg weights `n_i / sum n` from sample counts.
#[pyfunction]
fn aggregation_weights(samples: Vec<usize>) -> PyResult<Vec<f64>> {
    aggregate::weights(&samples).map_err(value_error)
}

fn refs(uploads: &[Sparse]) -> Vec<&SparseUpdate> {
    uploads.iter().map(|u| &u.0).collect()
}

/// `global + sum_i w_i delta_i`, each factor averaged separately (delta mode).
#[pyfunction]
fn apply_deltas(global_: &Factors, uploads: Vec<Sparse>, weights: Vec<f64>) -> PyResult<Factors> {
    let mut out = global_.0.clone();
    aggregate::apply_deltas(&mut out, &refs(&uploads), &weights).map_err(value_error)?;
    Ok(Factors(out))
}

/// Model mode: per entry, the weighted average of the clients that sent it; unsent entries keep `global`.
#[pyfunction]
fn average_sparse_models(global_: &Factors, uploads: Vec<Sparse>, weights: Vec<f64>) -> PyResult<Factors> {
    aggregate::average_sparse_models(&global_.0, &refs(&uploads), &weights).map(Factors).map_err(value_error)
}

/// The weighted average of dense factors.
#[pyfunction]
fn average_dense(states: Vec<Factors>, weights: Vec<f64>) -> PyResult<Factors> {
    let refs: Vec<_> = states.iter().map(|s| &s.0).collect();
    aggregate::average_dense(&refs, &weights).map(Factors).map_err(value_error)
}

/// `||Cov||` of docs/algorithms.md §2.4, `(sum_l ||avg(B_i A_i) - avg(B_i) avg(A_i)||_F^2)^(1/2)`: what averaging the two
/// factors apart costs against averaging their products.
#[pyfunction]
fn covariance_norm(states: Vec<Factors>, weights: Vec<f64>) -> PyResult<f64> {
    let refs: Vec<_> = states.iter().map(|s| &s.0).collect();
    aggregate::covariance_norm(&refs, &weights).map_err(value_error)
}

/// A dense array (a classifier head) moved to the weighted average of the clients' copies, on numpy arrays
/// of one shape (any layout; C-ordered ones are read in place).
#[pyfunction]
fn move_toward_average<'py>(
    py: Python<'py>,
    global_: PyReadonlyArrayDyn<'py, f32>,
    locals: Vec<PyReadonlyArrayDyn<'py, f32>>,
    weights: Vec<f64>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    if let Some((i, l)) = locals.iter().enumerate().find(|(_, l)| l.shape() != global_.shape()) {
        return Err(value_error(format!(
            "local {i} has shape {:?}, the global array {:?}",
            l.shape(),
            global_.shape()
        )));
    }
    let mut out = global_.as_array().as_standard_layout().into_owned();
    let flat: Vec<Cow<'_, [f32]>> = locals
        .iter()
        // Borrowed only in C order: a Fortran-ordered array is contiguous too, but its memory is not in the
        // logical (row-major) order the global array is read in.
        .map(|l| match l.as_array().to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(l.as_array().iter().copied().collect()),
        })
        .collect();
    let refs: Vec<&[f32]> = flat.iter().map(AsRef::as_ref).collect();
    let target = out.as_slice_mut().expect("an owned standard-layout array is contiguous");
    aggregate::move_toward_average(target, &refs, &weights).map_err(value_error)?;
    Ok(out.into_pyarray(py))
}

/// The paper's payload: `q` bits per kept value, plus `ceil(log2 M)` index bits each when counted.
#[pyfunction]
#[pyo3(signature = (entries, total, value_bits=32, index_overhead=false))]
fn paper_bits(entries: usize, total: usize, value_bits: u32, index_overhead: bool) -> u64 {
    BitModel { value_bits, index_overhead }.paper_bits(entries, total)
}
