"""The ServerApp: fedsoft's SoftStrategy with TSFA choosing the rank offline and the ratio every round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedsoft.flower import SoftStrategy, factors_to_record, record_to_factors
from fedsoft.peft import module_dims

from .task import Classifier, evaluate, head_arrays, set_factors, set_head, settings, split

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = settings(context)
    seed = int(run["seed"])
    torch.manual_seed(seed)
    probe = Classifier(int(run["rank"]))

    strategy = SoftStrategy(
        module_dims(probe.encoder),
        num_clients=int(run["num-clients"]),
        per_round=int(run["per-round"]),
        method=str(run["method"]),
        controller=str(run["controller"]),
        rank=int(run["rank"]),
        rho=float(run["rho"]),
        seed=seed,
        node_wait_s=float(run["node-wait-s"]),
    )
    # TSFA may choose another rank than the probe's: the head is all that is taken from the probe.
    initial = factors_to_record(strategy.initial_factors(), head_arrays(probe))
    # Held-out sentences scored on the server after every round, with a model at the strategy's rank.
    model = probe if strategy.rank == int(run["rank"]) else Classifier(strategy.rank)
    _, (test_texts, test_labels) = split(int(run["sentences"]), int(run["test-sentences"]))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        lora, dense = record_to_factors(arrays)
        set_factors(model.encoder, lora)
        set_head(model, dense)
        accuracy, loss = evaluate(model, test_texts, test_labels, int(run["max-len"]))
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    result = strategy.start(grid, initial, num_rounds=int(run["num-server-rounds"]), evaluate_fn=evaluate_fn)
    out = str(run.get("out", ""))
    if out:
        write_result(Path(out), strategy, result.arrays, result.train_metrics_clientapp,
                     result.evaluate_metrics_serverapp)


def write_result(out: Path, strategy: SoftStrategy, arrays: ArrayRecord, metrics: dict, evaluation: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lora, dense = record_to_factors(arrays)
    flat = {f"{n}.lora_B": b for n, b, _ in lora.to_arrays()} | {f"{n}.lora_A": a for n, _, a in lora.to_arrays()}
    np.savez(out / "final.npz", **flat, **dense)
    rounds = {str(r): dict(m) for r, m in sorted(metrics.items())}
    tests = {str(r): dict(m) for r, m in sorted(evaluation.items())}
    summary = {"rank": strategy.rank, "tau_bar": strategy.plan.tau_bar, "rounds": rounds, "evaluation": tests}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
