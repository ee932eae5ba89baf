"""Per-model plots as deterministic SVG (matplotlib, Agg): layer-wise effective rank / anisotropy vs the
base model, reliability diagrams, plasticity curves — each drawn only when the result has the data.

Determinism: fixed ``svg.hashsalt`` (element ids), no ``Date``/``Creator`` metadata (so no clock and no
matplotlib version in the file), text kept as ``<text>`` (``svg.fonttype: none``) in the DejaVu Sans
that ships with matplotlib (layout does not depend on system fonts). Labels are fixed strings and task
names (validated slugs), never free-text names from a submission.
"""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np

from .aggregate import Entry

RC = {"svg.hashsalt": "collapse-bench", "svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9,
      "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100, "savefig.dpi": 100, "lines.linewidth": 1.5,
      "axes.spines.top": False, "axes.spines.right": False}
METADATA = {"Date": None, "Creator": None}
LAYER_METRICS = (("effective_rank", "effective rank (centred)"), ("anisotropy", "anisotropy (mean cosine)"))


def _figure(ncols: int) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    plt.rcParams.update(RC)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), squeeze=False)
    fig.subplots_adjust(left=0.7 / (4.2 * ncols), right=1 - 0.15 / (4.2 * ncols), bottom=0.16, top=0.9,
                        wspace=0.25)  # fixed margins: cheaper than tight_layout and independent of the labels
    return fig, list(axes[0])


def _svg(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata=METADATA)
    plt.close(fig)
    return buf.getvalue()


def _series(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def layer_plot(entry: Entry, base: Entry | None, task: str) -> bytes | None:
    per_layer = entry.doc["tasks"][task].get("per_layer") or {}
    panels = [(m, label) for m, label in LAYER_METRICS if m in per_layer]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    base_pl = (base.doc["tasks"].get(task, {}).get("per_layer") or {}) if base is not None and base.id != entry.id else {}
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


def _pick(keys: Any, *needles: str) -> str | None:
    return next((k for k in keys if any(n in k for n in needles)), None)


def _find_reliability(obj: Any) -> Any:
    """The first ``reliability*`` value in a task block, depth first in document order (the lm_eval kind
    keeps its bins in ``calibration.primary.reliability``)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.startswith("reliability") and value:
                return value
            found = _find_reliability(value) if isinstance(value, dict) else None
            if found is not None:
                return found
    return None


def reliability_bins(block: dict[str, Any], items: tuple[np.ndarray, np.ndarray] | None,
                     n_bins: int = 15) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean confidence, accuracy) of the non-empty bins: from the block's ``reliability*`` data (a list of
    dicts or a dict of lists, keys containing "conf" and "acc"), else 15 equal-mass bins of the samples items."""
    raw = _find_reliability(block)
    if isinstance(raw, dict) and "bins" in raw:
        raw = raw["bins"]
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        ck, ak = _pick(raw, "conf"), _pick(raw, "acc")
        if ck and ak:
            pairs = list(zip(raw[ck], raw[ak]))
    elif isinstance(raw, list) and raw and all(isinstance(b, dict) for b in raw):
        ck, ak = _pick(raw[0], "conf"), _pick(raw[0], "acc")
        if ck and ak:
            pairs = [(b.get(ck), b.get(ak)) for b in raw]
    pairs = [(c, a) for c, a in pairs if c is not None and a is not None]
    if pairs:
        return _series([c for c, _ in pairs]), _series([a for _, a in pairs])
    if items is not None and len(items[0]):
        conf, correct = items
        parts = np.array_split(np.argsort(conf, kind="stable"), min(n_bins, len(conf)))
        return np.array([conf[p].mean() for p in parts]), np.array([correct[p].mean() for p in parts])
    return None


def reliability_plot(entry: Entry, task: str) -> bytes | None:
    bins = reliability_bins(entry.doc["tasks"][task], entry.items.get(task))
    if bins is None:
        return None
    fig, (ax,) = _figure(1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="perfect calibration")
    ax.plot(bins[0], bins[1], marker="o", label="bins (mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task}: reliability")
    ax.legend(loc="upper left", frameon=False)
    return _svg(fig)


def curves(block: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(seed, steps, bpb) of ``curves`` = {seed: {steps, bpb, ...}} in seed order."""
    raw = block.get("curves")
    if not isinstance(raw, dict):
        return
    for seed in sorted(raw, key=lambda k: (0, int(k)) if str(k).lstrip("-").isdigit() else (1, str(k))):
        c = raw[seed]
        if isinstance(c, dict) and isinstance(c.get("bpb"), list) and c["bpb"]:
            steps = c.get("steps") if isinstance(c.get("steps"), list) else list(range(len(c["bpb"])))
            yield str(seed), _series(steps), _series(c["bpb"])


def plasticity_plot(entry: Entry, task: str) -> bytes | None:
    found = list(curves(entry.doc["tasks"][task]))
    if not found:
        return None
    fig, (ax,) = _figure(1)
    for seed, steps, bpb in found:
        ax.plot(steps, bpb, marker="o", markersize=2.5, label=f"seed {seed}")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(f"{task}: plasticity")
    ax.legend(loc="best", frameon=False)
    return _svg(fig)


def entry_plots(entry: Entry, base: Entry | None) -> list[tuple[str, str, bytes]]:
    """(task, kind of plot, svg bytes) for every plot this entry's data supports, in task order."""
    out = []
    for task in sorted(entry.doc["tasks"]):
        for kind, svg in (("layers", layer_plot(entry, base, task)), ("reliability", reliability_plot(entry, task)),
                          ("plasticity", plasticity_plot(entry, task))):
            if svg is not None:
                out.append((task, kind, svg))
    return out
