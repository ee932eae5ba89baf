"""Leaderboard tables (pandas) from validated submissions: scalars, deltas vs base, the headline score (outcomes)
and the v1 composite with bootstrap CIs, rank intervals and tied groups by the score, and the interventions view (formulas in
``composite.yaml`` and :mod:`.stats`; the hypothesis panel is in :mod:`.hypothesis`).

Generic over the result schema: scalars are ``tasks.<task>.metrics``, one column ``<task>.<metric>``
each; per-item records come from referenced samples files, per-seed values from ``tasks.<task>.per_seed``.
The rows themselves (:class:`~.entry.Entry`, the typed result) are in :mod:`.entry`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..metrics.calibration_rows import ece_mass_boot
from . import stats
from .entry import (
    BASELINE,
    Entry,
    _num,
    composite_config,
    find_base,
    guard,
    meta_row,
    seed_order,
)
from .forked import fork_map
from .noisefloor import NoiseFloor


def scalar_frame(entries: list[Entry]) -> pd.DataFrame:
    """One row per submission (index = id), one float column ``<task>.<metric>`` per scalar (NaN = absent/null)."""
    rows = {
        e.id: {f"{t}.{k}": (np.nan if v is None else float(v)) for t, ms in e.metrics.items() for k, v in ms.items()}
        for e in entries
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=np.float64)
    return frame.reindex(index=[e.id for e in entries], columns=sorted(frame.columns))


def delta_frame(scalars: pd.DataFrame, base_ids: dict[str, str | None]) -> pd.DataFrame:
    """row - base row for every scalar (NaN without a submitted base)."""
    out = pd.DataFrame(np.nan, index=scalars.index, columns=scalars.columns)
    for rid, bid in base_ids.items():
        if bid is not None:
            out.loc[rid] = scalars.loc[rid].to_numpy() - scalars.loc[bid].to_numpy()
    return out


# --- composite -------------------------------------------------------------------------------------------


def metric_scores(rule: dict[str, Any], spec: dict[str, Any], values: np.ndarray, base_value: float | None) -> np.ndarray | None:
    """Scores in [0, 1] of metric values (formulas in composite.yaml), elementwise: a row's bootstrap
    replicates are scored in one array operation (the same IEEE arithmetic as one value at a time)."""
    direction = 1.0 if rule.get("better", "higher") == "higher" else -1.0
    if spec.get("relative_to_base"):
        if base_value is None:
            return None
        denom = max(abs(base_value), float(rule.get("floor", 1e-12))) * float(spec.get("scale", 1.0))
        return np.clip(0.5 + 0.5 * direction * (values - base_value) / denom, 0.0, 1.0)
    return np.clip(values if direction > 0 else 1.0 - values, 0.0, 1.0)


def metric_score(rule: dict[str, Any], spec: dict[str, Any], value: float, base_value: float | None) -> float | None:
    """Score of one value (:func:`metric_scores`)."""
    out = metric_scores(rule, spec, np.array([value], dtype=np.float64), base_value)
    return None if out is None else float(out[0])


def per_seed_rows(block: dict[str, Any]) -> list[dict[str, Any]]:
    """``per_seed`` as a list of metric dicts ordered by seed ({seed: {...}} or [{seed, ...}])."""
    raw = block.get("per_seed")
    if isinstance(raw, dict):
        keys = sorted(raw, key=seed_order)
        return [raw[k] for k in keys if isinstance(raw[k], dict)]
    if isinstance(raw, list):
        return [r for r in raw if isinstance(r, dict)]
    return []


def chance_normalised(entry: Entry, task: str) -> np.ndarray | None:
    """Per item (correct − 1/k) / (1 − 1/k) (composite.yaml), or None without every item's number of choices."""
    chance = entry.chance.get(task)
    if task not in entry.items or chance is None or not len(chance) or not np.isfinite(chance).all() or (chance >= 1).any():
        return None
    return (entry.items[task][1] - chance) / (1.0 - chance)


