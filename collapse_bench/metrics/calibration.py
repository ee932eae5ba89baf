"""Calibration of multiple-choice predictions from per-choice log-likelihoods (pure numpy functions).

Item i has choices k = 1..K_i (K_i may differ between items) with summed continuation
log-likelihoods ll_ik (lm-eval's ``loglikelihood`` of " " + choice given the prompt) and a gold index g_i.

  p_ik        = softmax_k(ll_ik / T)                         (primary: T = 1, raw sums)
  p_ik (norm) = softmax_k(ll_ik / len_ik)                    (length-normalised: len = the divisor of
                                                              lm-eval's acc_norm, ``len(choice)``)
  conf_i      = max_k p_ik;   pred_i = argmax_k (first on ties, as np.argmax);   correct_i = [pred_i == g_i]

  ece          = sum_b (n_b / N) |acc_b - conf_b| over 15 equal-mass bins (items sorted by confidence,
                 stable, split into 15 consecutive groups whose sizes differ by at most one)
  ece_width    = the same over 15 equal-width bins [b/15, (b+1)/15) (the last bin includes 1)
  brier        = mean_i sum_k (p_ik - [k == g_i])^2                 (multi-class, range [0, 2])
  nll          = mean_i -log p_ig_i
  auroc        = P(conf of a correct item > conf of a wrong item) + 0.5 P(tie)   (Mann-Whitney, equal
                 to sklearn's roc_auc_score(correct, conf)); null when all items are correct or all wrong
  selective_acc_top10 = accuracy of the ceil(0.1 N) most confident items (stable order on ties)
  temperature_opt     = argmin_T nll(softmax(ll / T)), golden-section search on log T over
                        [0.05, 20] (NLL is convex in 1/T, hence unimodal in log T); a bound is
                        returned when the optimum lies outside. The leaderboard derives
                        ``temperature_opt_at_bound`` (1/0) from the recorded value with
                        :func:`temperature_at_bound` and shows "≥ 20" / "≤ 0.05" (the recorded value is
                        left as it is, so ``rescore`` stays exact)
  sce          = (1/K) sum_k sum_b (n_bk / N) |acc_bk - conf_bk|   (static calibration error, Nixon et al.
                 2019): class-wise over choice positions k < K = max_i K_i, the items binned by p_ik into the 15
                 equal-width bins of ece_width (the paper's fixed-width bins; equal-mass ones make its ACE);
                 acc_bk = share of bin b's items with gold k, conf_bk = their mean p_ik. An item without a k-th
                 choice is left out of class k (as p_ik = 0, never gold, it would leave every
                 n_bk |acc_bk - conf_bk| = |sum_b ([g_i = k] - p_ik)| unchanged)
  aurc         = (1/N) sum_{c=1..N} risk_c, risk_c = error rate of the c most confident items (area under the
                 risk-coverage curve, Geifman & El-Yaniv 2017); items tied in confidence count at their
                 group's error rate (the expectation over the tie's orders: independent of item order)
  eaurc        = aurc - (r + (1 - r) ln(1 - r)), r = 1 - accuracy (Geifman et al. 2019's closed-form AURC of
                 the optimal ranking); the discrete optimum (all correct items first) exceeds it by ~r / (2N),
                 so eaurc > 0 even for a perfect ranking when 0 < r < 1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .spec import MetricSpec, Range, Tolerance

N_BINS = 15
T_BOUNDS = (0.05, 20.0)


def softmax_rows(
    scores: Sequence[Sequence[float] | np.ndarray],
    divisors: Sequence[Sequence[float]] | None = None,
    temperature: float = 1.0,
) -> list[np.ndarray]:
    """Per-item probabilities softmax(s / d / T) (float64; ragged lists allowed)."""
    out = []
    for i, s in enumerate(scores):
        z = np.asarray(s, dtype=np.float64)
        if divisors is not None:
            z = z / np.asarray(divisors[i], dtype=np.float64)
        z = z / temperature
        z = z - z.max()
        e = np.exp(z)
        out.append(e / e.sum())
    return out


def _check(probs: Sequence[np.ndarray], gold: Sequence[int]) -> None:
    if len(probs) != len(gold) or not probs:
        raise ValueError("calibration needs as many gold labels as items, and at least one item")
    for p, g in zip(probs, gold):
        if not 0 <= g < len(p):
            raise ValueError(f"gold index {g} out of range for {len(p)} choices")


def confidence_correct(probs: Sequence[np.ndarray], gold: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(conf_i = max p, correct_i = argmax p == gold) as float64 arrays."""
    _check(probs, gold)
    conf = np.array([p.max() for p in probs], dtype=np.float64)
    correct = np.array([float(int(np.argmax(p)) == g) for p, g in zip(probs, gold)])
    return conf, correct


