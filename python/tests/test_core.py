"""The core's laws seen from Python: exact budgets, SOFT's allocation against the Rust tests' golden file,
error feedback's identity, aggregation and covariance against numpy, the wire format, partitions."""

import json

import numpy as np
import pytest
from conftest import ROOT, random_factors

import fedsoft



def dense(f):
    return {n: (np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)) for n, b, a in f.to_arrays()}


def test_factors_round_trip_keeps_layout(shapes):
    f = random_factors(shapes, 1)
    back = fedsoft.factors(f.to_arrays())
    assert back == f and f.numel == sum(s.r * (s.d + s.k) for s in shapes)
    flat = f.flat()
    name, b, a = f.to_arrays()[0]
    np.testing.assert_array_equal(flat[: b.size], b.ravel())
    np.testing.assert_array_equal(flat[b.size : b.size + a.size], a.ravel())


def test_the_namespace_is_the_public_api():
    public = [n for n in dir(fedsoft) if not n.startswith("_")]
    assert "np" not in public and "json" not in public and "Any" not in public and "Mapping" not in public
    assert set(fedsoft.__all__) <= set(public)
    assert set(public) - set(fedsoft.__all__) <= {"flower", "peft"}


def test_every_public_function_class_and_method_has_a_docstring():
    missing = []
    for name in fedsoft.__all__:
        obj = getattr(fedsoft, name)
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member) and not (member.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, f"no docstring: {missing}"


@pytest.mark.parametrize("bad", ["1-D", "3-D"])
def test_a_factor_of_the_wrong_shape_is_a_value_error_naming_module_and_factor(bad):
    b = {"1-D": np.zeros(12), "3-D": np.zeros((12, 4, 1))}[bad]
    with pytest.raises(ValueError, match=r'module "q": lora_B must be a 2-D float32 array \(d x r\)'):
        fedsoft.factors({"q": (b, np.zeros((4, 10)))})
    with pytest.raises(ValueError, match=r'module "k": lora_A must be a 2-D float32 array \(r x k\), got'):
        fedsoft.LoraFactors.from_arrays([("k", np.zeros((12, 4), np.float32), np.zeros(10, np.float32))])


def test_a_factor_that_is_not_numbers_is_a_value_error_naming_module_and_factor():
    with pytest.raises(ValueError, match=r'module "q": lora_B cannot be read as float32 numbers'):
        fedsoft.factors({"q": ([["x"]], np.zeros((1, 10)))})


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_factors_are_refused_naming_the_entry(value):
    a = np.zeros((4, 10))
    a[2, 7] = value
    with pytest.raises(ValueError, match=r'module "v": lora_A\[2, 7\] is (NaN|inf|-inf); factors must be finite'):
        fedsoft.factors({"q": (np.zeros((12, 4)), np.zeros((4, 10))), "v": (np.zeros((12, 4)), a)})


def test_mismatched_ranks_name_the_module():
    with pytest.raises(ValueError, match="q.*ranks"):
        fedsoft.factors({"q": (np.zeros((4, 3)), np.zeros((2, 5)))})


@pytest.mark.parametrize("method", fedsoft.methods())
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.75, 0.9, 0.99])
def test_every_method_sends_exactly_its_budget(shapes, method, rho):
    local = random_factors(shapes, 2)
    update = local.sub(random_factors(shapes, 3, 0.1))
    sent = fedsoft.sparsify(method, update, local, rho, seed=7, round=3, client=5)
    assert sent.nnz == fedsoft.upload_budget(method, shapes, rho)
    for (idx, val), (name, b, a) in zip(sent.modules(), update.to_arrays()):
        assert np.all(np.diff(idx.astype(np.int64)) > 0)
        np.testing.assert_array_equal(val, np.concatenate([b.ravel(), a.ravel()])[idx])


def test_random_masks_are_keyed_by_seed_round_and_client(shapes):
    f = random_factors(shapes, 4)
    draw = lambda **k: fedsoft.sparsify("rlora", f, f, 0.8, **k).modules()[0][0]
    same = draw(seed=1, round=2, client=3)
    np.testing.assert_array_equal(same, draw(seed=1, round=2, client=3))
    assert not np.array_equal(same, draw(seed=1, round=2, client=4))


