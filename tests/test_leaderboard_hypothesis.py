"""The hypothesis panel against independent computations: scipy's Spearman and its p, numpy's Pearson, an
explicit loop for the row and cluster bootstraps, OLS residuals for the partial correlations, one-way ANOVA
for the Kish effective n and statsmodels for Benjamini–Hochberg, on synthetic lineages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from collapse_bench.leaderboard import stats
from collapse_bench.leaderboard.aggregate import build_tables
from collapse_bench.leaderboard.entry import Entry
from collapse_bench.leaderboard.hypothesis import COLUMNS, direction_sign, hypothesis_panel
from collapse_bench.leaderboard.hypothesis_within import lineage_edges, lineage_keys

multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests

N_BOOT = 200
STAGES = 4
PREDICTORS = ("probe_standard.effective_rank", "probe_standard.anisotropy", "probe_standard.kl_to_base", "plast.grad_snr")


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def row_entry(names: list[str], metrics: dict[str, dict[str, float]]) -> Entry:
    """The last of ``names``, a chain stage of the first (the base: no lineage), parent = the one before."""
    k = len(names) - 1
    lineage = [{"name": n, "sha256": sha(n), "stage": "sft" if j else None} for j, n in enumerate(names)] if k else []
    doc = {
        "model": {
            "name": names[-1],
            "source": "hub",
            "sha256": sha(names[-1]),
            "lineage": lineage,
            "parent": names[-2] if k else None,
            "stage": "sft" if k else None,
        },
        "suite": {"name": "standard", "version": 1},
        "tasks": {
            "probe_standard": {"kind": "probe", "metrics": metrics["probe"]},
            "plast": {"kind": "plasticity", "metrics": metrics["plast"]},
            "arc": {"kind": "lm_eval", "metrics": metrics["arc"]},
        },
    }
    return Entry(f"submissions/{names[-1]}.json", doc, {})


def world(lineages: int = 3, seed: int = 0, constant_ece: bool = False) -> tuple[list[Entry], dict[str, dict[str, float]]]:
    """Chains base -> s1 -> .. -> s4 per lineage; a lineage level in effective rank (clustering), gain rising and
    ECE falling with it; KL to base absent on the bases. Returns the entries and per id the raw values."""
    rng = np.random.default_rng(seed)
    entries, values = [], {}
    for b in range(lineages):
        names = [f"org/l{b}-s{k}" for k in range(STAGES + 1)]
        er = 40.0 + rng.normal(0, 8)
        for k in range(STAGES + 1):
            er += rng.normal(-2, 3) if k else 0.0
            v = {
                "effective_rank": er,
                "anisotropy": rng.uniform(0.1, 0.5),
                "grad_snr": rng.uniform(0.1, 3.0),
                "gain": float(np.clip(0.2 + 0.01 * er + rng.normal(0, 0.005), 0.01, 0.99)),
                "ece": 0.1 if constant_ece else 0.3 - 0.003 * er + rng.normal(0, 0.002),
                "acc": rng.uniform(0.3, 0.7),
            }
            probe = {"effective_rank": v["effective_rank"], "anisotropy": v["anisotropy"]}
            if k:
                v["kl_to_base"] = probe["kl_to_base"] = 0.1 * k + rng.uniform(0, 0.05)
            metrics = {
                "probe": probe,
                "plast": {"gain": v["gain"], "grad_snr": v["grad_snr"]},
                "arc": {"acc": v["acc"], "ece": v["ece"]},
            }
            e = row_entry(names[: k + 1], metrics)
            entries.append(e)
            values[e.id] = {**v, "lineage": b, "parent": f"submissions/{names[k - 1]}.json" if k else None}
    return entries, values


TARGET_KEY = {"plasticity": "gain", "ood_accuracy": "acc", "ece": "ece"}


def col_value(v: dict[str, Any], col: str) -> float:
    return float(v.get(col.split(".", 1)[1], np.nan))


def spearman_or_nan(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(scipy.stats.spearmanr(x, y).statistic)


def icc1(raw: np.ndarray, labels: list[int]) -> float:
    """One-way ANOVA ICC(1) of the average ranks, clipped to [0, 1]."""
    values = scipy.stats.rankdata(raw)
    groups = [values[[i for i, lab in enumerate(labels) if lab == g]] for g in sorted(set(labels))]
    n, g = len(values), len(groups)
    sizes = np.array([len(x) for x in groups], dtype=float)
    grand = values.mean()
    msb = sum(len(x) * (x.mean() - grand) ** 2 for x in groups) / (g - 1)
    msw = sum(((x - x.mean()) ** 2).sum() for x in groups) / (n - g)
    n0 = (n - (sizes**2).sum() / n) / (g - 1)
    return float(np.clip((msb - msw) / (msb + (n0 - 1) * msw), 0, 1))


def t_p(rho: float, n_eff: float) -> float:
    df = n_eff - 2
    return float(2 * scipy.stats.t.sf(abs(rho) * np.sqrt(df / (1 - rho**2)), df))


def ols_partial(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    design = np.column_stack([np.ones(len(x)), z])
    ex = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ey = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(np.corrcoef(ex, ey)[0, 1])


def get(panel: pd.DataFrame, analysis: str, metric: str, target: str) -> pd.Series:
    found = panel[(panel["analysis"] == analysis) & (panel["metric"] == metric) & (panel["target"] == target)]
    assert len(found) == 1, (analysis, metric, target)
    return found.iloc[0]


@pytest.fixture(scope="module")
def built() -> tuple[pd.DataFrame, dict[str, Any], dict[str, dict[str, Any]]]:
    entries, values = world()
    panel, hidden = hypothesis_panel(build_tables(entries, n_boot=20), n_boot=N_BOOT)
    return panel, hidden, values


def test_lineages_and_edges() -> None:
    entries, values = world()
    tables = build_tables(entries, n_boot=20)
    keys = lineage_keys(tables)
    assert keys == {rid: sha(f"org/l{v['lineage']}-s0") for rid, v in values.items()}
    assert lineage_edges(tables) == sorted((rid, v["parent"]) for rid, v in values.items() if v["parent"])


def test_across_rows_numbers(built: tuple) -> None:
    panel, _, values = built
    ids = sorted(values)
    labels = [values[i]["lineage"] for i in ids]
    y = np.array([values[i]["ece"] for i in ids])
    x = np.array([values[i]["effective_rank"] for i in ids])
    row = get(panel, "across_rows", "probe_standard.effective_rank", "ece")
    assert row["n"] == 15 and row["n_clusters"] == 3 and row["family"] == "spectral" and row["flag"] == ""
    assert row["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-6)
    rho = scipy.stats.spearmanr(x, y).statistic
    assert row["spearman"] == pytest.approx(rho, abs=1e-6)
    n_eff = 15 / (1 + (15 / 3 - 1) * icc1(x, labels) * icc1(y, labels))
    assert 3 <= n_eff < 15 and row["n_effective"] == pytest.approx(n_eff, abs=1e-6)
    assert row["p_value"] == pytest.approx(t_p(rho, n_eff), rel=1e-5, abs=1e-12)
    # the row bootstrap, explicitly: pairs resampled with the row's seed, degenerate replicates dropped
    idx = np.random.default_rng(stats.seed_of("probe_standard.effective_rank", "ece", "spearman")).integers(0, 15, (N_BOOT, 15))
    reps = np.array([spearman_or_nan(x[i], y[i]) for i in idx])
    lo, hi = np.quantile(reps[np.isfinite(reps)], [0.025, 0.975])
    assert (row["spearman_lo"], row["spearman_hi"]) == pytest.approx((lo, hi), abs=1e-6)
    # partial correlations on ranks; KL 0 on the base rows; the family as 0/1 dummies (not ranked: same span)
    kl = np.array([values[i].get("kl_to_base", 0.0) for i in ids])
    rx, ry, rkl = (scipy.stats.rankdata(v) for v in (x, y, kl))
    dummies = pd.get_dummies(pd.Series(labels), drop_first=True).to_numpy(dtype=float)
    assert row["partial_kl"] == pytest.approx(ols_partial(rx, ry, rkl), abs=1e-6)
    assert row["partial_family"] == pytest.approx(ols_partial(rx, ry, dummies), abs=1e-6)
    assert row["partial_kl_family"] == pytest.approx(ols_partial(rx, ry, np.column_stack([rkl, dummies])), abs=1e-6)
    assert row["n_partial"] == 15
    # the KL predictor against its own covariate: nothing left to correlate
    assert pd.isna(get(panel, "across_rows", "probe_standard.kl_to_base", "ece")["partial_kl"])
    assert get(panel, "across_rows", "probe_standard.kl_to_base", "ece")["n"] == 12  # bases have no KL value


def test_within_lineage_numbers(built: tuple) -> None:
    panel, _, values = built
    for col, target in (("probe_standard.effective_rank", "plasticity"), ("probe_standard.kl_to_base", "ece")):
        edges = sorted((rid, v["parent"]) for rid, v in values.items() if v["parent"])
        dx = np.array([col_value(values[c], col) - col_value(values[p], col) for c, p in edges])
        key = TARGET_KEY[target]
        dy = np.array([values[c][key] - values[p][key] for c, p in edges])
        ok = np.isfinite(dx) & np.isfinite(dy)
        dx, dy = dx[ok], dy[ok]
        labels = [values[c]["lineage"] for (c, _), good in zip(edges, ok) if good]
        row = get(panel, "within_lineage", col, target)
        assert row["n"] == len(dx) == (12 if col.endswith("effective_rank") else 9) and row["n_clusters"] == 3
        rho = scipy.stats.spearmanr(dx, dy).statistic
        assert row["spearman"] == pytest.approx(rho, abs=1e-6)
        assert row["pearson"] == pytest.approx(np.corrcoef(dx, dy)[0, 1], abs=1e-6)
        n_eff = len(dx) / (1 + (len(dx) / 3 - 1) * icc1(dx, labels) * icc1(dy, labels))
        assert row["n_effective"] == pytest.approx(n_eff, abs=1e-6)
        assert row["p_value"] == pytest.approx(t_p(rho, n_eff), rel=1e-5, abs=1e-12)
        # the cluster bootstrap, explicitly: lineages in order of first appearance, whole lineages drawn
        order = list(dict.fromkeys(labels))
        members = [np.array([i for i, lab in enumerate(labels) if lab == g]) for g in order]
        draws = np.random.default_rng(stats.seed_of("within_lineage", col, target)).integers(0, 3, (N_BOOT, 3))
        reps = []
        for j in draws:
            r = np.concatenate([members[g] for g in j])
            reps.append(spearman_or_nan(dx[r], dy[r]))
        kept = np.array(reps)[np.isfinite(reps)]
        assert len(kept) >= N_BOOT // 2
        lo, hi = np.quantile(kept, [0.025, 0.975])
        assert (row["spearman_lo"], row["spearman_hi"]) == pytest.approx((lo, hi), abs=1e-6)
        assert pd.isna(row["pearson_lo"]) and pd.isna(row["partial_kl"]) and pd.isna(row["n_partial"])


def test_q_values_are_benjamini_hochberg_per_analysis(built: tuple) -> None:
    panel, _, _ = built
    for analysis in ("within_lineage", "across_rows"):
        rows = panel[panel["analysis"] == analysis]
        assert len(rows) == 12  # 4 predictors x 3 targets, all shown
        q = multipletests(rows["p_value"].to_numpy(dtype=float), method="fdr_bh")[1]
        np.testing.assert_allclose(rows["q_value"].to_numpy(dtype=float), q, rtol=1e-5)


def test_expected_sign_verdict_and_rank(built: tuple) -> None:
    panel, _, _ = built
    assert (direction_sign("effective_rank"), direction_sign("anisotropy"), direction_sign("kl_to_base")) == (1, -1, None)
    signs = {
        ("probe_standard.effective_rank", "plasticity"): 1,
        ("probe_standard.effective_rank", "ood_accuracy"): 1,
        ("probe_standard.effective_rank", "ece"): -1,  # ECE: lower is better
        ("probe_standard.anisotropy", "plasticity"): -1,  # anisotropy: lower is healthier
        ("probe_standard.anisotropy", "ece"): 1,
    }
    for analysis in ("within_lineage", "across_rows"):
        for (metric, target), s in signs.items():
            assert get(panel, analysis, metric, target)["expected_sign"] == s
        kl = panel[(panel["analysis"] == analysis) & (panel["metric"] == "probe_standard.kl_to_base")]
        assert kl["expected_sign"].isna().all() and set(kl["verdict"]) == {"no prediction"}
        for _, r in panel[panel["analysis"] == analysis].iterrows():
            sign, lo, hi, q = r["expected_sign"], r["spearman_lo"], r["spearman_hi"], r["q_value"]
            if pd.isna(sign):
                continue
            if pd.isna(lo) or q >= 0.05 or lo <= 0 <= hi:
                assert r["verdict"] == "within noise"
            else:
                assert r["verdict"] == ("agrees" if (1 if lo > 0 else -1) == sign else "contradicts")
        # rival predictors per target: rank 1 = the largest |rho|; the table is sorted by it
        for target in ("plasticity", "ood_accuracy", "ece"):
            t = panel[(panel["analysis"] == analysis) & (panel["target"] == target)]
            strength = t["spearman"].abs().to_numpy(dtype=float)
            assert list(t["rank_within_target"]) == [1 + int((strength > s).sum()) for s in strength]
            assert list(strength) == sorted(strength, reverse=True)
    # the synthetic effect: gain rises with effective rank across rows, and the panel says so
    for analysis in ("within_lineage", "across_rows"):
        er = get(panel, analysis, "probe_standard.effective_rank", "plasticity")
        assert er["rank_within_target"] == 1 and er["verdict"] == "agrees"


def test_pairs_below_min_n_or_constant_are_counted_not_shown() -> None:
    entries, _ = world(lineages=2)  # 10 rows, 8 edges, 6 of them with a KL delta (< min_n = 8)
    panel, hidden = hypothesis_panel(build_tables(entries, n_boot=20), n_boot=50)
    assert hidden == {
        "min_n": 8,
        "n_below_min": 3,
        "constant": 0,
        "by_analysis": {"within_lineage": {"n_below_min": 3, "constant": 0}, "across_rows": {"n_below_min": 0, "constant": 0}},
    }
    assert "probe_standard.kl_to_base" not in set(panel[panel["analysis"] == "within_lineage"]["metric"])
    assert (panel["n"] >= 8).all() and len(panel) == 12 + 9
    entries, _ = world(constant_ece=True)
    panel, hidden = hypothesis_panel(build_tables(entries, n_boot=20), n_boot=50)
    assert hidden["constant"] == 8 and hidden["n_below_min"] == 0 and "ece" not in set(panel["target"])
    entries, _ = world(lineages=1)  # 5 rows, 4 edges: nothing to show
    panel, hidden = hypothesis_panel(build_tables(entries, n_boot=20), n_boot=50)
    assert panel.empty and list(panel.columns) == COLUMNS and hidden["n_below_min"] == 24


def test_every_row_has_q_sign_and_n_effective_and_is_deterministic_json(built: tuple) -> None:
    from collapse_bench.leaderboard.site import records

    panel, hidden, _ = built
    assert list(panel.columns) == COLUMNS
    assert panel["q_value"].notna().all() and panel["n_effective"].notna().all() and panel["p_value"].notna().all()
    assert set(panel["verdict"]) <= {"agrees", "contradicts", "within noise", "no prediction"}
    entries, _ = world()
    again, hidden2 = hypothesis_panel(build_tables(entries, n_boot=20), n_boot=N_BOOT)
    pd.testing.assert_frame_equal(panel, again)
    text = json.dumps({"hypothesis": records(panel), "hypothesis_hidden": hidden}, allow_nan=False, sort_keys=True)
    assert text == json.dumps({"hypothesis": records(again), "hypothesis_hidden": hidden2}, allow_nan=False, sort_keys=True)
    for r in json.loads(text)["hypothesis"]:
        assert r["expected_sign"] in (None, 1, -1) and isinstance(r["rank_within_target"], int) and isinstance(r["n"], int)
        assert not isinstance(r["expected_sign"], float)


def test_family_dummies_of_no_and_one_lineage() -> None:
    """One column per lineage but the first; no rows or one lineage: no column (a 1,000-row build hit the empty case)."""
    from collapse_bench.leaderboard.hypothesis import family_dummies

    assert family_dummies([]).shape == (0, 0) and family_dummies(["a", "a"]).shape == (2, 0)
    assert family_dummies(["b", "a", "c", "b"]).tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]


def test_scatter_plots_draw_the_points_behind_each_row() -> None:
    """Every shown row gets points equal to the raw values (rows) or the parent deltas (edges), whose Spearman ρ is
    the row's, and an SVG with one marker per point (plus one per lineage in the legend) titled with ρ and verdict."""
    import re

    from collapse_bench.leaderboard.hypothesis_plots import hypothesis_plots, plot_name
    from collapse_bench.leaderboard.site import records

    entries, values = world()
    tables = build_tables(entries, n_boot=20)
    points: dict = {}
    panel, _ = hypothesis_panel(tables, n_boot=50, points=points)
    assert set(points) == set(zip(panel["analysis"], panel["metric"], panel["target"]))
    x, y, ids = points[("across_rows", "probe_standard.effective_rank", "ece")]
    assert ids == sorted(values)
    np.testing.assert_allclose(x, [values[i]["effective_rank"] for i in ids])
    np.testing.assert_allclose(y, [values[i]["ece"] for i in ids])
    dx, dy, kids = points[("within_lineage", "probe_standard.effective_rank", "ece")]
    par = {i: values[i]["parent"] for i in kids}
    np.testing.assert_allclose(dx, [values[i]["effective_rank"] - values[par[i]]["effective_rank"] for i in kids])
    np.testing.assert_allclose(dy, [values[i]["ece"] - values[par[i]]["ece"] for i in kids])
    for (analysis, metric, target), (px, py, _) in points.items():
        assert get(panel, analysis, metric, target)["spearman"] == pytest.approx(
            scipy.stats.spearmanr(px, py).statistic, abs=1e-6
        )
    rows = records(panel)
    files = hypothesis_plots(rows, points, tables)
    assert len(files) == len(rows) and all(r["plot"] == plot_name(r["analysis"], r["metric"], r["target"]) for r in rows)
    row = next(
        r for r in rows if (r["analysis"], r["metric"], r["target"]) == ("across_rows", "probe_standard.effective_rank", "ece")
    )
    svg = files[f"plots/{row['plot']}"].decode()
    assert svg.count("<circle") == 15 + 3  # 15 rows, 3 lineages in the legend
    assert f"ρ {row['spearman']:.2f} [{row['spearman_lo']:.2f}, {row['spearman_hi']:.2f}]" in svg and row["verdict"] in svg
    assert re.fullmatch(r"hypothesis--across_rows--ece--probe_standard\.effective_rank\.svg", row["plot"])
