"""Statistics that can tell two leaderboard rows apart (numpy + scipy; pure functions, nothing wired in).

Every bootstrap here uses :func:`.stats.bootstrap_indices` (``numpy.random.default_rng(seed)``), so the
same seed gives the same numbers, and the percentile CI of :func:`.stats.percentile_ci`. Replicates that
a statistic cannot compute (None / NaN) stay NaN in ``reps`` (aligned with the index matrix) and are
left out of the CI, which is None when fewer than half of them remain (as ``stats.correlation_ci``).
A pair of rows should draw from its own seed, e.g. ``stats.seed_of(id_a, id_b, task, metric)``.

* Paired bootstrap (two rows scored on the SAME n items, same order): ONE index matrix
  ``I = rng.integers(0, n, (B, n))`` for both rows; replicate ``Δ*_b = s(a[I_b]) - s(b[I_b])``, point
  ``Δ = s(a) - s(b)``. Items with several columns (confidence, correct): ``Δ*_b = f(A[I_b]) - f(B[I_b])``.
* Cluster bootstrap: the G distinct cluster labels in order of first appearance;
  ``J = rng.integers(0, G, (B, G))``; replicate b applies f to the rows of clusters ``J_b1 .. J_bG``
  concatenated in draw order. With singleton clusters this is the ordinary row bootstrap.
* McNemar: n10 = #(a right, b wrong), n01 = #(a wrong, b right), m = n10 + n01, k = min(n10, n01),
  X ~ Bin(m, 1/2). exact: ``p = min(1, 2 P(X <= k))``; mid-p: ``p = min(1, 2 P(X <= k) - P(X = k))``;
  chi2 (continuity-corrected): ``X² = max(|n10 - n01| - 1, 0)² / m``, ``p = P(χ²₁ >= X²)``
  (statsmodels does not clip at 0, which only matters when n10 = n01). m = 0: p = 1.
* Benjamini–Hochberg: the m valid p sorted ascending p_(1) <= .. <= p_(m);
  ``q_(i) = min_{j >= i} min(1, m p_(j) / j)``; None / NaN pass through as None and do not count in m.
* Partial correlation: ``e_x = x - [1 Z] β_x`` (least squares, likewise e_y); ``r_xy·Z = pearson(e_x, e_y)``.
  Spearman: x, y and every column of Z replaced by average ranks first. One covariate z:
  ``r_xy·z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz²)(1 - r_yz²))``.
* Minimum detectable effect of a paired comparison (two-sided level α, power 1-β, sd of the per-item
  differences σ_d): normal ``(z_{1-α/2} + z_{1-β}) σ_d / √n``; t (the default: exact for the paired t-test,
  larger than the normal at small n) ``δ σ_d`` with δ solving
  ``P(T > t_{1-α/2,n-1}) + P(T < -t_{1-α/2,n-1}) = 1-β``, T ~ noncentral t(n-1, δ√n).
* Effective sample size (Kish design effect, one-way ANOVA ICC(1)): N rows in G clusters of sizes n_g,
  ``MSB = Σ n_g (ȳ_g - ȳ)² / (G-1)``, ``MSW = Σ_g Σ_i (y_gi - ȳ_g)² / (N-G)``,
  ``n0 = (N - Σ n_g² / N) / (G-1)``, ``ICC = clip((MSB - MSW) / (MSB + (n0-1) MSW), 0, 1)``,
  ``m̄ = N/G``, ``deff = 1 + (m̄ - 1) ICC``, ``n_eff = N / deff``.
* Verdict of a measured Δ (CI [lo, hi], BH q-value) against the predicted sign s of Δ, in this order:
  s = 0 / None → "no prediction" (whatever the data); q >= α, or 0 in [lo, hi] (closed), or any of lo, hi,
  q None / NaN → "within noise"; otherwise sign(Δ) = +1 if lo > 0 else -1, and "agrees" if sign(Δ) = s,
  else "contradicts".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .stats import LEVEL, N_BOOT, bootstrap_indices, pearson, percentile_ci, rankdata

ArrayLike = Sequence[float] | np.ndarray
Verdict = Literal["agrees", "contradicts", "within noise", "no prediction"]


@dataclass(frozen=True, eq=False)
class Bootstrap:
    """A point estimate, its ``n_boot`` replicates (NaN = degenerate) and the percentile CI (None if too few)."""

    point: float
    reps: np.ndarray
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class McNemar:
    n10: int  # a right, b wrong
    n01: int  # a wrong, b right
    statistic: float  # exact / mid-p: min(n10, n01); chi2: the corrected X²
    pvalue: float
    method: str


@dataclass(frozen=True)
class EffectiveN:
    n: int
    n_clusters: int
    icc: float | None  # None when every cluster is a singleton (no within-cluster spread to compare)
    design_effect: float
    n_eff: float


def _finite(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else math.nan


def _summarise(point: Any, reps: Sequence[Any], n_boot: int, level: float) -> Bootstrap | None:
    p = _finite(point)
    if math.isnan(p):
        return None
    r = np.array([_finite(v) for v in reps], dtype=np.float64)
    kept = r[np.isfinite(r)]
    return Bootstrap(p, r, percentile_ci(kept, level) if len(kept) >= max(1, n_boot // 2) else None)


def _columns(cols: Sequence[ArrayLike]) -> list[np.ndarray]:
    out = [np.asarray(c) for c in cols]
    if not out or any(len(c) != len(out[0]) for c in out):
        raise ValueError("columns must be non-empty and of equal length")
    return out


def paired_bootstrap_delta(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = N_BOOT,
    seed: int = 0,
    stat: Callable[[np.ndarray], Any] = np.mean,
    level: float = LEVEL,
) -> Bootstrap | None:
    """Δ = stat(a) - stat(b) over per-item values of two rows on the same items; None if n < 2."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"paired rows need the same items: {len(x)} != {len(y)}")
    if len(x) < 2:
        return None
    idx = bootstrap_indices(len(x), n_boot, seed)
    if stat is np.mean:  # all replicates at once
        return _summarise(x.mean() - y.mean(), x[idx].mean(axis=1) - y[idx].mean(axis=1), n_boot, level)
    diff = lambda i: _finite(stat(x[i])) - _finite(stat(y[i]))
    return _summarise(diff(slice(None)), [diff(i) for i in idx], n_boot, level)


