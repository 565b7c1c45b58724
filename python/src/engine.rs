//! The engine itself from Python, for front doors that carry messages (the Flower app): a whole fedsoft run
//! whose clients are reached through a Python callable, and the client's side of one task. Everything of a
//! round — schedule, channels, ratio, training, compression, checks, uplink, aggregation, records,
//! checkpoints, export — is the engine's; Python only moves the bytes.

use crate::convert::value_error;
use fedsoft_engine::engine::{Experiment, RunOptions};
use fedsoft_engine::handoff::{HandoffPool, work};
use fedsoft_engine::{EngineError, ExperimentConfig};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The experiment `fedsoft run` runs when no config file is named.
const DEFAULT_CONFIG: &str = include_str!("../../configs/default.toml");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resolve_config, m)?)?;
    m.add_function(wrap_pyfunction!(run_experiment, m)?)?;
    m.add_function(wrap_pyfunction!(client_work, m)?)?;
    Ok(())
}

fn load(config: Option<PathBuf>, overrides: &[String]) -> PyResult<ExperimentConfig> {
    match config {
        Some(path) => ExperimentConfig::load(&path, overrides),
        None => ExperimentConfig::from_toml(DEFAULT_CONFIG, "the embedded default (configs/default.toml)", overrides),
    }
    .map_err(value_error)
}

/// The config file (the embedded default when `None`) with `--set`-style overrides, checked and resolved, as
/// TOML: what a run directory's `config.toml` would hold.
#[pyfunction]
#[pyo3(signature = (config=None, overrides=Vec::new()))]
fn resolve_config(config: Option<PathBuf>, overrides: Vec<String>) -> PyResult<String> {
    let cfg = load(config, &overrides)?;
    cfg.validate().map_err(value_error)?;
    Ok(cfg.to_toml())
}

/// Runs (or with `resume` continues) the experiment of `config` in `out`, exactly as `fedsoft run` does,
/// except that each round's scheduled clients are reached through `send(round, tasks, config_toml)`: `tasks`
/// is a list of `(client, task_bytes)`, and `send` returns, in the same order, each client's reply bytes
/// (from `client_work`) or a string saying why there is none. Returns the run's summary as JSON.
#[pyfunction]
#[pyo3(signature = (send, config=None, overrides=Vec::new(), out=None, cache=None, resume=false))]
fn run_experiment(
    py: Python<'_>,
    send: Py<PyAny>,
    config: Option<PathBuf>,
    overrides: Vec<String>,
    out: Option<PathBuf>,
    cache: Option<PathBuf>,
    resume: bool,
) -> PyResult<String> {
    let cfg = load(config, &overrides)?;
    let out_dir = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    let cache = cache.unwrap_or_else(fedsoft_data::assets::default_cache);
    let opts = RunOptions { out_dir, resume, cache, stop_after: None };
    // A Python exception raised by `send` is raised again as itself once the run has stopped.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let result = py.detach(|| {
        let exp = Experiment::prepare_run(&cfg, &opts)?;
        let config_toml = exp.config().to_toml();
        let mut pool = HandoffPool::new(Box::new(|round, tasks| {
            Python::attach(|py| call_send(py, &send, round, tasks, &config_toml)).map_err(|e| {
                let detail = e.to_string();
                *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                EngineError::Transport { round: round + 1, detail }
            })
        }));
        exp.run_with(&mut pool, &opts, |r| eprintln!("{}", r.progress_line()))
    });
    match result {
        Ok(summary) => {
            // As after `fedsoft run`: the figures and report.md in `<out>/report`; a run without them (no font
            // fetched, say) keeps its results and says how to draw them later.
            if let Err(e) = draw_report(&opts.out_dir, &opts.cache) {
                eprintln!(
                    "warning: no report drawn ({e}); draw it later with `fedsoft report {}`",
                    opts.out_dir.display()
                );
            }
            Ok(serde_json::to_string(&summary).expect("summary"))
        }
        Err(e) => Err(raised.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| value_error(e))),
    }
}

fn draw_report(run: &std::path::Path, cache: &std::path::Path) -> Result<(), String> {
    let ttf = fedsoft_data::assets::report_font(cache).map_err(|e| e.to_string())?;
    fedsoft_report::register_font(ttf).map_err(|e| e.to_string())?;
    fedsoft_report::report(&[run.to_path_buf()], &run.join("report")).map_err(|e| e.to_string())?;
    Ok(())
}

fn call_send(
    py: Python<'_>,
    send: &Py<PyAny>,
    round: u64,
    tasks: Vec<(usize, Vec<u8>)>,
    config_toml: &str,
) -> PyResult<Vec<Result<Vec<u8>, String>>> {
    let tasks: Vec<(usize, Bound<'_, PyBytes>)> =
        tasks.into_iter().map(|(client, bytes)| (client, PyBytes::new(py, &bytes))).collect();
    let replies = send.call1(py, (round, PyList::new(py, tasks)?, config_toml))?;
    let replies = replies.bind(py);
    let mut out = Vec::new();
    for reply in replies.try_iter()? {
        let reply = reply?;
        if let Ok(bytes) = reply.cast::<PyBytes>() {
            out.push(Ok(bytes.as_bytes().to_vec()));
        } else if let Ok(reason) = reply.cast::<PyString>() {
            out.push(Err(reason.to_str()?.to_string()));
        } else {
            return Err(value_error(format!(
                "send must return, per task, the reply's bytes or a str saying why there is none; got {}",
                reply.get_type().name()?
            )));
        }
    }
    Ok(out)
}

/// The experiment this process's clients run, prepared once per config and thread count (a client process
/// serves many rounds and clients of one run), with the digest of the config as the server resolved it.
static PREPARED: Mutex<Option<Prepared>> = Mutex::new(None);

/// A prepared client experiment: the server's config digest, the thread count, the experiment.
type Prepared = (String, Option<usize>, Arc<Experiment>);

fn prepared(
    config_toml: &str,
    cache: PathBuf,
    threads: Option<usize>,
) -> Result<(String, Arc<Experiment>), EngineError> {
    let mut cfg = ExperimentConfig::from_toml(config_toml, "the server's experiment", &[])?;
    let digest = cfg.digest();
    let mut slot = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((d, t, exp)) = slot.as_ref()
        && *d == digest
        && *t == threads
    {
        return Ok((digest, exp.clone()));
    }
    if threads.is_some() {
        cfg.training.threads = threads;
    }
    let exp = Arc::new(Experiment::prepare(&cfg, &cache)?);
    *slot = Some((digest.clone(), threads, exp.clone()));
    Ok((digest, exp))
}

/// One client's round from a task made by `run_experiment`: local training with fedsoft's kernels, error
/// feedback and sparsification, and the reply to send back. `config_toml` is the server's resolved config;
/// `threads` the cores this client may use (its results do not depend on it; the config's when `None`).
#[pyfunction]
#[pyo3(signature = (config_toml, task, cache=None, threads=None))]
fn client_work(
    py: Python<'_>,
    config_toml: &str,
    task: &[u8],
    cache: Option<PathBuf>,
    threads: Option<usize>,
) -> PyResult<Py<PyBytes>> {
    let cache = cache.unwrap_or_else(fedsoft_data::assets::default_cache);
    let reply = py
        .detach(|| {
            let (digest, exp) = prepared(config_toml, cache, threads)?;
            work(&exp, &digest, task)
        })
        .map_err(value_error)?;
    Ok(PyBytes::new(py, &reply).unbind())
}
