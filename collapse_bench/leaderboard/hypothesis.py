"""The hypothesis panel: across all submissions, how does each candidate predictor (probe geometry, KL and
neighbourhood scalars; the gradient signal of plasticity tasks; families in ``composite.yaml``) go with
plasticity, OOD accuracy and ECE? Pearson and Spearman with percentile-bootstrap CIs over
submissions (pairs resampled; :mod:`.stats`), n shown, flagged "n too small" below ``min_n``.
Reported whatever the sign: the benchmark's claim is that collapse goes with lost plasticity, worse OOD
accuracy and worse calibration; the panel says whether these submissions agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .aggregate import Tables
from .entry import composite_config


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


def predictor_columns(tables: Tables) -> list[tuple[str, str]]:
    """(family, "<task>.<metric>") for every configured predictor present in the tables: each family's metrics on
    every task of its kind, tasks sorted."""
    out = []
    for family, spec in composite_config()["hypothesis"]["predictors"].items():
        tasks = sorted({t for e in tables.entries.values() for t, k in e.kinds.items() if k == spec["kind"]})
        out += [(family, f"{t}.{m}") for t in tasks for m in spec["metrics"] if f"{t}.{m}" in tables.scalars.columns]
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def hypothesis_panel(tables: Tables, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    cfg = composite_config()["hypothesis"]
    rows = []
    for target, spec in cfg["targets"].items():
        y_all = target_values(tables, target, spec)
        for family, col in predictor_columns(tables):
            x_all = tables.scalars[col]
            keep = x_all.notna() & y_all.notna()
            x, y = x_all[keep].to_numpy(), y_all[keep].to_numpy()
            n = int(keep.sum())
            row = {
                "metric": col,
                "family": family,
                "target": target,
                "n": n,
                "pearson": _round(stats.pearson(x, y)),
                "spearman": _round(stats.spearman(x, y)),
            }
            for name, fn in (("pearson", stats.pearson), ("spearman", stats.spearman)):
                ci = stats.correlation_ci(x, y, fn, n_boot, stats.seed_of(col, target, name)) if row[name] is not None else None
                row[f"{name}_lo"], row[f"{name}_hi"] = (_round(ci[0]), _round(ci[1])) if ci else (None, None)
            row["flag"] = (
                "no data"
                if n == 0
                else "n too small"
                if n < cfg["min_n"]
                else "undefined (constant)"
                if row["pearson"] is None
                else ""
            )
            rows.append(row)
    cols = ["metric", "family", "target", "n", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo"]
    cols += ["spearman_hi", "flag"]
    return pd.DataFrame(rows, columns=cols)
