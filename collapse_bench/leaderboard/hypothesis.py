"""The hypothesis panel: does representation collapse go with lost plasticity, worse OOD accuracy and worse
calibration? Each candidate predictor (probe geometry, KL and neighbourhood scalars; the gradient signal of
plasticity tasks; families in ``composite.yaml``) against each target (plasticity and OOD-accuracy components,
mean ECE), in two analyses (schema and formulas: ``docs/leaderboard/hypothesis.md``):

* ``within_lineage``: over lineage edges (a stage row and its parent row, same suite), Spearman ρ of
  Δpredictor vs Δtarget, 95 % CI from a cluster bootstrap over lineages (:func:`.paired.cluster_bootstrap`).
* ``across_rows``: over all rows, Pearson r and Spearman ρ with percentile-bootstrap CIs over rows (pairs
  resampled, :func:`.stats.correlation_ci`), plus Spearman partial correlations controlling for the KL to the
  base and for the model family (base model as a categorical covariate; :func:`.paired.partial_correlation`).

Every row shown has a p-value (Spearman's t approximation at the Kish effective n), a Benjamini–Hochberg
q-value over the rows shown in its analysis, the expected sign (from the metric specs' ``direction``), the
effective n over lineage clusters, a verdict (:func:`.paired.verdict`) and its rank among the rival predictors
of its target (by |ρ|). Pairs with fewer than ``min_n`` rows, or a constant variable, are not shown: they are
counted in ``hidden``. Deterministic: every bootstrap draws from :func:`.stats.seed_of` of its labels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..metrics.spec import spec_for
from . import paired, stats
from .aggregate import Tables
from .entry import composite_config
from .hypothesis_within import edge_deltas, lineage_edges, lineage_keys

ANALYSES = ("within_lineage", "across_rows")
COLUMNS = [
    "analysis",
    "metric",
    "family",
    "target",
    "n",
    "n_clusters",
    "n_effective",
    "pearson",
    "pearson_lo",
    "pearson_hi",
    "spearman",
    "spearman_lo",
    "spearman_hi",
    "p_value",
    "q_value",
    "expected_sign",
    "verdict",
    "rank_within_target",
    "partial_kl",
    "partial_family",
    "partial_kl_family",
    "n_partial",
    "flag",
]
ALPHA = 0.05  # the verdict's level for q
ACROSS_ONLY = ("pearson_lo", "pearson_hi", "partial_kl", "partial_family", "partial_kl_family", "n_partial")  # null within


def target_values(tables: Tables, name: str, spec: dict[str, str]) -> pd.Series:
    """Per submission: a composite component, or the mean of one metric over the tasks of one kind."""
    if "component" in spec:
        return tables.models.set_index("id")[f"c.{spec['component']}"].astype(float).reindex(tables.scalars.index)
    values = {}
    for rid, entry in tables.entries.items():
        got = [
            m[spec["metric"]]
            for t, m in sorted(entry.metrics.items())
            if entry.kinds[t] == spec["kind"] and m.get(spec["metric"]) is not None
        ]
        values[rid] = float(np.mean([float(g) for g in got if g is not None])) if got else np.nan
    return pd.Series(values, dtype=np.float64).reindex(tables.scalars.index)


def _predictors(tables: Tables) -> list[tuple[str, str, str]]:
    """(family, task, metric) of every configured predictor present in the tables, tasks sorted."""
    out = []
    for family, spec in composite_config()["hypothesis"]["predictors"].items():
        tasks = sorted({t for e in tables.entries.values() for t, k in e.kinds.items() if k == spec["kind"]})
        out += [(family, t, m) for t in tasks for m in spec["metrics"] if f"{t}.{m}" in tables.scalars.columns]
    return out


def predictor_columns(tables: Tables) -> list[tuple[str, str]]:
    """(family, "<task>.<metric>") for every configured predictor present in the tables: each family's metrics on
    every task of its kind, tasks sorted."""
    return [(family, f"{t}.{m}") for family, t, m in _predictors(tables)]


def direction_sign(metric: str) -> int | None:
    """+1 when higher values of ``metric`` are healthier / better (its spec's ``direction``), -1 when lower, None
    when the spec gives no direction (or there is no spec)."""
    spec = spec_for(metric)
    direction = spec.direction if spec is not None else None
    return 1 if direction == "higher" else -1 if direction == "lower" else None


def target_sign(spec: dict[str, str]) -> int | None:
    """The better direction of a target: composite components are scores, higher = better; a metric target by
    its spec (ECE: lower)."""
    return 1 if "component" in spec else direction_sign(spec["metric"])


def expected_sign(metric: str, target_spec: dict[str, str]) -> int | None:
    """The sign of corr(predictor, target) the hypothesis predicts: a predictor moving in its healthy direction
    goes with a target moving in its better one (and collapse with a worse one); None without a direction."""
    a, b = direction_sign(metric), target_sign(target_spec)
    return None if a is None or b is None else a * b


def effective_n(x: np.ndarray, y: np.ndarray, clusters: Sequence[Hashable]) -> tuple[int, float | None]:
    """(number of clusters, Kish effective n of a rank correlation): ``n / (1 + (n/G - 1) ICC_x ICC_y)`` with
    the one-way ANOVA ICCs of the average ranks of x and of y over the clusters from :func:`.paired.effective_n`
    (an all-singleton clustering has ICC 0). None with fewer than 2 clusters."""
    members = paired.cluster_members(clusters)
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    ex = paired.effective_n([rx[m] for m in members])
    ey = paired.effective_n([ry[m] for m in members])
    if ex is None or ey is None:
        return len(members), None
    deff = 1.0 + (len(x) / len(members) - 1.0) * (ex.icc or 0.0) * (ey.icc or 0.0)
    return len(members), len(x) / deff


def spearman_p(rho: float, n_eff: float) -> float | None:
    """Two-sided p of Spearman ρ from the t approximation of ``scipy.stats.spearmanr``,
    ``t = ρ sqrt(df / (1 - ρ²))``, ``df = n_eff - 2`` (None for df <= 0)."""
    from scipy.stats import t as student_t  # scipy ships with lm-eval's dependencies

    df = n_eff - 2.0
    if not df > 0:
        return None
    if abs(rho) >= 1.0:
        return 0.0
    return float(2.0 * student_t.sf(abs(rho) * math.sqrt(df / (1.0 - rho * rho)), df))


def family_dummies(labels: Sequence[str]) -> np.ndarray:
    """One 0/1 column per lineage label but the first (sorted): the model family as a categorical covariate."""
    levels = sorted(set(labels))[1:]
    out = np.zeros((len(labels), len(levels)), dtype=np.float64)
    for j, lev in enumerate(levels):
        out[:, j] = [lab == lev for lab in labels]
    return out


def kl_covariate(tables: Tables, task: str, own_base: pd.Series) -> pd.Series:
    """Per row: ``<task>.kl_to_base`` when the predictor's task is a probe task with that column, else the mean
    ``kl_to_base`` over the row's probe tasks; a base row without a value has KL 0 to itself; NaN otherwise."""
    col = f"{task}.kl_to_base"
    if col in tables.scalars.columns:
        kl = tables.scalars[col]
    else:
        probe = sorted({f"{t}.kl_to_base" for e in tables.entries.values() for t, k in e.kinds.items() if k == "probe"})
        probe = [c for c in probe if c in tables.scalars.columns]
        kl = tables.scalars[probe].mean(axis=1) if probe else pd.Series(np.nan, index=tables.scalars.index)
    return kl.where(kl.notna() | ~own_base, 0.0).astype(np.float64)


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _sig(x: float | None) -> float | None:
    """p- and q-values to 6 significant digits (6 decimals would turn a small p into 0)."""
    return None if x is None or not math.isfinite(float(x)) else float(f"{float(x):.6g}")


def _measure(x: np.ndarray, y: np.ndarray, labels: list[str], min_n: int) -> dict[str, Any] | str:
    """The statistics every row has, or why the pair is hidden ("n_below_min", "constant")."""
    if len(x) < min_n:
        return "n_below_min"
    r, rho = stats.pearson(x, y), stats.spearman(x, y)
    if r is None or rho is None:
        return "constant"
    g, n_eff = effective_n(x, y, labels)
    return {
        "n": len(x),
        "n_clusters": g,
        "n_effective": _round(n_eff),
        "pearson": _round(r),
        "spearman": _round(rho),
        "p_value": _sig(spearman_p(rho, len(x) if n_eff is None else n_eff)),
        "flag": "one lineage" if g < 2 else "",
    }


def _within(x: np.ndarray, y: np.ndarray, labels: list[str], key: tuple[str, str], min_n: int, n_boot: int) -> dict | str:
    """Δpredictor vs Δtarget over lineage edges; Spearman CI from the cluster bootstrap over lineages."""
    row = _measure(x, y, labels, min_n)
    if isinstance(row, str):
        return row
    seed = stats.seed_of("within_lineage", *key)
    boot = paired.cluster_bootstrap([x, y], labels, stats.spearman, n_boot, seed, order_free=True)
    ci = boot.ci if boot is not None else None
    row["spearman_lo"], row["spearman_hi"] = (_round(ci[0]), _round(ci[1])) if ci else (None, None)
    return {**dict.fromkeys(ACROSS_ONLY), **row}


def _across(
    x: np.ndarray, y: np.ndarray, kl: np.ndarray, labels: list[str], key: tuple[str, str], min_n: int, n_boot: int
) -> dict | str:
    """Correlation over rows (row-bootstrap CIs, the seeds of the earlier panel) and the partial correlations."""
    row = _measure(x, y, labels, min_n)
    if isinstance(row, str):
        return row
    for name, fn in (("pearson", stats.pearson), ("spearman", stats.spearman)):
        ci = stats.correlation_ci(x.tolist(), y.tolist(), fn, n_boot, stats.seed_of(*key, name))
        row[f"{name}_lo"], row[f"{name}_hi"] = (_round(ci[0]), _round(ci[1])) if ci else (None, None)
    has = np.isfinite(kl)
    sub = [lab for lab, h in zip(labels, has) if h]
    enough = int(has.sum()) >= min_n
    row["partial_family"] = _round(paired.partial_correlation(x, y, family_dummies(labels)))
    row["partial_kl"] = _round(paired.partial_correlation(x[has], y[has], kl[has])) if enough else None
    both = np.column_stack([kl[has], family_dummies(sub)])
    row["partial_kl_family"] = _round(paired.partial_correlation(x[has], y[has], both)) if enough else None
    row["n_partial"] = int(has.sum())
    return row


Points = dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, list[str]]]


