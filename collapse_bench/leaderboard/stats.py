"""Uncertainty and association statistics for the leaderboard (numpy only; pure functions).

Kept hand-written, not ``scipy.stats``, for one reason each: the bootstrap draws ONE seeded index matrix
per row that every metric of the row reuses (paired replicates, byte-identical builds; ``scipy.stats.bootstrap``
draws its own per call); Pearson/Spearman have a row-wise form over thousands of replicates
(:func:`pearson_rows`) and the point estimate must be the same arithmetic bit for bit. Ranks are
``scipy.stats.rankdata``; the tests check every function against scipy.

* Percentile bootstrap: ``B`` resamples with replacement of the ``n`` units (items, seeds or
  submissions), index matrix ``rng.integers(0, n, (B, n))`` from ``numpy.random.default_rng(seed)``;
  the ``level`` CI is ``quantile(reps, [(1-level)/2, (1+level)/2])`` (numpy's linear interpolation).
* Pearson r = Σ(x-x̄)(y-ȳ) / sqrt(Σ(x-x̄)² Σ(y-ȳ)²); Spearman ρ = Pearson of average ranks (ties share
  the mean of their ranks). Undefined (None) for n < 3 or a constant variable.
* Rank intervals from CIs [lo, hi] (higher is better): best = 1 + #{j: lo_j > hi_i},
  worst = N - #{j: hi_j < lo_i}. Tied groups: rows sorted by point value; a row joins the current
  group while its hi >= the group leader's lo, else it starts the next group.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def seed_of(*parts: object) -> int:
    """A stable 32-bit seed from labels (so a row's bootstrap does not depend on the other rows)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big")


@functools.lru_cache(maxsize=64)
def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The (n_boot, n) resampling index matrix of ``seed`` (read-only, int32). Memoised: the rows on the same items
    and the metrics of one task share a seed, and a build asks for the same matrix hundreds of times."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n)).astype(np.int32)
    idx.flags.writeable = False
    return idx


def percentile_ci(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(reps, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_reps(values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the mean of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    return x[bootstrap_indices(len(x), n_boot, seed)].mean(axis=1)


def bootstrap_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    return percentile_ci(bootstrap_mean_reps(values, n_boot, seed), level)


def bootstrap_stat_reps(
    columns: Sequence[np.ndarray], stat: Callable[..., float], n_boot: int = N_BOOT, seed: int = 0
) -> np.ndarray:
    """Replicates of ``stat(*columns)`` over paired resamples of the rows."""
    idx = bootstrap_indices(len(columns[0]), n_boot, seed)
    return np.array([stat(*(c[i] for c in columns)) for i in idx], dtype=np.float64)


def rankdata(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based average ranks (ties share the mean rank): ``scipy.stats.rankdata``."""
    from scipy.stats import rankdata as ranks  # scipy ships with lm-eval's dependencies

    return np.asarray(ranks(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3:
        return None
    da, db = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom <= 1e-300:
        return None
    return float(np.clip((da * db).sum() / denom, -1.0, 1.0))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    return pearson(rankdata(x), rankdata(y)) if len(x) >= 3 else None


def correlation_ci(
    x: Sequence[float],
    y: Sequence[float],
    fn: Callable[[Any, Any], float | None],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """Percentile CI of a correlation over resampled (x, y) pairs; degenerate resamples are dropped."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3:
        return None
    idx = bootstrap_indices(len(a), n_boot, seed)
    rows = ROWWISE.get(fn)
    if rows is not None:  # all replicates at once (the same numbers as fn per replicate; NaN = degenerate)
        r = rows(a[idx], b[idx])
        kept = r[np.isfinite(r)]
    else:
        reps = [fn(a[i], b[i]) for i in idx]
        kept = np.array([r for r in reps if r is not None], dtype=np.float64)
    return percentile_ci(kept, level) if len(kept) >= n_boot // 2 else None


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`pearson` of every row of two (B, n) arrays; NaN where a row is constant."""
    da, db = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((da * db).sum(axis=1) / denom, -1.0, 1.0)
    return np.where(denom > 1e-300, r, np.nan)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`spearman` of every row (average ranks per row, as :func:`rankdata`)."""
    from scipy.stats import rankdata as ranks  # scipy ships with lm-eval's dependencies

    return pearson_rows(ranks(a, axis=1), ranks(b, axis=1))


ROWWISE: dict[Callable[..., float | None], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    pearson: pearson_rows,
    spearman: spearman_rows,
}


def rank_intervals(lo: Sequence[float], hi: Sequence[float]) -> list[tuple[int, int]]:
    """(best, worst) rank of each row given CIs (higher is better)."""
    los, his = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    n = len(los)
    return [(1 + int((los > his[i]).sum()), n - int((his < los[i]).sum())) for i in range(n)]


def tied_groups(point: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> list[int]:
    """Group number (1 = best) of each row; rows in one group are statistically tied with its leader."""
    order = sorted(range(len(point)), key=lambda i: -point[i])
    groups = [0] * len(point)
    group, leader_lo = 0, None
    for i in order:
        if leader_lo is None or hi[i] < leader_lo:
            group, leader_lo = group + 1, lo[i]
        groups[i] = group
    return groups
