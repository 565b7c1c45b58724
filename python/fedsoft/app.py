"""Any fedsoft experiment on Flower (flwr >= 1.42): :data:`server` is a ServerApp that runs fedsoft's own
server, :data:`client` a ClientApp that runs fedsoft's own client, both in Rust. Flower only carries bytes.

The server is ``fedsoft run`` with its clients behind Flower: the schedule, channels and ratio, the check
of every upload, the simulated uplink, the per-factor aggregate, evaluation, the records
(``metrics.jsonl``, ``clients.jsonl``, ``summary.json``), checkpoints and the PEFT export are the engine's,
so a seed gives the numbers and adapter bytes that ``fedsoft run`` gives. A client trains with fedsoft's
kernels from the task it receives: the global factors and head, the ratio, and its error-feedback memory,
which travels with the task and comes back with the reply, so any node may train any client: the round's
``i``-th task goes to node ``i mod nodes``, an equal share for every node whichever clients were scheduled
(assigning by client id left one of two nodes with up to 8 of 10 clients in a round, and the round waiting on
it), and the server's checkpoint holds every memory. ``fedsoft join`` is the
deployment that keeps the memory on the device instead.

Run config (``flwr run ... --run-config``):

``config``
    a fedsoft config file ('' for the embedded default, ``configs/default.toml``)
``set``
    overrides, as ``fedsoft run --set``, separated by ``;`` (``"rounds.total=3; clients.per_round=2"``)
``out``
    the run directory ('' for ``runs/<name>``); ``resume`` continues the run there
``cache``
    the asset cache ('' for ``$FEDSOFT_CACHE`` or ``.cache/fedsoft``), the same path on every node
``node-wait-s``, ``round-timeout-s``
    how long to wait for a first node, and for a round's replies
"""

from __future__ import annotations

import json
import os
import time
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from . import _native

server = ServerApp()
client = ClientApp()

#: The key of the record that carries a task to a client and its reply back.
KEY = "fedsoft"

#: Run-config values used where the run config has none (``flwr.simulation.run_simulation`` passes none).
DEFAULTS: dict[str, object] = {}


def _overrides(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def _nodes(grid: Grid, wait_s: float) -> list[int]:
    """The connected nodes, sorted; waits up to ``wait_s`` for the first."""
    started, note = time.monotonic(), 0.0
    while not (nodes := sorted(grid.get_node_ids())):
        waited = time.monotonic() - started
        if waited > wait_s:
            raise RuntimeError(f"no Flower node connected within {wait_s:.0f} s: start at least one SuperNode")
        if waited >= note:
            log(WARNING, "fedsoft: waiting for a node (%.0f s of at most %.0f s)", waited, wait_s)
            note += 10.0
        time.sleep(0.5)
    return nodes


@server.main()
def _serve(grid: Grid, context: Context) -> None:
    run = {**DEFAULTS, **dict(context.run_config)}
    cache = str(run.get("cache", "") or os.environ.get("FEDSOFT_CACHE", "") or ".cache/fedsoft")
    cache = os.path.abspath(cache)
    wait_s, timeout_s = float(run.get("node-wait-s", 120.0)), float(run.get("round-timeout-s", 3600.0))

    def send(round_: int, tasks: list[tuple[int, bytes]], config_toml: str) -> list[bytes | str]:
        nodes = _nodes(grid, wait_s)
        messages = []
        for slot, (_client, task) in enumerate(tasks):
            record = ConfigRecord({"task": task, "config": config_toml, "cache": cache})
            messages.append(Message(content=RecordDict({KEY: record}), message_type=MessageType.TRAIN,
                                    dst_node_id=nodes[slot % len(nodes)], group_id=str(round_)))
        # Each reply is matched to its task by the id Flower gave the task's message.
        slots = {msg_id: slot for slot, msg_id in enumerate(grid.push_messages(messages))}
        replies: list[bytes | str] = [f"no reply within round-timeout-s ({timeout_s:.0f} s)"] * len(tasks)
        deadline = time.monotonic() + timeout_s
        while slots and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(slots)):
                slot = slots.pop(reply.metadata.reply_to_message_id, None)
                if slot is None:
                    continue
                if reply.has_error():
                    replies[slot] = f"client failed: {reply.error.reason}"
                else:
                    replies[slot] = bytes(reply.content[KEY]["reply"])
            if slots:
                time.sleep(0.05)
        return replies

    summary = _native.run_experiment(
        send,
        config=str(run["config"]) if run.get("config") else None,
        overrides=_overrides(str(run.get("set", ""))),
        out=str(run["out"]) if run.get("out") else None,
        cache=cache,
        resume=bool(run.get("resume", False)),
    )
    log(INFO, "fedsoft: %s", json.dumps(json.loads(summary), indent=1))


def _cores() -> int | None:
    """The CPUs Ray gave this client's actor (fedsoft's kernels then use as many threads), or None outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            return max(1, int(cpus)) if cpus else None
    except ImportError:
        pass
    return None


@client.train()
def _train(msg: Message, context: Context) -> Message:
    record = msg.content[KEY]
    reply = _native.client_work(str(record["config"]), bytes(record["task"]), cache=str(record["cache"]),
                                threads=_cores())
    content = RecordDict({KEY: ConfigRecord({"reply": reply})})
    return Message(content=content, reply_to=msg)
