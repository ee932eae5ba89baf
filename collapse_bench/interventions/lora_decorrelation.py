"""LoRA-update decorrelation (O-LoRA style): keep this stage's LoRA subspaces away from earlier stages'.

For every adapted module m with current factors A_t (r x in), B_t (out x r), and for each earlier stage i the
orthonormal bases Q_i of col(B_i) and P_i of row(A_i) (from its saved adapter; ``lora.geometry.subspace``:
singular values > 1e-6 s_max):
  L_orth = mean_m sum_i ( ||Q_i^T B_t||_F^2 / (||B_t||_F^2 + eps) + ||A_t P_i||_F^2 / (||A_t||_F^2 + eps) )
  penalty = coefficient * L_orth                                                   (eps = 1e-12)
Each term is the share of the current factor's energy inside an earlier stage's subspace (0 = orthogonal,
1 = inside): the B term is the column space that ``overlap_prev`` measures (left singular vectors of
Delta W = B A), the A term the input space (``overlap_prev_input``). O-LoRA (Wang et al. 2023) penalises
sum |A_i A_t^T| (L1) instead; with Adam and B_t starting at 0, that non-smooth form's sign-flipping
subgradient (which lies inside span(B_i)) pushed the update *into* the earlier subspace on the tiny model
(overlap 0.16 -> 0.24), so the smooth, scale-free energy share is used.
"""

from __future__ import annotations

import torch

from ..lora.geometry import subspace, thin_svd
from ..lora.updates import read_adapter
from .base import Intervention, StageContext, params_schema


def current_factors(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A_t, B_t)} of the model's trainable LoRA, keyed like ``read_adapter`` (PEFT's prefix dropped)."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = (module.lora_A["default"].weight, module.lora_B["default"].weight)
    return out


def previous_bases(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (P_i, Q_i)}: bases of row(A_i) and col(B_i) of one earlier stage's adapter (``read_adapter`` factors)."""
    return {
        k: (subspace(thin_svd(A, complete=False))[1].float(), subspace(thin_svd(B, complete=False))[0].float())
        for k, (A, B) in factors.items()
    }


def energy_share(X: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """||basis^T X||_F^2 / (||X||_F^2 + eps): the share of X's column energy inside span(basis)."""
    return (basis.T.to(X) @ X).pow(2).sum() / (X.pow(2).sum() + 1e-12)


def orthogonality_loss(
    current: dict[str, tuple[torch.Tensor, torch.Tensor]], previous: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]
) -> torch.Tensor | None:
    """L_orth of the module docstring (None when there is nothing to compare with); ``previous`` holds
    ``previous_bases`` of each earlier stage."""
    terms = []
    for key, (A_t, B_t) in current.items():
        per_module = [
            energy_share(A_t.T, P_i) + energy_share(B_t, Q_i) for prev in previous if key in prev for P_i, Q_i in [prev[key]]
        ]
        if per_module:
            terms.append(torch.stack(per_module).sum())
    return torch.stack(terms).mean() if terms else None


class LoraDecorrelation(Intervention):
    name = "lora_decorrelation"
    needs_lora = True
    PARAMS_SCHEMA = params_schema(coefficient={"type": "number", "minimum": 0})

    def attach(self, model: torch.nn.Module, ctx: StageContext) -> None:
        self._previous = [previous_bases(read_adapter(p).factors) for p in ctx.previous_adapters]
        self._current = current_factors(model)
        self._report = {"previous_adapters": len(self._previous), "penalty_mean": 0.0, "steps": 0}

    def penalty(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        loss = orthogonality_loss(self._current, self._previous)
        if loss is None:
            return None
        value = float(self.params["coefficient"]) * loss
        steps = self._report["steps"]
        self._report["penalty_mean"] = (self._report["penalty_mean"] * steps + float(value.detach())) / (steps + 1)
        self._report["steps"] = steps + 1
        return value

    def detach(self) -> None:
        self._previous, self._current = [], {}
