"""Calibration metrics against independent references (sklearn, scipy, naive loops) and closed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from collapse_bench.metrics import calibration as cal


def ragged(seed: int, n: int = 300) -> tuple[list[list[float]], list[int]]:
    """Items with 2..5 choices, log-likelihood-like scores, gold correlated with the scores."""
    rng = np.random.default_rng(seed)
    scores, gold = [], []
    for _ in range(n):
        k = int(rng.integers(2, 6))
        s = rng.normal(-20, 6, size=k)
        g = int(rng.integers(k))
        s[g] += rng.normal(3, 4)
        scores.append([float(x) for x in s])
        gold.append(g)
    return scores, gold


def naive_ece_width(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(conf)) if (lo <= conf[i] < hi) or (b == n_bins - 1 and conf[i] == 1.0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            c = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - c)
    return total


def naive_ece_mass(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    order = sorted(range(len(conf)), key=lambda i: conf[i])  # Python's sort is stable
    n = len(conf)
    sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
    total, start = 0.0, 0
    for size in sizes:
        members = order[start : start + size]
        start += size
        if members:
            total += len(members) / n * abs(np.mean([correct[i] for i in members]) - np.mean([conf[i] for i in members]))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_references(seed: int) -> None:
    scores, gold = ragged(seed)
    probs = cal.softmax_rows(scores)
    conf, correct = cal.confidence_correct(probs, gold)
    # references computed independently
    ref_probs = [np.exp(log_softmax(np.array(s))) for s in scores]
    ref_conf = np.array([p.max() for p in ref_probs])
    ref_correct = np.array([float(np.argmax(p) == g) for p, g in zip(ref_probs, gold)])
    np.testing.assert_allclose(conf, ref_conf, rtol=1e-12)
    np.testing.assert_array_equal(correct, ref_correct)
    assert cal.ece(conf, correct, scheme="width") == pytest.approx(naive_ece_width(ref_conf, ref_correct), abs=1e-12)
    assert cal.ece(conf, correct, scheme="mass") == pytest.approx(naive_ece_mass(ref_conf, ref_correct), abs=1e-12)
    brier_ref = np.mean([np.sum((p - np.eye(len(p))[g]) ** 2) for p, g in zip(ref_probs, gold)])
    assert cal.brier(probs, gold) == pytest.approx(brier_ref, rel=1e-12)
    nll_ref = -np.mean([log_softmax(np.array(s))[g] for s, g in zip(scores, gold)])
    assert cal.nll(probs, gold) == pytest.approx(nll_ref, rel=1e-9)
    assert cal.auroc(conf, correct) == pytest.approx(pairwise_auroc(ref_conf, ref_correct), abs=1e-12)
    k = math.ceil(0.1 * len(conf))
    top = np.argsort(-ref_conf, kind="stable")[:k]
    assert cal.selective_accuracy(conf, correct) == pytest.approx(ref_correct[top].mean())


def test_fixed_k_brier_equals_one_hot_formula() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(200, 4)) * 3
    gold = rng.integers(4, size=200)
    probs = np.exp(log_softmax(logits, axis=1))
    onehot = np.eye(4)[gold]
    assert cal.brier(list(probs), list(gold)) == pytest.approx(((probs - onehot) ** 2).sum(axis=1).mean(), rel=1e-12)


def pairwise_auroc(conf: np.ndarray, correct: np.ndarray) -> float:
    """P(conf of a right answer > conf of a wrong one) + half the ties, over every (right, wrong) pair."""
    pos, neg = conf[correct > 0.5], conf[correct <= 0.5]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


def test_auroc_with_ties_is_the_pairwise_probability() -> None:
    conf = np.array([0.9, 0.9, 0.8, 0.8, 0.8, 0.6, 0.6, 0.5])
    correct = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    assert cal.auroc(conf, correct) == pytest.approx(pairwise_auroc(conf, correct), abs=1e-12)
    assert cal.auroc(conf, correct) == pytest.approx(10 / 16, abs=1e-12)  # by hand: 3.5 + 2 x 2.5 + 1.5 of 16 pairs
    assert cal.auroc(conf, np.ones(8)) is None
    assert cal.auroc(conf, np.zeros(8)) is None


@pytest.mark.parametrize("seed", [0, 3])
def test_temperature_opt_matches_scipy(seed: int) -> None:
    scores, gold = ragged(seed, 200)

    def nll_at(log_t: float) -> float:
        t = math.exp(log_t)
        return -np.mean([log_softmax(np.array(s) / t)[g] for s, g in zip(scores, gold)])

    ref = minimize_scalar(nll_at, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-9})
    t_opt = cal.temperature_opt(scores, gold)
    assert 0.05 < t_opt < 20.0
    assert t_opt == pytest.approx(math.exp(ref.x), rel=1e-4)
    assert nll_at(math.log(t_opt)) <= nll_at(0.0) + 1e-12  # never worse than T = 1


def test_temperature_recovers_the_generating_temperature() -> None:
    """Labels sampled from softmax(z / 2.5): the NLL-optimal temperature on the raw z is ~2.5."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(20000, 4)) * 6
    p = np.exp(log_softmax(z / 2.5, axis=1))
    gold = list((p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1))
    assert cal.temperature_opt(list(z), gold) == pytest.approx(2.5, rel=0.05)


