"""fedsoft on Flower (flwr >= 1.42, Message API) for your own PyTorch model: a server :class:`SoftStrategy`
and a client-side :func:`train_reply`.

The strategy is a Flower adapter over the engine's server half of a round (the Rust ``Server`` that ``fedsoft
run`` drives, as :class:`fedsoft.RoundServer`): it schedules ``per_round`` of the connected nodes (node ``i``
of the sorted node ids is client ``i``) with fedsoft's seeded sampler, draws their fading, lets the ratio rule
pick ``rho`` from the round's dense-upload delay ``a_t`` (TSFA's Lyapunov controller, the finite-horizon rule,
or a fixed ratio), checks every upload (wire format, round, sender, exact budget, finite values, the dense
arrays' shapes, a positive sample count), splits the band, computes each client's delay (dropping those past
the outage deadline), averages the two factors separately and books the round's record and the run's bit
ledger, all in Rust, exactly as ``fedsoft run`` does. This module only turns Flower messages into the
server's arguments and its answers back into messages.

A client trains, compresses its update with error feedback and the chosen sparsifier
(:class:`fedsoft.Compressor`) and answers with the encoded upload (fedsoft's ``FSUP`` wire format,
checksummed) through :func:`train_reply`.

To run a whole fedsoft experiment (fedsoft's model, data and trainer) on Flower, use :mod:`fedsoft.app`.
"""

from __future__ import annotations

import logging
import time
from logging import WARNING
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from . import Compressor, LoraFactors, RoundServer, Uplink, _options, factors

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
        ``"tsfa"`` (rank from the offline stage, ratio by the online rule), ``"osfa"`` (the online stage at
        ``rank``), or ``"fixed"`` (ratio ``rho`` at ``rank``).
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

    Each round's :class:`MetricRecord` is the engine's round record (``rho``, ``dense_delay_s`` (``a_t``),
    ``delay_s``, ``avg_delay_s``, ``queue``, ``uplink_bits_paper``, ``uplink_bits_encoded``,
    ``kept_entries``, ``clients``, ``dropped``, ``train_loss``, ``wall_s``, ...) with ``refused``, ``budget``,
    ``bandwidth_shares`` and the run's ``ledger_*`` totals; :meth:`client_records` gives the round's
    per-client records as ``clients.jsonl`` holds them. The covariance of the local models is absent, as for
    any networked client: they are never sent.
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
        if not node_wait_s > 0:
            raise ValueError(f"node_wait_s must be a positive number of seconds, got {node_wait_s!r}")
        self.node_wait_s = float(node_wait_s)
        self.num_clients = int(num_clients)
        self.method, self.seed, self.feedback_mode = method, seed, feedback_mode
        self.sparsifier_options = sparsifier_options
        self.server = RoundServer(
            [(str(n), int(d), int(k)) for n, d, k in modules], int(num_clients), int(per_round), int(seed),
            uplink or Uplink(),
            channel=_options({"mean_snr_db": 10.0} if channel is None else channel),
            tsfa=_options({"online": online, **(tsfa or {})}),
            method=method, controller=controller, rank=int(rank), rho=float(rho), feedback_mode=feedback_mode,
            value_bits=int(value_bits), index_overhead=bool(index_overhead), outage_delay_s=outage_delay_s,
            options=_options(sparsifier_options),
        )
        self.plan = self.server.plan
        self.rank = self.server.rank
        self.controller_kind = controller
        self.shapes = self.server.shapes
        self.total_rounds = 1
        self._nodes_of: dict[int, int] = {}

    def initial_factors(self) -> LoraFactors:
        """The engine's initial global factors at this rank: ``B = 0``, ``A ~ N(0, 1/r^2)`` from the seed."""
        return self.server.initial_factors()

    def client_records(self) -> list[dict[str, Any]]:
        """The last round's per-client records (a refused or dropped client's ``reason`` says why)."""
        return self.server.client_records()

    def summary(self) -> None:
        log.info(
            "SoftStrategy: method=%s controller=%s rank=%d of N=%d tau_bar=%.4fs V=%.4g",
            self.method, self.controller_kind, self.rank, self.num_clients, self.plan.tau_bar, self.plan.v_wsp,
        )

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, **kwargs: Any) -> Any:
        """Runs ``num_rounds`` rounds (the horizon the finite-horizon rule plans over) from ``initial_arrays``."""
        self.total_rounds = num_rounds
        lora, dense = record_to_factors(initial_arrays)
        self.server.begin(lora, list(dense.items()), int(num_rounds))
        return super().start(grid, initial_arrays, num_rounds=num_rounds, **kwargs)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self._nodes(grid)
        opened = self.server.open_round(server_round - 1)
        t, rho = opened["round"], opened["rho"]
        self._nodes_of = {nodes[c]: c for c in opened["clients"]}
        messages = []
        for c in opened["clients"]:
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
        uploads, failures = [], []
        for msg in replies:
            client = self._nodes_of.get(msg.metadata.src_node_id)
            if client is None:
                log.warning("round %d: a reply from node %s, which was not scheduled, is ignored",
                            server_round, msg.metadata.src_node_id)
                continue
            reply = _read_reply(msg)
            if isinstance(reply, str):
                failures.append((client, reply))
            else:
                uploads.append((client, *reply))
        metrics = self.server.close_round(uploads, failures)
        for record in self.server.client_records():
            if record.get("reason"):
                log.warning("round %d: client %d: %s", server_round, record["client"], record["reason"])
        lora, dense = self.server.global_model()
        return factors_to_record(lora, dict(dense)), MetricRecord(metrics)

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


def _read_reply(msg: Message) -> tuple[bytes, int, float, list[tuple[str, np.ndarray]]] | str:
    """A client's reply as the server's arguments (upload bytes, reported samples, training loss, dense
    arrays), or why the message holds none. The server checks what the arrays hold."""
    if msg.has_error():
        return f"client error: {msg.error.reason}"
    content = msg.content
    if UPLOAD not in content.array_records or METRICS not in content.metric_records:
        return f"reply lacks the {UPLOAD!r} arrays or the {METRICS!r} metrics"
    upload = content.array_records[UPLOAD]
    data = upload["upload"].numpy() if "upload" in upload else np.zeros(0, np.uint8)
    m = content.metric_records[METRICS]
    dense = [(k[len(_DENSE):], np.ascontiguousarray(upload[k].numpy(), dtype=np.float32))
             for k in upload if k.startswith(_DENSE)]
    return (np.ascontiguousarray(data).tobytes(), int(m.get("num-examples", 0)), float(m.get("train_loss", "nan")),
            dense)


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