def _bins(conf: np.ndarray, scheme: str, n_bins: int) -> list[np.ndarray]:
    if scheme == "mass":
        order = np.argsort(conf, kind="stable")
        return [b for b in np.array_split(order, n_bins) if len(b)]
    edges = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    return [np.flatnonzero(edges == b) for b in range(n_bins)]


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, scheme: str = "mass") -> float:
    """Expected calibration error, sum_b (n_b/N) |acc_b - conf_b|; ``scheme`` = "mass" | "width"."""
    n = len(conf)
    return float(sum(len(b) / n * abs(correct[b].mean() - conf[b].mean()) for b in _bins(conf, scheme, n_bins) if len(b)))


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, scheme: str = "width") -> list[dict[str, Any]]:
    """Reliability-diagram bins: lo, hi, count, mean confidence, accuracy (null for empty bins)."""
    out = []
    for b, idx in enumerate(_bins(conf, scheme, n_bins)):
        if scheme == "width":
            lo, hi = b / n_bins, (b + 1) / n_bins
        else:
            lo, hi = float(conf[idx].min()), float(conf[idx].max())
        out.append(
            {
                "lo": lo,
                "hi": hi,
                "count": len(idx),
                "confidence": float(conf[idx].mean()) if len(idx) else None,
                "accuracy": float(correct[idx].mean()) if len(idx) else None,
            }
        )
    return out


def brier(probs: Sequence[np.ndarray], gold: Sequence[int]) -> float:
    """Multi-class Brier score mean_i sum_k (p_ik - [k == g_i])^2."""
    _check(probs, gold)
    total = 0.0
    for p, g in zip(probs, gold):
        y = np.zeros_like(p)
        y[g] = 1.0
        total += float(((p - y) ** 2).sum())
    return total / len(probs)


def nll(probs: Sequence[np.ndarray], gold: Sequence[int]) -> float:
    """Mean negative log-probability of the gold choice (nats)."""
    _check(probs, gold)
    return float(np.mean([-math.log(max(float(p[g]), 1e-300)) for p, g in zip(probs, gold)]))