def test_perfectly_calibrated_predictions_have_ece_near_zero() -> None:
    rng = np.random.default_rng(7)
    n = 40000
    c = rng.uniform(0.5, 1.0, size=n)  # binary items: p(top) = c, correct with probability c
    correct_top = rng.random(n) < c
    scores = [[math.log(ci), math.log(1 - ci)] for ci in c]
    gold = [0 if ok else 1 for ok in correct_top]
    rep = cal.calibration_report(scores, gold)
    assert rep["ece"] < 0.01 and rep["ece_width"] < 0.01
    assert rep["temperature_opt"] == pytest.approx(1.0, abs=0.05)
    assert rep["accuracy"] == pytest.approx(0.75, abs=0.01)


def test_always_confident_and_wrong_has_ece_near_one() -> None:
    scores = [[0.0, -30.0, -30.0, -30.0]] * 50
    gold = [1] * 50
    rep = cal.calibration_report(scores, gold)
    assert rep["accuracy"] == 0.0
    assert rep["ece"] == pytest.approx(1.0, abs=1e-9) and rep["ece_width"] == pytest.approx(1.0, abs=1e-9)
    assert rep["brier"] == pytest.approx(2.0, abs=1e-9)
    assert rep["auroc"] is None
    assert rep["temperature_opt"] == pytest.approx(20.0, rel=1e-4)  # the upper bound: flatten as much as allowed


