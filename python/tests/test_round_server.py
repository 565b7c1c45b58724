"""The Flower strategy's server half is the engine's (`fedsoft.RoundServer`, the Rust `Server` that `fedsoft
run` drives): it refuses bad uploads with the engine's reasons, books the ledger over the uploads kept after
the simulated outage, takes the round's training loss as the plain mean, and aggregates each factor with the
clients' reported sample counts as weights. `fedsoft/flower.py` itself holds no arithmetic of the round."""

import ast
from pathlib import Path

import numpy as np
import pytest

import fedsoft

MODULES = [("q", 16, 12), ("v", 16, 12)]
HEAD = [("classifier.weight", np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)),
        ("classifier.bias", np.zeros(3, np.float32))]


def server(**kw):
    args = dict(controller="fixed", rank=4, rho=0.75, channel='{"mean_snr_db": 10.0}')
    args.update(kw)
    s = fedsoft.RoundServer(MODULES, 6, 3, 7, fedsoft.Uplink(), **args)
    s.begin(s.initial_factors(), HEAD, 5)
    return s


def local_model(global_, client):
    """The global factors moved by a client's own (seeded) amount, as if trained."""
    noise = fedsoft.LoraFactors.random(global_.shapes, 100 + client, 0.05)
    return global_.add_scaled(noise, 1.0)


def reply(s, opened, client, *, rho=None, round_=None, samples=10, loss=1.0, head=None):
    global_, _ = s.global_model()
    sent = fedsoft.Compressor("soft", seed=7).compress(
        global_, local_model(global_, client), opened["rho"] if rho is None else rho,
        round=opened["round"], client=client,
    )
    data = sent.encode(opened["round"] if round_ is None else round_, client, s.shapes)
    dense = head if head is not None else [(n, a + 0.1 * (client + 1)) for n, a in HEAD]
    return (client, data, samples, loss, dense), sent


def test_bad_uploads_are_refused_with_the_engines_reasons():
    s = server()
    opened = s.open_round(0)
    a, b, c = opened["clients"]
    replies = [
        reply(s, opened, a, rho=0.5)[0],  # more entries than the round's ratio allows
        reply(s, opened, b, round_=3)[0],  # for another round
        reply(s, opened, c, samples=0)[0],  # no sample count to weigh it by
    ]
    metrics = s.close_round(replies, [])
    reasons = {r["client"]: r["reason"] for r in s.client_records()}
    assert reasons[a].startswith("over budget:") and f"allows {opened['budget']}" in reasons[a]
    assert reasons[b] == "stale upload: round 3 while the server is in round 0"
    assert reasons[c].startswith("no positive sample count reported (num-examples)")
    assert metrics["refused"] == 3 and metrics["kept_entries"] == 0 and metrics["ledger_uploads"] == 0
    # Nothing reached the model.
    np.testing.assert_array_equal(s.global_model()[0].flat(), s.initial_factors().flat())


def test_bad_dense_arrays_and_missing_replies_are_refused():
    s = server()
    opened = s.open_round(0)
    a, b, c = opened["clients"]
    wrong_shape = [(n, np.zeros(a_.size, np.float32)) for n, a_ in HEAD]
    nan_head = [(n, np.full(a_.shape, np.nan, np.float32)) for n, a_ in HEAD]
    metrics = s.close_round([reply(s, opened, a, head=wrong_shape)[0], reply(s, opened, b, head=nan_head)[0]],
                            [(c, "client error: out of memory")])
    reasons = {r["client"]: r["reason"] for r in s.client_records()}
    assert reasons[a] == "dense array \"classifier.weight\" has shape [6], expected [3, 2]"
    assert reasons[b] == "non-finite values in the head"
    assert reasons[c] == "client error: out of memory"
    assert metrics["refused"] == 3
    # A scheduled client with neither a reply nor a failure sent nothing.
    opened = s.open_round(1)
    s.close_round([], [])
    assert {r["reason"] for r in s.client_records()} == {"no reply"}


