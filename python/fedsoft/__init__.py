"""fedsoft from Python: the sparsifiers, error feedback, aggregation, upload encoding, partitioners, the
wireless uplink and the TSFA planner of fedsoft's Rust core, on numpy arrays.

Every function calls the Rust crate function that ``fedsoft run`` calls, so results match the engine's for
the same inputs. LoRA factors follow PEFT's layout: ``B`` (``lora_B.weight``) is ``d x r`` and ``A``
(``lora_A.weight``) is ``r x k``; inside a module, entries are numbered ``B`` row-major, then ``A``.

Any fedsoft experiment runs on Flower with fedsoft's own server and client through :mod:`fedsoft.app` (a
ServerApp and a ClientApp; needs ``flwr``); :mod:`fedsoft.flower` is a strategy and client reply for your own
PyTorch models, over :class:`RoundServer` (the engine's server half of a round); :class:`Client` is the
engine's client half (a fedsoft config's model, data and trainer) on numpy arrays, for loops or Ray tasks of
your own; PEFT models are read and written by :mod:`fedsoft.peft` (needs ``torch``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _native
from ._native import (
    Cell as _Cell,
    Client,
    LoraFactors,
    ModuleShape,
    RatioController,
    RoundServer,
    SparseUpdate,
    TsfaPlan as _TsfaPlan,
    Uplink,
    aggregation_weights,
    allocate_budget,
    apply_deltas,
    average_dense,
    average_sparse_models,
    covariance_norm,
    default_error_feedback,
    default_orthogonality_weight,
    methods,
    move_toward_average,
    paper_bits,
    residual,
    sample_clients,
)

__version__: str = _native.__version__

__all__ = [
    "Cell",
    "Client",
    "Compressor",
    "LoraFactors",
    "ModuleShape",
    "RatioController",
    "RoundServer",
    "SparseUpdate",
    "TsfaPlan",
    "Uplink",
    "aggregation_weights",
    "allocate_budget",
    "apply_deltas",
    "average_dense",
    "average_sparse_models",
    "compensate",
    "covariance_norm",
    "default_error_feedback",
    "default_orthogonality_weight",
    "factors",
    "methods",
    "move_toward_average",
    "paper_bits",
    "partition",
    "plan_tsfa",
    "residual",
    "sample_clients",
    "sparsify",
    "upload_budget",
]


def __dir__() -> list[str]:
    """The public API only (``__all__``), not the modules this file imports for its own use."""
    return sorted([*__all__, "__version__", "flower", "peft"])


def _options(options: Mapping[str, Any]) -> str | None:
    return json.dumps(dict(options)) if options else None


def factors(modules: Mapping[str, tuple[Any, Any]] | Iterable[tuple[str, Any, Any]]) -> LoraFactors:
    """LoRA factors from ``{name: (B, A)}`` or ``[(name, B, A), ...]`` (numpy arrays or anything
    ``np.asarray`` takes, e.g. CPU torch tensors); copied as float32.

    ``B`` must be ``d x r`` and ``A`` ``r x k``, both finite: anything else is a ``ValueError`` naming the
    module and the factor."""
    items = (
        [(n, b, a) for n, (b, a) in modules.items()] if isinstance(modules, Mapping) else list(modules)
    )
    return LoraFactors.from_arrays(
        [(str(n), _float32(n, "lora_B", b), _float32(n, "lora_A", a)) for n, b, a in items]
    )


def _float32(module: object, factor: str, x: Any) -> np.ndarray:
    try:
        return np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f'module "{module}": {factor} cannot be read as float32 numbers ({e})') from e


def sparsify(
    method: str,
    update: LoraFactors,
    local: LoraFactors,
    rho: float,
    *,
    seed: int,
    round: int,
    client: int,
    **options: Any,
) -> SparseUpdate:
    """The entries ``method`` keeps from ``update`` at drop ratio ``rho``, with their values.

    ``method`` is one of :func:`methods` (``soft``, ``flasc``, ``rlora``, ``hetlora``, ``fedlodrop``,
    ``ilora``, ``svd``). ``local`` holds the client's trained factors, which SOFT and the exact selector
    score. Random masks come from the ``(seed, round, client)`` stream the engine uses. ``options`` are the
    engine's ``[method]`` switches: ``rounding``, ``soft_split``, ``flasc_scope``, ``fedlodrop_budget``.
    Every method keeps exactly :func:`upload_budget` entries.
    """
    return _native.sparsify(method, update, local, float(rho), seed, round, client, _options(options))


def upload_budget(method: str, shapes: Sequence[ModuleShape], rho: float, **options: Any) -> int:
    """The entries one upload of ``method`` carries at ``rho`` over modules of these shapes."""
    return _native.upload_budget(method, list(shapes), float(rho), _options(options))


def compensate(
    local: LoraFactors, global_: LoraFactors, memory: LoraFactors | None = None, mode: str = "delta"
) -> LoraFactors:
    """What a client compresses: ``(local - global) + memory`` (``mode="delta"``, docs/algorithms.md D1) or
    ``local + memory`` (``mode="model"``, the paper's wording)."""
    return _native.compensate(local, global_, memory, mode)


def partition(
    labels: Any, num_classes: int, num_clients: int, scheme: str = "iid", seed: int = 0, **params: Any
) -> list[np.ndarray]:
    """Each client's sample indices, as the engine splits a dataset.

    ``scheme``: ``"iid"``; ``"shards"`` with ``shards_per_client``; ``"dirichlet"`` with ``alpha`` and
    ``min_size``.
    """
    labels = np.ascontiguousarray(labels, dtype=np.uint32)
    spec = json.dumps({"kind": scheme, **params})
    return _native.partition_labels(labels, num_classes, num_clients, spec, seed)


def Cell(num_clients: int, bandwidth_hz: float = 1e6, seed: int = 0, **channel: Any) -> _Cell:  # noqa: N802
    """Clients placed in a cell, with their average full-band SNRs.

    ``channel`` takes the engine's ``[wireless.channel]`` keys: ``mean_snr_db`` (one SNR for every client,
    the paper's Fig. 3(c)), or ``cell_radius_m``, ``min_distance_m``, ``distances_m``, ``path_loss``,
    ``shadowing_db``, ``tx_power_dbm``, ``noise_psd_dbm_hz``, ``noise_figure_db``.
    """
    return _Cell(num_clients, float(bandwidth_hz), seed, _options(channel))


TsfaPlan = _TsfaPlan


def plan_tsfa(
    cell: _Cell,
    uplink: Uplink,
    params_per_rank: int,
    per_round: int,
    seed: int = 0,
    *,
    value_bits: int = 32,
    index_overhead: bool = False,
    **settings: Any,
) -> TsfaPlan:
    """TSFA's offline stage and calibrated online controller for a federation.

    ``params_per_rank`` is ``sum_l (d_l + k_l)`` over the adapted modules. ``settings`` are the engine's
    ``[tsfa]`` keys: ``latency_budget`` (seconds, or ``{"rank": 8, "rho": 0.75}``), ``rho_min``,
    ``rho_max``, ``candidate_ranks``, ``v_kappa``, ``v_wsp``, ``online`` (``"lyapunov"`` or ``"horizon"``)
    and ``bound``.
    """
    return _TsfaPlan(
        cell, uplink, params_per_rank, per_round, seed, json.dumps(settings), float(value_bits), index_overhead
    )


class Compressor:
    """One client's side of an upload: error feedback plus a sparsifier, as the engine runs it.

    ``compress`` takes the received global factors and the trained local ones and returns the sparse upload;
    what was not sent is remembered (``memory``) and added to the next update when error feedback is on
    (by default for SOFT, the exact selector and RLoRA, docs/algorithms.md D10).
    """

    def __init__(
        self,
        method: str = "soft",
        *,
        seed: int = 0,
        error_feedback: bool | None = None,
        mode: str = "delta",
        **options: Any,
    ) -> None:
        if method not in methods():
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(methods())}")
        self.method = method
        self.seed = seed
        self.error_feedback = default_error_feedback(method) if error_feedback is None else error_feedback
        self.mode = mode
        self.options = options
        self.memory: LoraFactors | None = None

    def compress(
        self, global_: LoraFactors, local: LoraFactors, rho: float, *, round: int, client: int
    ) -> SparseUpdate:
        """The upload of ``client`` in ``round`` at drop ratio ``rho``: the update ``local - global_`` (plus
        the memory, with error feedback) sparsified by this compressor's method to exactly
        :func:`upload_budget` entries; the memory keeps what was not sent."""
        sent, memory = _native.compress(
            self.method, local, global_, self.memory, float(rho), self.seed, round, client,
            self.error_feedback, self.mode, _options(self.options),
        )
        if self.error_feedback:
            self.memory = memory
        return sent
