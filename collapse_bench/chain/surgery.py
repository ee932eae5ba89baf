"""Planted-collapse controls: weight-surgery stage kinds whose effect on the representation is known.

* ``svd_truncate`` (dose ``rank``: integers or ``full``): every block's MLP down-projection W (d × I) is
  replaced by its best rank-r approximation U_r Σ_r V_rᵀ (Eckart–Young; float64 SVD, stored back in the
  model's dtype) — a known loss of representational rank; ``full`` keeps W.
* ``extrapolate`` (dose ``alpha``): θ = θ_base + α (θ_parent − θ_base) for every floating-point tensor (tied
  tensors once),
  θ_base = the chain's base checkpoint — α = 0 gives the base, 1 the parent, > 1 "more of the same
  post-training".
* ``permute`` (dose ``perm_seed``): a seeded permutation π of each block's MLP units — rows of gate/up
  projections and columns of the down projection — a function-preserving negative control: every
  probe metric equals the unpermuted model's up to float rounding, weight-space metrics are invariant.
A surgery stage trains nothing; with several doses it is a ladder: one sibling checkpoint per dose, each
with the incoming checkpoint as parent (it must be the recipe's last stage).
"""

from __future__ import annotations

from typing import Any

import torch


def dose_label(kind: str, dose: Any) -> str:
    """Directory / lineage suffix of one rung: ``r64``, ``rfull``, ``a2``, ``a0.5``, ``p0``."""
    return {"svd_truncate": "r", "extrapolate": "a", "permute": "p"}[kind] + str(dose)


def mlp_blocks(model: Any) -> list[Any]:
    """Every decoder block's MLP module with gate/up/down projections (Llama / Gemma naming)."""
    blocks = [m for m in model.modules() if all(hasattr(m, k) for k in ("gate_proj", "up_proj", "down_proj"))]
    if not blocks:
        raise ValueError("no MLP with gate_proj / up_proj / down_proj found (Llama- or Gemma-style models only)")
    return blocks


@torch.no_grad()
def svd_truncate(model: Any, rank: int | str) -> dict[str, Any]:
    """In place; returns the relative Frobenius error ‖W − W_r‖ / ‖W‖ per block."""
    errors = []
    for mlp in mlp_blocks(model):
        w = mlp.down_proj.weight
        if rank == "full" or int(rank) >= min(w.shape):
            errors.append(0.0)
            continue
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        r = int(rank)
        approx = (u[:, :r] * s[:r]) @ vh[:r]
        errors.append(float(torch.linalg.norm(w.double() - approx) / torch.linalg.norm(w.double())))
        w.copy_(approx.to(w.dtype))
    return {"rank": rank, "relative_error": errors}


@torch.no_grad()
def extrapolate(model: Any, base: Any, alpha: float) -> dict[str, Any]:
    """In place on ``model`` (the parent): θ ← θ_base + α (θ − θ_base); returns ‖Δθ‖ before/after."""
    base_params = dict(base.state_dict())
    before = after = 0.0
    seen: set[int] = set()  # tied tensors (embeddings = LM head) appear under two names: update once
    for name, p in model.state_dict().items():
        if not p.is_floating_point() or name not in base_params or p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        p0 = base_params[name].to(p)
        delta = p.double() - p0.double()
        before += float((delta**2).sum())
        p.copy_((p0.double() + alpha * delta).to(p.dtype))
        after += float(((p.double() - p0.double()) ** 2).sum())
    return {"alpha": alpha, "delta_norm_parent": before**0.5, "delta_norm": after**0.5}


@torch.no_grad()
def permute(model: Any, seed: int) -> dict[str, Any]:
    """In place: seeded permutation of every block's MLP units (function-preserving)."""
    gen = torch.Generator().manual_seed(seed)
    moved = []
    for mlp in mlp_blocks(model):
        n = mlp.gate_proj.weight.shape[0]
        perm = torch.randperm(n, generator=gen)
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight.copy_(lin.weight[perm])
            if lin.bias is not None:
                lin.bias.copy_(lin.bias[perm])
        mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, perm])
        moved.append(int((perm != torch.arange(n)).sum()))
    return {"seed": seed, "units_moved": moved}


def leaves_weights(control: dict[str, Any]) -> bool:
    """Whether a rung's surgery (its ``stage.json`` control report) left the incoming weights as they were: SVD at
    full rank (every block's error 0) or extrapolation at α = 1. Such a rung has no weight update, so the chain
    evaluates it without the ``lora`` task (which refuses identical weights)."""
    if control.get("kind") == "svd_truncate":
        return all(e == 0.0 for e in control.get("relative_error", [1.0]))
    return control.get("kind") == "extrapolate" and float(control.get("alpha", control.get("dose", 0))) == 1.0


def apply(kind: str, dose: Any, model: Any, base: Any | None = None) -> dict[str, Any]:
    """Run one surgery on ``model`` in place; returns its report for ``stage.json``."""
    if kind == "svd_truncate":
        return svd_truncate(model, dose)
    if kind == "extrapolate":
        assert base is not None  # the runner loads the chain's base for extrapolate
        return extrapolate(model, base, float(dose))
    return permute(model, int(dose))
