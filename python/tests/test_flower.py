"""A Flower simulation (Ray engine, 10 virtual clients) of the example app: MiniLM with PEFT LoRA on Brown,
SOFT uploads under TSFA. Every upload holds exactly the round's budget, the training and held-out losses
fall, and a second run with the same seed ends with the same factors and metrics."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import fedsoft
from conftest import readme_command

flwr = pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("peft")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower-minilm"
ROUNDS = 4


def simulate(out: Path) -> dict:
    from flwr.simulation import run_simulation

    sys.path.insert(0, str(EXAMPLE))
    # Ray's workers import the client app by module name.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    from flower_minilm import client_app, server_app, task

    task.DEFAULTS.update({"num-server-rounds": ROUNDS, "out": str(out)})
    run_simulation(
        server_app=server_app.app,
        client_app=client_app.app,
        num_supernodes=10,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    return json.loads((out / "metrics.json").read_text())


def without_wall_times(rounds: dict) -> dict:
    return {r: {k: v for k, v in m.items() if k != "wall_s"} for r, m in rounds.items()}


def test_flower_simulation_budget_loss_and_reproducibility(tmp_path):
    first = simulate(tmp_path / "a")
    rounds = [first["rounds"][str(r)] for r in range(1, ROUNDS + 1)]
    for m in rounds:
        assert m["refused"] == 0 and m["dropped"] == 0 and len(m["clients"]) == 5
        assert m["kept_entries"] == 5 * m["budget"] > 0
        assert 0.5 <= m["rho"] <= 0.99
        assert sum(m["bandwidth_shares"]) == pytest.approx(1.0)
        assert m["uplink_bits_paper"] == 32 * m["kept_entries"]
        assert m["uplink_bits_encoded"] > m["uplink_bits_paper"]
    # The ledger adds up the rounds.
    assert rounds[-1]["ledger_entries"] == sum(m["kept_entries"] for m in rounds)
    assert rounds[-1]["ledger_uploads"] == 5 * ROUNDS
    # Every scheduled client sent exactly the budget of the round's ratio.
    dims = [(f"m{i}", 384, 384) for i in range(12)]
    shapes = [fedsoft.ModuleShape(n, d, k, first["rank"]) for n, d, k in dims]
    for m in rounds:
        assert m["budget"] == fedsoft.upload_budget("soft", shapes, m["rho"])
    assert rounds[-1]["train_loss"] < rounds[0]["train_loss"]
    # The server scores held-out sentences before the first round and after each: the loss falls.
    tests = first["evaluation"]
    assert sorted(tests, key=int) == [str(r) for r in range(ROUNDS + 1)]
    assert tests[str(ROUNDS)]["loss"] < tests["0"]["loss"]
    second = simulate(tmp_path / "b")
    assert without_wall_times(second["rounds"]) == without_wall_times(first["rounds"])
    assert second["evaluation"] == first["evaluation"]
    a, b = np.load(tmp_path / "a" / "final.npz"), np.load(tmp_path / "b" / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_the_readmes_flower_command_finishes_and_cleans_up(tmp_path):
    import shutil
    import subprocess

    command = readme_command("cd python/examples/flower-minilm")
    assert command.startswith("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1") and "flwr run ." in command
    assert "num-server-rounds=8" in command and "--stream" in command
    # The README's command with two rounds and the output in this test's folder; Flower's own state (its local
    # SuperLink and database) in a folder of its own, so the SuperLink it starts can be found and stopped.
    command = command.replace("num-server-rounds=8", "num-server-rounds=2").replace(
        "/tmp/flower-minilm", str(tmp_path / "out")
    )
    home = tmp_path / "flwr-home"
    env = dict(os.environ, FLWR_HOME=str(home))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if "FEDSOFT_CACHE" in os.environ:  # the command points at the repository's cache, as a user's would
        command = command.replace('FEDSOFT_CACHE="$PWD/../../../.cache/fedsoft"', f'FEDSOFT_CACHE="{os.environ["FEDSOFT_CACHE"]}"')
    try:
        done = subprocess.run(
            ["bash", "-c", command], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        # `flwr run` leaves its local SuperLink running for later runs; this test's must not outlive it.
        subprocess.run(["pkill", "-f", str(home)], check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Exit Code" not in log and "waiting for nodes" not in log, log[-3000:]
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert sorted(result["rounds"]) == ["1", "2"], result
    assert all(len(m["clients"]) == 5 and m["refused"] == 0 for m in result["rounds"].values())
    shutil.rmtree(home, ignore_errors=True)