def test_length_normalised_variant_and_reliability_bins() -> None:
    scores = [[-10.0, -12.0], [-30.0, -20.0], [-8.0, -9.0]]
    lens = [[10, 2], [30, 10], [4, 8]]
    gold = [1, 1, 0]
    rep = cal.calibration_report(scores, gold, lens)
    # argmax of ll / len: item 0 -> choice 1 (-6 > -1), item 1 -> 1 (-2 > -1? no: -1 vs -2 -> 0), item 2 -> 1
    preds = [int(np.argmax(np.array(s) / np.array(d))) for s, d in zip(scores, lens)]
    assert rep["accuracy"] == pytest.approx(np.mean([p == g for p, g in zip(preds, gold)]))
    bins = rep["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 3
    assert all((b["confidence"] is None) == (b["count"] == 0) for b in bins)


def test_bad_gold_index_is_refused() -> None:
    with pytest.raises(ValueError):
        cal.calibration_report([[-1.0, -2.0]], [2])


def test_temperature_at_bound_flags_the_search_bounds_only() -> None:
    """Closed form: 2 choices, logit gap d, the higher one right with frequency q -> T* = d / logit(q)."""
    d, q = 4.0, 0.8
    scores, gold = [[d, 0.0]] * 10, [0] * 8 + [1] * 2
    t = cal.temperature_opt(scores, gold)
    assert t == pytest.approx(d / math.log(q / (1 - q)), rel=1e-6) and cal.temperature_at_bound(t) is None
    # always wrong: NLL falls towards log 2 as T grows, the search stops at the upper bound
    up = cal.temperature_opt(scores, [1] * 10)
    assert cal.temperature_at_bound(up) == "upper" and cal.temperature_at_bound(19.999999314507573) == "upper"  # committed
    # q close to 1 with a small gap: optimum T* = 0.1 / logit(0.999) ≈ 0.0145 < 0.05, the lower bound
    low = cal.temperature_opt([[0.1, 0.0]] * 1000, [0] * 999 + [1])
    assert cal.temperature_at_bound(low) == "lower" and low == pytest.approx(0.05, rel=1e-6)
    assert cal.temperature_at_bound(19.99) is None and cal.temperature_at_bound(0.0501) is None


@pytest.mark.parametrize("n", [7, 15, 100, 151])
def test_vectorised_mass_ece_equals_the_row_by_row_function(n: int) -> None:
    """The leaderboard bootstraps ECE with ece_mass_rows over (B, n) replicates: the same number as ece() per row
    (ties in confidence included, n below, at and off a multiple of the 15 bins)."""
    from collapse_bench.metrics.calibration import ece
    from collapse_bench.metrics.calibration_rows import ece_mass_rows

    rng = np.random.default_rng(n)
    conf = np.round(rng.uniform(0.2, 1.0, size=(40, n)), 2)  # rounding makes ties
    correct = (rng.uniform(size=(40, n)) < conf).astype(np.float64)
    rows = ece_mass_rows(conf, correct)
    assert rows.shape == (40,)
    np.testing.assert_allclose(rows, [ece(c, k, scheme="mass") for c, k in zip(conf, correct)], rtol=1e-12, atol=1e-15)


# --- SCE, AURC, E-AURC ---------------------------------------------------------------------------------


def fixed_k(seed: int, n: int = 400, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) choice probabilities and gold labels correlated with them (no probability on a bin edge)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), gold] += rng.normal(1.0, 1.5, size=n)
    return np.exp(log_softmax(logits, axis=1)), gold


def naive_sce(probs: list[np.ndarray], gold: list[int], n_bins: int = 15) -> float:
    """Nixon et al.'s SCE by explicit loops; ragged items padded with p = 0 (never gold) over all N items."""
    n, k_max = len(probs), max(len(p) for p in probs)
    total = 0.0
    for k in range(k_max):
        p_k = [float(p[k]) if k < len(p) else 0.0 for p in probs]
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            members = [i for i in range(n) if lo <= p_k[i] < hi or (b == n_bins - 1 and p_k[i] == 1.0)]
            if members:
                acc = sum(gold[i] == k for i in members) / len(members)
                conf = sum(p_k[i] for i in members) / len(members)
                total += len(members) / n * abs(acc - conf)
    return total / k_max


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sce_matches_netcal_classwise_ece_and_a_naive_loop(seed: int) -> None:
    """netcal has no SCE, but its binary ECE (15 equal-width bins) of p_k against [gold = k] is SCE's class-k term."""
    from netcal.metrics import ECE

    probs, gold = fixed_k(seed)
    ours = cal.sce(list(probs), list(gold))
    netcal_sce = np.mean([ECE(bins=15).measure(probs[:, k], (gold == k).astype(int)) for k in range(probs.shape[1])])
    assert ours == pytest.approx(netcal_sce, abs=1e-12)
    assert ours == pytest.approx(naive_sce(list(probs), list(gold)), abs=1e-12)


