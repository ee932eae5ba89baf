"""Locating decoder blocks and MLP down-projections across common HF architectures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_DOWN_NAMES = ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2")


def decoder_layers(model: Any) -> list[torch.nn.Module] | None:
    """The list of decoder blocks (Llama/Gemma/Qwen/Mistral ``model.layers``, GPT-2 ``transformer.h`` ...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for attr in ("layers", "h", "blocks"):
        layers = getattr(decoder, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return list(layers)
    return None


def mlp_down_projection(block: torch.nn.Module) -> torch.nn.Module | None:
    """The MLP's output projection; its input is the (post-activation) intermediate activation."""
    mlp = getattr(block, "mlp", None) or getattr(block, "feed_forward", None)
    if mlp is None:
        return None
    for name in _DOWN_NAMES:
        module = getattr(mlp, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


@contextmanager
def capture_mlp_inputs(model: Any) -> Iterator[list[torch.Tensor] | None]:
    """Record the input of every block's MLP down-projection during a forward pass (None if unsupported)."""
    layers = decoder_layers(model)
    downs = [mlp_down_projection(b) for b in layers] if layers else []
    modules = [d for d in downs if d is not None]
    if not downs or len(modules) < len(downs):
        yield None
        return
    captured: list[torch.Tensor] = []
    handles = [d.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for d in modules]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
