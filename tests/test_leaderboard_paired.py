"""Paired / clustered statistics against explicit loops, scipy and statsmodels (test-only reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from collapse_bench.leaderboard import paired, stats

sm_tables = pytest.importorskip("statsmodels.stats.contingency_tables")
sm_multitest = pytest.importorskip("statsmodels.stats.multitest")
sm_power = pytest.importorskip("statsmodels.stats.power")
sm_api = pytest.importorskip("statsmodels.api")


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    order = np.argsort(conf, kind="stable")
    return sum(len(b) / len(conf) * abs(correct[b].mean() - conf[b].mean()) for b in np.array_split(order, bins))


# --- paired bootstrap -------------------------------------------------------------------------------


def test_paired_delta_mean_is_one_shared_index_matrix() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.1, size=40) - 0.05
    got = paired.paired_bootstrap_delta(a, b, n_boot=500, seed=11)
    assert got is not None
    loop = np.random.default_rng(11)
    reps = []
    for _ in range(500):
        i = loop.integers(0, 40, size=40)
        reps.append(a[i].mean() - b[i].mean())
    assert got.point == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert got.reps == pytest.approx(reps, abs=1e-12)
    assert got.ci == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)
    # the same numbers as the two rows' own mean bootstraps drawn with the same seed
    same = stats.bootstrap_mean_reps(a, 500, 11) - stats.bootstrap_mean_reps(b, 500, 11)
    assert got.reps == pytest.approx(same, abs=1e-12)
    # deterministic, and a different seed gives different replicates
    again = paired.paired_bootstrap_delta(a, b, n_boot=500, seed=11)
    assert again is not None and np.array_equal(again.reps, got.reps)
    other = paired.paired_bootstrap_delta(a, b, n_boot=500, seed=12)
    assert other is not None and not np.array_equal(other.reps, got.reps)


def test_paired_delta_se_is_the_se_of_the_differences() -> None:
    """Pairing removes the shared item difficulty: SE of Δ* ≈ sd(a - b)/√n, far below the unpaired SE."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=60)
    b = a + rng.normal(scale=0.2, size=60)
    got = paired.paired_bootstrap_delta(a, b, n_boot=20000, seed=3)
    assert got is not None
    se_paired = (a - b).std(ddof=0) / math.sqrt(60)
    assert got.reps.std() == pytest.approx(se_paired, rel=0.05)
    se_unpaired = math.sqrt(a.var() / 60 + b.var() / 60)
    assert se_paired < 0.3 * se_unpaired


def test_paired_delta_other_stat_and_edge_cases() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=15), rng.normal(size=15)
    got = paired.paired_bootstrap_delta(a, b, n_boot=300, seed=5, stat=np.median, level=0.9)
    assert got is not None
    loop = np.random.default_rng(5)
    reps = []
    for _ in range(300):
        i = loop.integers(0, 15, size=15)
        reps.append(np.median(a[i]) - np.median(b[i]))
    assert got.point == np.median(a) - np.median(b)
    assert got.reps == pytest.approx(reps, abs=1e-12)
    assert got.ci == pytest.approx(tuple(np.percentile(reps, [5, 95])), abs=1e-12)
    assert paired.paired_bootstrap_delta([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        paired.paired_bootstrap_delta([1.0, 2.0], [1.0, 2.0, 3.0])


def test_paired_bootstrap_stat_ece_by_hand() -> None:
    rng = np.random.default_rng(4)
    conf_a, conf_b = rng.uniform(0.3, 1.0, 50), rng.uniform(0.3, 1.0, 50)
    hit_a = (rng.uniform(size=50) < conf_a).astype(float)
    hit_b = (rng.uniform(size=50) < conf_b - 0.2).astype(float)
    got = paired.paired_bootstrap_stat((conf_a, hit_a), (conf_b, hit_b), ece, n_boot=400, seed=9)
    assert got is not None
    loop = np.random.default_rng(9)
    reps = []
    for _ in range(400):
        i = loop.integers(0, 50, size=50)
        reps.append(ece(conf_a[i], hit_a[i]) - ece(conf_b[i], hit_b[i]))
    assert got.point == pytest.approx(ece(conf_a, hit_a) - ece(conf_b, hit_b), abs=1e-15)
    assert got.reps == pytest.approx(reps, abs=1e-12)
    assert got.ci == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)
    with pytest.raises(ValueError):
        paired.paired_bootstrap_stat((conf_a, hit_a), (conf_b[:10], hit_b[:10]), ece)


def test_degenerate_replicates_are_nan_and_left_out() -> None:
    a, b = np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0, 3.0])
    got = paired.paired_bootstrap_stat((a, b), (b, b), stats.pearson, n_boot=400, seed=0)
    assert got is not None
    loop = np.random.default_rng(0)
    reps = []
    for _ in range(400):
        i = loop.integers(0, 4, size=4)
        ra, rb = stats.pearson(a[i], b[i]), stats.pearson(b[i], b[i])
        reps.append(math.nan if ra is None or rb is None else ra - rb)
    kept = [r for r in reps if not math.isnan(r)]
    assert np.array_equal(np.isnan(got.reps), np.isnan(reps)) and 200 <= len(kept) < 400
    assert got.ci == pytest.approx(tuple(np.percentile(kept, [2.5, 97.5])), abs=1e-12)
    # fewer than half the replicates defined -> no CI (a's item 9 and b's item 0 must each be drawn exactly once)
    once = lambda v: float(v.mean()) if (v == 9).sum() == 1 else None
    x = np.arange(10.0)
    few = paired.paired_bootstrap_delta(x, x[::-1], n_boot=400, seed=1, stat=once)
    loop = np.random.default_rng(1)
    defined = [(i == 9).sum() == 1 and (i == 0).sum() == 1 for i in (loop.integers(0, 10, size=10) for _ in range(400))]
    assert few is not None and few.point == 0.0 and few.ci is None
    assert np.array_equal(np.isfinite(few.reps), defined) and sum(defined) < 200
    # undefined on the full data -> None
    assert paired.paired_bootstrap_stat(([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0],) * 2, stats.pearson) is None


