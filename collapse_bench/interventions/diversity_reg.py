"""Representation-diversity regularisation (VICReg variance + covariance terms) on chosen layers.

For each chosen decoder block, Z (n x d) = its output states of the batch's non-padding tokens, scaled
by their detached root-mean-square (so the term is scale-free), column-centred Z~:
  v(Z) = (1/d) sum_j max(0, gamma - sqrt(Var(z_j) + eps))          (collapsed dimensions pushed up)
  c(Z) = (1/d) sum_{i != j} C_ij^2,  C = Z~^T Z~ / (n - 1)          (correlated dimensions pushed apart)
  penalty = coefficient * mean over chosen layers of (v + c).
Layers are given as fractions of depth (block index floor(f * (L - 1) + 1/2)). Only the policy's forward with
gradients counts (a DPO reference forward under no_grad is ignored).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..probe.hooks import decoder_layers
from .base import Intervention, StageContext, params_schema


def vicreg_terms(Z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance term, covariance term) of the rows of ``Z`` after RMS scaling (formula above)."""
    Z = Z.float()
    Z = Z / Z.pow(2).mean().sqrt().detach().clamp_min(1e-12)
    Zc = Z - Z.mean(0, keepdim=True)
    n, d = Zc.shape
    var = Zc.pow(2).sum(0) / max(n - 1, 1)
    v = torch.relu(gamma - torch.sqrt(var + eps)).mean()
    C = Zc.T @ Zc / max(n - 1, 1)
    c = (C.pow(2).sum() - torch.diagonal(C).pow(2).sum()) / d
    return v, c


class DiversityRegularisation(Intervention):
    name = "diversity_reg"
    PARAMS_SCHEMA = params_schema(
        coefficient={"type": "number", "minimum": 0},
        layers={"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0, "maximum": 1}},
        gamma={"type": "number", "exclusiveMinimum": 0},
        epsilon={"type": "number", "exclusiveMinimum": 0},
    )

    def attach(self, model: torch.nn.Module, ctx: StageContext) -> None:
        layers = decoder_layers(model) or []
        n = len(layers)
        picks = sorted({min(n - 1, max(0, math.floor(f * (n - 1) + 0.5))) for f in self.params["layers"]})
        self._captured: list[torch.Tensor] = []
        self._handles = [layers[i].register_forward_hook(self._hook) for i in picks]
        self._report = {"layers": picks, "penalty_mean": 0.0, "steps": 0}

    def _hook(self, _module: Any, _inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self._captured.append(output[0] if isinstance(output, tuple) else output)

    def penalty(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        captured, self._captured = self._captured, []
        if not captured:
            return None
        terms = []
        for h in captured:
            mask = inputs.get("attention_mask")
            mask = (
                mask.bool()
                if mask is not None and mask.shape == h.shape[:2]
                else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            )
            v, c = vicreg_terms(h[mask], self.params["gamma"], self.params["epsilon"])
            terms.append(v + c)
        value = float(self.params["coefficient"]) * torch.stack(terms).mean()
        steps = self._report["steps"]
        self._report["penalty_mean"] = (self._report["penalty_mean"] * steps + float(value.detach())) / (steps + 1)
        self._report["steps"] = steps + 1
        return value

    def detach(self) -> None:
        for h in getattr(self, "_handles", []):
            h.remove()
        self._handles, self._captured = [], []
