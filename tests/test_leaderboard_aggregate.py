"""Aggregator numbers against hand computations, numpy re-implementations and scipy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from collapse_bench.leaderboard import stats
from collapse_bench.leaderboard.aggregate import build_tables, components, metric_cis
from collapse_bench.leaderboard.entry import Entry, entries_from, item_outcomes, seed_order
from collapse_bench.leaderboard.hypothesis import hypothesis_panel

GEOM_BASE = {
    "effective_rank": 50.0,
    "participation_ratio": 20.0,
    "anisotropy": 0.2,
    "prompt_entropy": 0.8,
    "dormant_fraction": 0.0,
}
GEOM_CHILD = {
    "effective_rank": 40.0,
    "participation_ratio": 30.0,
    "anisotropy": 0.3,
    "prompt_entropy": 0.8,
    "dormant_fraction": 0.02,
}


def entry(
    eid: str,
    sha: str,
    tasks: dict[str, tuple[str, dict[str, Any]]],
    base_sha: str | None = None,
    items: dict | None = None,
    chance: dict | None = None,
    **model: Any,
) -> Entry:
    lineage = (
        [{"name": "base", "sha256": base_sha, "stage": None}, {"name": eid, "sha256": sha, "stage": "sft"}] if base_sha else []
    )
    doc = {
        "model": {"name": eid, "source": "hub", "sha256": sha, "lineage": lineage, "parent": None, "stage": None, **model},
        "suite": {"name": "standard", "version": 1},
        "tasks": {
            t: {
                "kind": k,
                "metrics": {m: v for m, v in ms.items() if not isinstance(v, (list, dict))},
                **{m: v for m, v in ms.items() if isinstance(v, (list, dict))},
            }
            for t, (k, ms) in tasks.items()
        },
    }
    return Entry(f"submissions/{eid}.json", doc, items or {}, chance=chance or {})


FULL_TASKS = {
    "probe_standard": ("probe", GEOM_CHILD),
    "arc": ("lm_eval", {"acc": 0.6, "ece": 0.1, "acc_norm": 0.9}),
    "piqa": ("lm_eval", {"acc": 0.7, "ece": 0.3}),
    "plast": ("plasticity", {"gain": 0.25, "bpb_initial": 2.0, "bpb_final": 1.5}),  # gain = (2.0 - 1.5) / 2.0
    "div": ("diversity", {"distinct_1": 0.4, "distinct_2": 0.6, "self_bleu4": 0.3, "mean_length": 30.0}),
}


def _items(n_correct: int, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(0.4, 0.9, n), np.array([1.0] * n_correct + [0.0] * (n - n_correct))


# arc: 4 choices, 6 of 10 right; piqa: 2 choices, 7 of 10 right (the recorded acc 0.6 and 0.7)
ITEMS = {"arc": _items(6), "piqa": _items(7)}
CHANCE = {"arc": np.full(10, 1 / 4), "piqa": np.full(10, 1 / 2)}


def test_score_and_v1_composite_with_known_weights_and_deltas() -> None:
    base = entry("org/base", "a" * 64, {"probe_standard": ("probe", GEOM_BASE)})
    child = entry("org/child", "b" * 64, FULL_TASKS, base_sha="a" * 64, items=ITEMS, chance=CHANCE)
    nodiv_tasks = {k: v for k, v in FULL_TASKS.items() if k != "div"}
    nodiv = entry("org/nodiv", "c" * 64, nodiv_tasks, base_sha="a" * 64, items=ITEMS, chance=CHANCE)
    orphan = entry("org/orphan", "d" * 64, {"probe_standard": ("probe", GEOM_CHILD)}, base_sha="e" * 64)
    t = build_tables([orphan, nodiv, child, base], n_boot=200)
    m = t.models.set_index("id")
    # geometry by hand (scale 0.5; floors: dormant 0.01): er 0.5-0.5*10/25, pr 0.5+0.5*10/10, anisotropy
    # 0.5-0.5*0.1/0.1, prompt entropy unchanged, dormant 0.5-0.5*0.02/0.005 -> clipped to 0
    geometry = (0.3 + 1.0 + 0.0 + 0.5 + 0.0) / 5
    ood, calib, plast, div = (0.6 + 0.7) / 2, (0.9 + 0.7) / 2, (2.0 - 1.5) / 2.0, (0.4 + 0.6 + 0.7) / 3
    ood_chance = ((0.6 - 1 / 4) / (1 - 1 / 4) + (0.7 - 1 / 2) / (1 - 1 / 2)) / 2  # Open LLM Leaderboard v2 style
    v1 = 0.30 * geometry + 0.20 * plast + 0.20 * ood + 0.15 * calib + 0.15 * div
    score = (0.20 * plast + 0.20 * ood_chance + 0.15 * calib + 0.15 * div) / 0.70  # outcomes only
    c = m.loc["submissions/org/child.json"]
    assert c["c.geometry"] == pytest.approx(geometry) and c["c.diversity"] == pytest.approx(div)
    assert c["c.ood_accuracy_chance"] == pytest.approx(ood_chance) and c["c.ood_accuracy"] == pytest.approx(ood)
    assert c["composite"] == pytest.approx(v1) and c["score"] == pytest.approx(score) and not c["partial"]
    assert c["score_lo"] < c["score"] < c["score_hi"]  # the items resampled
    n = m.loc["submissions/org/nodiv.json"]
    assert n["score"] == pytest.approx((0.20 * plast + 0.20 * ood_chance + 0.15 * calib) / 0.55)
    assert n["partial"] and n["missing"] == "diversity"
    assert n["composite"] == pytest.approx((v1 - 0.15 * div) / 0.85)
    b = m.loc["submissions/org/base.json"]  # geometry alone: a v1 composite (0.5), no score, unranked
    assert b["composite"] == pytest.approx(0.5) and pd_isna(b["score"]) and pd_isna(b["rank"])
    o = m.loc["submissions/org/orphan.json"]  # base not submitted: no geometry, no composite, unranked
    assert pd_isna(o["base_id"]) and pd_isna(o["composite"]) and pd_isna(o["rank"])
    # without the items' numbers of choices there is no chance-normalised accuracy (and no score from it)
    bare = entry("org/bare", "f" * 64, nodiv_tasks, base_sha="a" * 64)
    assert components(bare, base, 50)["ood_accuracy_chance"] is None
    # deltas vs base
    d = t.deltas
    assert d.at["submissions/org/child.json", "probe_standard.effective_rank"] == pytest.approx(-10.0)
    assert d.at["submissions/org/base.json", "probe_standard.effective_rank"] == 0.0
    assert math.isnan(d.at["submissions/org/orphan.json", "probe_standard.effective_rank"])
    assert math.isnan(d.at["submissions/org/child.json", "arc.acc"])  # the base has no arc
    # order: score desc, unscored last (by model)
    assert list(t.models["id"]) == [
        "submissions/org/child.json",
        "submissions/org/nodiv.json",
        "submissions/org/base.json",
        "submissions/org/orphan.json",
    ]
    assert list(t.models["rank"][:2]) == [1, 2]


def test_ranks_are_per_suite_and_chain_stages_show_their_lineage_name() -> None:
    base = entry("org/base", "a" * 64, {"probe_standard": ("probe", GEOM_BASE)})
    child = entry("org/child", "b" * 64, FULL_TASKS, base_sha="a" * 64)
    quick = entry("org/quick", "c" * 64, {"plast": ("plasticity", {"gain": 0.95, "bpb_initial": 2.0, "bpb_final": 0.1})})
    quick.doc["suite"]["name"] = "quick"
    stage = entry("/runs/c/01-sft/model", "d" * 64, FULL_TASKS, base_sha="a" * 64, source="local")
    stage.doc["model"]["lineage"][-1]["name"] = "base/rec/none/s0/01-sft"
    m = build_tables([base, child, quick, stage], n_boot=50).models
    assert list(m["suite"]) == ["quick", "standard", "standard", "standard"]
    assert m.iloc[0]["rank"] == 1 and m.iloc[0]["score"] == pytest.approx(0.95)  # alone in its suite
    standard = m[m["suite"] == "standard"]
    assert sorted(standard["rank"].dropna()) == [1, 1]  # child and stage identical (tied); the base has no score
    assert "base/rec/none/s0/01-sft" in set(m["model"])


def pd_isna(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def test_bootstrap_ci_matches_numpy_loop() -> None:
    x = np.arange(20, dtype=float) ** 1.5
    got = stats.bootstrap_ci(x, n_boot=500, seed=7)
    rng = np.random.default_rng(7)
    means = [x[rng.integers(0, 20, size=20)].mean() for _ in range(500)]
    assert got == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)), rel=1e-12)
    # and it is a sensible CI: close to the normal approximation for this smooth sample
    lo, hi = stats.bootstrap_ci(x, n_boot=20000, seed=1)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - 1.96 * se, rel=0.1) and hi == pytest.approx(x.mean() + 1.96 * se, rel=0.1)


def test_correlations_match_scipy() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=30), 1)  # ties
    y = x**3 + rng.normal(scale=0.5, size=30)
    assert stats.rankdata(x) == pytest.approx(scipy.stats.rankdata(x))
    assert stats.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    assert stats.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    assert stats.pearson([1, 2], [3, 4]) is None and stats.pearson([1, 1, 1], [1, 2, 3]) is None
    lo, hi = stats.correlation_ci(x, y, stats.spearman, n_boot=500, seed=3)
    assert lo < stats.spearman(x, y) < hi


def test_rank_intervals_and_tied_groups_by_hand() -> None:
    point, lo, hi = [0.9, 0.85, 0.5, 0.45], [0.8, 0.7, 0.4, 0.3], [1.0, 0.95, 0.6, 0.55]
    assert stats.rank_intervals(lo, hi) == [(1, 2), (1, 2), (3, 4), (3, 4)]
    assert stats.tied_groups(point, lo, hi) == [1, 1, 2, 2]
    assert stats.tied_groups([3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]) == [1, 2, 3]


def test_item_and_seed_bootstrap() -> None:
    records = [{"task": "arc", "loglik": [0.0, math.log(3.0)], "gold": i % 2} for i in range(40)]
    items = item_outcomes(records)
    conf, correct = items["arc"]
    assert conf == pytest.approx(np.full(40, 0.75)) and correct.mean() == 0.5  # argmax is choice 1
    per_seed = {
        "0": {"gain": 0.4, "bpb_initial": 2.0},
        "1": {"gain": 0.5, "bpb_initial": 2.0},
        "2": {"gain": 0.6, "bpb_initial": 2.0},
    }
    e = entry(
        "org/x",
        "a" * 64,
        {
            "arc": ("lm_eval", {"acc": 0.5, "ece": 0.25}),
            "plast": ("plasticity", {"gain": 0.5, "bpb_initial": 2.0, "per_seed": per_seed}),
        },
        items=items,
    )
    cis = metric_cis(e, n_boot=300)
    acc_reps = stats.bootstrap_mean_reps(correct, 300, stats.seed_of(e.id, "arc", "acc"))
    assert cis["arc.acc"] == list(stats.percentile_ci(acc_reps))
    rng = np.random.default_rng(stats.seed_of(e.id, "arc", "ece"))  # ECE over resampled items, by hand
    eces = []
    for _ in range(300):
        i = np.sort(rng.integers(0, 40, size=40))  # equal confidences ordered by item index (ece_mass_boot's rule)
        order = np.argsort(conf[i], kind="stable")
        eces.append(sum(len(b) / 40 * abs(correct[i][b].mean() - conf[i][b].mean()) for b in np.array_split(order, 15)))
    assert cis["arc.ece"] == pytest.approx(list(np.percentile(eces, [2.5, 97.5])), abs=1e-12)
    assert cis["plast.gain"] == list(stats.bootstrap_ci([0.4, 0.5, 0.6], 300, stats.seed_of(e.id, "plast", "gain")))
    assert cis["plast.bpb_initial"] == [2.0, 2.0]
    t = build_tables([e], n_boot=300)
    row = t.models.iloc[0]
    assert row["composite_lo"] < row["composite"] < row["composite_hi"]
    assert row["score_lo"] < row["score"] < row["score_hi"]


def test_interventions_view() -> None:
    base = entry("org/base", "a" * 64, {"probe_standard": ("probe", GEOM_BASE)})
    common = dict(base_sha="a" * 64, recipe="r1", stage="sft")
    probe_base, probe_child = ("probe", GEOM_BASE), ("probe", GEOM_CHILD)
    low, high = ("plasticity", {"gain": 0.25}), ("plasticity", {"gain": 0.5})
    plain = entry("org/plain", "b" * 64, {"probe_standard": probe_child, "plast": low}, intervention=None, **common)
    reg = entry("org/reg", "c" * 64, {"probe_standard": probe_base, "plast": high}, intervention="replay", **common)
    lone = entry(
        "org/lone",
        "d" * 64,
        {"probe_standard": probe_base, "plast": high},
        base_sha="a" * 64,
        recipe="r2",
        stage="sft",
        intervention="replay",
    )
    fuller = entry(
        "org/fuller",
        "e" * 64,
        {"probe_standard": probe_base, "plast": high, "div": FULL_TASKS["div"]},
        intervention="lora_decorrelation",
        **common,
    )
    t = build_tables([base, plain, reg, lone, fuller], n_boot=50)
    v = t.interventions.set_index("id")
    assert list(t.interventions["recipe"]) == ["r1", "r1", "r1", "r2"]
    # a row with a task its baseline lacks: compared on the common tasks only (probe and plasticity)
    div = (0.4 + 0.6 + 0.7) / 3
    f = v.loc["submissions/org/fuller.json"]
    assert f["score"] == pytest.approx((0.20 * 0.5 + 0.15 * div) / 0.35)  # its own score, with diversity
    assert f["compared_on"] == "2 common tasks" and f["delta_score"] == pytest.approx(0.5 - 0.25)
    assert f["within_noise"] is False  # constant components: zero-width CIs that do not overlap
    # geometry is not in the score, but its component delta is shown (the collapse profile)
    assert f["delta_c.geometry"] == pytest.approx(0.5 - 0.36) and f["delta_c.plasticity"] == pytest.approx(0.25)
    assert v.at["submissions/org/reg.json", "compared_on"] == ""
    assert v.at["submissions/org/reg.json", "baseline_id"] == "submissions/org/plain.json"
    assert v.at["submissions/org/reg.json", "delta_score"] == pytest.approx(0.5 - 0.25)
    assert v.at["submissions/org/reg.json", "within_noise"] is False
    assert v.at["submissions/org/plain.json", "intervention"] == "none"
    assert v.at["submissions/org/plain.json", "delta_score"] == 0.0
    assert pd_isna(v.at["submissions/org/lone.json", "baseline_id"])
    # ranked within (recipe, stage, suite) by Δ score; equal Δ share the best rank; no baseline -> no rank
    assert list(t.interventions["id"]) == [
        "submissions/org/fuller.json",
        "submissions/org/reg.json",
        "submissions/org/plain.json",
        "submissions/org/lone.json",
    ]
    assert list(t.interventions["rank"][:3]) == [1, 1, 3] and v.at["submissions/org/lone.json", "rank"] is pd.NA
    # one group per (recipe, stage, suite), named with the stage's lineage depth (the site's per-group tables sort by it)
    depth = t.models.set_index("id")["depth"]
    groups = [f"{r} · depth {depth[i]} sft · standard" for r, i in zip(t.interventions["recipe"], t.interventions["id"])]
    assert list(t.interventions["group"]) == groups
    assert t.interventions["group"].nunique() == 2 and depth["submissions/org/plain.json"] == 2


def test_hypothesis_panel_numbers_and_flags() -> None:
    rng = np.random.default_rng(5)
    er = rng.uniform(10, 60, size=10)
    acc = np.clip(0.3 + er / 200 + rng.normal(scale=0.02, size=10), 0, 1)
    kl, snr = rng.uniform(0, 0.5, size=10), rng.uniform(0.1, 3, size=10)
    entries = [
        entry(
            f"org/m{i}",
            f"{i:x}" * 64,
            {
                "probe_standard": ("probe", {"effective_rank": float(er[i]), "kl_to_base": float(kl[i])}),
                "plasticity_quick": ("plasticity", {"grad_snr": float(snr[i])}),
                "arc": ("lm_eval", {"acc": float(acc[i]), "ece": 0.1}),
            },
        )
        for i in range(10)
    ]
    panel, hidden = hypothesis_panel(build_tables(entries, n_boot=50), n_boot=300)
    across = panel[panel["analysis"] == "across_rows"]
    row = across[(across["metric"] == "probe_standard.effective_rank") & (across["target"] == "ood_accuracy")].iloc[0]
    assert row["n"] == 10 and row["flag"] == "" and row["n_clusters"] == 10 and row["n_effective"] == 10.0
    assert row["pearson"] == pytest.approx(np.corrcoef(er, acc)[0, 1], abs=1e-6)
    assert row["spearman"] == pytest.approx(scipy.stats.spearmanr(er, acc).statistic, abs=1e-6)
    # independent rows (every row its own base): the p-value is scipy's
    assert row["p_value"] == pytest.approx(scipy.stats.spearmanr(er, acc).pvalue, rel=1e-5, abs=1e-12)
    assert row["pearson_lo"] <= row["pearson"] <= row["pearson_hi"] and row["family"] == "spectral"
    assert row["expected_sign"] == 1 and row["verdict"] == "agrees" and row["rank_within_target"] == 1
    # partial Spearman on KL: Pearson r of the OLS residuals of the ranks; ten singleton families: too few rows
    rx, ry, rk = (scipy.stats.rankdata(v) for v in (er, acc, kl))
    design = np.column_stack([np.ones(10), rk])
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (rx, ry)]
    assert row["partial_kl"] == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-6) and pd_isna(row["partial_family"])
    # the literature's rival predictors sit next to the spectral ones, each in its family
    for metric, family, x in (
        ("probe_standard.kl_to_base", "divergence", kl),
        ("plasticity_quick.grad_snr", "gradient_signal", snr),
    ):
        rival = across[(across["metric"] == metric) & (across["target"] == "ood_accuracy")].iloc[0]
        assert rival["family"] == family and rival["n"] == 10
        assert rival["pearson"] == pytest.approx(np.corrcoef(x, acc)[0, 1], abs=1e-6)
    # ECE is constant (no correlation), plasticity absent and there are no lineage edges: counted, not listed
    assert set(panel["target"]) == {"ood_accuracy"} and set(panel["analysis"]) == {"across_rows"}
    assert (hidden["constant"], hidden["n_below_min"]) == (3, 3 + 9)
    small, hidden = hypothesis_panel(build_tables(entries[:5], n_boot=50), n_boot=100)
    assert small.empty and (hidden["n_below_min"], hidden["constant"]) == (18, 0)


QUICK = sorted(
    (Path(__file__).resolve().parents[1] / "submissions" / "huggingfacetb" / "smollm2-135m-instruct").glob("quick-*.json")
)[0]


def test_plasticity_component_is_the_mean_relative_gain_of_the_committed_quick_row() -> None:
    doc = json.loads(QUICK.read_text())
    e = Entry("submissions/q.json", doc)
    (task,) = [t for t, b in doc["tasks"].items() if b["kind"] == "plasticity"]
    bpb = doc["tasks"][task]["curves"]["0"]["bpb"]  # the held-out curve itself: (b0 - bK) / b0 by hand
    by_hand = (bpb[0] - bpb[-1]) / bpb[0]
    value, reps = components(e, None, n_boot=50)["plasticity"]
    assert value == pytest.approx(by_hand, abs=1e-12) and value == pytest.approx(0.862, abs=1e-3)
    assert np.all(reps == value)  # one seed: nothing to resample
    # several seeds: the component is the mean gain, its replicates the means of seed resamples
    doc["tasks"][task]["per_seed"] = {"0": {"gain": 0.8}, "1": {"gain": 0.6}, "2": {"gain": 0.7}}
    doc["tasks"][task]["metrics"]["gain"] = 0.7
    value, reps = components(Entry("submissions/q.json", doc), None, n_boot=400)["plasticity"]
    idx = stats.bootstrap_indices(3, 400, stats.seed_of("submissions/q.json", task, "seeds"))
    assert value == pytest.approx(0.7) and reps == pytest.approx(np.array([0.8, 0.6, 0.7])[idx].mean(axis=1))


def test_seed_keys_sort_without_crashing() -> None:
    keys = ["10", "2", "--1", "\u00b2", "-3", "a$b$", "0"]
    assert sorted(keys, key=seed_order) == ["-3", "0", "2", "10", "--1", "a$b$", "\u00b2"]


def test_incomplete_rows_are_not_ranked(tmp_path: Path) -> None:
    """`validate` recomputes completeness; the tables rank only complete rows (issue 12, item 3)."""
    import shutil

    from leaderboard_helpers import GOOD

    from collapse_bench.leaderboard.validate import validate_paths

    real = sorted((Path(__file__).resolve().parents[1] / "submissions" / "huggingfacetb").rglob("quick-*.json"))[0]
    root = tmp_path / "subs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copy(GOOD, root / "a" / "tiny.json")  # --limit 4, one task of four: valid, incomplete
    for f in (real, real.with_name(real.stem + ".samples.jsonl")):
        shutil.copy(f, root / "b" / f.name)
    report = validate_paths([root])
    assert report.failures == []
    assert {s.path.name: s.complete for s in report.ok} == {"tiny.json": False, real.name: True}
    models = build_tables(entries_from(report.ok, root), n_boot=50).models.set_index("id")
    assert models.at[f"submissions/b/{real.name}", "rank"] == 1
    assert pd.isna(models.at["submissions/a/tiny.json", "rank"]) and not models.at["submissions/a/tiny.json", "complete"]


@pytest.mark.parametrize("fn, rows", [(stats.pearson, stats.pearson_rows), (stats.spearman, stats.spearman_rows)])
def test_vectorised_correlations_equal_the_per_replicate_function(fn, rows) -> None:
    """correlation_ci computes all bootstrap replicates at once: the same values as the scalar function (scipy's
    rankdata for the ranks), degenerate (constant) replicates NaN where the scalar one gives None."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, size=(200, 9)).astype(float), rng.normal(size=(200, 9))  # ties and constant rows
    a[0] = 2.0
    got = rows(a, b)
    want = [fn(x, y) for x, y in zip(a, b)]
    assert np.isnan(got[0]) and want[0] is None
    np.testing.assert_allclose(got[1:], np.array(want[1:], dtype=float), rtol=1e-12, atol=1e-14)
    assert stats.spearman(a[1], b[1]) == pytest.approx(scipy.stats.spearmanr(a[1], b[1]).statistic, rel=1e-12)