# --- McNemar --------------------------------------------------------------------------------------------


def outcomes(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00)
    return a, b


@pytest.mark.parametrize("n11, n10, n01, n00", [(30, 7, 1, 12), (5, 0, 4, 3), (10, 12, 5, 0), (0, 150, 86, 0), (3, 6, 6, 3)])
def test_mcnemar_matches_statsmodels(n11: int, n10: int, n01: int, n00: int) -> None:
    a, b = outcomes(n11, n10, n01, n00)
    perm = np.random.default_rng(n11).permutation(len(a))  # item order does not matter
    a, b = a[perm], b[perm]
    table = [[n11, n10], [n01, n00]]
    exact = paired.mcnemar(a, b)
    ref = sm_tables.mcnemar(table, exact=True)
    assert exact is not None and (exact.n10, exact.n01) == (n10, n01)
    assert exact.statistic == ref.statistic and exact.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    chi = paired.mcnemar(a, b, method="chi2")
    assert chi is not None
    if n10 != n01:  # statsmodels does not clip |n10 - n01| - 1 at 0
        ref = sm_tables.mcnemar(table, exact=False, correction=True)
        assert chi.statistic == pytest.approx(ref.statistic, rel=1e-12) and chi.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    else:
        assert chi.statistic == 0.0 and chi.pvalue == 1.0 and exact.pvalue == 1.0
    # mid-p by an explicit binomial sum: 2 [P(X < k) + P(X = k)/2]
    m, k = n10 + n01, min(n10, n01)
    below = sum(math.comb(m, i) for i in range(k)) / 2**m
    midp = paired.mcnemar(a, b, method="midp")
    assert midp is not None and midp.pvalue == pytest.approx(min(1.0, 2 * (below + math.comb(m, k) / 2**m / 2)), rel=1e-12)


