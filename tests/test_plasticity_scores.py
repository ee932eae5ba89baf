"""Plasticity scalarisation against hand computations: bpb, normalised AUC, gain, threshold,
steps_to_threshold (incl. never), mean/std over seeds."""

from __future__ import annotations

import math

import pytest

from collapse_bench.plasticity.scores import (
    aggregate,
    bits_per_byte,
    curve_scores,
    gain,
    mean_std,
    normalised_auc,
    steps_to_threshold,
    threshold,
)


def test_bits_per_byte_hand_computation() -> None:
    # three target tokens with p = 1/2, 1/4, 1/8 -> NLL = (1 + 2 + 3) ln 2 nats; target "café!" = 6 UTF-8 bytes
    nll = -(math.log(0.5) + math.log(0.25) + math.log(0.125))
    assert len("café!".encode()) == 6
    assert bits_per_byte(nll, 6) == pytest.approx(6 / 6, abs=1e-12)  # 6 bits over 6 bytes
    assert bits_per_byte(2 * math.log(2), 4) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def test_normalised_auc_trapezoid() -> None:
    # steps 0, 4, 8, 16 with bpb 2, 1.5, 1, 1: areas 4*1.75 + 4*1.25 + 8*1 = 20 over span 16
    assert normalised_auc([0, 4, 8, 16], [2.0, 1.5, 1.0, 1.0]) == pytest.approx(20 / 16, abs=1e-12)
    assert normalised_auc([0, 10], [3.0, 1.0]) == pytest.approx(2.0)
    assert normalised_auc([0], [1.7]) == 1.7
    assert normalised_auc([0, 5, 10], [1.0, 1.0, 1.0]) == pytest.approx(1.0)  # flat curve: its height
    with pytest.raises(ValueError):
        normalised_auc([0, 0], [1.0, 2.0])
    with pytest.raises(ValueError):
        normalised_auc([0, 1], [1.0])


def test_gain_threshold_and_steps() -> None:
    assert gain(2.0, 1.5) == pytest.approx(0.25)
    assert gain(2.0, 2.0) == 0.0
    assert gain(2.0, 2.5) == pytest.approx(-0.25)  # forgetting / divergence is negative
    assert threshold(2.0, 0.0, 0.25) == pytest.approx(1.5)
    assert threshold(2.0, 1.0, 0.5) == pytest.approx(1.5)
    steps, bpb = [0, 4, 8, 12], [2.0, 1.8, 1.5, 1.4]
    assert steps_to_threshold(steps, bpb, 1.5) == 8  # at-or-below counts
    assert steps_to_threshold(steps, bpb, 1.79) == 8
    assert steps_to_threshold(steps, bpb, 1.0) is None  # never reached
    assert steps_to_threshold(steps, bpb, 2.5) == 0  # already there at step 0


def test_curve_scores_and_aggregate() -> None:
    a = curve_scores([0, 4, 8], [2.0, 1.5, 1.0], target_bpb=0.0, fraction=0.25)
    assert a == {
        "bpb_initial": 2.0,
        "bpb_final": 1.0,
        "bpb_auc": pytest.approx((4 * 1.75 + 4 * 1.25) / 8),
        "gain": pytest.approx(0.5),
        "steps_to_threshold": 4,
        "threshold_bpb": pytest.approx(1.5),
    }
    b = curve_scores([0, 4, 8], [2.0, 1.9, 1.8], target_bpb=0.0, fraction=0.25)
    assert b["steps_to_threshold"] is None
    agg = aggregate({"0": a, "1": b})
    assert agg["bpb_final"] == pytest.approx(1.4) and agg["bpb_final_std"] == pytest.approx(math.sqrt(0.32))
    assert agg["gain"] == pytest.approx((0.5 + 0.1) / 2)
    assert agg["steps_to_threshold"] is None and agg["steps_to_threshold_std"] is None  # one seed never got there
    assert mean_std([3.0]) == (3.0, None)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([1, 2, 3]) == (2.0, pytest.approx(1.0))