def test_ece_width_matches_netcal_top_label_ece() -> None:
    from netcal.metrics import ECE

    probs, gold = fixed_k(4, k=5)
    conf, correct = cal.confidence_correct(list(probs), list(gold))
    assert cal.ece(conf, correct, scheme="width") == pytest.approx(ECE(bins=15).measure(probs, gold), abs=1e-12)


def test_sce_ragged_items_equal_zero_padding() -> None:
    scores, gold = ragged(5, 250)
    probs = cal.softmax_rows(scores)
    assert cal.sce(probs, gold) == pytest.approx(naive_sce(probs, gold), abs=1e-12)


def test_sce_hand_computed() -> None:
    """Bins of width 1/15: class 0 puts 0.70 and 0.68 into bin 10 (gold 0 once) -> |1 - 1.38| and 0.09 alone -> 0.09;
    class 1: 0.18, |1 - 0.11|, 0.30 in three bins; class 2: 0.12, 0.21, |1 - 0.61|. SCE = (0.47 + 1.37 + 0.72) / (3 * 3)."""
    probs = [np.array([0.70, 0.18, 0.12]), np.array([0.68, 0.11, 0.21]), np.array([0.09, 0.30, 0.61])]
    assert cal.sce(probs, [0, 1, 2]) == pytest.approx(2.56 / 9, abs=1e-12)


def naive_aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Mean over c = 1..N of the error rate of the c most confident items (confidence descending, item order on ties)."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    risks = [sum(1 - correct[i] for i in order[:c]) / c for c in range(1, len(conf) + 1)]
    return sum(risks) / len(risks)


@pytest.mark.parametrize("seed", [0, 1])
def test_aurc_matches_an_explicit_loop_over_coverages(seed: int) -> None:
    probs, gold = fixed_k(seed, n=300)
    conf, correct = cal.confidence_correct(list(probs), list(gold))
    assert len(np.unique(conf)) == len(conf)  # no ties: one order
    assert cal.aurc(conf, correct) == pytest.approx(naive_aurc(conf, correct), abs=1e-12)


def test_aurc_ties_are_the_mean_over_every_order_of_the_items() -> None:
    """Ties (groups of 3 and 2): the mean of the explicit loop over all 7! item orders (each order of a tie equally often)."""
    import itertools

    conf = np.array([0.9, 0.7, 0.9, 0.5, 0.7, 0.9, 0.3])
    correct = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    perms = list(itertools.permutations(range(7)))
    ref = sum(naive_aurc(conf[list(p)], correct[list(p)]) for p in perms) / len(perms)
    assert cal.aurc(conf, correct) == pytest.approx(ref, abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):  # independent of item order, exactly
        p = rng.permutation(7)
        assert cal.aurc(conf[p], correct[p]) == cal.aurc(conf, correct)


def test_aurc_and_eaurc_hand_computed() -> None:
    # descending confidence, errors 0 1 0 1: risks 0, 1/2, 1/3, 2/4 -> AURC = (4/3) / 4 = 1/3; r = 1/2
    conf, correct = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1.0, 0.0, 1.0, 0.0])
    assert cal.aurc(conf, correct) == pytest.approx(1 / 3, abs=1e-15)
    assert cal.aurc_optimal(0.5) == pytest.approx(0.5 + 0.5 * math.log(0.5), abs=1e-15)
    # ties: {0.9: right, wrong} count at 1/2 each -> risks 1/2, 1/2, 1/3
    assert cal.aurc(np.array([0.9, 0.9, 0.5]), np.array([1.0, 0.0, 1.0])) == pytest.approx(4 / 9, abs=1e-15)
    scores = [[math.log(c), math.log(1 - c)] for c in conf]
    rep = cal.calibration_report(scores, [0, 1, 0, 1])
    assert rep["aurc"] == pytest.approx(1 / 3, abs=1e-15)
    assert rep["eaurc"] == pytest.approx(1 / 3 - (0.5 + 0.5 * math.log(0.5)), abs=1e-15)
    for ok, aurc in ((1.0, 0.0), (0.0, 1.0)):  # all right / all wrong: AURC 0 / 1, both optimal
        rep = cal.calibration_report(scores, [0 if ok else 1] * 4)
        assert rep["aurc"] == aurc and rep["eaurc"] == 0.0


