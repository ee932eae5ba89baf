"""LoRA-update decorrelation (O-LoRA style): keep this stage's LoRA subspaces away from earlier stages'.

For every adapted module m with current factors A_t (r x in), B_t (out x r) and the frozen factors
A_i, B_i of each earlier stage i (loaded from its saved adapter):
  L_orth = mean_m sum_i ( sum_jk |(A_i A_t^T)_jk| + sum_jk |(B_i^T B_t)_jk| )
  penalty = coefficient * L_orth
The A term is O-LoRA's (Wang et al. 2023, lambda_1 = 0.5); the B term extends it to the column space,
which is the subspace ``overlap_prev`` measures (left singular vectors of Delta W = B A).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CollapseBenchError
from .base import Intervention, StageContext


def module_key(name: str) -> str:
    """Canonical module path of a LoRA parameter/module name (PEFT prefixes and adapter names dropped)."""
    name = name.removeprefix("base_model.model.")
    for suffix in (".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight"):
        name = name.removesuffix(suffix)
    return name


def load_lora_factors(adapter_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)} from a saved PEFT adapter (adapter_model.safetensors)."""
    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise CollapseBenchError(f"earlier stage adapter missing: {path}")
    tensors = load_file(str(path))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if ".lora_A." in key or ".lora_B." in key:
            factors.setdefault(module_key(key), {})["A" if ".lora_A." in key else "B"] = value.float()
    return {k: (v["A"], v["B"]) for k, v in factors.items() if "A" in v and "B" in v}


def current_factors(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            out[module_key(name)] = (module.lora_A["default"].weight, module.lora_B["default"].weight)
    return out


def orthogonality_loss(current: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       previous: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> torch.Tensor | None:
    """L_orth of the module docstring (None when there is nothing to compare with)."""
    terms = []
    for key, (A_t, B_t) in current.items():
        per_module = [(A_i.to(A_t) @ A_t.T).abs().sum() + (B_i.to(B_t).T @ B_t).abs().sum()
                      for prev in previous if key in prev for A_i, B_i in [prev[key]]]
        if per_module:
            terms.append(torch.stack(per_module).sum())
    return torch.stack(terms).mean() if terms else None


class LoraDecorrelation(Intervention):
    name = "lora_decorrelation"

    def attach(self, model: torch.nn.Module, ctx: StageContext) -> None:
        self._previous = [load_lora_factors(p) for p in ctx.previous_adapters]
        self._current = current_factors(model)
        self._report = {"previous_adapters": len(self._previous), "penalty_mean": 0.0, "steps": 0}

    def penalty(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        loss = orthogonality_loss(self._current, self._previous)
        if loss is None:
            return None
        value = float(self.params.get("coefficient", 0.5)) * loss
        steps = self._report["steps"]
        self._report["penalty_mean"] = (self._report["penalty_mean"] * steps + float(value.detach())) / (steps + 1)
        self._report["steps"] = steps + 1
        return value

    def detach(self) -> None:
        self._previous, self._current = [], {}
