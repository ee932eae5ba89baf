"""Per-model plots as deterministic SVG (matplotlib, Agg): layer-wise effective rank / anisotropy vs the
base model, reliability diagrams, plasticity curves — each drawn only when the result has the data.

Determinism: fixed ``svg.hashsalt`` (element ids), no ``Date``/``Creator`` metadata (so no clock and no
matplotlib version in the file), text kept as ``<text>`` (``svg.fonttype: none``) in the DejaVu Sans
that ships with matplotlib (layout does not depend on system fonts). Labels are fixed strings, numbers
and task names, never free-text keys from a submission ("seed ?" for a non-integer seed key), and
mathtext is off (``text.parse_math``): no label is ever parsed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..metrics import spec as metric_spec
from .entry import Entry, _num, seed_order

RC: dict[str, Any] = {
    "svg.hashsalt": "collapse-bench",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "lines.linewidth": 1.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.parse_math": False,
}
METADATA = {"Date": None, "Creator": None}
# the per-layer panels; their labels are the metric specs' (collapse_bench/metrics/spec.py)
LAYER_PANELS = ("effective_rank", "anisotropy")


def spec_label(metric: str) -> str:
    s = metric_spec.spec_for(metric)
    return s.display_label if s is not None else metric


LAYER_METRICS = tuple((m, spec_label(m)) for m in LAYER_PANELS)


def _figure(ncols: int) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    plt.rcParams.update(RC)  # type: ignore[arg-type]  # the stub types keys as a Literal of rc names
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), squeeze=False)
    fig.subplots_adjust(
        left=0.7 / (4.2 * ncols), right=1 - 0.15 / (4.2 * ncols), bottom=0.16, top=0.9, wspace=0.25
    )  # fixed margins: cheaper than tight_layout and independent of the labels
    return fig, list(axes[0])


def _svg(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata=METADATA)
    plt.close(fig)
    return buf.getvalue()


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
    fig, axes = _figure(len(panels))
    base_pl = (base.doc["tasks"].get(task, {}).get("per_layer") or {}) if base is not None and base.id != entry.id else {}
    base_pl = base_pl if isinstance(base_pl, dict) else {}
    for ax, (metric, label) in zip(axes, panels):
        y = _series(per_layer[metric])
        ax.plot(np.arange(len(y)), y, marker="o", markersize=2.5, label="this checkpoint")
        if metric in base_pl:
            yb = _series(base_pl[metric])
            ax.plot(np.arange(len(yb)), yb, linestyle="--", color="0.45", label="base model")
        ax.set_xlabel("layer (hidden_states index; last = after final norm)")
        ax.set_title(f"{task}: {label}")
        ax.legend(loc="best", frameon=False)
    return _svg(fig)


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
    fig, (ax,) = _figure(1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="perfect calibration")
    if variant_bins(block, "primary") is not None:
        label = _label("primary", (_variant(block, "primary") or {}).get("ece"), bins[2])
    else:
        from ..metrics.calibration import ece

        label = _label("samples, equal-mass bins", ece(*items) if items is not None else None, bins[2])
    ax.plot(bins[0], bins[1], marker="o", color="C0", label=label)
    for x, y, n in zip(*bins):
        if math.isfinite(n):
            ax.annotate(f"{int(n)}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=6, color="C0")
    norm = variant_bins(block, "length_normalised")
    if norm is not None:
        ax.plot(
            norm[0],
            norm[1],
            marker="s",
            markersize=3,
            linestyle="--",
            color="C1",
            alpha=0.8,
            label=_label("length-normalised", (_variant(block, "length_normalised") or {}).get("ece"), norm[2]),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence (bin mean; numbers: items per bin)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: reliability")
    ax.legend(loc="upper left", frameon=False, fontsize=7)
    return _svg(fig)


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
    fig, (ax,) = _figure(1)
    for seed, steps, bpb in found:
        ax.plot(steps, bpb, marker="o", markersize=2.5, label=seed)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(f"{task}: plasticity")
    ax.legend(loc="best", frameon=False)
    return _svg(fig)


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