def test_mcnemar_published_example_and_edges() -> None:
    """Fagerland, Lydersen & Laake (2013, BMC Med Res Methodol 13:91): discordant 1 vs 7 -> exact 0.070, mid-p 0.039."""
    a, b = outcomes(n11=10, n10=1, n01=7, n00=5)
    assert paired.mcnemar(a, b).pvalue == pytest.approx(0.0703, abs=5e-5)  # type: ignore[union-attr]
    assert paired.mcnemar(a, b, method="midp").pvalue == pytest.approx(0.0391, abs=5e-5)  # type: ignore[union-attr]
    same = paired.mcnemar([1, 0, 1], [1, 0, 1])
    assert same is not None and (same.n10, same.n01, same.pvalue) == (0, 0, 1.0)
    assert paired.mcnemar([True, False], [False, False]).n10 == 1  # type: ignore[union-attr]
    assert paired.mcnemar([], []) is None
    with pytest.raises(ValueError):
        paired.mcnemar([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError):
        paired.mcnemar([1, 0], [1, 0, 1])


# --- Benjamini-Hochberg -------------------------------------------------------------------------------


def test_bh_matches_statsmodels_and_scipy() -> None:
    rng = np.random.default_rng(6)
    p = np.concatenate([rng.uniform(0, 0.01, 5), rng.uniform(size=25), [0.02, 0.02, 1.0, 0.0]])  # ties, 0 and 1
    rng.shuffle(p)
    q = paired.benjamini_hochberg(p.tolist())
    assert q == pytest.approx(list(sm_multitest.multipletests(p, method="fdr_bh")[1]), abs=1e-15)
    assert q == pytest.approx(list(scipy.stats.false_discovery_control(p, method="bh")), abs=1e-15)
    qs = np.array(q, dtype=float)[np.argsort(p)]
    assert (np.diff(qs) >= 0).all() and qs.max() <= 1.0 and (qs >= np.sort(p)).all()


def test_bh_passes_missing_through() -> None:
    p = [0.01, None, 0.04, math.nan, 0.03, 0.5]
    valid = [0.01, 0.04, 0.03, 0.5]
    ref = iter(sm_multitest.multipletests(valid, method="fdr_bh")[1])
    assert paired.benjamini_hochberg(p) == pytest.approx([next(ref), None, next(ref), None, next(ref), next(ref)])
    # by hand: m = 4, sorted 0.01 0.03 0.04 0.5 -> 0.04, 0.0533, 0.0533, 0.5 (step-up minimum)
    assert paired.benjamini_hochberg(p) == pytest.approx([0.04, None, 0.16 / 3, None, 0.16 / 3, 0.5])
    assert paired.benjamini_hochberg([None, math.nan]) == [None, None]
    assert paired.benjamini_hochberg([]) == []
    with pytest.raises(ValueError):
        paired.benjamini_hochberg([0.5, 1.2])


# --- cluster bootstrap ----------------------------------------------------------------------------------


def spearman_scipy(x: np.ndarray, y: np.ndarray) -> float:
    return float(scipy.stats.spearmanr(x, y).statistic)


def test_cluster_bootstrap_matches_explicit_loop() -> None:
    rng = np.random.default_rng(7)
    labels = ["lin-c"] * 4 + ["lin-a"] * 7 + ["lin-b"] * 2 + ["lin-d"] * 5 + ["lin-e"] * 3 + ["lin-f"] * 6
    labels = list(np.array(labels)[rng.permutation(len(labels))])
    x = rng.normal(size=len(labels))
    y = x + rng.normal(size=len(labels))
    got = paired.cluster_bootstrap((x, y), labels, spearman_scipy, n_boot=300, seed=13)
    assert got is not None
    order = list(dict.fromkeys(labels))  # first appearance
    rows_of = {c: [i for i, lab in enumerate(labels) if lab == c] for c in order}
    loop = np.random.default_rng(13)
    reps = []
    for _ in range(300):
        picks = loop.integers(0, len(order), size=len(order))
        rows = [i for g in picks for i in rows_of[order[g]]]
        reps.append(scipy.stats.spearmanr(x[rows], y[rows]).statistic)
    assert got.point == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-15)
    assert got.reps == pytest.approx(reps, abs=1e-12)
    assert got.ci == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)


def test_cluster_bootstrap_order_free_evaluates_each_multiset_once() -> None:
    """Same replicates as the plain bootstrap (up to summation order); fn called once per distinct multiset."""
    rng = np.random.default_rng(17)
    labels = list(np.repeat(["a", "b", "c"], [5, 3, 6])[rng.permutation(14)])
    x = rng.normal(size=14)
    y = x + rng.normal(size=14)
    calls: list[int] = []

    def counted(a: np.ndarray, b: np.ndarray) -> float:
        calls.append(len(a))
        return spearman_scipy(a, b)

    plain = paired.cluster_bootstrap((x, y), labels, spearman_scipy, n_boot=400, seed=3)
    fast = paired.cluster_bootstrap((x, y), labels, counted, n_boot=400, seed=3, order_free=True)
    assert plain is not None and fast is not None
    assert fast.reps == pytest.approx(plain.reps, abs=1e-12)
    assert fast.ci == pytest.approx(plain.ci, abs=1e-12)
    draws = paired.bootstrap_indices(3, 400, 3)
    assert len(calls) == 1 + len({tuple(sorted(j.tolist())) for j in draws}) <= 1 + 10  # C(5, 3) multisets