def test_flasc_is_the_global_top_k_by_magnitude(shapes):
    f = random_factors(shapes, 5)
    sent = fedsoft.sparsify("flasc", f, f, 0.7, seed=0, round=0, client=0)
    flat = np.abs(f.flat())
    chosen = np.concatenate([idx.astype(np.int64) + off for (idx, _), off in
                             zip(sent.modules(), np.cumsum([0] + [s.numel for s in shapes[:-1]]))])
    k = sent.nnz
    assert np.min(flat[chosen]) >= np.sort(flat)[-k]


def test_soft_allocation_matches_the_rust_golden_file():
    golden = json.loads((ROOT / "crates/fedsoft-core/tests/data/allocation_golden.json").read_text())
    assert len(golden["cases"]) > 300
    for c in golden["cases"]:
        assert fedsoft.allocate_budget(c["scores"], c["budget"], c["cap"]) == c["expected"]


def test_soft_keeps_the_largest_entries_inside_each_rank(shapes):
    local = random_factors(shapes, 6)
    sent = fedsoft.sparsify("soft", local, local, 0.75, seed=0, round=0, client=0)
    for m, ((idx, _), s) in enumerate(zip(sent.modules(), shapes)):
        b, a = dense(local)[s.name]
        comp = np.concatenate([np.repeat(np.arange(s.r)[None, :], s.d, 0).ravel(), np.repeat(np.arange(s.r), s.k)])
        values = np.abs(np.concatenate([b.ravel(), a.ravel()]))
        counts = np.bincount(comp[idx], minlength=s.r)
        scores = local.rank_scores(m)
        budget = fedsoft.upload_budget("soft", [s], 0.75)
        assert list(counts) == fedsoft.allocate_budget(scores, budget, s.d + s.k)
        for j in range(s.r):
            mine = values[comp == j]
            kept = values[idx[comp[idx] == j]]
            if len(kept):
                assert kept.min() >= np.sort(mine)[-len(kept)]


def test_error_feedback_loses_nothing(shapes):
    local, global_ = random_factors(shapes, 7), random_factors(shapes, 8)
    memory = random_factors(shapes, 9, 0.01)
    u = fedsoft.compensate(local, global_, memory)
    sent = fedsoft.sparsify("soft", u, local, 0.9, seed=0, round=0, client=0)
    rest = fedsoft.residual(u, sent)
    assert sent.to_dense(u).add_scaled(rest, 1.0) == u
    comp = fedsoft.Compressor("soft", seed=0)
    first = comp.compress(global_, local, 0.9, round=0, client=0)
    assert first == fedsoft.sparsify("soft", local.sub(global_), local, 0.9, seed=0, round=0, client=0)
    assert comp.memory is not None and comp.memory.numel == u.numel