def _padded(scores: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """Ragged scores as an (N, K_max) float64 array padded with -inf (zero probability)."""
    k = max(len(s) for s in scores)
    out = np.full((len(scores), k), -np.inf)
    for i, s in enumerate(scores):
        out[i, : len(s)] = s
    return out


def _nll_at(z: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    """NLL of softmax(z / T) for padded scores ``z``, computed stably in log space."""
    zt = z / temperature
    m = zt.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(zt - m).sum(axis=1))
    return float(np.mean(lse - zt[np.arange(len(z)), gold]))


def auroc(conf: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of confidence as a score for correctness (average ranks for ties); None if one class is empty.
    Kept hand-written (Mann–Whitney U of average ranks) rather than sklearn's ``roc_auc_score``, which agrees
    only to ~1e-16: ``rescore`` and ``validate`` recompute recorded rows' calibration blocks bit for bit."""
    pos = correct > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(conf, kind="mergesort")
    ranks = np.empty(len(conf), dtype=np.float64)
    sorted_conf = conf[order]
    i = 0
    while i < len(conf):  # average rank over ties
        j = i
        while j + 1 < len(conf) and sorted_conf[j + 1] == sorted_conf[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def selective_accuracy(conf: np.ndarray, correct: np.ndarray, fraction: float = 0.1) -> float:
    """Accuracy of the ceil(fraction * N) most confident items (ties kept in item order)."""
    k = max(1, math.ceil(fraction * len(conf) - 1e-9))
    top = np.argsort(-conf, kind="stable")[:k]
    return float(correct[top].mean())


def sce(probs: Sequence[np.ndarray], gold: Sequence[int], n_bins: int = N_BINS) -> float:
    """Static (class-wise) calibration error over equal-width bins of each choice position's probability."""
    _check(probs, gold)
    k_max = max(len(p) for p in probs)
    total = 0.0
    for k in range(k_max):
        rows = [i for i, p in enumerate(probs) if len(p) > k]
        p_k = np.array([probs[i][k] for i in rows], dtype=np.float64)
        y_k = np.array([float(gold[i] == k) for i in rows])
        total += sum(abs(y_k[b].sum() - p_k[b].sum()) for b in _bins(p_k, "width", n_bins) if len(b))
    return float(total / (len(probs) * k_max))


def aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean risk over coverages 1/N..N/N (ties share their group's error rate)."""
    order = np.argsort(-conf, kind="stable")
    c, err = conf[order], 1.0 - correct[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])  # first position of each group of equal confidence
    sizes, errs = np.diff(np.r_[starts, len(c)]), np.add.reduceat(err, starts)
    g, covered = np.repeat(np.arange(len(starts)), sizes), np.arange(1, len(c) + 1)
    expected_errors = (np.cumsum(errs) - errs)[g] + (covered - starts[g]) * (errs / sizes)[g]
    return float(np.mean(expected_errors / covered))


def aurc_optimal(error_rate: float) -> float:
    """Closed-form AURC of the optimal ranking, r + (1 - r) ln(1 - r) (1 at r = 1)."""
    r = float(error_rate)
    return r + (1.0 - r) * math.log(1.0 - r) if r < 1.0 else 1.0


def temperature_opt(
    scores: Sequence[Sequence[float] | np.ndarray],
    gold: Sequence[int],
    bounds: tuple[float, float] = T_BOUNDS,
    tol: float = 1e-7,
) -> float:
    """Golden-section search of log T in log(bounds) minimising NLL(softmax(ll / T))."""
    z, g = _padded(scores), np.asarray(gold, dtype=np.int64)
    a, b = math.log(bounds[0]), math.log(bounds[1])
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = _nll_at(z, g, math.exp(c)), _nll_at(z, g, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = _nll_at(z, g, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = _nll_at(z, g, math.exp(d))
    return float(math.exp((a + b) / 2.0))


def temperature_at_bound(t: float, bounds: tuple[float, float] = T_BOUNDS, rtol: float = 1e-6) -> str | None:
    """ "upper" / "lower" when ``t`` is a bound of the search (|log t - log bound| <= rtol; the search stops
    within 1e-7 of it in log T), else None: the true optimum then lies at or beyond that bound."""
    if t > 0 and abs(math.log(t) - math.log(bounds[1])) <= rtol:
        return "upper"
    if t > 0 and abs(math.log(t) - math.log(bounds[0])) <= rtol:
        return "lower"
    return None


def calibration_report(
    scores: Sequence[Sequence[float]], gold: Sequence[int], divisors: Sequence[Sequence[float]] | None = None
) -> dict[str, Any]:
    """Every calibration metric of one variant (``divisors`` given: the length-normalised one).

    ``temperature_opt`` scales the variant's own scores (ll, or ll / len).
    """
    scaled = (
        scores
        if divisors is None
        else [np.asarray(s, dtype=np.float64) / np.asarray(d, dtype=np.float64) for s, d in zip(scores, divisors)]
    )
    probs = softmax_rows(scaled)
    conf, correct = confidence_correct(probs, gold)
    area = aurc(conf, correct)
    return {
        "n": len(probs),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(conf.mean()),
        "ece": ece(conf, correct, scheme="mass"),
        "ece_width": ece(conf, correct, scheme="width"),
        "brier": brier(probs, gold),
        "nll": nll(probs, gold),
        "auroc": auroc(conf, correct),
        "selective_acc_top10": selective_accuracy(conf, correct, 0.1),
        "temperature_opt": temperature_opt(scaled, gold),
        "sce": sce(probs, gold),
        "aurc": area,
        "eaurc": area - aurc_optimal(1.0 - float(correct.mean())),
        "reliability": reliability_bins(conf, correct, scheme="width"),
    }


def calibration_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Both variants: p = softmax(loglik) (primary) and p = softmax(loglik / len(choice)) (acc_norm's divisor)."""
    scores = [r["loglik"] for r in records]
    gold = [r["gold"] for r in records]
    return {
        "definition": "p = softmax over the choices' summed log-likelihoods; confidence = max p",
        "primary": calibration_report(scores, gold),
        "length_normalised": calibration_report(scores, gold, [r["choice_chars"] for r in records]),
    }


# The primary variant's numbers that a task block also copies into its ``metrics``.
METRICS = ("ece", "ece_width", "brier", "nll", "auroc", "selective_acc_top10", "temperature_opt", "sce", "aurc", "eaurc")
# Added to calibration_report after results had been committed (those variants hold none of them).
ADDED_METRICS = ("sce", "aurc", "eaurc")


def as_recorded(fresh: dict[str, Any], stored: Any) -> dict[str, Any]:
    """``fresh`` (a :func:`calibration_block`) without :data:`ADDED_METRICS` in each variant where ``stored`` has
    none of them (a result written before they existed); a variant that has any is compared in full."""
    if not isinstance(stored, dict):
        return fresh
    out = dict(fresh)
    for name, variant in fresh.items():
        old = stored.get(name)
        if isinstance(variant, dict) and isinstance(old, dict) and not any(k in old for k in ADDED_METRICS):
            out[name] = {k: v for k, v in variant.items() if k not in ADDED_METRICS}
    return out


SPECS = (
    MetricSpec(
        id="ece*",
        kind="lm_eval",
        definition="expected calibration error over equal-mass confidence bins (ece_width: its bootstrap CI width)",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="ECE",
    ),
    MetricSpec(
        id="auroc*",
        kind="lm_eval",
        definition="AUROC of the answer's confidence for separating right from wrong answers",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="AUROC",
    ),
    MetricSpec(
        id="selective_acc*",
        kind="lm_eval",
        definition="accuracy on the most confident fraction of the items (top10 = 10%)",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="selective accuracy",
    ),
    MetricSpec(
        id="sce*",
        kind="lm_eval",
        definition="static calibration error: class-wise ECE of every choice position's probability, averaged",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="SCE",
        reference="Nixon et al., 'Measuring Calibration in Deep Learning', arXiv 1904.01685; checked against netcal",
    ),
    MetricSpec(
        id="aurc*",
        kind="lm_eval",
        definition="area under the risk-coverage curve (error rate of the most confident items, mean over coverages)",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="AURC",
        reference="Geifman et al., ICLR 2019, arXiv 1805.08206",
    ),
    MetricSpec(
        id="eaurc*",
        kind="lm_eval",
        definition="excess AURC: AURC minus the closed-form AURC of the optimal ranking at the same error rate",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="E-AURC",
        reference="Geifman et al., ICLR 2019, arXiv 1805.08206",
    ),
    MetricSpec(
        id="brier*",
        kind="lm_eval",
        definition="multi-class Brier score of the choice distribution",
        direction="lower",
        range=Range(0, 2),
        tolerance=Tolerance(0.02, 0.0),
        label="Brier score",
    ),
    MetricSpec(
        id="nll*",
        kind="lm_eval",
        definition="mean negative log-likelihood (nats) of the correct choice",
        direction="lower",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.02),
        label="NLL",
    ),
    MetricSpec(
        id="temperature_opt*",
        kind="lm_eval",
        definition="temperature that minimises the NLL of the choice distribution",
        range=Range(0, 1000, lo_open=True),
        tolerance=Tolerance(0.0, 0.05),
        label="optimal temperature",
    ),
)
