"""fedsoft on Flower (flwr >= 1.42, Message API): a server :class:`SoftStrategy` and a client-side
:func:`train_reply`.

Each round the strategy schedules ``per_round`` of the connected nodes with fedsoft's seeded sampler (node ``i``
of the sorted node ids is client ``i``), draws their fading, lets the ratio rule pick ``rho`` from the
round's dense-upload delay ``a_t`` (TSFA's Lyapunov controller, the finite-horizon rule, or a fixed ratio)
and sends the global LoRA factors with ``rho``. A client trains, compresses its update with error feedback and
the chosen sparsifier (:class:`fedsoft.Compressor`), and answers with the encoded upload (fedsoft's ``FSUP``
wire format, checksummed). The server decodes and checks every upload (shapes, round, client, exact budget,
finite values), splits the band, computes each client's delay (dropping those past the outage deadline),
averages the two factors separately, tells the controller the round's delay, and reports ``rho``, ``a_t``,
the delay, the queue, the band split, the entries and bits of the uploads kept after the outage (paper count
and encoded size, per round and as the run's ledger, as the engine books them), the plain mean of the
clients' training losses and the covariance of the received factors as metrics.

The same Rust functions as ``fedsoft run`` do every step; only the transport is Flower's.
"""

from __future__ import annotations

import logging
import time
from logging import WARNING
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from . import (
    Cell,
    Compressor,
    LoraFactors,
    ModuleShape,
    SparseUpdate,
    Uplink,
    aggregation_weights,
    apply_deltas,
    average_sparse_models,
    covariance_norm,
    factors,
    methods,
    move_toward_average,
    paper_bits,
    plan_tsfa,
    upload_budget,
)

log = logging.getLogger("fedsoft.flower")

#: Keys of what travels in a Flower message.
ARRAYS = "arrays"
CONFIG = "config"
UPLOAD = "fedsoft.upload"
METRICS = "metrics"
_B, _A = ".lora_B", ".lora_A"
_DENSE = "dense/"


def factors_to_record(values: LoraFactors, dense: dict[str, np.ndarray] | None = None) -> ArrayRecord:
    """Global factors (``<module>.lora_B`` and ``<module>.lora_A``) plus dense extras (e.g. a classifier head,
    ``dense/<name>``) as an ArrayRecord."""
    record: dict[str, Array] = {}
    for name, b, a in values.to_arrays():
        record[name + _B] = Array(np.asarray(b))
        record[name + _A] = Array(np.asarray(a))
    for name, x in (dense or {}).items():
        record[_DENSE + name] = Array(np.ascontiguousarray(x, dtype=np.float32))
    return ArrayRecord(record)


def record_to_factors(record: ArrayRecord) -> tuple[LoraFactors, dict[str, np.ndarray]]:
    """The inverse of :func:`factors_to_record`."""
    names = [k[: -len(_B)] for k in record if k.endswith(_B)]
    missing = [n for n in names if n + _A not in record]
    if missing:
        raise ValueError(f"ArrayRecord has lora_B without lora_A for {missing}")
    lora = factors([(n, record[n + _B].numpy(), record[n + _A].numpy()) for n in names])
    dense = {k[len(_DENSE):]: record[k].numpy() for k in record if k.startswith(_DENSE)}
    return lora, dense


class Arrival(NamedTuple):
    """One accepted upload of a round."""

    client: int
    update: SparseUpdate
    samples: int
    dense: dict[str, np.ndarray]
    train_loss: float
    encoded_bytes: int