def hypothesis_panel(
    tables: Tables, n_boot: int = stats.N_BOOT, points: Points | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the rows shown, ``COLUMNS``; hidden = counts of the pairs not shown, per reason and per analysis).
    ``points``, when given, receives the data behind every shown row: (analysis, metric, target) -> (x, y, row
    ids; the stage row of each edge within lineages) -- what the site's scatter plots draw."""
    cfg = composite_config()["hypothesis"]
    min_n = int(cfg["min_n"])
    lineage = lineage_keys(tables)
    ids = list(tables.scalars.index)
    edges = lineage_edges(tables)
    edge_labels = np.array([lineage[c] for c, _ in edges], dtype=object)
    row_labels = np.array([lineage[i] for i in ids], dtype=object)
    base_of = dict(zip(tables.models["id"], tables.models["base_id"]))
    own_base = pd.Series([base_of.get(i) == i for i in ids], index=ids, dtype=bool)
    hidden: dict[str, dict[str, int]] = {a: {"n_below_min": 0, "constant": 0} for a in ANALYSES}
    kl_cache: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for target, spec in cfg["targets"].items():
        y_all = target_values(tables, target, spec)
        dy_all = edge_deltas(y_all, edges)
        for family, task, metric in _predictors(tables):
            col = f"{task}.{metric}"
            x_all = tables.scalars[col]
            head = {"metric": col, "family": family, "target": target, "expected_sign": expected_sign(metric, spec)}
            dx_all = edge_deltas(x_all, edges)
            ok = np.isfinite(dx_all) & np.isfinite(dy_all)
            within = _within(dx_all[ok], dy_all[ok], list(edge_labels[ok]), (col, target), min_n, n_boot)
            if task not in kl_cache:
                kl_cache[task] = kl_covariate(tables, task, own_base).reindex(ids).to_numpy()
            keep = (x_all.notna() & y_all.notna()).to_numpy()
            x, y, kl = x_all.to_numpy()[keep], y_all.to_numpy()[keep], kl_cache[task][keep]
            across = _across(x, y, kl, list(row_labels[keep]), (col, target), min_n, n_boot)
            data = (
                (dx_all[ok], dy_all[ok], [c for (c, _), k in zip(edges, ok) if k]),
                (x, y, [i for i, k in zip(ids, keep) if k]),
            )
            for analysis, got, xy in zip(ANALYSES, (within, across), data):
                if isinstance(got, str):
                    hidden[analysis][got] += 1
                else:
                    rows.append({"analysis": analysis, **head, **got})
                    if points is not None:
                        points[(analysis, col, target)] = xy
    for analysis in ANALYSES:
        mine = [r for r in rows if r["analysis"] == analysis]
        for r, q in zip(mine, paired.benjamini_hochberg([r["p_value"] for r in mine])):
            r["q_value"] = _sig(q)
            r["verdict"] = paired.verdict(r["spearman_lo"], r["spearman_hi"], r["q_value"], r["expected_sign"], ALPHA)
        for target in cfg["targets"]:
            strength = [(-abs(r["spearman"]), r) for r in mine if r["target"] == target]
            for r in [r for _, r in strength]:
                r["rank_within_target"] = 1 + sum(s < -abs(r["spearman"]) for s, _ in strength)
    order = {t: i for i, t in enumerate(cfg["targets"])}
    rows.sort(key=lambda r: (ANALYSES.index(r["analysis"]), order[r["target"]], r["rank_within_target"], r["metric"]))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("expected_sign", "rank_within_target", "n_partial"):
        frame[c] = frame[c].astype("Int64")
    summary = {
        "min_n": min_n,
        "n_below_min": sum(h["n_below_min"] for h in hidden.values()),
        "constant": sum(h["constant"] for h in hidden.values()),
        "by_analysis": hidden,
    }
    return frame, summary