def item_stat_reps(entry: Entry, task: str, metric: str, n_boot: int) -> np.ndarray | None:
    """Bootstrap replicates over items of ``acc`` (mean correct), ``acc_chance`` (mean chance-normalised correct,
    the same item indices as ``acc``) or ``ece`` (15 equal-mass bins, the same
    :func:`collapse_bench.metrics.calibration.ece` the lm_eval kind reports) from the samples records."""
    if task not in entry.items or metric not in ("acc", "acc_chance", "ece"):
        return None
    key = (task, metric, n_boot)
    if key not in entry.reps:  # computed once per row: components, CIs and the interventions view share them
        conf, correct = entry.items[task]
        seed = stats.seed_of(entry.id, task, "acc" if metric == "acc_chance" else metric)  # acc_chance: acc's items
        idx = stats.bootstrap_indices(len(conf), n_boot, seed)
        if metric == "acc_chance":
            norm = chance_normalised(entry, task)
            if norm is None:
                return None
            entry.reps[key] = norm[idx].mean(axis=1)
        else:
            entry.reps[key] = correct[idx].mean(axis=1) if metric == "acc" else ece_mass_boot(conf, correct, idx)
    return entry.reps[key]


def score_reps(
    entry: Entry, task: str, metric: str, rule: dict[str, Any], spec: dict[str, Any], base_value: float | None, n_boot: int
) -> np.ndarray | None:
    """Bootstrap replicates of one metric's score (items, or seeds resampled jointly), or None."""
    reps = item_stat_reps(entry, task, "acc_chance" if rule.get("chance_normalised") else metric, n_boot)
    if reps is not None:
        return metric_scores(rule, spec, np.asarray(reps, dtype=np.float64), base_value)
    seeds = per_seed_rows(entry.result.tasks[task].raw)
    if len(seeds) < 2 or not all(_num(s.get(metric)) for s in seeds):
        return None
    values = np.array([float(s[metric]) for s in seeds])
    idx = stats.bootstrap_indices(len(seeds), n_boot, stats.seed_of(entry.id, task, "seeds"))
    return metric_scores(rule, spec, values[idx].mean(axis=1), base_value)


def floor_reps(entry: Entry, task: str, floor: NoiseFloor | None, n_boot: int) -> dict[str, np.ndarray]:
    """metric -> the floor's Gaussian replicates of this row's values of ``task`` (:mod:`.noisefloor`), cached."""
    if floor is None:
        return {}
    key = ("floor", task, floor.sha256, n_boot)
    if key not in entry.reps:
        values = {m: float(v) for m, v in entry.metrics[task].items() if v is not None and _num(v)}
        block = entry.result.tasks[task]
        entry.reps[key] = floor.replicates(task, values, block.hash or None, n_boot, stats.seed_of(entry.id, task, "floor"))  # type: ignore[assignment]
    return entry.reps[key]  # type: ignore[return-value]


def components(
    entry: Entry, base: Entry | None, n_boot: int = stats.N_BOOT, floor: NoiseFloor | None = None
) -> dict[str, tuple[float, np.ndarray] | None]:
    """component -> (value, bootstrap replicates) or None when the row has no input for it. A metric's replicates
    come from its items or seeds, else from ``floor`` (the row's lineage root's noise floor, :mod:`.noisefloor`),
    else it is held constant."""
    out: dict[str, tuple[float, np.ndarray] | None] = {}
    for name, spec in composite_config()["components"].items():
        points, reps = [], []
        for task, kind in sorted(entry.kinds.items()):
            if kind != spec["kind"]:
                continue
            for rule in spec["metrics"]:
                for metric, value in sorted(entry.metrics[task].items()):
                    if value is None or not fnmatch.fnmatchcase(metric, rule["metric"]):
                        continue
                    if rule.get("chance_normalised"):
                        norm = chance_normalised(entry, task)
                        if norm is None:
                            continue
                        value = float(norm.mean())
                    bval = base.metrics.get(task, {}).get(metric) if base is not None else None
                    s = metric_score(rule, spec, value, bval)
                    if s is None:
                        continue
                    r = score_reps(entry, task, metric, rule, spec, bval, n_boot)
                    if r is None and (f := floor_reps(entry, task, floor, n_boot).get(metric)) is not None:
                        r = metric_scores(rule, spec, f, bval)
                    points.append(s)
                    reps.append(r if r is not None else np.full(n_boot, s))
        out[name] = (float(np.mean(points)), np.mean(reps, axis=0)) if points else None
    return out


