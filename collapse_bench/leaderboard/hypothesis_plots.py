"""The scatter plot behind each shown row of the hypothesis panel: the predictor (x) against the target (y), one
point per row (across rows) or per lineage edge (within lineages, both as Δ vs the parent row), coloured by
lineage (the base model), titled with Spearman ρ, its CI, the expected sign and the verdict of the row.
"""

from __future__ import annotations

import re
from typing import Any

from . import svgplot
from .aggregate import Tables
from .hypothesis import Points
from .hypothesis_within import lineage_keys


def plot_name(analysis: str, metric: str, target: str) -> str:
    """File name under ``plots/`` (metric ids are ``task.metric``; anything outside [a-z0-9._-] becomes -)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", f"{target}--{metric}".lower())
    return f"hypothesis--{analysis}--{slug}.svg"


def lineage_names(tables: Tables) -> dict[str, str]:
    """Row id -> the display name of its lineage (its base row's model name, else the lineage key)."""
    keys = lineage_keys(tables)
    base_of = dict(zip(tables.models["id"], tables.models["base_id"]))
    label: dict[str, str] = {}
    for rid in sorted(keys):
        bid = base_of.get(rid)
        name = tables.entries[bid].result.model.name if isinstance(bid, str) and bid in tables.entries else None
        if name and keys[rid] not in label:
            label[keys[rid]] = name
    return {rid: label.get(k, k.removeprefix("name:")[:24]) for rid, k in keys.items()}


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{float(x):.2f}"


def scatter(row: dict[str, Any], xy: tuple[Any, Any, list[str]], names: dict[str, str]) -> bytes:
    """One panel: points by lineage (legend), the row's statistics in the title."""
    x, y, ids = xy
    within = row["analysis"] == "within_lineage"
    sign = row.get("expected_sign")
    expected = "none" if sign is None else ("+" if sign > 0 else "−")
    ci = f" [{_fmt(row.get('spearman_lo'))}, {_fmt(row.get('spearman_hi'))}]" if row.get("spearman_lo") is not None else ""
    ax = svgplot.Axes(
        title=f"ρ {_fmt(row['spearman'])}{ci}, expected {expected}, {row['verdict']}",
        xlabel=("Δ " if within else "") + row["metric"],
        ylabel=("Δ " if within else "") + row["target"],
        legend=True,
    )
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for a, b, rid in zip(x, y, ids):
        gx, gy = groups.setdefault(names.get(rid, "?"), ([], []))
        gx.append(float(a))
        gy.append(float(b))
    for name in sorted(groups):
        ax.plot(*groups[name], label=f"{name} (n {len(groups[name][0])})", line=False, size=3.5)
    return svgplot.render([ax])


def hypothesis_plots(rows: list[dict[str, Any]], points: Points, tables: Tables) -> dict[str, bytes]:
    """``plots/<name>`` -> SVG for every shown row; sets each row's ``plot`` (its file name, None without data)."""
    names = lineage_names(tables)
    out: dict[str, bytes] = {}
    for row in rows:
        key = (row["analysis"], row["metric"], row["target"])
        row["plot"] = None
        if key in points:
            row["plot"] = plot_name(*key)
            out[f"plots/{row['plot']}"] = scatter(row, points[key], names)
    return out