def paired_bootstrap_stat(
    items_a: Sequence[ArrayLike],
    items_b: Sequence[ArrayLike],
    fn: Callable[..., Any],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Bootstrap | None:
    """Δ = fn(*items_a) - fn(*items_b) for per-item columns (e.g. confidence, correct → ECE), one shared index matrix."""
    ca, cb = _columns(items_a), _columns(items_b)
    n = len(ca[0])
    if len(cb[0]) != n:
        raise ValueError(f"paired rows need the same items: {n} != {len(cb[0])}")
    if n < 2:
        return None
    diff = lambda i: _finite(fn(*(c[i] for c in ca))) - _finite(fn(*(c[i] for c in cb)))
    return _summarise(diff(slice(None)), [diff(i) for i in bootstrap_indices(n, n_boot, seed)], n_boot, level)


def cluster_members(clusters: Sequence[Hashable]) -> list[np.ndarray]:
    """Row indices of each distinct label, labels in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(c, []).append(i)
    return [np.array(g, dtype=np.intp) for g in groups.values()]


def cluster_bootstrap(
    values: Sequence[ArrayLike],
    clusters: Sequence[Hashable],
    fn: Callable[..., Any],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    order_free: bool = False,
) -> Bootstrap | None:
    """fn(*values) with a CI from resampling whole clusters (e.g. lineages); None with fewer than 2 clusters.

    ``order_free``: fn does not depend on the order of the rows (a correlation), so each distinct multiset of drawn
    clusters is evaluated once, its clusters in index order -- with G clusters there are at most C(2G-1, G) of them
    (G = 2: 3 for 2,000 replicates); the replicates then equal the plain ones up to summation order."""
    cols = _columns(values)
    if len(clusters) != len(cols[0]):
        raise ValueError("one cluster label per row")
    members = cluster_members(clusters)
    if len(members) < 2:
        return None

    def rep(j: np.ndarray) -> Any:
        r = np.concatenate([members[g] for g in j])
        return fn(*(c[r] for c in cols))

    draws = bootstrap_indices(len(members), n_boot, seed)
    if not order_free:
        return _summarise(fn(*cols), [rep(j) for j in draws], n_boot, level)
    keys = [tuple(sorted(j.tolist())) for j in draws]
    memo = {k: rep(np.array(k)) for k in dict.fromkeys(keys)}
    return _summarise(fn(*cols), [memo[k] for k in keys], n_boot, level)


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike, method: Literal["exact", "midp", "chi2"] = "exact") -> McNemar | None:
    """McNemar's test on paired 0/1 outcomes; None for no items."""
    from scipy.stats import binom, chi2  # scipy ships with lm-eval's dependencies

    x, y = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"paired rows need the same items: {len(x)} != {len(y)}")
    if not (np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()):
        raise ValueError("outcomes must be 0/1")
    if method not in ("exact", "midp", "chi2"):
        raise ValueError(f"unknown method {method!r}")
    if len(x) == 0:
        return None
    n10, n01 = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    m, k = n10 + n01, min(n10, n01)
    if m == 0:
        return McNemar(n10, n01, 0.0, 1.0, method)
    if method == "chi2":
        s = max(abs(n10 - n01) - 1, 0) ** 2 / m
        return McNemar(n10, n01, float(s), float(chi2.sf(s, 1)), method)
    p = 2 * binom.cdf(k, m, 0.5) - (binom.pmf(k, m, 0.5) if method == "midp" else 0.0)
    return McNemar(n10, n01, float(k), float(min(1.0, p)), method)


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """BH step-up q-values in input order; None / NaN stay None."""
    p = np.array([_finite(v) for v in pvalues], dtype=np.float64)
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    valid = p[ok]
    m = len(valid)
    order = np.argsort(valid, kind="stable")
    q_sorted = np.minimum(1.0, np.minimum.accumulate((valid[order] * m / np.arange(1, m + 1))[::-1])[::-1])
    q = np.empty(m)
    q[order] = q_sorted
    it = iter(q.tolist())
    return [next(it) if good else None for good in ok]