SCORES = ("score", "composite")  # the headline (ranked) and the v1 composite (kept for comparison)


def composite(
    comps: dict[str, tuple[float, np.ndarray] | None], score: str = "score"
) -> tuple[float | None, np.ndarray | None, list[str]]:
    """(``score``, replicates, missing components) of the score named in composite.yaml ``scores``: weights
    renormalised over its present components."""
    weights = {k: float(w) for k, w in composite_config()["scores"][score]["weights"].items()}
    present = {k: v for k, v in comps.items() if v is not None and k in weights}
    missing = [k for k in weights if k not in present]
    if not present:
        return None, None, missing
    total = sum(weights[k] for k in present)
    point = sum(weights[k] * v[0] for k, v in present.items()) / total
    reps = np.sum([weights[k] * v[1] for k, v in present.items()], axis=0) / total
    return float(point), reps, missing


def metric_cis(entry: Entry, n_boot: int) -> dict[str, list[float]]:
    """CIs of scalars that have per-item (acc, ece) or per-seed data: ``<task>.<metric>`` -> [lo, hi]."""
    out: dict[str, list[float]] = {}
    for task in sorted(entry.metrics):
        for metric in ("acc", "ece"):
            reps = item_stat_reps(entry, task, metric, n_boot)
            if reps is not None:
                out[f"{task}.{metric}"] = list(stats.percentile_ci(reps))
        seeds = per_seed_rows(entry.result.tasks[task].raw)
        if len(seeds) >= 2:
            for metric in sorted({k for s in seeds for k, v in s.items() if _num(v)}):
                vals = [float(s[metric]) for s in seeds if _num(s.get(metric))]
                if len(vals) == len(seeds):
                    out[f"{task}.{metric}"] = list(stats.bootstrap_ci(vals, n_boot, stats.seed_of(entry.id, task, metric)))
    return out


# --- the tables ---------------------------------------------------------------------------------------


@dataclass
class Tables:
    models: pd.DataFrame  # one row per submission, leaderboard order
    scalars: pd.DataFrame  # index id, columns <task>.<metric>
    deltas: pd.DataFrame  # row - base row
    interventions: pd.DataFrame
    cis: dict[str, dict[str, list[float]]]  # id -> {<task>.<metric>: [lo, hi]}
    entries: dict[str, Entry]
    floors: dict[str, NoiseFloor] = field(default_factory=dict)  # sha256 -> committed noise floor


def root_floor(entry: Entry, floors: dict[str, NoiseFloor] | None) -> NoiseFloor | None:
    """The noise floor of the row's lineage root (its base checkpoint; itself without a lineage), if committed."""
    lineage = entry.result.model.lineage
    root = lineage[0].sha256 if lineage else entry.result.model.sha256
    return (floors or {}).get(root or "")


def _row_stats(job: tuple[Entry, Entry | None, int, NoiseFloor | None]) -> tuple[dict[str, Any], dict[str, Any], dict[Any, Any]]:
    """One row's (:func:`components`, :func:`metric_cis`, the bootstrap replicates they cached in ``entry.reps``)."""
    e, base, n_boot, floor = job
    with guard(e.id):
        return components(e, base, n_boot, floor), metric_cis(e, n_boot), e.reps


