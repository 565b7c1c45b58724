//! The engine itself from Python, for front doors that carry messages (the Flower app): a whole fedsoft run
//! whose clients are reached through a Python callable, and the client's side of one task. Everything of a
//! round — schedule, channels, ratio, training, compression, checks, uplink, aggregation, records,
//! checkpoints, export — is the engine's; Python only moves the bytes.

use crate::convert::value_error;
use crate::state::Factors;
use fedsoft_core::budget::DropRatio;
use fedsoft_engine::checkpoint::ClientMemory;
use fedsoft_engine::engine::RoundTask;
use fedsoft_engine::engine::{Experiment, RunOptions};
use fedsoft_engine::handoff::{HandoffPool, train_one, work};
use fedsoft_engine::{EngineError, ExperimentConfig, Head};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The experiment `fedsoft run` runs when no config file is named.
const DEFAULT_CONFIG: &str = include_str!("../../configs/default.toml");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resolve_config, m)?)?;
    m.add_function(wrap_pyfunction!(run_experiment, m)?)?;
    m.add_function(wrap_pyfunction!(client_work, m)?)?;
    m.add_class::<PyClient>()?;
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

/// The client's half of a fedsoft experiment from Python, on numpy arrays: the model and data of a fedsoft
/// config, local training with fedsoft's kernels, error feedback and the config's sparsifier, the encoded
/// upload. Each client's memory (error-feedback residual, kept AdamW moments) stays in this object between
/// its rounds, as in `fedsoft run`'s own clients, so a Python loop (or a Ray task of your own) that hands it
/// the same rounds as `fedsoft run` does reproduces its uploads bit for bit.
#[pyclass(name = "Client", module = "fedsoft")]
pub struct PyClient {
    exp: Arc<Experiment>,
    memories: Mutex<BTreeMap<usize, ClientMemory>>,
}

type HeadArrays<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<f32>>);

/// Global factors, head weight and head bias.
type Model<'py> = (Factors, Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<f32>>);

fn head_arrays<'py>(py: Python<'py>, head: &Head) -> PyResult<HeadArrays<'py>> {
    let weight = PyArray1::from_slice(py, &head.weight).reshape([head.hidden, head.classes])?;
    Ok((weight, PyArray1::from_slice(py, &head.bias)))
}

/// A head from numpy arrays of exactly the experiment's shapes: a transposed weight of the same size would
/// otherwise be read with its rows and columns swapped.
fn head_of(exp: &Experiment, weight: &PyReadonlyArray2<'_, f32>, bias: &PyReadonlyArray1<'_, f32>) -> PyResult<Head> {
    let (hidden, classes) = exp.head_dims();
    if weight.shape() != [hidden, classes] || bias.shape() != [classes] {
        return Err(value_error(format!(
            "head: weight {:?} and bias {:?}; this experiment's are [{hidden}, {classes}] and [{classes}]",
            weight.shape(),
            bias.shape()
        )));
    }
    Ok(Head {
        hidden,
        classes,
        weight: weight.as_array().iter().copied().collect(),
        bias: bias.as_array().iter().copied().collect(),
    })
}

#[pymethods]
impl PyClient {
    /// The clients of the experiment of `config` (the embedded default when `None`) with `--set`-style
    /// `overrides`, its assets read from `cache`; `threads` cores for each client's training (the config's
    /// `training.threads` when `None`; results do not depend on it).
    #[new]
    #[pyo3(signature = (config=None, overrides=Vec::new(), cache=None, threads=None))]
    fn new(
        py: Python<'_>,
        config: Option<PathBuf>,
        overrides: Vec<String>,
        cache: Option<PathBuf>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let mut cfg = load(config, &overrides)?;
        if threads.is_some() {
            cfg.training.threads = threads;
        }
        let cache = cache.unwrap_or_else(fedsoft_data::assets::default_cache);
        let exp = py.detach(|| Experiment::prepare(&cfg, &cache)).map_err(value_error)?;
        Ok(PyClient { exp: Arc::new(exp), memories: Mutex::new(BTreeMap::new()) })
    }

    /// The config as resolved, as a run directory's `config.toml` holds it.
    #[getter]
    fn config_toml(&self) -> String {
        self.exp.config().to_toml()
    }

    /// The LoRA rank the clients train at (TSFA's `r*` under the `tsfa` controller).
    #[getter]
    fn rank(&self) -> usize {
        self.exp.rank()
    }

    /// The adapted modules, in wire order.
    #[getter]
    fn shapes(&self) -> Vec<crate::state::Shape> {
        self.exp.shapes().iter().cloned().map(crate::state::Shape).collect()
    }

    /// Each client's number of training samples (its aggregation weight), by client id.
    #[getter]
    fn samples(&self) -> Vec<usize> {
        self.exp.client_samples()
    }

    /// The run's model before its first round: the seeded initial factors and the head's weight
    /// (`hidden x classes`) and bias, as `fedsoft run` starts from.
    fn initial_model<'py>(&self, py: Python<'py>) -> PyResult<Model<'py>> {
        let state = self.exp.fresh_state().map_err(value_error)?;
        let (weight, bias) = head_arrays(py, &state.head)?;
        Ok((Factors(state.global), weight, bias))
    }

    /// Client `client`'s round `round` from the broadcast model (`global_`, `head_weight`, `head_bias`) at
    /// drop ratio `rho`: a dict of the encoded `upload` (fedsoft's wire format), the trained `head_weight`
    /// and `head_bias`, the dense `local` factors, `train_loss`, `samples`, and `train_s`/`sparsify_s`.
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &self,
        py: Python<'py>,
        client: usize,
        round: u64,
        global_: &Factors,
        head_weight: PyReadonlyArray2<'py, f32>,
        head_bias: PyReadonlyArray1<'py, f32>,
        rho: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let rho = DropRatio::new(rho).map_err(value_error)?;
        let head = head_of(&self.exp, &head_weight, &head_bias)?;
        let memory = self.memories.lock().map_err(value_error)?.remove(&client).unwrap_or_default();
        let exp = &self.exp;
        let global = &global_.0;
        let (upload, memory) = py
            .detach(|| train_one(exp, client, memory, &RoundTask { round, global, head: &head, rho }))
            .map_err(value_error)?;
        if !memory.is_empty() {
            self.memories.lock().map_err(value_error)?.insert(client, memory);
        }
        let out = PyDict::new(py);
        out.set_item("upload", PyBytes::new(py, &upload.bytes))?;
        let (weight, bias) = head_arrays(py, &upload.head)?;
        out.set_item("head_weight", weight)?;
        out.set_item("head_bias", bias)?;
        out.set_item("local", upload.local.map(Factors))?;
        out.set_item("train_loss", upload.train_loss)?;
        out.set_item("samples", self.exp.client_samples().get(client).copied())?;
        out.set_item("train_s", upload.train_s)?;
        out.set_item("sparsify_s", upload.sparsify_s)?;
        Ok(out)
    }

    /// Test accuracy and loss of a global model on the experiment's test set, as `fedsoft run` evaluates.
    fn evaluate(
        &self,
        py: Python<'_>,
        global_: &Factors,
        head_weight: PyReadonlyArray2<'_, f32>,
        head_bias: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<(f64, f64)> {
        let head = head_of(&self.exp, &head_weight, &head_bias)?;
        let exp = &self.exp;
        py.detach(|| exp.evaluate(&global_.0, &head)).map_err(value_error)
    }
}