class SoftStrategy(FedAvg):
    """Wireless federated LoRA fine-tuning with sparsified uploads under a latency budget (SOFT + TSFA).

    Parameters
    ----------
    modules:
        ``(name, d, k)`` of every adapted layer (``fedsoft.peft.module_dims(model)``); the module order is
        the wire order.
    num_clients, per_round:
        ``N`` nodes in the federation and ``K`` scheduled per round.
    method:
        One of :func:`fedsoft.methods` (``"soft"`` by default).
    controller:
        ``"tsfa"`` (rank from the offline stage, ratio by Lyapunov drift-plus-penalty), ``"osfa"`` (the online
        stage at ``rank``), or ``"fixed"`` (ratio ``rho`` at ``rank``).
    online:
        The online rule of TSFA/OSFA: ``"lyapunov"`` (the paper) or ``"horizon"`` (finite horizon).
    seed:
        Fixes scheduling, fading and the clients' random masks (the engine's streams).
    uplink, channel, tsfa:
        The band (:class:`fedsoft.Uplink`), the ``[wireless.channel]`` keys and the ``[tsfa]`` keys of a run
        config (defaults: the paper's Fig. 3(c) setting).
    outage_delay_s:
        Drop a client whose upload would take longer than this.
    node_wait_s:
        How long the first round waits for ``num_clients`` nodes to connect before it fails, saying how many
        came (a simulation started with fewer SuperNodes would otherwise wait for ever).
    """

    def __init__(
        self,
        modules: Sequence[tuple[str, int, int]],
        *,
        num_clients: int,
        per_round: int,
        method: str = "soft",
        controller: str = "tsfa",
        online: str = "lyapunov",
        rank: int = 8,
        rho: float = 0.75,
        seed: int = 0,
        uplink: Uplink | None = None,
        channel: dict[str, Any] | None = None,
        tsfa: dict[str, Any] | None = None,
        value_bits: int = 32,
        index_overhead: bool = False,
        outage_delay_s: float | None = None,
        feedback_mode: str = "delta",
        fraction_evaluate: float = 0.0,
        node_wait_s: float = 120.0,
        **sparsifier_options: Any,
    ) -> None:
        super().__init__(
            fraction_train=per_round / num_clients,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=per_round,
            min_evaluate_nodes=per_round if fraction_evaluate > 0 else 0,
            min_available_nodes=num_clients,
        )
        if method not in methods():
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(methods())}")
        if controller not in ("tsfa", "osfa", "fixed"):
            raise ValueError(f"controller must be 'tsfa', 'osfa' or 'fixed', got {controller!r}")
        if not modules:
            raise ValueError("modules is empty: give (name, d, k) of every adapted layer")
        if not node_wait_s > 0:
            raise ValueError(f"node_wait_s must be a positive number of seconds, got {node_wait_s!r}")
        self.node_wait_s = float(node_wait_s)
        self.modules = [(str(n), int(d), int(k)) for n, d, k in modules]
        self.num_clients, self.per_round = num_clients, per_round
        self.method, self.seed, self.feedback_mode = method, seed, feedback_mode
        self.sparsifier_options = sparsifier_options
        self.value_bits, self.index_overhead, self.outage_delay_s = value_bits, index_overhead, outage_delay_s
        self.uplink = uplink or Uplink()
        channel = {"mean_snr_db": 10.0} if channel is None else channel
        self.cell = Cell(num_clients, self.uplink.bandwidth_hz, seed, **channel)
        params_per_rank = sum(d + k for _, d, k in self.modules)
        settings = dict(tsfa or {})
        settings.setdefault("online", online)
        self.plan = plan_tsfa(
            self.cell, self.uplink, params_per_rank, per_round, seed,
            value_bits=value_bits, index_overhead=index_overhead, **settings,
        )
        self.rank = self.plan.best_rank if controller == "tsfa" else rank
        self.controller_kind = controller
        self.ratio = self.plan.controller(rho if controller == "fixed" else settings["online"], self.rank)
        self.shapes = [ModuleShape(n, d, k, self.rank) for n, d, k in self.modules]
        self.total_rounds = 1
        self._round: dict[str, Any] = {}
        # The run's bit ledger: uploads, entries, paper bits and encoded bits so far.
        self.ledger = {"uploads": 0, "entries": 0, "bits_paper": 0, "bits_encoded": 0}

    def initial_factors(self) -> LoraFactors:
        """The engine's initial global factors at this rank: ``B = 0``, ``A ~ N(0, 1/r^2)`` from the seed."""
        return LoraFactors.init_gaussian(self.shapes, self.seed)

    def summary(self) -> None:
        log.info(
            "SoftStrategy: method=%s controller=%s rank=%d K=%d of N=%d tau_bar=%.4fs V=%.4g",
            self.method, self.controller_kind, self.rank, self.per_round, self.num_clients,
            self.plan.tau_bar, self.plan.v_wsp,
        )

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, **kwargs: Any) -> Any:
        """Runs ``num_rounds`` rounds (the horizon the finite-horizon rule plans over)."""
        self.total_rounds = num_rounds
        return super().start(grid, initial_arrays, num_rounds=num_rounds, **kwargs)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self._nodes(grid)
        self._global = record_to_factors(arrays)
        t = server_round - 1
        start = self.plan.start_round(t, self.rank)
        clients, a_t = start["clients"], start["a_t"]
        snr = [ch["snr"] for ch in start["channels"]]
        rho = self.ratio.choose(t, self.total_rounds, a_t)
        self._round = {"t": t, "clients": clients, "snr": dict(zip(clients, snr)), "a_t": a_t, "rho": rho,
                       "nodes": {nodes[c]: c for c in clients}}
        messages = []
        for c in clients:
            cfg = ConfigRecord(dict(config))
            cfg.update({
                "server-round": server_round, "fedsoft.round": t, "fedsoft.client": c, "fedsoft.rho": rho,
                "fedsoft.seed": self.seed, "fedsoft.method": self.method, "fedsoft.rank": self.rank,
                "fedsoft.feedback_mode": self.feedback_mode,
            })
            content = RecordDict({ARRAYS: arrays, CONFIG: cfg})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=nodes[c]))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        r = self._round
        t, rho = r["t"], r["rho"]
        budget = upload_budget(self.method, self.shapes, rho, **self.sparsifier_options)
        arrived: list[Arrival] = []
        refused = 0
        for msg in replies:
            try:
                arrived.append(self._check(msg, t, budget))
            except ValueError as e:
                refused += 1
                log.warning("round %d: upload from node %s refused: %s", server_round, msg.metadata.src_node_id, e)
        # Replies come in arrival order; aggregation sums in client order, so a seed fixes every bit.
        arrived.sort(key=lambda a: a.client)
        if self._global is None:
            raise RuntimeError("aggregate_train before configure_train")
        global_, dense = self._global
        total = sum(s.numel for s in self.shapes)
        bits = [float(paper_bits(a.update.nnz, total, self.value_bits, self.index_overhead)) for a in arrived]
        tx = self.uplink.transmit(bits, [r["snr"][a.client] for a in arrived], self.outage_delay_s)
        kept = [arrived[i] for i in tx["kept"]]
        # As the engine books a round: what was sent by the uploads kept after the outage (a dropped upload
        # never reached the server), the training loss a plain mean over every upload taken.
        entries = sum(a.update.nnz for a in kept)
        encoded = 8 * sum(a.encoded_bytes for a in kept)
        paper = int(sum(bits[i] for i in tx["kept"]))
        for key, value in (("uploads", len(kept)), ("entries", entries), ("bits_paper", paper),
                           ("bits_encoded", encoded)):
            self.ledger[key] += value
        metrics: dict[str, Any] = {
            "rho": rho, "a_t": r["a_t"], "delay_s": tx["round_delay_s"], "clients": len(kept),
            "refused": refused, "dropped": len(arrived) - len(kept), "entries": entries, "budget": budget,
            "uplink_bits": paper, "uplink_bits_encoded": encoded,
            "client_ids": [a.client for a in arrived], "bandwidth_shares": list(tx["shares"]),
            **{f"ledger_{k}": v for k, v in self.ledger.items()},
        }
        if kept:
            w = aggregation_weights([a.samples for a in kept])
            ups = [a.update for a in kept]
            received = [u.to_dense(global_).add_scaled(global_, 1.0) if self.feedback_mode == "delta"
                        else average_sparse_models(global_, [u], [1.0]) for u in ups]
            metrics["covariance"] = covariance_norm(received, w)
            if self.feedback_mode == "delta":
                global_ = apply_deltas(global_, ups, w)
            else:
                global_ = average_sparse_models(global_, ups, w)
            for name in dense:
                locals_ = [np.asarray(a.dense[name], dtype=np.float32) for a in kept]
                dense[name] = move_toward_average(np.asarray(dense[name], dtype=np.float32), locals_, w)
        if arrived:
            metrics["train_loss"] = float(np.mean([a.train_loss for a in arrived]))
        self.ratio.observe(t, self.total_rounds, r["a_t"], tx["round_delay_s"])
        metrics["queue"] = self.ratio.backlog
        if not global_.all_finite():
            raise RuntimeError(f"round {server_round}: the global factors are no longer finite")
        self._global = (global_, dense)
        return factors_to_record(global_, dense), MetricRecord(metrics)

    # The round's global factors, decoded once in configure_train for aggregate_train.
    _global: tuple[LoraFactors, dict[str, np.ndarray]] | None = None

    def _nodes(self, grid: Grid) -> list[int]:
        started, next_note = time.monotonic(), 0.0
        while len(nodes := sorted(grid.get_node_ids())) < self.num_clients:
            waited = time.monotonic() - started
            if waited > self.node_wait_s:
                raise RuntimeError(
                    f"only {len(nodes)} of the {self.num_clients} nodes SoftStrategy needs connected within "
                    f"{self.node_wait_s:.0f} s: start {self.num_clients} SuperNodes (for a simulation, "
                    f"flwr run . --federation-config 'num-supernodes={self.num_clients}'), or lower num_clients"
                )
            if waited >= next_note:
                # Flower's own logger: its lines reach `flwr run --stream`, this module's may not.
                flwr_log(
                    WARNING, "SoftStrategy: waiting for nodes, %d of %d connected (%.0f s of at most %.0f s)",
                    len(nodes), self.num_clients, waited, self.node_wait_s,
                )
                next_note += 10.0
            time.sleep(0.5)
        return nodes[: self.num_clients]

    def _check(self, msg: Message, t: int, budget: int) -> Arrival:
        if msg.has_error():
            raise ValueError(f"client error: {msg.error.reason}")
        client = self._round["nodes"].get(msg.metadata.src_node_id)
        if client is None:
            raise ValueError("the node was not scheduled this round")
        content = msg.content
        if UPLOAD not in content.array_records or METRICS not in content.metric_records:
            raise ValueError(f"reply lacks the {UPLOAD!r} arrays or the {METRICS!r} metrics")
        upload = content.array_records[UPLOAD]
        data = upload["upload"].numpy()
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"upload must be a 1-D uint8 array, got {data.dtype} {data.shape}")
        round_, sender, update = SparseUpdate.decode(data.tobytes(), self.shapes)
        if round_ != t or sender != client:
            raise ValueError(f"upload is for round {round_} client {sender}, expected round {t} client {client}")
        if update.nnz > budget:
            raise ValueError(f"{update.nnz} entries sent, the budget is {budget}")
        values = [v for _, v in update.modules()]
        if not all(np.isfinite(v).all() for v in values):
            raise ValueError("non-finite values in the upload")
        m = content.metric_records[METRICS]
        n = int(m.get("num-examples", 0))
        if n <= 0:
            raise ValueError(f"num-examples must be positive, got {n}")
        dense = {k[len(_DENSE):]: upload[k].numpy() for k in upload if k.startswith(_DENSE)}
        _, global_dense = self._global or (None, {})
        for name, x in dense.items():
            if name not in global_dense or x.shape != global_dense[name].shape or not np.isfinite(x).all():
                raise ValueError(f"dense array {name!r} does not match the global one or is not finite")
        return Arrival(client, update, n, dense, float(m.get("train_loss", 0.0)), int(data.size))


