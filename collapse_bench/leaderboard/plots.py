"""Per-model plots as deterministic SVG (:mod:`.svgplot`): layer-wise effective rank / anisotropy vs the
base model, reliability diagrams, plasticity curves — each drawn only when the result has the data.

Labels are fixed strings, numbers and task names, never free-text keys from a submission ("seed ?" for a
non-integer seed key); every text is XML-escaped and nothing is parsed as markup or math.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..metrics import spec as metric_spec
from . import svgplot
from .entry import Entry, _num, seed_order

# the per-layer panels; their labels are the metric specs' (collapse_bench/metrics/spec.py)
LAYER_PANELS = ("effective_rank", "anisotropy")


def spec_label(metric: str) -> str:
    s = metric_spec.spec_for(metric)
    return s.display_label if s is not None else metric


LAYER_METRICS = tuple((m, spec_label(m)) for m in LAYER_PANELS)


def _figure(ncols: int) -> list[svgplot.Axes]:
    return [svgplot.Axes() for _ in range(ncols)]


def _svg(axes: list[svgplot.Axes]) -> bytes:
    return svgplot.render(axes)


def _series(values: Any) -> np.ndarray:
    """Floats of a list; anything that is not a number (None, strings, bools) -> NaN."""
    vals = values if isinstance(values, list) else []
    return np.array([float(v) if _num(v) else np.nan for v in vals], dtype=np.float64)


def layer_plot(entry: Entry, base: Entry | None, task: str) -> bytes | None:
    per_layer = entry.doc["tasks"][task].get("per_layer")
    per_layer = per_layer if isinstance(per_layer, dict) else {}
    panels = [(m, label) for m, label in LAYER_METRICS if np.isfinite(_series(per_layer.get(m))).any()]
    if not panels:
        return None
    axes = _figure(len(panels))
    base_pl = (base.doc["tasks"].get(task, {}).get("per_layer") or {}) if base is not None and base.id != entry.id else {}
    base_pl = base_pl if isinstance(base_pl, dict) else {}
    for ax, (metric, label) in zip(axes, panels):
        y = _series(per_layer[metric])
        ax.plot(np.arange(len(y)), y, label="this checkpoint", size=2.5)
        if metric in base_pl:
            yb = _series(base_pl[metric])
            ax.plot(np.arange(len(yb)), yb, label="base model", color=svgplot.GREY, dash="5,3", marker=None)
        ax.xlabel = "layer (hidden_states index; last = after final norm)"
        ax.title, ax.legend = f"{task}: {label}", True
    return _svg(axes)


def _variant(block: dict[str, Any], variant: str) -> dict[str, Any] | None:
    cal = block.get("calibration")
    rep = cal.get(variant) if isinstance(cal, dict) else None
    return rep if isinstance(rep, dict) else None


def variant_bins(block: dict[str, Any], variant: str = "primary") -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(mean confidence, accuracy, count) of the non-empty bins of ``calibration.<variant>.reliability``
    (a list of {lo, hi, count, confidence, accuracy}); bins with non-numeric values are skipped."""
    rep = _variant(block, variant)
    raw = rep.get("reliability") if rep is not None else None
    if not isinstance(raw, list):
        return None
    rows = [
        (float(b["confidence"]), float(b["accuracy"]), float(b["count"]) if _num(b.get("count")) else np.nan)
        for b in raw
        if isinstance(b, dict) and _num(b.get("confidence")) and _num(b.get("accuracy"))
    ]
    if not rows:
        return None
    return tuple(np.array(col, dtype=np.float64) for col in zip(*rows))  # type: ignore[return-value]