def test_cluster_bootstrap_singletons_is_the_row_bootstrap() -> None:
    rng = np.random.default_rng(8)
    x = np.round(rng.normal(size=25), 1)
    y = x**2 + rng.normal(size=25)
    got = paired.cluster_bootstrap((x, y), list(range(25)), stats.spearman, n_boot=500, seed=21)
    assert got is not None
    assert np.array_equal(got.reps, stats.bootstrap_stat_reps((x, y), stats.spearman, 500, 21))
    assert got.ci == pytest.approx(stats.correlation_ci(x, y, stats.spearman, n_boot=500, seed=21), abs=1e-12)


def test_cluster_bootstrap_is_wider_for_clustered_rows_and_edges() -> None:
    """Rows of one lineage share an offset in both columns: resampling rows overstates the information."""
    rng = np.random.default_rng(9)
    shared = np.repeat(rng.normal(size=8), 10)
    x, y = shared + 0.3 * rng.normal(size=80), shared + 0.3 * rng.normal(size=80)
    labels = np.repeat(np.arange(8), 10).tolist()
    clus = paired.cluster_bootstrap((x, y), labels, stats.pearson, n_boot=2000, seed=1)
    rows = paired.cluster_bootstrap((x, y), list(range(80)), stats.pearson, n_boot=2000, seed=1)
    assert clus is not None and rows is not None and clus.ci is not None and rows.ci is not None
    assert clus.ci[1] - clus.ci[0] > 2 * (rows.ci[1] - rows.ci[0])
    assert paired.cluster_bootstrap((x, y), [0] * 80, stats.pearson) is None
    with pytest.raises(ValueError):
        paired.cluster_bootstrap((x, y), [0, 1], stats.pearson)


# --- partial correlation --------------------------------------------------------------------------------


