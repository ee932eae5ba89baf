"""Feature refresh between stages, on the incoming merged model before stage k >= 2 is trained.

Default = both of
  (a) ReDo reset of dormant MLP units (Sokar et al. 2023): on ``calib_examples`` of the stage's own
      training texts, s_i = E|a_i| / mean_k E|a_k| of each block's MLP intermediate activation (the
      down-projection input, non-padding tokens; the probe's ``dormant_fraction`` score). Units with
      s_i <= tau (at most ``max_fraction`` of a layer's units, lowest scores first) get fresh incoming
      weights (rows of gate/up projections ~ N(0, initializer_range), seeded) and zero outgoing weights
      (their column of the down projection), so the function is unchanged at the reset and the unit can
      learn again;
  (b) shrink-and-perturb toward the chain's base model (Ash & Adams 2020, base-anchored as in
      "Rejuvenation"): theta <- theta_0 + shrink * (theta - theta_0) + noise_std * std(theta) * N(0, 1),
      for every floating-point weight; shrink = 1 and noise_std = 0 switch it off.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM

from ..probe.hooks import decoder_layers, mlp_down_projection
from .base import Intervention, StageContext, params_schema


def mlp_scores(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Per block, the ReDo score s_i of every MLP unit over the non-padding tokens of ``batches``."""
    downs = [mlp_down_projection(b) for b in decoder_layers(model) or []]
    sums: list[torch.Tensor | None] = [None] * len(downs)
    count = 0
    mask_holder: dict[str, torch.Tensor] = {}

    def make_hook(i: int):
        def hook(_m: Any, args: Any) -> None:
            a = args[0].detach().abs().float()[mask_holder["m"]]
            sums[i] = a.sum(0) if sums[i] is None else sums[i] + a.sum(0)

        return hook

    handles = [d.register_forward_pre_hook(make_hook(i)) for i, d in enumerate(downs) if d is not None]
    try:
        with torch.no_grad():
            for batch in batches:
                mask_holder["m"] = batch["attention_mask"].bool()
                count += int(mask_holder["m"].sum())
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    scores = []
    for s in sums:
        assert s is not None  # every block has a down projection and saw the batches
        mean = s / max(count, 1)
        scores.append(mean / mean.mean().clamp_min(1e-12))
    return scores


def redo_reset(model: torch.nn.Module, scores: list[torch.Tensor], tau: float, max_fraction: float, seed: int) -> list[int]:
    """Reset the dormant units in place (see module docstring); returns how many were reset per block."""
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    counts = []
    for block, s in zip(decoder_layers(model) or [], scores):
        mlp = block.mlp
        cap = int(max_fraction * s.numel())
        idx = torch.nonzero(s <= tau).squeeze(1)
        idx = idx[torch.argsort(s[idx])][:cap]
        with torch.no_grad():
            for name in ("gate_proj", "up_proj"):
                lin = getattr(mlp, name, None)
                if lin is not None and idx.numel():
                    fresh = torch.randn((idx.numel(), lin.weight.shape[1]), generator=gen) * std
                    lin.weight[idx] = fresh.to(lin.weight)
            if idx.numel():
                down = mlp_down_projection(block)
                assert down is not None  # mlp_scores scored this block through its down projection
                weight = down.weight
                assert isinstance(weight, torch.Tensor)  # a parameter (Module.__getattr__ also allows a submodule)
                weight[:, idx] = 0.0
        counts.append(int(idx.numel()))
    return counts


def shrink_perturb(model: torch.nn.Module, base: torch.nn.Module, shrink: float, noise_std: float, seed: int) -> None:
    """theta <- theta_0 + shrink (theta - theta_0) + noise_std * std(theta) * eps, in place."""
    gen = torch.Generator().manual_seed(seed)
    base_params = dict(base.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point() or name not in base_params:
                continue
            p0 = base_params[name].to(p)
            p.copy_(p0 + shrink * (p - p0))
            if noise_std > 0:
                p.add_(torch.randn(p.shape, generator=gen).to(p) * noise_std * p.std())


class FeatureRefresh(Intervention):
    name = "feature_refresh"
    PARAMS_SCHEMA = params_schema(
        tau={"type": "number", "minimum": 0},
        max_fraction={"type": "number", "minimum": 0, "maximum": 1},
        calib_examples={"type": "integer", "minimum": 1},
        shrink={"type": "number", "minimum": 0, "maximum": 1},
        noise_std={"type": "number", "minimum": 0},
    )

    def before_stage(self, model: torch.nn.Module, ctx: StageContext) -> None:
        if ctx.stage.index < 2:
            self._report = {"skipped": "first stage"}
            return
        p = self.params
        batches = calibration_batches(ctx, int(p["calib_examples"]), next(model.parameters()).device)
        before = mlp_scores(model, batches)
        tau = float(p["tau"])
        reset = redo_reset(model, before, tau, float(p["max_fraction"]), ctx.seed + ctx.stage.index)
        shrink, noise = float(p["shrink"]), float(p["noise_std"])
        if shrink != 1.0 or noise > 0:
            base = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=next(model.parameters()).dtype)
            shrink_perturb(model, base, shrink, noise, ctx.seed + 1000 * ctx.stage.index)
            del base
        after = mlp_scores(model, batches)
        frac = lambda scores: sum(int((s <= tau).sum()) for s in scores) / max(1, sum(s.numel() for s in scores))
        self._report = {
            "units_reset": sum(reset),
            "units_reset_per_layer": reset,
            "tau": tau,
            "dormant_fraction_before": frac(before),
            "dormant_fraction_after": frac(after),
            "shrink": shrink,
            "noise_std": noise,
        }


def calibration_batches(ctx: StageContext, n: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` training texts of the stage, chat-templated, as batches of 4."""
    from ..data.examples import render_example

    texts = [render_example(e, ctx.tokenizer) for e in ctx.stage_examples[:n]]
    out = []
    for i in range(0, len(texts), 4):
        enc = ctx.tokenizer(texts[i : i + 4], return_tensors="pt", padding=True, truncation=True, max_length=ctx.stage.max_length)
        out.append({"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)})
    return out