def reliability_bins(
    block: dict[str, Any], items: tuple[np.ndarray, np.ndarray] | None, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(mean confidence, accuracy, count) per bin of the PRIMARY variant (the one ECE, the calibration
    component and the hypothesis panel use); without a calibration block, ``n_bins`` equal-mass bins of
    the samples items."""
    found = variant_bins(block, "primary")
    if found is not None:
        return found
    if items is not None and len(items[0]):
        conf, correct = items
        parts = np.array_split(np.argsort(conf, kind="stable"), min(n_bins, len(conf)))
        return (
            np.array([conf[p].mean() for p in parts]),
            np.array([correct[p].mean() for p in parts]),
            np.array([float(len(p)) for p in parts]),
        )
    return None


def _label(name: str, ece: Any, counts: np.ndarray) -> str:
    n = int(np.nansum(counts))
    return f"{name} (ECE {float(ece):.3f}, n={n})" if _num(ece) and math.isfinite(ece) else f"{name} (n={n})"


def reliability_plot(entry: Entry, task: str) -> bytes | None:
    block = entry.doc["tasks"][task]
    items = entry.items.get(task)
    bins = reliability_bins(block, items)
    if bins is None:
        return None
    (ax,) = axes = _figure(1)
    ax.plot([0, 1], [0, 1], label="perfect calibration", color=svgplot.GREY, dash="2,2", marker=None)
    if variant_bins(block, "primary") is not None:
        label = _label("primary", (_variant(block, "primary") or {}).get("ece"), bins[2])
    else:
        from ..metrics.calibration import ece

        label = _label("samples, equal-mass bins", ece(*items) if items is not None else None, bins[2])
    ax.plot(bins[0], bins[1], label=label, color=svgplot.PALETTE[0])
    for x, y, n in zip(*bins):
        if math.isfinite(n):
            ax.annotate(x, y, f"{int(n)}", color=svgplot.PALETTE[0])
    norm = variant_bins(block, "length_normalised")
    if norm is not None:
        ax.plot(
            norm[0],
            norm[1],
            label=_label("length-normalised", (_variant(block, "length_normalised") or {}).get("ece"), norm[2]),
            color=svgplot.PALETTE[1],
            dash="5,3",
            marker="s",
        )
    ax.xlim, ax.ylim = (0.0, 1.0), (0.0, 1.05)
    ax.xlabel, ax.ylabel = "confidence (bin mean; numbers: items per bin)", "accuracy"
    ax.title, ax.legend = f"{task}: reliability", True
    return _svg(axes)


def seed_label(key: Any) -> str:
    """ "seed <n>" for an int-like key, else "seed ?" (free text never reaches a plot)."""
    return f"seed {seed_order(key)[1]}" if seed_order(key)[0] == 0 else "seed ?"


def curves(block: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(seed label, steps, bpb) of ``curves`` = {seed: {steps, bpb, ...}} in seed order."""
    raw = block.get("curves")
    if not isinstance(raw, dict):
        return
    for seed in sorted(raw, key=seed_order):
        c = raw[seed]
        if isinstance(c, dict) and isinstance(c.get("bpb"), list) and c["bpb"]:
            bpb = _series(c["bpb"])
            steps = (
                _series(c["steps"])
                if isinstance(c.get("steps"), list) and len(c["steps"]) == len(bpb)
                else np.arange(len(bpb), dtype=np.float64)
            )
            if np.isfinite(bpb).any():
                yield seed_label(seed), steps, bpb


def plasticity_plot(entry: Entry, task: str) -> bytes | None:
    found = list(curves(entry.doc["tasks"][task]))
    if not found:
        return None
    (ax,) = axes = _figure(1)
    for seed, steps, bpb in found:
        ax.plot(steps, bpb, label=seed, size=2.5)
    ax.xlabel, ax.ylabel = "training step", "held-out bits per byte"
    ax.title, ax.legend = f"{task}: plasticity", True
    return _svg(axes)


def entry_plots(entry: Entry, base: Entry | None) -> list[tuple[str, str, bytes]]:
    """(task, kind of plot, svg bytes) for every plot this entry's data supports, in task order."""
    out = []
    for task in sorted(entry.doc["tasks"]):
        for kind, svg in (
            ("layers", layer_plot(entry, base, task)),
            ("reliability", reliability_plot(entry, task)),
            ("plasticity", plasticity_plot(entry, task)),
        ):
            if svg is not None:
                out.append((task, kind, svg))
    return out
