//! Partitioners and client scheduling.

use crate::convert::{parse_json, value_error};
use fedsoft_core::partition::{self, Scheme};
use fedsoft_core::schedule;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(partition_labels, m)?)?;
    m.add_function(wrap_pyfunction!(sample_clients, m)?)?;
    Ok(())
}

/// Splits samples with these labels over clients: `scheme` is the engine's `[data.partition]` table as JSON
/// (`{"kind": "iid"}`, `{"kind": "shards", "shards_per_client": 2}`,
/// `{"kind": "dirichlet", "alpha": 0.5, "min_size": 10}`). Returns each client's sample indices.
#[pyfunction]
fn partition_labels<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, u32>,
    num_classes: usize,
    num_clients: usize,
    scheme: &str,
    seed: u64,
) -> PyResult<Vec<Bound<'py, PyArray1<u64>>>> {
    let scheme: Scheme = parse_json(scheme, "partition scheme")?;
    let labels: Vec<u32> = labels.as_array().iter().copied().collect();
    let p = partition::partition(&labels, num_classes, num_clients, scheme, seed).map_err(value_error)?;
    Ok(p.clients.into_iter().map(|c| c.into_iter().map(|i| i as u64).collect::<Vec<_>>().into_pyarray(py)).collect())
}

/// The clients scheduled in `round`: `per_round` of `num_clients`, uniformly without replacement, sorted;
/// the same draw as the engine's for the same seed.
#[pyfunction]
fn sample_clients(seed: u64, round: u64, num_clients: usize, per_round: usize) -> PyResult<Vec<usize>> {
    schedule::sample_clients(seed, round, num_clients, per_round).map_err(value_error)
}