@pytest.mark.parametrize("n,errors", [(1000, 300), (200, 20), (50, 45)])
def test_eaurc_of_a_perfect_ranking_is_the_discrete_minus_closed_form_optimum(n: int, errors: int) -> None:
    """All correct items most confident: AURC = (1/N) sum_c max(0, c - (N - E)) / c; the closed form
    r + (1 - r) ln(1 - r) is its continuous limit, below it by ~ r / (2N)."""
    conf = np.linspace(1.0, 0.3, n)
    correct = np.r_[np.ones(n - errors), np.zeros(errors)]
    discrete = sum(max(0, c - (n - errors)) / c for c in range(1, n + 1)) / n
    assert cal.aurc(conf, correct) == pytest.approx(discrete, abs=1e-12)
    r = errors / n
    gap = discrete - cal.aurc_optimal(r)
    assert gap > 0 and gap == pytest.approx(r / (2 * n), rel=0.15)
    shuffled = np.random.default_rng(1).permutation(correct)  # a worse ranking has a larger excess
    assert cal.aurc(conf, shuffled) - cal.aurc_optimal(r) > gap


def test_as_recorded_compares_older_blocks_without_the_added_metrics() -> None:
    scores, gold = ragged(6, 40)
    recs = [{"loglik": s, "gold": g, "choice_chars": [3] * len(s)} for s, g in zip(scores, gold)]
    fresh = cal.calibration_block(recs)
    assert set(cal.ADDED_METRICS) <= set(fresh["primary"]) and set(cal.METRICS) <= set(fresh["length_normalised"])
    old = {
        name: {k: v for k, v in var.items() if k not in cal.ADDED_METRICS} if isinstance(var, dict) else var
        for name, var in fresh.items()
    }
    assert cal.as_recorded(fresh, old) == old
    partial = {**old, "primary": {**old["primary"], "sce": fresh["primary"]["sce"]}}  # one of them: compared in full
    assert cal.as_recorded(fresh, partial)["primary"] == fresh["primary"]
    assert cal.as_recorded(fresh, fresh) == fresh


@pytest.mark.parametrize("n", [7, 15, 151])
def test_bootstrap_mass_ece_orders_ties_by_item_index(n: int) -> None:
    """ece_mass_boot (items sorted once, replicate ranks sorted) = ece() of each replicate with its items in index
    order (np.sort(idx)); with ties in confidence that is the documented tie rule, without ties the draw order."""
    from collapse_bench.metrics.calibration import ece
    from collapse_bench.metrics.calibration_rows import ece_mass_boot

    rng = np.random.default_rng(100 + n)
    conf = np.round(rng.uniform(0.2, 1.0, size=n), 1)  # many ties
    correct = (rng.uniform(size=n) < conf).astype(np.float64)
    idx = rng.integers(0, n, size=(60, n))
    got = ece_mass_boot(conf, correct, idx)
    s = np.sort(idx, axis=1)
    np.testing.assert_allclose(got, [ece(conf[i], correct[i], scheme="mass") for i in s], rtol=1e-12, atol=1e-15)
    free = rng.permutation(n) / n + 0.01  # no ties: the same as sorting each replicate as drawn
    np.testing.assert_allclose(
        ece_mass_boot(free, correct, idx), [ece(free[i], correct[i], scheme="mass") for i in idx], rtol=1e-12, atol=1e-15
    )
    assert ece_mass_boot(conf, correct, np.arange(n)[None])[0] == pytest.approx(ece(conf, correct, scheme="mass"), abs=1e-15)
