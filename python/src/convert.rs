//! Errors and option parsing shared by the bindings.

use pyo3::PyErr;
use pyo3::exceptions::PyValueError;
use serde::de::DeserializeOwned;

/// A Rust error as Python's `ValueError`, with the crate's message (which names the field or value).
pub fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Settings given from Python as a JSON object (the Python layer serialises keyword arguments), read with the
/// same serde schema and names as a run's TOML config; `what` names the settings in errors.
pub fn from_json<T: DeserializeOwned + Default>(json: Option<&str>, what: &str) -> Result<T, PyErr> {
    match json {
        None => Ok(T::default()),
        Some(s) => serde_json::from_str(s).map_err(|e| value_error(format!("{what}: {e}"))),
    }
}

/// A required JSON value (an enum given by name, a tagged table).
pub fn parse_json<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, PyErr> {
    serde_json::from_str(json).map_err(|e| value_error(format!("{what}: {e}")))
}

/// A unit enum from its config name (`"min_max"`, `"physical"`, ...).
pub fn parse_name<T: DeserializeOwned>(name: &str, what: &str) -> Result<T, PyErr> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|e| value_error(format!("{what}: {e}")))
}
