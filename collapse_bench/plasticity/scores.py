"""Scalarisation of a plasticity learning curve: pure functions of numbers, no torch.

Formulas (``s_0 < s_1 < ... < s_K`` are the eval steps, ``b_k`` the held-out bpb at ``s_k``):

* ``bits_per_byte``   = sum of per-token NLL (nats) over the scored target tokens / (UTF-8 bytes of the
  scored target text x ln 2)
* ``normalised_auc``  = sum_k (s_{k+1} - s_k)(b_k + b_{k+1}) / 2  /  (s_K - s_0)   (trapezoid rule; the
  mean height of the curve, in bpb; ``b_0`` itself for a single point)
* ``gain``            = (b_0 - b_K) / b_0
* ``threshold``       = b_0 - fraction x (b_0 - target_bpb)
* ``steps_to_threshold`` = the first ``s_k`` with ``b_k <= threshold``, ``None`` if never
* ``mean_std``        = mean and sample standard deviation (ddof = 1) over seeds; ``None`` when a value is
  ``None`` for some seed (a "never" cannot be averaged) and, for the std, with fewer than two seeds
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from ..metrics.spec import MetricSpec, Range, Tolerance

LN2 = math.log(2.0)


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Summed NLL (nats) of the target tokens over the UTF-8 bytes of the target text, in bits per byte."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one target byte")
    return nll_nats / (n_bytes * LN2)


def normalised_auc(steps: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` over ``steps`` divided by the step span (mean curve height)."""
    if len(steps) != len(values) or not steps:
        raise ValueError("normalised_auc needs equally long, non-empty steps and values")
    if len(steps) == 1:
        return float(values[0])
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError("eval steps must be strictly increasing")
    area = sum((s1 - s0) * (v0 + v1) / 2.0 for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / (steps[-1] - steps[0])


def gain(initial: float, final: float) -> float:
    """Relative reduction (initial - final) / initial (0 = nothing learned, 1 = perfect)."""
    if initial <= 0:
        raise ValueError("gain needs a positive initial value")
    return (initial - final) / initial


def threshold(initial: float, target_bpb: float, fraction: float) -> float:
    """The base-relative target: ``fraction`` of the way from ``initial`` to the fixed ``target_bpb``."""
    return initial - fraction * (initial - target_bpb)


def steps_to_threshold(steps: Sequence[int], values: Sequence[float], thr: float) -> int | None:
    """The first eval step whose value is at or below ``thr``; ``None`` if the curve never gets there."""
    for s, v in zip(steps, values):
        if v <= thr:
            return int(s)
    return None


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof = 1) over seeds; ``None`` where undefined (see module docstring)."""
    if not values or any(v is None for v in values):
        return None, None
    xs = [float(v) for v in values if v is not None]
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def curve_scores(steps: Sequence[int], bpb: Sequence[float], target_bpb: float, fraction: float) -> dict[str, float | int | None]:
    """Every curve scalar of one seed's eval curve."""
    thr = threshold(bpb[0], target_bpb, fraction)
    return {
        "bpb_initial": float(bpb[0]),
        "bpb_final": float(bpb[-1]),
        "bpb_auc": normalised_auc(steps, bpb),
        "gain": gain(bpb[0], bpb[-1]),
        "steps_to_threshold": steps_to_threshold(steps, bpb, thr),
        "threshold_bpb": thr,
    }


def aggregate(per_seed: dict[str, dict[str, float | int | None]]) -> dict[str, float | None]:
    """``metrics``: the mean over seeds of every per-seed score, plus ``<id>_std``."""
    keys = list(next(iter(per_seed.values())))
    out: dict[str, float | None] = {}
    for key in keys:
        mean, std = mean_std([s[key] for s in per_seed.values()])
        out[key], out[f"{key}_std"] = mean, std
    return out


SPECS = (
    # a spread over the task's seeds (~70% relative standard error with 2 seeds, hence rel 0.5). exact_match_std
    # keeps exact_match's tolerance: in the former tolerance.yaml "*exact_match*" preceded "plasticity*_std"
    MetricSpec(
        id="exact_match_std",
        kind="plasticity",
        definition="standard deviation of exact_match over the task's seeds",
        range=Range(0),
        tolerance=Tolerance(0.02, 0.0),
    ),
    MetricSpec(
        id="*_std",
        kind="plasticity",
        definition="standard deviation of the metric over the task's seeds",
        range=Range(0),
        tolerance=Tolerance(0.005, 0.5),
    ),
    MetricSpec(
        id="*_ci_width", kind="plasticity", definition="width of the metric's bootstrap confidence interval", range=Range(0)
    ),
    MetricSpec(
        id="bpb_auc*",
        kind="plasticity",
        definition="area under the held-out bits-per-byte curve over the training steps, per step",
        direction="lower",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.02),
        backward=True,
        label="bpb AUC",
    ),
    MetricSpec(
        id="gain",
        kind="plasticity",
        definition="relative gain (bpb_initial - bpb_final) / bpb_initial of the short LoRA fine-tune",
        direction="higher",
        range=Range(-20, 1),
        tolerance=Tolerance(0.02, 0.05),
        backward=True,
        label="plasticity gain",
    ),
    MetricSpec(
        id="threshold_bpb",
        kind="plasticity",
        definition="held-out bits per byte the run must reach to count as learned",
        range=Range(0, 20, lo_open=True),
        tolerance=Tolerance(0.0, 0.02),
        label="threshold bpb",
    ),
    MetricSpec(
        id="exact_match",
        kind="plasticity",
        definition="exact-match accuracy on the task's held-out items after training",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        backward=True,
        label="exact match",
    ),
    MetricSpec(
        id="train_loss*",
        kind="plasticity",
        definition="training loss (nats per token) along the run",
        range=Range(0),
        backward=True,
        label="train loss",
    ),
    MetricSpec(
        id="steps_to_threshold*",
        kind="plasticity",
        definition="optimizer steps until held-out bpb first reaches threshold_bpb",
        direction="lower",
        range=Range(0),
        tolerance=Tolerance(1.0, 0.1),
        backward=True,
        label="steps to threshold",
    ),
    # gradient signal at step 0 (gradsignal.py): candidate predictors of trainability, not scores (direction None).
    # bf16 vs float32 differ by <= 0.15% on the tiny model; 2% as for bpb
    MetricSpec(
        id="grad_snr",
        kind="plasticity",
        definition="‖mean per-example LoRA gradient‖² / their variance (1/n) on the first batch at step 0 (arXiv 2605.09044)",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.02),
        backward=True,
        label="gradient SNR at step 0",
        reference="'optimization readiness', arXiv 2605.09044",
    ),
    MetricSpec(
        id="grad_norm0",
        kind="plasticity",
        definition="norm of the LoRA gradient of the first batch's training loss at step 0, without dropout (arXiv 2605.09044)",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.02),
        backward=True,
        label="gradient norm at step 0",
        reference="'optimization readiness', arXiv 2605.09044",
    ),
    MetricSpec(
        id="bpb*",
        kind="plasticity",
        definition="held-out bits per byte of the fine-tuned model (initial, final, or along the curve)",
        range=Range(0, 20, lo_open=True),
        tolerance=Tolerance(0.0, 0.02),
        backward=True,
        label="bits per byte",
    ),
)
