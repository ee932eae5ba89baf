"""The model page ``models/<slug>.html`` of one submission, every cell prepared for ``model.html.j2``.

Order of the page: the headline (score with its 95% CI, rank interval within the suite version, the components
with their CIs), the collapse profile (probe geometry, KL and top-1 agreement to base and parent), the paired
Δ vs parent, base and baseline (:mod:`.comparisons`) coloured by the pre-registered expected sign, the metrics
grouped by component (value ± the half-width of its 95% CI, n per task; ``*_stderr`` is folded into the ± of
its metric), the LoRA per-module breakdown (folded), a per-item browser (the first :data:`ITEMS_SHOWN` records of
each task in the samples file: choice probabilities, generations, refusal replies), the checkpoint, and links to
the raw result and samples files and, for a row a maintainer reproduced, the "✓ verified" mark to its evidence
(relative to the repository: the site lives in ``leaderboard/``).
Numbers follow :func:`.numbers.rounded`; every text is a plain string (dicts as key=value, no reprs).
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from typing import Any

import jinja2
import pandas as pd

from ..metrics import spec as metric_spec
from ..metrics.calibration import T_BOUNDS, temperature_at_bound
from . import stats
from .aggregate import Tables, components, root_floor
from .entry import Entry, _num, composite_config
from .index_view import group_of, spec_title
from .model_items import ITEMS_SHOWN, item_browser, text
from .numbers import ci_decimals, ci_text, data_value, plain, rounded
from .submission import samples_refs
from .verified import mark

MODEL_KEYS = (
    "parent", "stage", "recipe", "intervention", "lineage", "architecture", "num_layers", "hidden_size",
    "num_parameters", "sha256_scheme",
)  # fmt: skip  # model fields the model page shows ("—" when absent)
Z95 = 1.959963984540054  # a reported standard error → the half-width of a normal 95% CI
GROUPS = (
    ("geometry", "Probe geometry"), ("ood", "OOD tasks"), ("calibration", "Calibration"), ("plasticity", "Plasticity"),
    ("diversity", "Diversity"), ("lora", "LoRA"), ("other", "Other"),
)  # fmt: skip
PROFILE = (
    "effective_rank", "participation_ratio", "anisotropy", "kl_to_base", "kl_to_parent", "top1_agreement_base",
    "top1_agreement_parent", "intrinsic_dimension", "id_peak_value",
)  # fmt: skip
UNITS = {"lm_eval": ("docs", "items"), "probe": ("texts", "texts"), "plasticity": ("seeds", "seeds")}
UNITS |= {"diversity": ("prompts", "prompts"), "lora": ("modules", "modules")}
MODULE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")
LEGACY = "legacy hash over weights and *.json only, written before every checkpoint file was hashed; reproduce refuses this row"
TONES = {"agrees": "d-agree", "contradicts": "d-contra", "within noise": "d-noise"}


def pm(lo: Any, hi: Any) -> str:
    """The half-width of [lo, hi] with 2 significant digits ("" without a usable CI)."""
    d = ci_decimals(lo, hi)
    if d is None:
        return ""
    half = (float(hi) - float(lo)) / 2
    return f"{half:.{d}f}" if d >= 0 else f"{round(half, d):.0f}"


def bound_text(metric: str, x: Any) -> str | None:
    """ "≥ 20" / "≤ 0.05" for a ``temperature_opt`` at a bound of its search, else None (a plain number)."""
    if metric != "temperature_opt" or not _num(x) or not math.isfinite(float(x)):
        return None
    side = temperature_at_bound(float(x))
    return None if side is None else f"≥ {T_BOUNDS[1]:g}" if side == "upper" else f"≤ {T_BOUNDS[0]:g}"


def finite(x: Any) -> float | None:
    return float(x) if _num(x) and math.isfinite(float(x)) else None


def task_n(entry: Entry, task: str) -> tuple[int | None, str]:
    """(n, unit) of a task: items scored from the samples file, else the task block's counts."""
    kind = entry.kinds.get(task, "")
    if task in entry.items:
        return len(entry.items[task][0]), "items"
    counts = entry.result.tasks[task].raw.get("counts") or {}
    key, unit = UNITS.get(kind, ("", ""))
    if isinstance(counts.get(key), int) and not isinstance(counts.get(key), bool):
        return counts[key], unit
    ref = entry.result.tasks[task].raw.get("samples") or {}
    return (ref["records"], "records") if isinstance(ref.get("records"), int) else (None, "")


