"""The cost of Flower: the embedded default experiment run by `fedsoft run` and then, right after on the same
machine, as the Flower app (fedsoft's own server and client under Flower's simulation engine, Ray). Both write
the same run directory, so only the wall time and the memory differ; this prints both and their ratio.

Peak memory is the largest sum of resident memory over the process tree (the Flower run's Ray workers are
processes of its own tree), sampled every 0.2 s.

    .venv-python/bin/python bench/flower_default.py [--nodes 2] [--set KEY=VALUE ...]

It needs the package built (`scripts/test-python` does it) and `target/release/fedsoft` or `FEDSOFT_BIN`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

FLOWER = """
import sys
from flwr.simulation import run_simulation
from fedsoft import app
app.DEFAULTS.update({"set": sys.argv[1], "out": sys.argv[2]})
cpus = int(sys.argv[4])
run_simulation(server_app=app.server, client_app=app.client, num_supernodes=int(sys.argv[3]),
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": cpus}})
"""


def measured(command: list[str], env: dict) -> tuple[float, float]:
    """Runs `command`; returns its wall seconds and the peak resident memory of its process tree, in MiB."""
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.monotonic() - started
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{command[0]} failed:\n{err[-3000:]}")
    return wall, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2, help="Flower SuperNodes (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args()
    binary = os.environ.get("FEDSOFT_BIN", str(ROOT / "target" / "release" / "fedsoft"))
    cpus = os.cpu_count() or 1
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        run = [binary, "run", "--out", f"{tmp}/fedsoft"] + [a for s in args.set for a in ("--set", s)]
        fedsoft_wall, fedsoft_mib = measured(run, env)
        flower = [sys.executable, "-c", FLOWER, "; ".join(args.set), f"{tmp}/flower", str(args.nodes), str(cpus)]
        flower_wall, flower_mib = measured(flower, env)
        same = (Path(tmp, "fedsoft", "adapter", "adapter_model.safetensors").read_bytes()
                == Path(tmp, "flower", "adapter", "adapter_model.safetensors").read_bytes())
    print(json.dumps({
        "fedsoft_run": {"wall_s": round(fedsoft_wall, 1), "peak_mib": round(fedsoft_mib)},
        "flower_app": {"wall_s": round(flower_wall, 1), "peak_mib": round(flower_mib), "nodes": args.nodes},
        "wall_ratio": round(flower_wall / fedsoft_wall, 3),
        "same_adapter": same,
        "cpus": cpus,
    }, indent=1))


if __name__ == "__main__":
    main()
