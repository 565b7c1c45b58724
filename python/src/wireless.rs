//! The wireless uplink and TSFA: cells, one round's transmissions, the offline plan and the online rules.

use crate::convert::{from_json, parse_json, parse_name, value_error};
use fedsoft_wireless::channel::{Cell, ChannelConfig};
use fedsoft_wireless::control::{OnlineRule, RatioController, RoundContext};
use fedsoft_wireless::simulate::simulate;
use fedsoft_wireless::tsfa::{PlanInputs, RatioRule, TsfaPlan, TsfaSettings};
use fedsoft_wireless::uplink::Uplink;
use pyo3::prelude::*;
use serde::Serialize;
use std::sync::Mutex;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCell>()?;
    m.add_class::<PyUplink>()?;
    m.add_class::<Plan>()?;
    m.add_class::<Controller>()?;
    Ok(())
}

/// A value the crates serialise, handed to Python as plain dicts and lists (through JSON).
fn to_python<'py>(py: Python<'py>, value: &impl Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(value_error)?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A unit enum's config name.
fn name_of(value: &impl Serialize) -> PyResult<String> {
    match serde_json::to_value(value).map_err(value_error)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// Clients placed in a cell: each one's average full-band SNR (from geometry, or one given SNR for all).
#[pyclass(name = "Cell", module = "fedsoft", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyCell(Cell);

#[pymethods]
impl PyCell {
    /// `channel` is the engine's `[wireless.channel]` table as JSON (absent: its defaults).
    #[new]
    #[pyo3(signature = (num_clients, bandwidth_hz, seed, channel=None))]
    fn new(num_clients: usize, bandwidth_hz: f64, seed: u64, channel: Option<&str>) -> PyResult<Self> {
        let cfg: ChannelConfig = from_json(channel, "wireless.channel")?;
        Cell::new(&cfg, num_clients, bandwidth_hz, seed).map(PyCell).map_err(value_error)
    }
    /// Average full-band SNR per client, linear.
    #[getter]
    fn mean_snr(&self) -> Vec<f64> {
        self.0.mean_snr.clone()
    }
    #[getter]
    fn distances_m(&self) -> Option<Vec<f64>> {
        self.0.distances_m.clone()
    }
    /// This round's full-band SNRs of the listed clients (Rayleigh fading keyed by seed, round, client).
    fn round_snr(&self, seed: u64, round: u64, clients: Vec<usize>) -> PyResult<Vec<f64>> {
        if let Some(bad) = clients.iter().find(|&&c| c >= self.0.mean_snr.len()) {
            return Err(value_error(format!("client {bad} is not in this cell of {} clients", self.0.mean_snr.len())));
        }
        Ok(self.0.round_snr(seed, round, &clients).iter().map(|c| c.snr).collect())
    }
    fn __len__(&self) -> usize {
        self.0.mean_snr.len()
    }
}

/// The band and how payloads turn into delays.
#[pyclass(name = "Uplink", module = "fedsoft", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyUplink(pub Uplink);

#[pymethods]
impl PyUplink {
    /// `rate_model`: "paper" or "physical"; `bandwidth_rule`: "equal", "inverse_log" or "min_max".
    #[new]
    #[pyo3(signature = (bandwidth_hz=1e6, rate_model="paper", bandwidth_rule="min_max"))]
    fn new(bandwidth_hz: f64, rate_model: &str, bandwidth_rule: &str) -> PyResult<Self> {
        let up = Uplink {
            bandwidth_hz,
            rate_model: parse_name(rate_model, "rate_model")?,
            bandwidth_rule: parse_name(bandwidth_rule, "bandwidth_rule")?,
        };
        up.validate().map_err(value_error)?;
        Ok(PyUplink(up))
    }
    #[getter]
    fn bandwidth_hz(&self) -> f64 {
        self.0.bandwidth_hz
    }
    #[getter]
    fn rate_model(&self) -> PyResult<String> {
        name_of(&self.0.rate_model)
    }
    #[getter]
    fn bandwidth_rule(&self) -> PyResult<String> {
        name_of(&self.0.bandwidth_rule)
    }
    /// `a_t`: the round's delay if every client sent `dense_bits`.
    fn dense_delay(&self, dense_bits: f64, snr: Vec<f64>) -> PyResult<f64> {
        self.0.dense_delay(dense_bits, &snr).map_err(value_error)
    }
    /// One round's transmissions: a dict with `shares`, `delays_s`, `kept` and `round_delay_s`.
    #[pyo3(signature = (bits, snr, outage_delay_s=None))]
    fn transmit<'py>(
        &self,
        py: Python<'py>,
        bits: Vec<f64>,
        snr: Vec<f64>,
        outage_delay_s: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let out = self.0.transmit(&bits, &snr, outage_delay_s).map_err(value_error)?;
        to_python(py, &out)
    }
}