def _residuals(v: np.ndarray, design: np.ndarray) -> np.ndarray | None:
    """v minus its least-squares fit on ``design``; None when the fit leaves (numerically) nothing."""
    e = v - design @ np.linalg.lstsq(design, v, rcond=None)[0]
    scale = float(np.linalg.norm(v - v.mean()))
    return e if scale > 0 and float(np.linalg.norm(e)) > 1e-10 * scale else None


def partial_correlation(
    x: ArrayLike,
    y: ArrayLike,
    covariates: ArrayLike | Sequence[ArrayLike],
    method: Literal["spearman", "pearson"] = "spearman",
) -> float | None:
    """Correlation of x and y after removing a linear (Spearman: rank-linear) fit on the covariates.

    ``covariates``: one column, an (n, k) array, or a sequence of k columns. None when n < k + 3 or a
    residual vanishes (x or y constant, or explained by the covariates).
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"unknown method {method!r}")
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    z = np.asarray(covariates, dtype=np.float64)
    if z.ndim == 1:
        z = z.reshape(-1, 1) if len(z) else np.empty((len(a), 0))
    elif z.shape[0] != len(a):  # a sequence of k columns
        z = z.T
    if len(b) != len(a) or z.ndim != 2 or z.shape[0] != len(a):
        raise ValueError("x, y and covariates need one value per row")
    if len(a) < z.shape[1] + 3:
        return None
    if method == "spearman":
        a, b = rankdata(a), rankdata(b)
        z = np.column_stack([rankdata(c) for c in z.T]) if z.shape[1] else z
    design = np.column_stack([np.ones(len(a)), z])
    ea, eb = _residuals(a, design), _residuals(b, design)
    return None if ea is None or eb is None else pearson(ea, eb)


def mde_paired(
    sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8, method: Literal["t", "normal"] = "t"
) -> float | None:
    """Smallest true mean difference a two-sided paired test detects with this power; None if n < 2 or sd_diff <= 0."""
    from scipy.optimize import brentq
    from scipy.stats import nct, norm, t

    if not (0 < alpha < 1 and alpha < power < 1):
        raise ValueError("need 0 < alpha < power < 1")
    if method not in ("t", "normal"):
        raise ValueError(f"unknown method {method!r}")
    if n < 2 or not math.isfinite(sd_diff) or sd_diff <= 0:
        return None
    if method == "normal":
        return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd_diff / math.sqrt(n))
    df, crit = n - 1, float(t.isf(alpha / 2, n - 1))
    # lower tail P(T < -c) as P(T(-δ√n) > c): scipy's nct.cdf far in the lower tail returns NaN
    gap = lambda d: float(nct.sf(crit, df, d * math.sqrt(n)) + nct.sf(crit, df, -d * math.sqrt(n))) - power
    hi = 2 * (norm.ppf(1 - alpha / 2) + norm.ppf(power)) / math.sqrt(n)
    while gap(hi) < 0:  # power grows with d; the t answer exceeds the normal one
        hi *= 2
    return float(brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-12)) * sd_diff


def effective_n(values_by_cluster: Sequence[ArrayLike]) -> EffectiveN | None:
    """Kish effective sample size of rows correlated within clusters; empty clusters are ignored.

    None with fewer than 2 clusters or no spread at all (MSB = MSW = 0). All-singleton clusters: icc None,
    design effect 1.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in values_by_cluster if len(g)]
    g_count, sizes = len(groups), np.array([len(g) for g in groups], dtype=np.float64)
    n = int(sizes.sum())
    if g_count < 2:
        return None
    if n == g_count:
        return EffectiveN(n, g_count, None, 1.0, float(n))
    grand = np.concatenate(groups).mean()
    means = np.array([g.mean() for g in groups])
    msb = float((sizes * (means - grand) ** 2).sum()) / (g_count - 1)
    msw = float(sum(((g - g.mean()) ** 2).sum() for g in groups)) / (n - g_count)
    n0 = (n - float((sizes**2).sum()) / n) / (g_count - 1)
    denom = msb + (n0 - 1) * msw
    if denom <= 0:
        return None
    icc = float(np.clip((msb - msw) / denom, 0.0, 1.0))
    deff = 1 + (n / g_count - 1) * icc
    return EffectiveN(n, g_count, icc, deff, n / deff)


def verdict(
    ci_low: float | None, ci_high: float | None, q_value: float | None, expected_sign: int | None, alpha: float = 0.05
) -> Verdict:
    """A measured Δ (its CI and BH q-value) against the predicted sign of Δ (truth table: module docstring)."""
    if expected_sign not in (None, 0, 1, -1):
        raise ValueError(f"expected_sign must be +1, -1, 0 or None, not {expected_sign!r}")
    lo, hi, q = _finite(ci_low), _finite(ci_high), _finite(q_value)  # None / NaN -> NaN: undefined
    if lo > hi:
        raise ValueError(f"ci_low {ci_low} > ci_high {ci_high}")
    if not expected_sign:
        return "no prediction"
    if not (q < alpha and (lo > 0 or hi < 0)):  # NaN compares False: undefined is within noise
        return "within noise"
    return "agrees" if (1 if lo > 0 else -1) == expected_sign else "contradicts"
