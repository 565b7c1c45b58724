"""`fedsoft.Client`: the client's half of a fedsoft experiment from Python, on numpy arrays. Handed the round
`fedsoft run` played, it sends exactly what that run's clients sent (training loss, entries and encoded size
as `clients.jsonl` records them), it scores the initial model as the run did, and bad input is refused with
an error that names what was wrong."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import ROOT

import fedsoft

CACHE = os.environ.get("FEDSOFT_CACHE", str(ROOT / ".cache" / "fedsoft"))
SMALL = ["rounds.total=1", "rounds.eval_every=1", "clients.per_round=3", "data.samples_per_client=8",
         "data.test_samples=32"]


@pytest.fixture(scope="module")
def client():
    return fedsoft.Client(overrides=SMALL, cache=CACHE)


def test_a_round_from_python_is_fedsoft_runs_round(tmp_path, client):
    binary = os.environ.get("FEDSOFT_BIN", str(ROOT / "target" / "debug" / "fedsoft"))
    command = [binary, "run", "--out", str(tmp_path / "run")] + [a for s in SMALL for a in ("--set", s)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    clients = {c["client"]: c for c in map(json.loads, (tmp_path / "run" / "clients.jsonl").read_text().splitlines())}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())

    global_, weight, bias = client.initial_model()
    assert weight.shape == (weight.shape[0], 10) and bias.shape == (10,)  # Fashion-MNIST's ten classes
    accuracy, loss = client.evaluate(global_, weight, bias)
    assert (accuracy, loss) == (summary["initial_test_accuracy"], summary["initial_test_loss"])
    for c in record["clients"]:
        sent = client.train(c, 0, global_, weight, bias, record["rho"])
        want = clients[c]
        assert sent["train_loss"] == want["train_loss"]
        assert 8 * len(sent["upload"]) == want["bits_encoded"]
        round_, sender, update = fedsoft.SparseUpdate.decode(sent["upload"], client.shapes)
        assert (round_, sender, update.nnz) == (0, c, want["kept_entries"])
        assert sent["samples"] == want["samples"] == client.samples[c]
        assert sent["head_weight"].shape == weight.shape and sent["local"].shapes == global_.shapes


def test_bad_input_names_what_is_wrong(client):
    global_, weight, bias = client.initial_model()
    with pytest.raises(ValueError, match="head: weight"):
        client.train(0, 0, global_, np.ascontiguousarray(weight.T), bias, 0.75)
    other = fedsoft.LoraFactors.zeros([fedsoft.ModuleShape(s.name, s.d, s.k, s.r + 1) for s in client.shapes])
    with pytest.raises(ValueError, match="global factors: the factors' modules are"):
        client.train(0, 0, other, weight, bias, 0.75)
    with pytest.raises(ValueError, match="client 100000"):
        client.train(100_000, 0, global_, weight, bias, 0.75)
    with pytest.raises(ValueError, match="rho"):
        client.train(0, 0, global_, weight, bias, 1.5)
    with pytest.raises(ValueError, match="lora.rank"):
        fedsoft.Client(overrides=["lora.rank=0"], cache=CACHE)