def test_the_ledger_counts_only_uploads_kept_after_the_outage_and_the_loss_is_a_plain_mean():
    s = server(outage_delay_s=1e-9)  # every upload is lost to the simulated outage
    opened = s.open_round(0)
    replies = [reply(s, opened, c, loss=float(i + 1), samples=10 * (i + 1))[0]
               for i, c in enumerate(opened["clients"])]
    metrics = s.close_round(replies, [])
    assert metrics["dropped"] == 3 and metrics["refused"] == 0
    assert metrics["ledger_uploads"] == 0 and metrics["uplink_bits_paper"] == 0 and metrics["kept_entries"] == 0
    assert metrics["train_loss"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3, not weighted by samples
    assert all(r["reason"].startswith("simulated outage") for r in s.client_records())
    np.testing.assert_array_equal(s.global_model()[0].flat(), s.initial_factors().flat())


def test_the_aggregate_weighs_each_factor_by_the_reported_samples():
    s = server()
    start, dense0 = s.global_model()
    opened = s.open_round(0)
    samples = [5, 10, 25]
    made = [reply(s, opened, c, samples=n) for c, n in zip(opened["clients"], samples)]
    metrics = s.close_round([r for r, _ in made], [])
    assert metrics["refused"] == 0 and metrics["dropped"] == 0
    assert metrics["kept_entries"] == 3 * metrics["budget"] == sum(u.nnz for _, u in made)
    assert metrics["uplink_bits_paper"] == 32 * metrics["kept_entries"] == metrics["ledger_bits_paper"]
    w = fedsoft.aggregation_weights(samples)
    expected = fedsoft.apply_deltas(start, [u for _, u in made], w)
    lora, dense = s.global_model()
    np.testing.assert_array_equal(lora.flat(), expected.flat())
    for (name, global_), (name2, moved) in zip(dense0, dense):
        locals_ = [dict(r[4])[name] for r, _ in made]
        assert name == name2 and moved.shape == global_.shape
        np.testing.assert_allclose(moved, fedsoft.move_toward_average(global_.ravel(), [x.ravel() for x in locals_], w)
                                   .reshape(global_.shape), rtol=0, atol=0)


def test_a_client_that_was_not_scheduled_and_rounds_out_of_order_are_refused():
    s = server()
    opened = s.open_round(0)
    outsider = next(c for c in range(6) if c not in opened["clients"])
    with pytest.raises(ValueError, match=f"client {outsider} replied but was not scheduled in round 0"):
        s.close_round([reply(s, opened, outsider)[0]], [])
    with pytest.raises(ValueError, match="round 2 opened, but the server's next round is 0"):
        s.open_round(2)


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="method"):
        fedsoft.RoundServer(MODULES, 6, 3, 7, fedsoft.Uplink(), method="bogus")
    with pytest.raises(ValueError, match="per_round must be between 1 and num_clients"):
        fedsoft.RoundServer(MODULES, 6, 9, 7, fedsoft.Uplink())
    s = fedsoft.RoundServer(MODULES, 6, 3, 7, fedsoft.Uplink(), controller="fixed", rank=4)
    wrong = fedsoft.LoraFactors.init_gaussian([fedsoft.ModuleShape("q", 16, 12, 2)], 0)
    with pytest.raises(ValueError, match="are not the strategy's"):
        s.begin(wrong, HEAD, 3)


def test_flower_py_does_no_arithmetic_of_the_round():
    """The strategy's module calls none of the round's arithmetic and reduces no numbers itself: every sum,
    mean, bit count, budget, check and aggregate is the engine's."""
    source = (Path(fedsoft.__file__).parent / "flower.py").read_text()
    tree = ast.parse(source)
    called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
              for n in ast.walk(tree) if isinstance(n, ast.Call)}
    forbidden = {"sum", "mean", "isfinite", "paper_bits", "upload_budget", "aggregation_weights", "apply_deltas",
                 "average_sparse_models", "move_toward_average", "covariance_norm", "transmit", "plan_tsfa",
                 "start_round", "choose", "observe"}
    assert not called & forbidden, called & forbidden