def interval(ci: list[float] | None, metrics: dict[str, Any], metric: str) -> tuple[float | None, float | None, str]:
    """(lo, hi, how) of a metric's 95% CI: the site's bootstrap CI, else value ± 1.96 × its ``*_stderr``."""
    if ci:
        return ci[0], ci[1], "95% bootstrap CI"
    value = finite(metrics.get(metric))
    for name in sorted(k for k in metrics if "_stderr" in k and k.replace("_stderr", "", 1) == metric):
        se = finite(metrics.get(name))
        if value is not None and se is not None and se > 0:
            return value - Z95 * se, value + Z95 * se, f"± 1.96 × the reported {name}"
    return None, None, ""


def is_stderr(metric: str, metrics: dict[str, Any]) -> bool:
    """A ``*_stderr`` metric whose metric is present: shown as that metric's ±, not as a row."""
    return "_stderr" in metric and metric.replace("_stderr", "", 1) in metrics


def tone(m: dict[str, Any]) -> str:
    """CSS class of a Δ: its verdict against the expected sign; grey within noise; none without a statistic."""
    if (cls := TONES.get(m.get("verdict") or "")) is not None:
        return cls
    if m.get("within_noise") or m.get("beyond_mde") is False:
        return "d-noise"
    return ""


def shown_delta(m: dict[str, Any]) -> dict[str, Any]:
    """One paired-comparison metric as the page shows it."""
    sign = m.get("expected_sign")
    verdict = m.get("verdict") or (
        "within noise" if m.get("within_noise") else "separable" if m.get("within_noise") is False else ""
    )
    return {
        **m,
        "d_text": rounded(m.get("delta"), m.get("ci_lo"), m.get("ci_hi")),
        "ci_text": ci_text(m.get("ci_lo"), m.get("ci_hi")),
        "q_text": plain(m.get("q")) if m.get("q") is not None else "—",
        "mde_text": plain(m.get("mde_80")) if m.get("mde_80") is not None else "—",
        "expected": "↑" if sign and sign > 0 else "↓" if sign and sign < 0 else "–" if sign == 0 else "",
        "verdict_text": verdict,
        "tone": tone(m),
    }