def build_tables(entries: list[Entry], n_boot: int = stats.N_BOOT, floors: dict[str, NoiseFloor] | None = None) -> Tables:
    """``floors``: the committed noise floors by sha256 (the geometry / diversity replicates, :func:`components`)."""
    entries = sorted(entries, key=lambda e: e.id)
    by_id = {e.id: e for e in entries}
    base_ids = {e.id: find_base(e, entries) for e in entries}
    names = list(composite_config()["components"])
    rows: list[dict[str, Any]] = []
    jobs = [(e, by_id[b] if (b := base_ids[e.id]) else None, n_boot, root_floor(e, floors)) for e in entries]
    per_row = fork_map(_row_stats, jobs)  # the bootstrap work, one row per job on every core
    cis = {e.id: row_cis for e, (_, row_cis, _) in zip(entries, per_row)}
    for e, (_, _, reps) in zip(entries, per_row):
        e.reps.update(reps)  # what the comparisons and the interventions view read again
    for e, (comps, _, _) in zip(entries, per_row):
        bid = base_ids[e.id]
        row = meta_row(e, bid)
        row.update({f"c.{k}": (c[0] if (c := comps[k]) else None) for k in names})
        for name in SCORES:
            point, r, missing = composite(comps, name)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = point, None, None
            if r is not None:
                row[f"{name}_lo"], row[f"{name}_hi"] = stats.percentile_ci(r)
            if name == "score":  # the flag the site shows next to the headline
                shown = ",".join(missing) if point is not None else ""
                row.update({"partial": bool(missing) and point is not None, "missing": shown})
        rows.append(row)
    for suite in sorted({r["suite"] for r in rows}):  # scores are comparable within a suite only
        ranked = [r for r in rows if r["score"] is not None and r["suite"] == suite and r["complete"]]
        intervals = stats.rank_intervals([r["score_lo"] for r in ranked], [r["score_hi"] for r in ranked])
        groups = stats.tied_groups([r["score"] for r in ranked], [r["score_lo"] for r in ranked], [r["score_hi"] for r in ranked])
        for ranked_row, (best, worst), g in zip(ranked, intervals, groups):
            ranked_row.update(
                {
                    "rank": 1 + sum(o["score"] > ranked_row["score"] for o in ranked),
                    "rank_best": best,
                    "rank_worst": worst,
                    "group": g,
                }
            )
    columns = [
        "id",
        "page",
        "model",
        "model_name",
        "source",
        "sha256",
        "parent",
        "stage",
        "depth",
        "recipe",
        "intervention",
        "suite",
        "suite_version",
        "base_id",
        "complete",
        "verified",
        "verification",
        "rank",
        "rank_best",
        "rank_worst",
        "group",
        "score",
        "score_lo",
        "score_hi",
        "partial",
        "missing",
        "composite",
        "composite_lo",
        "composite_hi",
    ] + [f"c.{k}" for k in names]
    models = pd.DataFrame(rows).reindex(columns=columns)
    models = (
        models.assign(_k=models["score"].fillna(-np.inf))
        .sort_values(["suite", "_k", "model", "id"], ascending=[True, False, True, True], kind="mergesort")
        .drop(columns="_k")
        .reset_index(drop=True)
    )
    scalars = scalar_frame(entries)
    return Tables(
        models,
        scalars,
        delta_frame(scalars, base_ids),
        interventions_view(models, by_id, base_ids, n_boot, floors),
        cis,
        by_id,
        dict(floors or {}),
    )


def restricted(entry: Entry, tasks: AbstractSet[str]) -> Entry:
    """The entry with only ``tasks`` (to compare two rows on the tasks both have)."""
    kept = {t: b for t, b in entry.doc["tasks"].items() if t in tasks}  # a new document: the typed view follows
    return Entry(entry.id, {**entry.doc, "tasks": kept}, entry.items, entry.complete, entry.reps, entry.item_ids, entry.chance)