def train_reply(
    msg: Message,
    context: Context,
    global_: LoraFactors,
    local: LoraFactors,
    num_examples: int,
    *,
    dense: dict[str, np.ndarray] | None = None,
    metrics: dict[str, float] | None = None,
    **sparsifier_options: Any,
) -> Message:
    """The reply of a client's ``@app.train()`` function: the trained ``local`` factors compressed against
    the received ``global_`` ones at the server's ``rho`` with the server's method, error feedback kept in
    ``context.state`` across rounds (it never leaves the node), and the upload encoded in fedsoft's wire
    format. ``dense`` are arrays averaged densely (a classifier head)."""
    cfg = msg.content[CONFIG]
    method = str(cfg["fedsoft.method"])
    comp = Compressor(method, seed=int(cfg["fedsoft.seed"]), mode=str(cfg["fedsoft.feedback_mode"]),
                      **sparsifier_options)
    state_key = "fedsoft.memory"
    if comp.error_feedback and state_key in context.state.array_records:
        comp.memory, _ = record_to_factors(context.state.array_records[state_key])
    t, client = int(cfg["fedsoft.round"]), int(cfg["fedsoft.client"])
    sent = comp.compress(global_, local, float(cfg["fedsoft.rho"]), round=t, client=client)
    if comp.error_feedback and comp.memory is not None:
        context.state.array_records[state_key] = factors_to_record(comp.memory)
    data = np.frombuffer(sent.encode(t, client, global_.shapes), dtype=np.uint8)
    record = {"upload": Array(data)}
    for name, x in (dense or {}).items():
        record[_DENSE + name] = Array(np.ascontiguousarray(x, dtype=np.float32))
    m = {"num-examples": int(num_examples), "fedsoft.client": client, "entries": sent.nnz, **(metrics or {})}
    content = RecordDict({UPLOAD: ArrayRecord(record), METRICS: MetricRecord(m)})
    return Message(content=content, reply_to=msg)