/// The TSFA plan: the average channel, the budget, the offline table and the calibrated `V`.
#[pyclass(name = "TsfaPlan", module = "fedsoft", frozen)]
pub struct Plan(pub TsfaPlan);

#[pymethods]
impl Plan {
    /// `settings` is the engine's `[tsfa]` table as JSON (without `pilot`): `latency_budget` (seconds, or
    /// `{"rank": r, "rho": p}`), `rho_min`, `rho_max`, `candidate_ranks`, `v_kappa`, `v_wsp`, `online`,
    /// `bound`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (cell, uplink, params_per_rank, per_round, seed, settings, value_bits=32.0, index_overhead=false))]
    fn new(
        cell: &PyCell,
        uplink: &PyUplink,
        params_per_rank: usize,
        per_round: usize,
        seed: u64,
        settings: &str,
        value_bits: f64,
        index_overhead: bool,
    ) -> PyResult<Self> {
        let s: TsfaSettings = parse_json(settings, "tsfa")?;
        let inputs = PlanInputs {
            cell: cell.0.clone(),
            uplink: uplink.0,
            value_bits,
            index_overhead,
            params_per_rank,
            per_round,
            seed,
        };
        TsfaPlan::new(inputs, s).map(Plan).map_err(value_error)
    }
    /// The offline stage's choice `r*`.
    #[getter]
    fn best_rank(&self) -> usize {
        self.0.offline.best_rank
    }
    /// `rho*(r*)`.
    #[getter]
    fn best_rho(&self) -> f64 {
        self.0.offline.best_rho
    }
    /// `tau_bar`, seconds.
    #[getter]
    fn tau_bar(&self) -> f64 {
        self.0.link.tau_bar
    }
    /// `Gamma_bar`.
    #[getter]
    fn gamma_bar(&self) -> f64 {
        self.0.link.gamma_bar
    }
    #[getter]
    fn v_wsp(&self) -> f64 {
        self.0.v_wsp
    }
    /// The offline table: one dict per candidate rank (`rank`, `params`, `rho`, `feasible`, the bound's
    /// terms, `objective`, `delay_s`).
    fn offline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.0.offline.rows)
    }
    /// Bits of one client's dense upload at rank `r`.
    fn dense_bits(&self, r: usize) -> f64 {
        self.0.dense_bits(r)
    }
    /// `r`'s dense-upload delay on the average channel.
    fn dense_delay(&self, r: usize) -> f64 {
        self.0.link.dense_delay(r)
    }
    /// The start of round `round` at rank `rank` (default `r*`), as the engine's round driver starts it: a
    /// dict of the scheduled `clients`, their `channels` (`client`, `fading`, `snr`) and `a_t`.
    #[pyo3(signature = (round, rank=None))]
    fn start_round<'py>(&self, py: Python<'py>, round: u64, rank: Option<usize>) -> PyResult<Bound<'py, PyAny>> {
        let start = self.0.scenario(rank.unwrap_or(self.0.offline.best_rank)).start(round).map_err(value_error)?;
        to_python(py, &start)
    }
    /// The per-round ratio rule: `"lyapunov"` (the paper), `"horizon"` (finite-horizon), or a number for a
    /// fixed ratio; at `rank` (default `r*`).
    #[pyo3(signature = (rule=RuleArg::Named("lyapunov".into()), rank=None))]
    fn controller(&self, rule: RuleArg, rank: Option<usize>) -> PyResult<Controller> {
        let rule = match rule {
            RuleArg::Fixed(rho) => RatioRule::Fixed(rho),
            RuleArg::Named(name) => RatioRule::Online(parse_name::<OnlineRule>(&name, "controller rule")?),
        };
        let c = self.0.ratio_controller(rule, rank.unwrap_or(self.0.offline.best_rank)).map_err(value_error)?;
        Ok(Controller(Mutex::new(c)))
    }
    /// The controller alone for `rounds` rounds of client sampling and fading at rank `rank` (default `r*`),
    /// as `fedsoft plan --simulate` runs it: a dict of the average delay and ratio and the queue.
    #[pyo3(signature = (controller, rounds, rank=None))]
    fn simulate<'py>(
        &self,
        py: Python<'py>,
        controller: &Controller,
        rounds: u64,
        rank: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scenario = self.0.scenario(rank.unwrap_or(self.0.offline.best_rank));
        let mut c = controller.0.lock().map_err(value_error)?;
        let out = simulate(&scenario, c.as_mut(), self.0.settings.rho_max, rounds).map_err(value_error)?;
        to_python(py, &out)
    }
    fn __repr__(&self) -> String {
        format!(
            "TsfaPlan(best_rank={}, best_rho={:.4}, tau_bar={:.4} s, v_wsp={:.4})",
            self.0.offline.best_rank, self.0.offline.best_rho, self.0.link.tau_bar, self.0.v_wsp
        )
    }
}

