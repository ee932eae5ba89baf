"""Paired comparisons of leaderboard rows against independent computations: items paired by id (any order,
items one row lacks dropped), Δacc with the bootstrap written out here on the same index matrix, exact McNemar
and BH from statsmodels, a paired t CI over seeds from scipy, and the verdict against the expected sign."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from collapse_bench.leaderboard import stats
from collapse_bench.leaderboard.aggregate import build_tables
from collapse_bench.leaderboard.comparisons import compare_rows, comparisons
from collapse_bench.leaderboard.entry import Entry
from collapse_bench.metrics.calibration import ece

RNG = np.random.default_rng(7)
N = 120
IDS = [f"q{i}" for i in range(N)]
CONF_A, CONF_B = RNG.uniform(0.3, 1.0, N), RNG.uniform(0.3, 1.0, N)
OK_A, OK_B = (RNG.uniform(size=N) < 0.75).astype(float), (RNG.uniform(size=N) < 0.55).astype(float)


def row(
    eid: str, sha: str, lineage: list, conf: np.ndarray, ok: np.ndarray, ids: list[str], gains: list[float], stage=None
) -> Entry:
    doc = {
        "model": {"name": eid, "source": "hub", "sha256": sha, "lineage": lineage, "parent": None, "stage": stage},
        "suite": {"name": "standard", "version": 1},
        "tasks": {
            "arc": {"kind": "lm_eval", "metrics": {"acc": float(ok.mean()), "ece": ece(conf, ok)}},
            "plast": {
                "kind": "plasticity",
                "metrics": {"gain": float(np.mean(gains))},
                "per_seed": [{"seed": s, "gain": g} for s, g in enumerate(gains)],
            },
            "probe": {"kind": "probe", "metrics": {"kl_to_base": 0.0 if stage is None else 0.3}},
        },
    }
    return Entry(f"submissions/{eid}.json", doc, {"arc": (conf, ok)}, item_ids={"arc": ids})


def rows() -> tuple[Entry, Entry]:
    base = row("org/base", "a" * 64, [], CONF_B, OK_B, IDS, [0.30, 0.32, 0.31])
    perm = RNG.permutation(N - 1)  # the stage scored every item but the last, in another order
    lineage = [
        {"name": "org/base", "sha256": "a" * 64, "stage": "base"},
        {"name": "org/stage", "sha256": "b" * 64, "stage": "sft"},
    ]
    stage = row("org/stage", "b" * 64, lineage, CONF_A[perm], OK_A[perm], [IDS[i] for i in perm], [0.20, 0.23, 0.19], "sft")
    return base, stage


def test_paired_metrics_match_independent_computations() -> None:
    base, stage = rows()
    got = {(m["task"], m["metric"]): m for m in compare_rows(stage, base, n_boot=500)}
    # the pairing: stage items in stage order, base matched by id; the base's last item has no partner
    ids = stage.item_ids["arc"]
    ka, kb = stage.items["arc"][1], OK_B[[int(i[1:]) for i in ids]]
    acc = got[("arc", "acc")]
    assert acc["n"] == N - 1 and acc["delta"] == pytest.approx(ka.mean() - kb.mean())
    rng = np.random.default_rng(stats.seed_of("arc", *ids))
    idx = rng.integers(0, N - 1, (500, N - 1))
    reps = ka[idx].mean(1) - kb[idx].mean(1)
    assert (acc["ci_lo"], acc["ci_hi"]) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    table = [
        [((ka == 1) & (kb == 1)).sum(), ((ka == 1) & (kb == 0)).sum()],
        [((ka == 0) & (kb == 1)).sum(), ((ka == 0) & (kb == 0)).sum()],
    ]
    assert acc["p"] == pytest.approx(sm_mcnemar(table, exact=True).pvalue, rel=1e-9)
    ca, cb = stage.items["arc"][0], CONF_B[[int(i[1:]) for i in ids]]
    assert got[("arc", "ece")]["delta"] == pytest.approx(ece(ca, ka) - ece(cb, kb), abs=1e-12)
    gain = got[("plast", "gain")]
    d = np.array([0.20, 0.23, 0.19]) - np.array([0.30, 0.32, 0.31])
    half = scipy.stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (gain["ci_lo"], gain["ci_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert gain["p"] == pytest.approx(scipy.stats.ttest_rel([0.20, 0.23, 0.19], [0.30, 0.32, 0.31]).pvalue)
    ps = [m["p"] for m in got.values() if m["p"] is not None]
    qs = [m["q"] for m in got.values() if m["p"] is not None]
    assert qs == pytest.approx(list(multipletests(ps, method="fdr_bh")[1]))
    kl = got[("probe", "kl_to_base")]  # no per-item evidence: Δ only
    assert kl["delta"] == pytest.approx(0.3) and kl["ci_lo"] is None and kl["within_noise"] is None


def test_lineage_edges_get_verdicts_against_the_expected_sign() -> None:
    base, stage = rows()
    tables = build_tables([base, stage], n_boot=500)
    found = comparisons(tables, n_boot=500)
    assert [(c["id"], c["relation"], c["reference"]) for c in found] == [
        ("submissions/org/stage.json", "parent", "submissions/org/base.json")
    ]
    by = {(m["task"], m["metric"]): m for m in found[0]["metrics"]}
    gain = by[("plast", "gain")]  # sft: plasticity expected to fall (Dohare et al.); it fell clearly
    assert gain["expected_sign"] == -1 and gain["verdict"] == (
        "agrees" if gain["q"] < 0.05 and gain["ci_hi"] < 0 else "within noise"
    )
    assert by[("probe", "kl_to_base")]["expected_sign"] == 1 and by[("probe", "kl_to_base")]["verdict"] is None  # no CI
    assert by[("arc", "acc")]["expected_sign"] is None and by[("arc", "acc")]["verdict"] is None  # no prediction made