def interventions_view(
    models: pd.DataFrame,
    by_id: dict[str, Entry],
    base_ids: dict[str, str | None],
    n_boot: int = stats.N_BOOT,
    floors: dict[str, NoiseFloor] | None = None,
) -> pd.DataFrame:
    """Rows with a recipe, each against the baseline chain (intervention null/"none") of the same recipe,
    stage and suite, on the tasks both rows have: Δ score (the headline, re-computed over those tasks), whether
    the two score CIs overlap, and Δ of every component; ``compared_on`` names the task subset when it is not all;
    ``rank`` orders the rows of one (recipe, stage, suite) by Δ score, the baseline (Δ 0) among them; ``group``
    names that triple (the site shows one table per group). The paired
    comparisons (:mod:`.comparisons`) are the finer test."""
    names = list(composite_config()["components"])
    cols = [
        "recipe",
        "stage",
        "suite",
        "intervention",
        "id",
        "model",
        "baseline_id",
        "score",
        "compared_on",
        "delta_score",
        "within_noise",
    ] + [f"delta_c.{c}" for c in names]
    out, cache = [], {}  # (id, common tasks) -> components: a baseline is compared with many rows
    chains = models[models["recipe"].notna()]

    def comps_of(e: Entry, common: frozenset) -> dict:
        if (e.id, common) not in cache:
            cache[(e.id, common)] = components(
                restricted(e, common), by_id.get(base_ids.get(e.id) or ""), n_boot, root_floor(e, floors)
            )
        return cache[(e.id, common)]

    for _, row in chains.iterrows():
        peers = chains[
            (chains["recipe"] == row["recipe"])
            & (chains["suite"] == row["suite"])
            & ((chains["stage"] == row["stage"]) | (chains["stage"].isna() & pd.isna(row["stage"])))
        ]
        base = peers[peers["intervention"].map(lambda v: v in BASELINE or pd.isna(v))].sort_values("id")
        b = base.iloc[0] if len(base) else None
        rec = {k: row[k] for k in ("recipe", "stage", "suite", "intervention", "id", "model", "score")}
        rec["intervention"] = "none" if row["intervention"] in BASELINE or pd.isna(row["intervention"]) else row["intervention"]
        rec["baseline_id"] = None if b is None else b["id"]
        rec.update({"compared_on": "", "delta_score": None, "within_noise": None, **{f"delta_c.{c}": None for c in names}})
        if b is not None:
            mine, theirs = by_id[row["id"]], by_id[b["id"]]
            common = frozenset(mine.result.tasks) & frozenset(theirs.result.tasks)
            if common != set(mine.result.tasks) or common != set(theirs.result.tasks):
                rec["compared_on"] = f"{len(common)} common tasks"
            comps = [comps_of(e, common) for e in (mine, theirs)]
            (pr, rr, _), (pb, rb, _) = composite(comps[0]), composite(comps[1])
            if pr is not None and pb is not None and rr is not None and rb is not None:
                (lo_r, hi_r), (lo_b, hi_b) = stats.percentile_ci(rr), stats.percentile_ci(rb)
                rec["delta_score"], rec["within_noise"] = pr - pb, bool(lo_r <= hi_b and lo_b <= hi_r)
            for c in names:
                if comps[0][c] is not None and comps[1][c] is not None:
                    rec[f"delta_c.{c}"] = comps[0][c][0] - comps[1][c][0]
        out.append(rec)
    frame = pd.DataFrame(out, columns=cols)
    # rank within (recipe, stage, suite) by Δ score vs the baseline (ties share the best rank; no baseline: none)
    group = [frame[k].fillna("") for k in ("recipe", "stage", "suite")]
    delta = pd.to_numeric(frame["delta_score"], errors="coerce").round(12)
    frame.insert(3, "rank", delta.groupby(group).rank(method="min", ascending=False).astype("Int64"))
    frame = frame.sort_values(["recipe", "stage", "suite", "rank", "intervention", "id"], kind="mergesort", na_position="last")
    depth = frame["id"].map(models.set_index("id")["depth"])  # stage position in the chain: groups sort in chain order
    frame["group"] = [
        f"{r} · depth {'?' if pd.isna(d) else int(d)} {s or ''} · {u}".replace("  ", " ")
        for r, d, s, u in zip(frame["recipe"], depth, frame["stage"], frame["suite"])
    ]
    return frame.reset_index(drop=True)
