//! `fedsoft._native`: fedsoft's Rust crates for Python: the core and the wireless crate on numpy arrays, and
//! the engine's whole run and client step for the Flower app ([`engine`]).
//!
//! Every function here converts its arguments, calls the crate function that the Rust engine calls, and
//! converts the answer back, so a result in Python is the engine's result for the same inputs. The Python
//! package (`python/fedsoft`) adds docstrings, type stubs and the Flower integration on top.

mod aggregate;
mod convert;
mod data;
mod engine;
mod round_server;
mod sparsify;
mod state;
mod wireless;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // rayon's global pool flushes subnormals on its threads; Python's own threads are left as they are
    // (training and evaluation flush only while they run: `fedsoft_engine::subnormals`).
    fedsoft_engine::subnormals::init_global_pool();
    state::register(m)?;
    sparsify::register(m)?;
    aggregate::register(m)?;
    data::register(m)?;
    wireless::register(m)?;
    engine::register(m)?;
    round_server::register(m)?;
    Ok(())
}
