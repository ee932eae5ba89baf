"""Equal-mass ECE (:func:`.calibration.ece`, ``scheme="mass"``) of many rows at once: the item-bootstrap replicates
the leaderboard's CIs, its paired comparisons and ``collapse-bench noise`` use. Kept apart from the per-set formulas
of :mod:`.calibration` (written once there; these are their vectorised forms, tested equal to them)."""

from __future__ import annotations

import numpy as np

from .calibration import N_BINS


def ece_mass_rows(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """:func:`.calibration.ece` with ``scheme="mass"`` of every row of two (B, n) arrays at once (bootstrap replicates): the
    same stable sort and ``np.array_split`` bin sizes per row, bin sums by ``np.add.reduceat``; equal to the
    row-by-row function up to float summation order (~1e-16)."""
    order = np.argsort(conf, axis=1, kind="stable")
    return _mass_ece_sorted(np.take_along_axis(conf, order, 1), np.take_along_axis(correct.astype(np.float64), order, 1), n_bins)


def _mass_ece_sorted(c: np.ndarray, k: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass ECE of rows already sorted by confidence: ``np.array_split`` bin sizes, sums by ``np.add.reduceat``."""
    n = c.shape[1]
    sizes = np.array([len(b) for b in np.array_split(np.arange(n), n_bins) if len(b)])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gap = np.abs(np.add.reduceat(k, starts, axis=1) - np.add.reduceat(c, starts, axis=1)) / sizes
    return (sizes / n * gap).sum(axis=1)


def ece_mass_boot(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """:func:`.calibration.ece` (``scheme="mass"``) of every item-bootstrap replicate, row r of ``idx`` (B, n) resampling the
    items. Equal to ``ece_mass_rows(conf[s], correct[s])`` with ``s = np.sort(idx, axis=1)``: inside a replicate,
    items of equal confidence are ordered by item index (as :func:`.calibration.ece` orders the full set). Kept instead of an
    argsort per replicate for speed: the items are sorted once and each replicate sorts its integer ranks
    (numpy's radix sort for 16-bit keys; the ratio is printed by benchmarks/ece_bootstrap.py)."""
    order = np.argsort(conf, kind="stable")
    rank = np.empty(len(conf), dtype=np.int64)
    rank[order] = np.arange(len(conf))
    dtype = np.uint16 if len(conf) <= np.iinfo(np.uint16).max + 1 else np.int64
    r = np.sort(rank.astype(dtype)[idx], axis=1, kind="stable")
    return _mass_ece_sorted(conf[order][r], correct.astype(np.float64)[order][r], n_bins)


def acc_ece_rows(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, ECE over 15 equal-mass bins) of every item-bootstrap replicate: row r of the index matrix ``idx``
    (B, n) resamples the items ``conf`` / ``correct`` (:func:`ece_mass_boot`). The one implementation the
    leaderboard's CIs, its paired comparisons and ``collapse-bench noise`` share."""
    return correct[idx].mean(axis=1), ece_mass_boot(conf, correct, idx)