def test_aggregation_matches_numpy(shapes):
    g = random_factors(shapes, 10)
    clients = [random_factors(shapes, 11 + i, 0.1) for i in range(3)]
    ups = [fedsoft.sparsify("flasc", c, c, 0.5, seed=0, round=0, client=i) for i, c in enumerate(clients)]
    w = fedsoft.aggregation_weights([10, 30, 60])
    assert w == pytest.approx([0.1, 0.3, 0.6])
    out = dense(fedsoft.apply_deltas(g, ups, w))
    expect = dense(g)
    for u, wi in zip(ups, w):
        for name, (b, a) in dense(u.to_dense(g)).items():
            expect[name] = (expect[name][0] + wi * b, expect[name][1] + wi * a)
    for name in out:
        np.testing.assert_allclose(out[name][0], expect[name][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[name][1], expect[name][1], rtol=1e-5, atol=1e-6)


def test_dense_arrays_move_to_their_weighted_average_in_place_of_shape():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    locals_ = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    locals_[1] = np.asfortranarray(locals_[1])  # any layout is read in logical order
    w = [0.2, 0.3, 0.5]
    out = fedsoft.move_toward_average(g, locals_, w)
    assert out.shape == g.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, sum(wi * l for wi, l in zip(w, locals_)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"local 0 has shape \[3, 4\]"):
        fedsoft.move_toward_average(g, [locals_[0].T.copy()], [1.0])


def test_covariance_matches_its_definition(shapes):
    states = [random_factors(shapes, 20 + i) for i in range(4)]
    w = [0.1, 0.2, 0.3, 0.4]
    sq = 0.0
    for s in shapes:
        ds = [dense(x)[s.name] for x in states]
        prod = sum(wi * b @ a for wi, (b, a) in zip(w, ds))
        bbar = sum(wi * b for wi, (b, _) in zip(w, ds))
        abar = sum(wi * a for wi, (_, a) in zip(w, ds))
        sq += np.sum((prod - bbar @ abar) ** 2)
    assert fedsoft.covariance_norm(states, w) == pytest.approx(np.sqrt(sq), rel=1e-6)
    assert fedsoft.covariance_norm([states[0]] * 3, [1, 1, 1]) == pytest.approx(0.0, abs=1e-9)


def test_orthogonality_gradient_is_the_penalty_derivative(shapes):
    f = random_factors(shapes[:1], 30, 0.5)
    grad = dense(f.orthogonality_gradient())["q"][0]
    name, b, a = f.to_arrays()[0]
    h = 1e-3
    for i, j in [(0, 0), (3, 2), (11, 1)]:
        up, down = b.copy(), b.copy()
        up[i, j] += h
        down[i, j] -= h
        fd = (fedsoft.factors({"q": (up, a)}).orthogonality_penalty()
              - fedsoft.factors({"q": (down, a)}).orthogonality_penalty()) / (2 * h)
        assert fd == pytest.approx(grad[i, j], rel=2e-3, abs=2e-3)


def test_wire_format_round_trips_and_refuses_damage(shapes):
    f = random_factors(shapes, 40)
    sent = fedsoft.sparsify("soft", f, f, 0.8, seed=0, round=0, client=0)
    data = sent.encode(5, 9, shapes)
    assert len(data) == sent.encoded_len(shapes)
    assert fedsoft.SparseUpdate.decode(data, shapes) == (5, 9, sent)
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(ValueError):
        fedsoft.SparseUpdate.decode(bytes(broken), shapes)
    with pytest.raises(ValueError):
        fedsoft.SparseUpdate.decode(data, shapes[:2])


def test_paper_bits():
    assert fedsoft.paper_bits(100, 1000) == 3200
    assert fedsoft.paper_bits(100, 1000, value_bits=16, index_overhead=True) == 100 * (16 + 10)


@pytest.mark.parametrize("scheme,params", [("iid", {}), ("shards", {"shards_per_client": 2}),
                                            ("dirichlet", {"alpha": 0.5, "min_size": 5})])
def test_partitions_cover_every_sample_once_and_follow_the_seed(scheme, params):
    labels = np.arange(600) % 10
    parts = fedsoft.partition(labels, 10, 20, scheme, 3, **params)
    assert len(parts) == 20
    assert sorted(np.concatenate(parts).tolist()) == list(range(600))
    again = fedsoft.partition(labels, 10, 20, scheme, 3, **params)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again))


def test_bad_inputs_are_value_errors_naming_the_problem(shapes):
    f = random_factors(shapes, 50)
    with pytest.raises(ValueError, match="topk"):
        fedsoft.sparsify("topk", f, f, 0.5, seed=0, round=0, client=0)
    with pytest.raises(ValueError, match="rho|ratio"):
        fedsoft.sparsify("soft", f, f, 1.5, seed=0, round=0, client=0)
    with pytest.raises(ValueError, match="flasc_scope|unknown field"):
        fedsoft.sparsify("flasc", f, f, 0.5, seed=0, round=0, client=0, flasc_scop="global")
    with pytest.raises(ValueError, match="per_round"):
        fedsoft.sample_clients(0, 0, 5, 6)
