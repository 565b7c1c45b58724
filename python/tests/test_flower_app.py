"""The Flower app of python/examples/fedsoft-app runs a fedsoft config with fedsoft's own server and client in
Flower's simulation engine (Ray; one node, and a two-node cluster) and on its deployment engine (a SuperLink
over TLS and two SuperNodes): the run directory it writes holds the same records as ``fedsoft run``'s for the
same config (wall-clock times aside) and the same exported adapter, byte for byte."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, readme_command
from fedsoft import _native

flwr = pytest.importorskip("flwr")
pytest.importorskip("ray")

SMALL = [
    "rounds.total=3", "rounds.eval_every=1", "clients.per_round=3", "data.samples_per_client=8",
    "data.test_samples=32",
]
#: What differs between two runs of one config: wall-clock times and where the run was written.
CLOCKS = {"time", "wall_s", "train_wall_s", "transfer_s", "out_dir"}


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in CLOCKS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def records(run: Path) -> dict:
    lines = lambda name: [strip(json.loads(line)) for line in (run / name).read_text().splitlines()]
    adapter = {f.name: f.read_bytes() for f in sorted((run / "adapter").iterdir())}
    return {"metrics": lines("metrics.jsonl"), "clients": lines("clients.jsonl"),
            "summary": strip(json.loads((run / "summary.json").read_text())), "adapter": adapter}


def fedsoft_run(out: Path, overrides: list[str]) -> dict:
    binary = os.environ.get("FEDSOFT_BIN", str(ROOT / "target" / "debug" / "fedsoft"))
    command = [binary, "run", "--out", str(out)]
    for o in overrides:
        command += ["--set", o]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return records(out)


def flower_run(out: Path, overrides: list[str], nodes: int) -> dict:
    from flwr.simulation import run_simulation

    from fedsoft import app

    app.DEFAULTS.update({"set": "; ".join(overrides), "out": str(out)})
    run_simulation(
        server_app=app.server,
        client_app=app.client,
        num_supernodes=nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    return records(out)


def test_flower_run_equals_fedsoft_run(tmp_path):
    want = fedsoft_run(tmp_path / "fedsoft", SMALL)
    got = flower_run(tmp_path / "flower", SMALL, nodes=2)
    assert got["metrics"] == want["metrics"]
    assert got["clients"] == want["clients"]
    assert got["summary"] == want["summary"]
    assert got["adapter"].keys() == want["adapter"].keys() and got["adapter"] == want["adapter"]
    assert len(want["metrics"]) == 3 and all(r["test_accuracy"] is not None for r in want["metrics"])
    # As `fedsoft run` does, the app draws the run's report.
    assert (tmp_path / "flower" / "report" / "report.md").is_file()


def test_the_readmes_flwr_run_command_writes_what_fedsoft_run_writes(tmp_path):
    # The README's command, with this test's small overrides and output folder, run from the example's folder
    # as a user would, Flower's own state (its local SuperLink) in a folder of its own so it can be stopped.
    command = readme_command("cd python/examples/fedsoft-app")
    assert command.startswith("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1") and "flwr run ." in command
    assert "set='rounds.total=5'" in command and "out='/tmp/fedsoft-flower'" in command, command
    command = command.replace("set='rounds.total=5'", "set='" + "; ".join(SMALL) + "'")
    command = command.replace("/tmp/fedsoft-flower", str(tmp_path / "flower"))
    if "FEDSOFT_CACHE" in os.environ:  # the command points at the repository's cache, as a user's would
        cache = os.environ["FEDSOFT_CACHE"]
        command = command.replace('FEDSOFT_CACHE="$PWD/../../../.cache/fedsoft"', f'FEDSOFT_CACHE="{cache}"')
    home = tmp_path / "flwr-home"
    env = dict(os.environ, FLWR_HOME=str(home))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    try:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT / "python" / "examples" / "fedsoft-app", env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run(["pkill", "-f", str(home)], check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "Exit Code" not in log, log[-3000:]
    got = records(tmp_path / "flower")
    want = fedsoft_run(tmp_path / "fedsoft", SMALL)
    assert got == want


def test_a_bad_config_key_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="rounds.totl"):
        _native.resolve_config(None, ["rounds.totl=3"])


def test_a_malformed_reply_is_the_clients_failure_recorded_with_its_reason(tmp_path):
    # A client whose reply is not one is dropped from the round with the engine's reason; the run goes on.
    def send(round_, tasks, config_toml):
        replies = [_native.client_work(config_toml, task) for _, task in tasks]
        replies[0] = b"not a reply"
        return replies

    _native.run_experiment(send, overrides=SMALL[:1] + SMALL[2:] + ["rounds.total=1"], out=str(tmp_path / "run"))
    clients = [json.loads(line) for line in (tmp_path / "run" / "clients.jsonl").read_text().splitlines()]
    refused = [c for c in clients if "malformed reply" in c.get("reason", "")]
    assert len(refused) == 1 and refused[0]["dropped"] and len(clients) == 3


#: The file where the traced ClientApp notes the Ray node each task ran on.
NODES_SEEN = "FEDSOFT_TEST_NODES_SEEN"


def _traced_client():
    """fedsoft's ClientApp, noting the Ray node of each task it runs."""
    from flwr.clientapp import ClientApp

    from fedsoft import app

    client = ClientApp()

    @client.train()
    def train(msg, context):
        import ray

        with open(os.environ[NODES_SEEN], "a") as f:
            f.write(ray.get_runtime_context().get_node_id() + "\n")
        return app._train(msg, context)

    return client


