"""LoRA factors of a PEFT (or any torch) model in and out of :class:`fedsoft.LoraFactors`, and SOFT's
orthogonality regulariser as a torch loss term whose value and gradient come from the Rust core.

A LoRA layer is any module with ``lora_A[adapter]`` and ``lora_B[adapter]`` linear children, as PEFT builds
them; its fedsoft module name is its path in ``model.named_modules()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import LoraFactors, factors

try:
    import torch
except ImportError as e:  # pragma: no cover - a clear message when the extra is missing
    raise ImportError("fedsoft.peft needs torch: pip install 'fedsoft[torch]'") from e


def lora_layers(model: torch.nn.Module, adapter: str = "default") -> list[tuple[str, Any, Any]]:
    """``(name, lora_B.weight, lora_A.weight)`` of every LoRA layer, in module order."""
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and adapter in lora_a and adapter in lora_b:
            out.append((name, lora_b[adapter].weight, lora_a[adapter].weight))
    if not out:
        raise ValueError(f"the model has no LoRA layers with adapter {adapter!r}")
    return out


def module_dims(model: torch.nn.Module, adapter: str = "default") -> list[tuple[str, int, int]]:
    """``(name, d, k)`` of every LoRA layer: ``B`` is ``d x r`` and ``A`` is ``r x k``."""
    return [(n, b.shape[0], a.shape[1]) for n, b, a in lora_layers(model, adapter)]


def get_factors(model: torch.nn.Module, adapter: str = "default") -> LoraFactors:
    """The model's LoRA factors, copied to the CPU as float32."""
    return factors(
        [(n, b.detach().float().cpu().numpy(), a.detach().float().cpu().numpy())
         for n, b, a in lora_layers(model, adapter)]
    )


def set_factors(model: torch.nn.Module, values: LoraFactors, adapter: str = "default") -> None:
    """Writes ``values`` into the model's LoRA factors (same modules, same order, same shapes)."""
    layers = lora_layers(model, adapter)
    arrays = values.to_arrays()
    if [n for n, _, _ in layers] != [n for n, _, _ in arrays]:
        raise ValueError(
            f"modules differ: the model has {[n for n, _, _ in layers]}, the factors {[n for n, _, _ in arrays]}"
        )
    with torch.no_grad():
        for (name, b, a), (_, vb, va) in zip(layers, arrays):
            if tuple(b.shape) != vb.shape or tuple(a.shape) != va.shape:
                raise ValueError(f"{name}: model B{tuple(b.shape)} A{tuple(a.shape)}, factors B{vb.shape} A{va.shape}")
            b.copy_(torch.from_numpy(vb))
            a.copy_(torch.from_numpy(va))


class _Orthogonality(torch.autograd.Function):
    """Value and gradient of the regulariser from the Rust core (one implementation for every framework)."""

    @staticmethod
    def forward(ctx: Any, names: list[str], *tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pairs = list(zip(tensors[0::2], tensors[1::2]))
        state = factors([(n, b.detach().float().cpu().numpy(), a.detach().float().cpu().numpy())
                         for n, (b, a) in zip(names, pairs)])
        grads = state.orthogonality_gradient().to_arrays()
        ctx.grads = [torch.from_numpy(np.asarray(g)) for _, gb, ga in grads for g in (gb, ga)]
        ctx.devices = [(t.device, t.dtype) for t in tensors]
        return torch.tensor(state.orthogonality_penalty(), dtype=tensors[0].dtype, device=tensors[0].device)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        scale = grad_out.detach()
        return (None, *[g.to(device=d, dtype=t) * scale for g, (d, t) in zip(ctx.grads, ctx.devices)])


def orthogonality_penalty(model: torch.nn.Module, adapter: str = "default") -> torch.Tensor:
    """the paper's Eq. (7) without its weight, differentiable: add ``lambda * orthogonality_penalty(model)`` to the
    loss to train SOFT's factors (``fedsoft.default_orthogonality_weight("soft")`` is the engine's lambda)."""
    layers = lora_layers(model, adapter)
    names = [n for n, _, _ in layers]
    tensors = [t for _, b, a in layers for t in (b, a)]
    return _Orthogonality.apply(names, *tensors)
