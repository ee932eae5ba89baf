"""The site's ``lineages.html`` (a tree per base model, trajectories per recipe, the control ladders as
dose–response plots, the stage-ordering comparison) and ``findings.html`` (``findings.findings``).

Plots are deterministic SVG through :mod:`.svgplot`; labels are fixed strings, stage names, doses and
intervention / seed labels, every one XML-escaped.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import jinja2
import pandas as pd

from .aggregate import Tables
from .entry import finite_float
from .findings import CONTROL_KINDS, SVD_CHECKS, findings
from .plots import _figure, _svg

TRAJECTORY = (
    ("score", "headline score"),
    ("kl_to_base", "KL to base (nats/token)"),
    ("effective_rank", "effective rank"),
    ("c.plasticity", "plasticity component"),
)


DOSE_NAMES = {"svd_truncate": "rank r", "extrapolate": "α", "permute": "permutation seed"}
LADDER_LABELS = {"kl_to_base": "KL to base", "intrinsic_dimension": "intrinsic dimension (TwoNN)"}


def _value(tables: Tables, models: pd.DataFrame, rid: str, key: str) -> tuple[float | None, float | None, float | None]:
    """(value, lo, hi) of a row's column: a ``models`` (the models table by id) column or a probe metric."""
    if key in models.columns:
        v = models.at[rid, key]
        lo = models.at[rid, f"{key}_lo"] if f"{key}_lo" in models.columns else None
        hi = models.at[rid, f"{key}_hi"] if f"{key}_hi" in models.columns else None
        return finite_float(v), finite_float(lo), finite_float(hi)
    entry = tables.entries[rid]
    task = entry.probe_task
    if task is None:
        return None, None, None
    ci: list[Any] = tables.cis.get(rid, {}).get(f"{task}.{key}") or [None, None]
    return finite_float(entry.metrics[task].get(key)), finite_float(ci[0]), finite_float(ci[1])


def chain_seed(name: str) -> str:
    """``s<N>`` of a chain row's name ``<base>/<recipe>/<intervention>/s<N>/<stage>`` (the runner's layout), else ``s?``."""
    parts = name.split("/")
    return parts[-2] if len(parts) >= 5 and re.fullmatch(r"s[0-9]{1,6}", parts[-2]) else "s?"


def trees(tables: Tables) -> list[dict[str, Any]]:
    """Per lineage root (base model name): nested nodes {name, rows: [(suite label, id)], children}."""
    models = tables.models
    rows: dict[str, list[tuple[str, str]]] = {}
    parent: dict[str, str | None] = {}
    for rid, name, par, suite, ver in zip(
        models["id"], models["model"], models["parent"], models["suite"], models["suite_version"]
    ):
        rows.setdefault(name, []).append((f"{suite} v{ver}", rid))
        parent.setdefault(name, par if isinstance(par, str) else None)
    children: dict[str | None, list[str]] = {}
    for name in sorted(rows):
        p = parent[name] if parent[name] in rows else None
        children.setdefault(p, []).append(name)

    def node(name: str) -> dict[str, Any]:
        return {"name": name, "rows": sorted(rows[name]), "children": [node(c) for c in children.get(name, [])]}

    return [node(root) for root in children.get(None, [])]


def chains(tables: Tables) -> dict[tuple[str, str, str], dict[str, list[str]]]:
    """(root model, recipe, suite label) -> series label (intervention/seed) -> row ids from the base row on,
    in lineage order (trained stages only: controls have their ladders)."""
    models = tables.models.set_index("id")
    out: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for rid in models.index:
        m = tables.entries[rid].doc["model"]
        recipe = models.at[rid, "recipe"]
        if not isinstance(recipe, str) or (m.get("control") or {}).get("kind") in CONTROL_KINDS:
            continue
        suite = f"{models.at[rid, 'suite']} v{models.at[rid, 'suite_version']}"
        key = (m["lineage"][0]["name"], recipe, suite)
        intervention = models.at[rid, "intervention"]
        label = f"{intervention if isinstance(intervention, str) else 'none'} / {chain_seed(str(m['name']))}"
        out.setdefault(key, {}).setdefault(label, []).append(rid)
    for series in out.values():
        for ids in series.values():
            ids.sort(key=lambda r: int(models.at[r, "depth"]))
    return out