def data(n: int = 60, k: int = 3, seed: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    x = z @ rng.normal(size=k) + rng.normal(size=n)
    y = 0.5 * x + z @ rng.normal(size=k) + rng.normal(size=n)
    return np.round(x, 1), y, z  # ties in x


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_partial_correlation_one_covariate_formula(method: str) -> None:
    x, y, z = data(k=1)
    r = scipy.stats.pearsonr if method == "pearson" else scipy.stats.spearmanr
    rxy, rxz, ryz = (r(u, v).statistic for u, v in ((x, y), (x, z[:, 0]), (y, z[:, 0])))
    want = (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert paired.partial_correlation(x, y, z[:, 0], method=method) == pytest.approx(want, abs=1e-12)  # type: ignore[arg-type]
    assert paired.partial_correlation(x, y, z, method=method) == pytest.approx(want, abs=1e-12)  # type: ignore[arg-type]


def test_partial_correlation_several_covariates_vs_statsmodels_and_precision() -> None:
    x, y, z = data(k=3)
    design = sm_api.add_constant(z)
    ex, ey = sm_api.OLS(x, design).fit().resid, sm_api.OLS(y, design).fit().resid
    want = scipy.stats.pearsonr(ex, ey).statistic
    assert paired.partial_correlation(x, y, z, method="pearson") == pytest.approx(want, abs=1e-12)
    prec = np.linalg.inv(np.cov(np.column_stack([x, y, z]), rowvar=False))  # -P_xy / sqrt(P_xx P_yy)
    assert want == pytest.approx(-prec[0, 1] / math.sqrt(prec[0, 0] * prec[1, 1]), abs=1e-12)
    # a list of k columns reads the same as the (n, k) array
    assert paired.partial_correlation(x, y, list(z.T), method="pearson") == pytest.approx(want, abs=1e-12)
    # Spearman: the same on average ranks of every variable
    rk = scipy.stats.rankdata
    zr = sm_api.add_constant(np.column_stack([rk(c) for c in z.T]))
    ex, ey = sm_api.OLS(rk(x), zr).fit().resid, sm_api.OLS(rk(y), zr).fit().resid
    assert paired.partial_correlation(x, y, z) == pytest.approx(scipy.stats.pearsonr(ex, ey).statistic, abs=1e-12)


def test_partial_correlation_edges() -> None:
    x, y, z = data(n=20, k=2)
    assert paired.partial_correlation(x, y, [], method="pearson") == pytest.approx(scipy.stats.pearsonr(x, y).statistic)
    assert paired.partial_correlation(x, y, []) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert paired.partial_correlation(x[:4], y[:4], z[:4]) is None  # n < k + 3
    assert paired.partial_correlation(x[:5], y[:5], z[:5]) is not None
    assert paired.partial_correlation(x, 2 * z[:, 0] - z[:, 1] + 1, z, method="pearson") is None  # y explained exactly
    assert paired.partial_correlation(x, np.ones(20), z) is None
    with pytest.raises(ValueError):
        paired.partial_correlation(x, y, z[:10])


# --- minimum detectable effect --------------------------------------------------------------------------


def power_by_integration(delta: float, n: int, alpha: float) -> float:
    """P(|T| > c), T = (Z + δ√n) / (U/√df), U ~ chi(df): Φ(δ√n - c u/√df) + Φ(-δ√n - c u/√df) integrated over U."""
    from scipy.integrate import quad

    df, nc = n - 1, delta * math.sqrt(n)
    c = scipy.stats.t.isf(alpha / 2, df)
    norm, chi = scipy.stats.norm, scipy.stats.chi(df)
    f = lambda u: (norm.cdf(nc - c * u / math.sqrt(df)) + norm.cdf(-nc - c * u / math.sqrt(df))) * chi.pdf(u)
    return quad(f, 0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("n", [2, 3, 5, 30])
@pytest.mark.parametrize("alpha, power", [(0.05, 0.8), (0.01, 0.9), (0.1, 0.5)])
def test_mde_t_solves_the_power_equation(n: int, alpha: float, power: float) -> None:
    """Independent of scipy's noncentral t (and valid at n = 2, 3 where statsmodels' solver returns NaN)."""
    mde = paired.mde_paired(0.7, n, alpha, power)
    assert mde is not None and power_by_integration(mde / 0.7, n, alpha) == pytest.approx(power, abs=1e-9)


@pytest.mark.parametrize("n", [5, 10, 30, 200])
@pytest.mark.parametrize("alpha, power", [(0.05, 0.8), (0.01, 0.9), (0.1, 0.5)])
def test_mde_t_matches_statsmodels(n: int, alpha: float, power: float) -> None:
    mde = paired.mde_paired(0.7, n, alpha, power)
    assert mde is not None
    # statsmodels' power function (two tails, noncentral t) at our MDE is the target power
    assert sm_power.ttest_power(mde / 0.7, n, alpha) == pytest.approx(power, abs=1e-9)
    # statsmodels' own root finder stops early (its answer misses the target power by up to ~3e-6 at n = 200)
    d = np.asarray(sm_power.TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)).item()
    assert sm_power.ttest_power(d, n, alpha) == pytest.approx(power, abs=1e-5)
    assert mde == pytest.approx(0.7 * d, rel=1e-4)
    normal = paired.mde_paired(0.7, n, alpha, power, method="normal")
    assert normal == pytest.approx(
        (scipy.stats.norm.ppf(1 - alpha / 2) + scipy.stats.norm.ppf(power)) * 0.7 / math.sqrt(n), rel=1e-12
    )
    assert mde > normal  # type: ignore[operator]


def test_mde_closed_form_and_monte_carlo() -> None:
    assert paired.mde_paired(2.0, 100, method="normal") == pytest.approx(
        (1.959963984540054 + 0.8416212335729143) * 0.2, rel=1e-12
    )
    assert paired.mde_paired(2.0, 10**6) == pytest.approx(paired.mde_paired(2.0, 10**6, method="normal"), rel=1e-5)
    # a paired t-test at the t MDE rejects 80% of the time (simulated: SE of the rate 0.002)
    n, sd = 8, 1.5
    mde = paired.mde_paired(sd, n)
    assert mde is not None
    diffs = np.random.default_rng(0).normal(loc=mde, scale=sd, size=(40000, n))
    rate = (scipy.stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05).mean()
    assert rate == pytest.approx(0.8, abs=0.01)
    assert paired.mde_paired(1.0, 1) is None and paired.mde_paired(0.0, 10) is None and paired.mde_paired(math.nan, 10) is None
    with pytest.raises(ValueError):
        paired.mde_paired(1.0, 10, alpha=0.5, power=0.4)


# --- effective sample size ------------------------------------------------------------------------------


def anova_icc(groups: list[list[float]]) -> tuple[float, float, float]:
    """ICC(1), design effect and n_eff written out from the one-way ANOVA table."""
    allv = [v for g in groups for v in g]
    n, k = len(allv), len(groups)
    grand = sum(allv) / n
    ssb = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in groups)
    ssw = sum((v - sum(g) / len(g)) ** 2 for g in groups for v in g)
    msb, msw = ssb / (k - 1), ssw / (n - k)
    n0 = (n - sum(len(g) ** 2 for g in groups) / n) / (k - 1)
    icc = min(1.0, max(0.0, (msb - msw) / (msb + (n0 - 1) * msw)))
    deff = 1 + (n / k - 1) * icc
    return icc, deff, n / deff


def test_effective_n_matches_anova() -> None:
    rng = np.random.default_rng(11)
    groups = [list(m + rng.normal(size=s)) for m, s in zip(rng.normal(scale=1.5, size=6), [3, 8, 5, 5, 12, 2])]
    got = paired.effective_n(groups)
    icc, deff, n_eff = anova_icc(groups)
    assert got is not None and (got.n, got.n_clusters) == (35, 6)
    assert 0 < icc < 1
    assert (got.icc, got.design_effect, got.n_eff) == pytest.approx((icc, deff, n_eff), rel=1e-12)
    f = scipy.stats.f_oneway(*groups).statistic  # ICC(1) = (F - 1) / (F + n0 - 1)
    n0 = (35 - sum(len(g) ** 2 for g in groups) / 35) / 5
    assert got.icc == pytest.approx((f - 1) / (f + n0 - 1), rel=1e-10)


def test_effective_n_clipping_and_edges() -> None:
    # cluster means identical, spread within: ICC < 0 clipped to 0 -> no design effect
    low = paired.effective_n([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    assert low is not None and (low.icc, low.design_effect, low.n_eff) == (0.0, 1.0, 6.0)
    # clusters internally identical: ICC 1, each cluster counts once
    high = paired.effective_n([[1.0] * 4, [2.0] * 4, [5.0] * 4])
    assert high is not None and high.icc == 1.0 and high.n_eff == pytest.approx(3.0)
    single = paired.effective_n([[1.0], [2.0], [4.0], []])
    assert single is not None and (single.icc, single.design_effect, single.n_eff, single.n_clusters) == (None, 1.0, 3.0, 3)
    assert paired.effective_n([[1.0, 2.0, 3.0]]) is None
    assert paired.effective_n([[1.0, 1.0], [1.0, 1.0]]) is None


# --- verdict ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo, hi, q, sign, want",
    [
        (0.1, 0.3, 0.01, 1, "agrees"),
        (0.1, 0.3, 0.01, -1, "contradicts"),
        (-0.3, -0.1, 0.01, -1, "agrees"),
        (-0.3, -0.1, 0.01, 1, "contradicts"),
        (-0.1, 0.3, 0.01, 1, "within noise"),  # CI contains 0
        (0.0, 0.3, 0.01, 1, "within noise"),  # touching 0 counts as containing it
        (0.1, 0.3, 0.05, 1, "within noise"),  # q >= α
        (0.1, 0.3, 0.2, -1, "within noise"),
        (None, 0.3, 0.01, 1, "within noise"),  # undefined statistics
        (0.1, 0.3, None, 1, "within noise"),
        (0.1, 0.3, math.nan, 1, "within noise"),
        (0.1, 0.3, 0.01, 0, "no prediction"),
        (0.1, 0.3, 0.01, None, "no prediction"),
        (-0.1, 0.3, 0.5, None, "no prediction"),
    ],
)
def test_verdict_truth_table(lo: float | None, hi: float | None, q: float | None, sign: int | None, want: str) -> None:
    assert paired.verdict(lo, hi, q, sign) == want


def test_verdict_alpha_and_bad_input() -> None:
    assert paired.verdict(0.1, 0.3, 0.07, 1, alpha=0.1) == "agrees"
    with pytest.raises(ValueError):
        paired.verdict(0.1, 0.3, 0.01, 2)
    with pytest.raises(ValueError):
        paired.verdict(0.3, 0.1, 0.01, 1)
