//! The engine's server half of a round for a Flower strategy over a user's own model (`fedsoft.flower`):
//! the same [`Server`] that `fedsoft run` drives, built from the adapted modules' shapes and the TSFA plan
//! instead of a fedsoft experiment. Scheduling, channels, the ratio, every check of an upload, the uplink's
//! delays and outage, the per-factor aggregate and the round's records and ledger happen here; the strategy
//! only turns Flower messages into arguments and answers back.

use crate::convert::{from_json, parse_name, value_error};
use crate::state::Factors;
use crate::wireless::{Plan, PyUplink};
use fedsoft_core::budget::DropRatio;
use fedsoft_core::head::Head;
use fedsoft_core::ledger::BitModel;
use fedsoft_core::lora::{LoraState, ModuleShape, describe_shapes};
use fedsoft_core::sparsify::{MethodKind, SparsifierOptions};
use fedsoft_engine::checkpoint::{Meta, RunState};
use fedsoft_engine::config::{ControllerKind, PayloadSize, RobustConfig};
use fedsoft_engine::engine::{ClientUpload, UploadCheck};
use fedsoft_engine::metrics::TimeSplit;
use fedsoft_engine::server::{RoundPlan, RoundRules, Server, ServerParts};
use fedsoft_wireless::channel::{Cell, ChannelConfig};
use fedsoft_wireless::tsfa::{PlanInputs, RatioRule, TsfaPlan, TsfaSettings};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RoundServer>()?;
    Ok(())
}

/// Where each of the strategy's dense arrays (a classifier head, ...) sits in the flat head the server
/// averages: the arrays, in the order given, end to end. The element-wise average does not depend on the
/// layout, so the arrays need no row structure of their own.
#[derive(Clone)]
struct DenseLayout {
    arrays: Vec<(String, Vec<usize>)>,
}

impl DenseLayout {
    fn total(&self) -> usize {
        self.arrays.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }

    /// The layout of `dense` and its values as one head.
    fn of(dense: &[(String, PyReadonlyArrayDyn<'_, f32>)]) -> PyResult<(Self, Head)> {
        let layout = DenseLayout { arrays: dense.iter().map(|(n, a)| (n.clone(), a.shape().to_vec())).collect() };
        let mut seen = std::collections::BTreeSet::new();
        if let Some((name, _)) = layout.arrays.iter().find(|(n, _)| !seen.insert(n.as_str())) {
            return Err(value_error(format!("dense array {name:?} is named twice")));
        }
        let head = layout.pack(dense).map_err(value_error)?;
        Ok((layout, head))
    }

    /// A client's dense arrays as a head, or why they do not match the global ones.
    fn pack(&self, dense: &[(String, PyReadonlyArrayDyn<'_, f32>)]) -> Result<Head, String> {
        let given: BTreeMap<&str, &PyReadonlyArrayDyn<'_, f32>> = dense.iter().map(|(n, a)| (n.as_str(), a)).collect();
        if let Some((extra, _)) = dense.iter().find(|(n, _)| !self.arrays.iter().any(|(m, _)| m == n)) {
            return Err(format!("dense array {extra:?} is not one of the global ones"));
        }
        let mut values = Vec::with_capacity(self.total());
        for (name, shape) in &self.arrays {
            let array = given.get(name.as_str()).ok_or_else(|| format!("dense array {name:?} is missing"))?;
            if array.shape() != shape.as_slice() {
                return Err(format!("dense array {name:?} has shape {:?}, expected {shape:?}", array.shape()));
            }
            values.extend(array.as_array().iter().copied());
        }
        Ok(Head::flat(values))
    }

    fn unpack<'py>(&self, py: Python<'py>, head: &Head) -> PyResult<Vec<(String, Bound<'py, PyArrayDyn<f32>>)>> {
        let mut at = 0;
        let mut out = Vec::with_capacity(self.arrays.len());
        for (name, shape) in &self.arrays {
            let n: usize = shape.iter().product();
            let flat = numpy::PyArray1::from_slice(py, &head.bias[at..at + n]);
            out.push((name.clone(), flat.reshape(shape.clone())?.to_dyn().clone()));
            at += n;
        }
        Ok(out)
    }
}

/// What the server needs before its first round: everything but the global model.
struct Pending {
    rules: RoundRules,
    rank: usize,
    shapes: Vec<ModuleShape>,
    method: MethodKind,
    options: SparsifierOptions,
    plan: fedsoft_wireless::tsfa::TsfaPlan,
    rule: RatioRule,
}

/// One client's reply as the strategy read it from its message: the encoded upload, its reported sample
/// count, its training loss and its dense arrays.
type Reply<'py> = (usize, Vec<u8>, i64, f64, Vec<(String, PyReadonlyArrayDyn<'py, f32>)>);

/// The server of a Flower run: [`Server`] with the strategy's modules, plan and method.
#[pyclass(name = "RoundServer", module = "fedsoft", unsendable)]
pub struct RoundServer {
    pending: Pending,
    server: Option<Server>,
    dense: Option<DenseLayout>,
    /// The open round, its upload budget and when it opened.
    open: Option<(RoundPlan, usize, Instant)>,
    last_clients: Vec<Value>,
}

#[pymethods]
impl RoundServer {
    /// A federation of `num_clients` clients in a cell on `uplink`, `per_round` scheduled each round, with
    /// the adapted `modules` (`(name, d, k)`, in wire order). `channel` and `tsfa` are the engine's
    /// `[wireless.channel]` and `[tsfa]` tables as JSON. `controller`: "tsfa" (the plan's rank `r*`, ratio by
    /// the `[tsfa]` online rule), "osfa" (that rule at `rank`) or "fixed" (`rho` at `rank`); `feedback_mode`:
    /// "delta" or "model"; `options`: the sparsifier options as JSON.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (modules, num_clients, per_round, seed, uplink, channel=None, tsfa=None, method="soft",
        controller="tsfa", rank=8, rho=0.75, feedback_mode="delta", value_bits=32, index_overhead=false,
        outage_delay_s=None, options=None))]
    fn new(
        modules: Vec<(String, usize, usize)>,
        num_clients: usize,
        per_round: usize,
        seed: u64,
        uplink: &PyUplink,
        channel: Option<&str>,
        tsfa: Option<&str>,
        method: &str,
        controller: &str,
        rank: usize,
        rho: f64,
        feedback_mode: &str,
        value_bits: u32,
        index_overhead: bool,
        outage_delay_s: Option<f64>,
        options: Option<&str>,
    ) -> PyResult<Self> {
        let method: MethodKind = parse_name(method, "method")?;
        let controller: ControllerKind = parse_name(controller, "controller")?;
        if modules.is_empty() {
            return Err(value_error("modules is empty: give (name, d, k) of every adapted layer"));
        }
        if per_round == 0 || per_round > num_clients {
            return Err(value_error(format!(
                "per_round must be between 1 and num_clients ({num_clients}), got {per_round}"
            )));
        }
        let channel: ChannelConfig = from_json(channel, "channel")?;
        let settings: TsfaSettings = from_json(tsfa, "tsfa")?;
        let cell = Cell::new(&channel, num_clients, uplink.0.bandwidth_hz, seed).map_err(value_error)?;
        let inputs = PlanInputs {
            cell,
            uplink: uplink.0,
            value_bits: f64::from(value_bits),
            index_overhead,
            params_per_rank: modules.iter().map(|(_, d, k)| d + k).sum(),
            per_round,
            seed,
        };
        let plan = TsfaPlan::new(inputs, settings).map_err(value_error)?;
        let online = RatioRule::Online(plan.settings.online);
        let (rank, rule) = match controller {
            ControllerKind::Tsfa => (plan.offline.best_rank, online),
            ControllerKind::Osfa => (rank, online),
            ControllerKind::Fixed => (rank, RatioRule::Fixed(DropRatio::new(rho).map_err(value_error)?.get())),
        };
        let shapes: Vec<ModuleShape> = modules.into_iter().map(|(n, d, k)| ModuleShape::new(n, d, k, rank)).collect();
        for s in &shapes {
            s.validate().map_err(value_error)?;
        }
        if let Some(t) = outage_delay_s.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(value_error(format!("outage_delay_s must be a positive number of seconds, got {t}")));
        }
        let rules = RoundRules {
            total_rounds: 1,
            method,
            controller,
            feedback_mode: parse_name(feedback_mode, "feedback_mode")?,
            bits: BitModel { value_bits, index_overhead },
            payload: PayloadSize::Paper,
            outage_delay_s,
            robust: RobustConfig::default(),
            lr: f64::NAN,
        };
        let options: SparsifierOptions = from_json(options, "sparsifier options")?;
        // Built once now, so that a rule the plan cannot run is refused before any round.
        plan.ratio_controller(rule, rank).map_err(value_error)?;
        Ok(RoundServer {
            pending: Pending { rules, rank, shapes, method, options, plan, rule },
            server: None,
            dense: None,
            open: None,
            last_clients: Vec::new(),
        })
    }

    /// The TSFA plan of the federation (its `r*`, `tau_bar`, `V`, offline table).
    #[getter]
    fn plan(&self) -> Plan {
        Plan(self.pending.plan.clone())
    }

    /// The LoRA rank the rounds run at.
    #[getter]
    fn rank(&self) -> usize {
        self.pending.rank
    }

    /// The adapted modules at that rank.
    #[getter]
    fn shapes(&self) -> Vec<crate::state::Shape> {
        self.pending.shapes.iter().cloned().map(crate::state::Shape).collect()
    }

    /// The engine's initial global factors at the rank: `B = 0`, `A ~ N(0, 1/r^2)` from `seed`.
    fn initial_factors(&self) -> PyResult<Factors> {
        LoraState::init_gaussian(&self.pending.shapes, self.pending.plan.seed).map(Factors).map_err(value_error)
    }

    /// Starts the run from the global `factors` and `dense` arrays over `total_rounds` rounds (the horizon
    /// the finite-horizon rule plans over).
    fn begin(
        &mut self,
        factors: &Factors,
        dense: Vec<(String, PyReadonlyArrayDyn<'_, f32>)>,
        total_rounds: u64,
    ) -> PyResult<()> {
        let p = &self.pending;
        let got: Vec<&ModuleShape> = factors.0.shapes.iter().collect();
        if got.len() != p.shapes.len() || got.iter().zip(&p.shapes).any(|(a, b)| *a != b) {
            return Err(value_error(format!(
                "the initial factors' modules ({}) are not the strategy's ({}) at rank {}",
                describe_shapes(got.iter().copied()),
                describe_shapes(&p.shapes),
                p.rank
            )));
        }
        if total_rounds == 0 {
            return Err(value_error("num_rounds must be at least 1"));
        }
        let (layout, head) = DenseLayout::of(&dense)?;
        let mut rules = p.rules.clone();
        rules.total_rounds = total_rounds;
        let control = p.plan.ratio_controller(p.rule, p.rank).map_err(value_error)?;
        let check = UploadCheck::new(p.shapes.clone(), p.method, p.options, (head.hidden, head.classes));
        let state = RunState {
            next_round: 0,
            global: factors.0.clone(),
            head,
            memories: BTreeMap::new(),
            meta: Meta { rank: p.rank, ..Default::default() },
        };
        let parts = ServerParts {
            rules,
            rank: p.rank,
            check,
            samples: None,
            uplink: p.plan.uplink,
            control,
            scenario: p.plan.scenario(p.rank),
            state,
        };
        self.server = Some(Server::from_parts(parts).map_err(value_error)?);
        self.dense = Some(layout);
        Ok(())
    }

    /// Opens round `round` (0-based): a dict of the scheduled `clients`, `a_t`, the ratio `rho` and the
    /// `budget` of entries one upload may carry at it.
    fn open_round<'py>(&mut self, py: Python<'py>, round: u64) -> PyResult<Bound<'py, PyAny>> {
        let server = self.server.as_mut().ok_or_else(|| value_error("open_round before begin"))?;
        if round != server.next_round() {
            return Err(value_error(format!(
                "round {round} opened, but the server's next round is {}",
                server.next_round()
            )));
        }
        let plan = server.open_round(round).map_err(value_error)?;
        let budget = server.upload_check().budget(plan.rho);
        let answer = serde_json::json!({
            "round": round,
            "clients": plan.start.clients,
            "a_t": plan.start.a_t,
            "rho": plan.rho.get(),
            "budget": budget,
        });
        self.open = Some((plan, budget, Instant::now()));
        to_python(py, &answer)
    }

    /// Closes the open round with the replies that came (`(client, upload bytes, reported samples, training
    /// loss, dense arrays)`) and the clients that failed (`(client, reason)`); a scheduled client in neither
    /// list sent nothing. Returns the round's metrics: the engine's round record (numbers only; `wall_s` from opening
    /// to closing the round), `refused`,
    /// `budget`, the band `shares` of the taken uploads and the run's `ledger_*` totals. Afterwards
    /// `global_model()` is the new model and `client_records()` the round's per-client records.
    fn close_round<'py>(
        &mut self,
        py: Python<'py>,
        replies: Vec<Reply<'py>>,
        failures: Vec<(usize, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let server = self.server.as_mut().ok_or_else(|| value_error("close_round before begin"))?;
        let layout = self.dense.as_ref().expect("begin sets the layout");
        let (plan, budget, opened) =
            self.open.take().ok_or_else(|| value_error("close_round without an open round"))?;
        let mut by_client: BTreeMap<usize, Result<ClientUpload, String>> = BTreeMap::new();
        for (client, reason) in failures {
            by_client.insert(client, Err(reason));
        }
        for (client, bytes, samples, train_loss, dense) in replies {
            // A count that is not positive is no count: the server refuses the upload for it.
            let samples = usize::try_from(samples).ok().filter(|&n| n > 0);
            let upload = layout.pack(&dense).map(|head| ClientUpload {
                client,
                bytes,
                head,
                train_loss,
                local: None,
                samples,
                train_s: 0.0,
                sparsify_s: 0.0,
                transfer_s: None,
            });
            by_client.insert(client, upload);
        }
        let results: Vec<Result<ClientUpload, String>> = plan
            .start
            .clients
            .iter()
            .map(|c| by_client.remove(c).unwrap_or_else(|| Err("no reply".to_string())))
            .collect();
        if let Some(c) = by_client.keys().next() {
            return Err(value_error(format!("client {c} replied but was not scheduled in round {}", plan.round)));
        }
        let admitted = server.admit(&plan, results).map_err(value_error)?;
        let refused = admitted.failed.len();
        let closed = server.close_round(plan, admitted).map_err(value_error)?;
        let shares = closed.uplink().shares.clone();
        let wall_s = opened.elapsed().as_secs_f64();
        let records = server.record(closed, None, TimeSplit::default(), wall_s);
        let ledger = server.state().meta.ledger;
        let mut metrics = numbers_of(serde_json::to_value(&records.round).map_err(value_error)?);
        metrics.insert("refused".into(), refused.into());
        metrics.insert("budget".into(), budget.into());
        metrics.insert("bandwidth_shares".into(), shares.into());
        metrics.insert("ledger_uploads".into(), ledger.uploads.into());
        metrics.insert("ledger_entries".into(), ledger.entries.into());
        metrics.insert("ledger_bits_paper".into(), ledger.paper_bits.into());
        metrics.insert("ledger_bits_encoded".into(), ledger.encoded_bits.into());
        self.last_clients =
            records.clients.iter().map(serde_json::to_value).collect::<Result<_, _>>().map_err(value_error)?;
        to_python(py, &Value::Object(metrics))
    }

    /// The per-client records of the last closed round, as `clients.jsonl` holds them (a refused client's
    /// `reason` says why).
    fn client_records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &Value::Array(self.last_clients.clone()))
    }

    /// The global model: the LoRA factors and the dense arrays, by name.
    #[allow(clippy::type_complexity)]
    fn global_model<'py>(&self, py: Python<'py>) -> PyResult<(Factors, Vec<(String, Bound<'py, PyArrayDyn<f32>>)>)> {
        let server = self.server.as_ref().ok_or_else(|| value_error("global_model before begin"))?;
        let layout = self.dense.as_ref().expect("begin sets the layout");
        let (global, head) = server.global();
        Ok((Factors(global.clone()), layout.unpack(py, head)?))
    }
}

/// The numeric fields of a record (what a Flower `MetricRecord` can hold): numbers and lists of numbers.
/// Absent values and the time split (the server here times no training) are left out.
fn numbers_of(record: Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Value::Object(fields) = record else { return out };
    for (key, value) in fields {
        match value {
            Value::Number(_) => {
                out.insert(key, value);
            }
            Value::Array(items) if items.iter().all(Value::is_number) => {
                out.insert(key, Value::Array(items));
            }
            _ => {}
        }
    }
    out
}

fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}