def shown_comparisons(found: list[dict[str, Any]], tables: Tables, pages: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Row id -> its paired comparisons for its page: per relation the reference's name and page, and the metrics
    that carry a statistic (a paired CI or a noise floor), in (task, metric) order."""
    names = dict(zip(tables.models["id"], tables.models["model"]))
    out: dict[str, list[dict[str, Any]]] = {}
    for c in found:
        rows = [shown_delta(m) for m in c["metrics"] if m.get("ci_lo") is not None or m.get("mde_80") is not None]
        tally = {k: sum(r.get("verdict") == k for r in rows) for k in ("agrees", "contradicts", "within noise")}
        shown = {**c, "name": names.get(c["reference"], c["reference"]), "page": pages.get(c["reference"]), "rows": rows}
        out.setdefault(c["id"], []).append({**shown, "tally": tally})
    return out


# --- the headline and the collapse profile ----------------------------------------------------------------


def headline(entry: Entry, tables: Tables, row: dict[str, Any], ranked: dict[tuple[Any, Any], dict[str, Any]]) -> dict[str, Any]:
    """Score and CI, rank interval within the suite version, components (CIs from their bootstrap replicates)."""
    cfg = composite_config()
    bid = row["base_id"]
    comps = components(entry, tables.entries.get(bid) if bid else None, floor=root_floor(entry, tables.floors))
    weights = cfg["scores"]["score"]["weights"]
    shown = []
    for name, spec in cfg["components"].items():
        value, lo, hi = None, None, None
        if (c := comps.get(name)) is not None:
            value, (lo, hi) = c[0], stats.percentile_ci(c[1])
        rules = ", ".join(f"{r['metric']} ({r.get('better', 'higher')} better)" for r in spec["metrics"])
        use = f"{weights[name]:g}" if name in weights else "—"
        shown.append(
            {
                "name": name,
                "value": rounded(value, lo, hi),
                "v": data_value(value),
                "pm": pm(lo, hi),
                "ci": ci_text(lo, hi),
                "weight": use,
                "title": f"{name}: {spec['kind']} metrics {rules}; in [0, 1], higher is healthier",
            }
        )
    ranks = ranked[(row["suite"], row["suite_version"])]
    rank = ranks.get(row["id"])
    return {
        "score": rounded(row["score"], row["score_lo"], row["score_hi"]),
        "score_pm": pm(row["score_lo"], row["score_hi"]),
        "score_ci": ci_text(row["score_lo"], row["score_hi"]),
        "composite": rounded(row["composite"], row["composite_lo"], row["composite_hi"]),
        "rank": None if rank is None else {"point": rank[0], "best": rank[1], "worst": rank[2], "group": rank[3]},
        "n_ranked": len(ranks),
        "unranked": "" if rank else "no score (no outcome component)" if row["score"] is None else "incomplete row",
        "components": shown,
    }


def profile(entry: Entry, tables: Tables, row: dict[str, Any], paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collapse profile: the :data:`PROFILE` metrics of each probe task, with the base and Δ vs base and parent."""
    parent = next((c for c in paired if c["relation"] == "parent"), None)
    vs_parent = {(m["task"], m["metric"]): shown_delta(m) for m in (parent or {}).get("metrics", [])}
    out = []
    for task in sorted(t for t, k in entry.kinds.items() if k == "probe"):
        for metric in PROFILE:
            col = f"{task}.{metric}"
            if finite(entry.metrics[task].get(metric)) is None:
                continue
            lo, hi, _ = interval(tables.cis[row["id"]].get(col), entry.metrics[task], metric)
            base = tables.scalars.at[row["base_id"], col] if row["base_id"] else None
            s = metric_spec.spec_for(metric)
            out.append(
                {
                    "task": task,
                    "label": s.display_label if s else metric,
                    "metric": metric,
                    "title": spec_title(metric),
                    "value": rounded(tables.scalars.at[row["id"], col], lo, hi),
                    "pm": pm(lo, hi),
                    "base": plain(base) if row["base_id"] != row["id"] else "this row",
                    "delta": plain(tables.deltas.at[row["id"], col]) if row["base_id"] != row["id"] else "",
                    "parent": vs_parent.get((task, metric)),
                }
            )
    seen = Counter((p["task"], p["label"]) for p in out)
    for p in out:  # one spec for several ids (kl_to_base, kl_to_parent): the id tells them apart
        if seen[(p["task"], p["label"])] > 1:
            p["label"] = f"{p['label']} ({p['metric']})"
    return out


# --- the metrics, grouped ---------------------------------------------------------------------------------


def metric_groups(entry: Entry, tables: Tables, row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(groups of metric rows in :data:`GROUPS` order, the LoRA per-module tables)."""
    rid, bid = row["id"], row["base_id"]
    groups: dict[str, list[dict[str, Any]]] = {g: [] for g, _ in GROUPS}
    modules: dict[str, dict[str, dict[str, Any]]] = {}  # task -> metric -> module -> value
    value_of, base_of, delta_of = (
        _row(frame, i) for frame, i in ((tables.scalars, rid), (tables.scalars, bid), (tables.deltas, rid))
    )
    for task in sorted(entry.metrics):
        kind, ms = entry.kinds[task], entry.metrics[task]
        n, unit = task_n(entry, task)
        for metric in sorted(ms):
            if is_stderr(metric, ms):
                continue
            if kind == "lora" and ":" in metric:
                name, module = metric.split(":", 1)
                modules.setdefault(task, {}).setdefault(name, {})[module] = ms[metric]
                continue
            col = f"{task}.{metric}"
            value = value_of[col]
            base = base_of[col] if bid else None
            lo, hi, how = interval(tables.cis[rid].get(col), ms, metric)
            bound = bound_text(metric, value)
            groups[group_of(kind, metric) or "other"].append(
                {
                    "task": task,
                    "metric": metric,
                    "title": short_title(metric),
                    "value": bound or rounded(value, lo, hi),
                    "bound": bool(bound or bound_text(metric, base)),
                    "v": data_value(value),
                    "pm": pm(lo, hi),
                    "ci": f"{how} {ci_text(lo, hi)}" if how else "",
                    "n": "" if n is None else f"{n} {unit}",
                    "base": (bound_text(metric, base) or plain(base)) if bid else "—",
                    "delta": "—" if bound or bound_text(metric, base) else plain(delta_of[col]),
                }
            )
    shown = [{"id": g, "label": label, "rows": groups[g], "defs": definitions(groups[g])} for g, label in GROUPS if groups[g]]
    return shown, lora_tables(entry, modules)


def _row(frame: pd.DataFrame, rid: str | None) -> dict[str, Any]:
    """Row ``rid`` of a float frame (scalars, deltas) as {column: value}, the values ``frame.at`` gives, in one lookup."""
    if not rid:
        return {}
    return dict(zip(frame.columns, frame.loc[rid].to_numpy()))


def short_title(metric: str) -> str:
    s = metric_spec.spec_for(metric)
    return f"{s.display_label} {s.arrow}" if s else metric


def definitions(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The metric specs behind a group's rows, each once (the definitions under the group's table)."""
    found: dict[str, dict[str, str]] = {}
    for r in rows:
        s = metric_spec.spec_for(r["metric"])
        if s is not None and s.id not in found:
            found[s.id] = {"label": f"{s.display_label} {s.arrow}", "text": spec_title(r["metric"]).split(": ", 1)[-1]}
    return [found[k] for k in sorted(found)]


def lora_tables(entry: Entry, modules: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One table per LoRA task: a row per metric, a column per module (q k v o gate up down, then the rest)."""
    out = []
    for task, by_metric in sorted(modules.items()):
        found = {m for vals in by_metric.values() for m in vals}
        cols = [m for m in MODULE_ORDER if m in found] + sorted(found - set(MODULE_ORDER))
        counts = entry.result.tasks[task].raw.get("counts") or {}
        heads = [{"name": m, "n": text(counts.get(f"modules:{m}"))} for m in cols]
        rows = [
            {"metric": name, "title": short_title(name), "cells": [plain(vals.get(m)) for m in cols]}
            for name, vals in sorted(by_metric.items())
        ]
        out.append({"task": task, "heads": heads, "rows": rows})
    return out


# --- the page ---------------------------------------------------------------------------------------------


def checkpoint(doc: dict[str, Any], row: dict[str, Any], base_page: str | None) -> list[dict[str, Any]]:
    """The checkpoint table's rows: label, text and (optional) code / extra / href / note (the legacy-hash warning)."""
    model = {**dict.fromkeys(MODEL_KEYS), **doc["model"]}
    harness = {**dict.fromkeys(("name", "version", "git_sha", "git_dirty", "code_sha256")), **doc["harness"]}
    stages = [(text(x.get("name")), x.get("stage")) for x in model["lineage"] or [] if isinstance(x, dict)]
    lineage = " → ".join(f"{name} ({text(stage)})" if stage else name for name, stage in stages)
    scheme = text(model["sha256_scheme"])
    arch = (
        f"{text(model['architecture'])}, {text(model['num_layers'])} layers, hidden {text(model['hidden_size'])}, "
        f"{text(model['num_parameters'])} parameters, {text(model.get('dtype'))}"
    )
    dirty = " (dirty)" if harness["git_dirty"] else ""
    took = f", {text(doc['duration_s'])} s" if doc.get("duration_s") else ""
    legacy = model["sha256_scheme"] == "weights-json-v1"
    env = ", ".join(f"{k} {text(v)}" for k, v in sorted(doc["environment"].items()) if v is not None)
    config = ", ".join(f"{k}={text(v)}" for k, v in sorted(doc["config"].items()) if v not in (None, [], {}))
    rows: list[dict[str, Any]] = [
        {"label": "name", "text": text(model.get("name"))},
        {"label": "source", "text": text(model.get("source"))},
        {"label": "sha256", "text": text(model.get("sha256")), "code": True, "extra": scheme, "note": LEGACY if legacy else ""},
        {"label": "parent / stage", "text": f"{text(model['parent'])} / {text(model['stage'])}"},
        {"label": "recipe / intervention", "text": f"{text(model['recipe'])} / {text(model['intervention'])}"},
        {"label": "lineage", "text": lineage or "—"},
        {"label": "base row", "text": text(row["base_id"]) if row["base_id"] != row["id"] else "this row", "href": base_page},
        {"label": "architecture", "text": arch},
        {"label": "evaluated", "text": text(doc.get("created_at")) + took},
        {"label": "harness", "text": f"{text(harness['name'])} {text(harness['version'])}, git "
         f"{text(harness['git_sha'])[:12]}{dirty}, code {text(harness['code_sha256'])[:12]}"},
        {"label": "environment", "text": env},
        {"label": "config", "text": config},
    ]  # fmt: skip
    return [{"code": False, "extra": "", "href": None, "note": "", **r} for r in rows]


def links(row: dict[str, Any], entry: Entry) -> dict[str, Any]:
    """The raw result, its samples files and its verification (the "✓ verified" mark, when current), relative to the
    page (``leaderboard/models/`` in the repository)."""
    folder = posixpath.dirname(row["id"])
    names = sorted({ref["path"] for _, ref in samples_refs(entry.doc) if isinstance(ref.get("path"), str)})
    samples = [{"href": f"../../{folder}/{n}", "name": n} for n in names]
    return {"result": f"../../{row['id']}", "samples": samples, "verified": mark(entry.verified, f"../../{row['verification']}")}


def model_page(
    env: jinja2.Environment,
    row: dict[str, Any],
    tables: Tables,
    pages: dict[str, str],
    plots: list[dict[str, str]],
    common: dict[str, Any],
    paired: list[dict[str, Any]],
    ranked: dict[tuple[Any, Any], dict[str, Any]],
) -> str:
    """``paired``: this row's comparisons as :func:`shown_comparisons` prepares them; ``ranked``: the build's
    :func:`~.index_view.ranks_by_suite` (one ranking per build, shared with the index)."""
    entry = tables.entries[row["id"]]
    groups, lora = metric_groups(entry, tables, row)
    base_page = pages.get(row["base_id"]) if row["base_id"] and row["base_id"] != row["id"] else None
    return env.get_template("model.html.j2").render(
        row=row,
        head=headline(entry, tables, row, ranked),
        profile=profile(entry, tables, row, paired),
        paired=paired,
        groups=groups,
        any_bound=any(m["bound"] for g in groups for m in g["rows"]),
        lora=lora,
        items=item_browser(entry),
        items_shown=ITEMS_SHOWN,
        checkpoint=checkpoint(entry.doc, row, base_page),
        links=links(row, entry),
        plots=plots,
        bounds=T_BOUNDS,
        **common,
    )