@pytest.fixture
def two_node_ray_cluster(tmp_path):
    """A Ray cluster of two nodes on this machine (loopback), one CPU each; stopped after the test."""
    port = "6391"
    seen = tmp_path / "nodes-seen"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), **{NODES_SEEN: str(seen)})
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    ray = str(Path(sys.executable).parent / "ray")
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       check=True, capture_output=True, env=env)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True, env=env)
        yield f"127.0.0.1:{port}", seen
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


def test_flower_run_on_a_two_node_ray_cluster_equals_fedsoft_run(tmp_path, two_node_ray_cluster):
    from flwr.simulation import run_simulation

    from fedsoft import app

    address, seen = two_node_ray_cluster
    want = fedsoft_run(tmp_path / "fedsoft", SMALL)
    out = tmp_path / "flower"
    app.DEFAULTS.update({"set": "; ".join(SMALL), "out": str(out)})
    run_simulation(
        server_app=app.server,
        client_app=_traced_client(),
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"address": address}},
    )
    got = records(out)
    assert (got["metrics"], got["clients"], got["summary"]) == (want["metrics"], want["clients"], want["summary"])
    assert got["adapter"] == want["adapter"]
    # The clients' work was spread over both nodes of the cluster.
    assert len(set(seen.read_text().split())) == 2, seen.read_text()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, written to ``folder``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsoft test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_flower_deployment_over_tls_equals_fedsoft_run(tmp_path):
    """Flower's deployment engine as the README runs it: a SuperLink with a TLS certificate, two SuperNodes
    that trust its CA, and `flwr run` of the app against that SuperLink, all on loopback; the run directory
    holds `fedsoft run`'s records and adapter."""
    import signal
    import time

    ca, cert, key = _tls_files(tmp_path)
    home = tmp_path / "flwr-home"
    home.mkdir()
    link, nodes = "127.0.0.1:18000", (19094, 19095)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
        f'[superlink.fedsoft-tls]\naddress = "{link}"\nroot-certificates = "{ca}"\n'
    )
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    started = []
    try:
        started.append(subprocess.Popen(
            [bin_dir / "flower-superlink", "--port", "18000", "--ssl-ca-certfile", ca, "--ssl-certfile", cert,
             "--ssl-keyfile", key, "--database", tmp_path / "state.db"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        for port in nodes:
            started.append(subprocess.Popen(
                [bin_dir / "flower-supernode", "--superlink", link, "--root-certificates", ca, "--port", str(port)],
                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        time.sleep(5)
        out = tmp_path / "flower"
        cache = os.environ.get("FEDSOFT_CACHE", str(ROOT / ".cache" / "fedsoft"))
        run_config = f"set='{'; '.join(SMALL)}' out='{out}' cache='{cache}'"
        done = subprocess.run(
            [bin_dir / "flwr", "run", ".", "fedsoft-tls", "--run-config", run_config, "--stream"],
            cwd=ROOT / "python" / "examples" / "fedsoft-app", env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and (out / "summary.json").exists(), (done.stdout + done.stderr)[-3000:]
    finally:
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    want = fedsoft_run(tmp_path / "fedsoft", SMALL)
    got = records(out)
    assert (got["metrics"], got["clients"], got["summary"]) == (want["metrics"], want["clients"], want["summary"])
    assert got["adapter"] == want["adapter"]