def trajectory_plot(tables: Tables, series: dict[str, list[str]]) -> bytes:
    """One panel per :data:`TRAJECTORY` metric; x = lineage depth (0 = the base), labelled by stage name."""
    models = tables.models.set_index("id")
    base_id = models.at[next(iter(series.values()))[0], "base_id"]
    stages: dict[int, str] = {0: "base"}
    for ids in series.values():
        for rid in ids:
            for depth, e in enumerate(tables.entries[rid].doc["model"]["lineage"][1:], 1):
                stages.setdefault(depth, str(e["stage"]))
    axes = _figure(len(TRAJECTORY))
    for ax, (metric, label) in zip(axes, TRAJECTORY):
        for name, ids in sorted(series.items()):
            pts = [(0, *_value(tables, models, base_id, metric))] if base_id in models.index else []
            pts += [(int(models.at[r, "depth"]) - 1, *_value(tables, models, r, metric)) for r in ids]
            known = [
                (float(x), y, lo if lo is not None else y, hi if hi is not None else y) for x, y, lo, hi in pts if y is not None
            ]
            if known:
                xs, ys, los, his = (list(col) for col in zip(*known))
                ax.plot(xs, ys, label=name, lo=los, hi=his)
        ax.xticks = (sorted(stages), [stages[d] for d in sorted(stages)])
        ax.xlim = (-0.3, max(stages) + 0.3)
        ax.title = label
    axes[0].legend = True
    return _svg(axes)


def ladder_plot(ladder: dict[str, Any]) -> bytes:
    panels = [m for m, _ in SVD_CHECKS] + ["score"]
    axes = _figure(len(panels))
    doses = [str(r["dose"]) for r in ladder["rungs"]]
    for ax, metric in zip(axes, panels):
        vals = [(r["outcomes"] if metric == "score" else r["probe"]).get(metric) for r in ladder["rungs"]]
        ax.plot(range(len(doses)), [v if isinstance(v, (int, float)) else math.nan for v in vals])
        ax.xticks, ax.xlim = (list(range(len(doses))), doses), (-0.3, len(doses) - 0.7)
        ax.title = "headline score" if metric == "score" else LADDER_LABELS.get(metric, metric)
        ax.xlabel = DOSE_NAMES[ladder["kind"]]
    return _svg(axes)


def orderings(tables: Tables) -> list[dict[str, Any]]:
    """Final rows of two chains from one root with the same stages in another order (same intervention, seed,
    suite): Δ score and components of the second ordering vs the first."""
    models = tables.models.set_index("id")
    finals: dict[tuple[Any, ...], list[tuple[tuple[str, ...], str]]] = {}
    for key, series in chains(tables).items():
        for label, ids in series.items():
            stages = tuple(str(e["stage"]) for e in tables.entries[ids[-1]].doc["model"]["lineage"][1:])
            finals.setdefault((key[0], key[2], label, tuple(sorted(stages))), []).append((stages, ids[-1]))
    out = []
    cols = [c for c in ("score", "c.plasticity", "c.ood_accuracy_chance", "c.calibration", "c.diversity") if c in models]
    for (root, suite, label, _), found in sorted(finals.items()):
        found.sort()
        for (sa, a), (sb, b) in itertools.pairwise(found):
            deltas = {c: (finite_float(models.at[b, c]) or 0.0) - (finite_float(models.at[a, c]) or 0.0) for c in cols}
            out.append(
                {
                    "root": root,
                    "suite": suite,
                    "series": label,
                    "first": " → ".join(sa),
                    "second": " → ".join(sb),
                    "first_id": a,
                    "second_id": b,
                    "deltas": deltas,
                }
            )
    return out


def lineage_pages(
    env: jinja2.Environment, tables: Tables, found: list[dict[str, Any]], hypothesis: list[dict[str, Any]], common: dict[str, Any]
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(site path -> bytes of lineages.html, findings.html and their plots; ``data.json["findings"]``)."""
    files: dict[str, bytes] = {}
    pages = dict(zip(tables.models["id"], tables.models["page"]))
    traj = []
    for i, (key, series) in enumerate(sorted(chains(tables).items())):
        name = f"lineage-{i:02d}.svg"
        files[f"plots/{name}"] = trajectory_plot(tables, series)
        traj.append({"root": key[0], "recipe": key[1], "suite": key[2], "plot": name, "series": sorted(series)})
    data = findings(tables, found, hypothesis)
    for i, ladder in enumerate(data["ladders"]):
        ladder["plot"] = f"ladder-{i:02d}.svg"
        files[f"plots/{ladder['plot']}"] = ladder_plot(ladder)
    data["orderings"] = orderings(tables)
    ctx = {"trees": trees(tables), "trajectories": traj, "findings": data, "pages": pages, **common}
    files["lineages.html"] = env.get_template("lineages.html.j2").render(**ctx).encode()
    files["findings.html"] = env.get_template("findings.html.j2").render(**ctx).encode()
    return files, data