/// A ratio rule as Python names it: a number is a fixed ratio, a string an online rule.
#[derive(FromPyObject)]
enum RuleArg {
    Fixed(f64),
    Named(String),
}

/// A per-round ratio rule with its state (the Lyapunov queue, the horizon's spend).
#[pyclass(name = "RatioController", module = "fedsoft")]
pub struct Controller(Mutex<Box<dyn RatioController>>);

impl Controller {
    fn with<T>(&self, f: impl FnOnce(&mut dyn RatioController) -> T) -> PyResult<T> {
        let mut c = self.0.lock().map_err(value_error)?;
        Ok(f(c.as_mut()))
    }
}

fn context(round: u64, total_rounds: u64, a_t: f64) -> PyResult<RoundContext> {
    if !(a_t.is_finite() && a_t >= 0.0) {
        return Err(value_error(format!("a_t must be a finite delay >= 0 s, got {a_t}")));
    }
    Ok(RoundContext { round, total_rounds, a_t })
}

#[pymethods]
impl Controller {
    /// This round's drop ratio, given its dense-upload delay `a_t` (round `round` of `total_rounds`).
    fn choose(&self, round: u64, total_rounds: u64, a_t: f64) -> PyResult<f64> {
        let ctx = context(round, total_rounds, a_t)?;
        self.with(|c| c.choose(&ctx))
    }
    /// Tells the rule how long the round it chose for really took.
    fn observe(&self, round: u64, total_rounds: u64, a_t: f64, delay_s: f64) -> PyResult<()> {
        let ctx = context(round, total_rounds, a_t)?;
        if !(delay_s.is_finite() && delay_s >= 0.0) {
            return Err(value_error(format!("delay_s must be a finite delay >= 0 s, got {delay_s}")));
        }
        self.with(|c| c.observe(&ctx, delay_s))
    }
    /// Seconds owed against the budget (the Lyapunov queue `Q(t)`).
    #[getter]
    fn backlog(&self) -> PyResult<f64> {
        self.with(|c| c.backlog())
    }
    /// The scalar a checkpoint keeps; `restore` puts it back.
    fn state(&self) -> PyResult<f64> {
        self.with(|c| c.state())
    }
    /// Puts back a state that `state()` returned (the queue, or the budget already spent), so a controller
    /// continues where a checkpoint left it.
    fn restore(&self, state: f64) -> PyResult<()> {
        self.with(|c| c.restore(state))
    }
    fn __repr__(&self) -> PyResult<String> {
        self.with(|c| format!("RatioController({c:?})"))
    }
}
