"""Diversity metrics against hand computations; the diversity kind end to end through lm-eval (tiny model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from collapse_bench.metrics import diversity as div

SAMPLES = ["the cat sat on the mat", "the cat sat on a mat", "a dog sat on the mat"]


def test_distinct_n_by_hand() -> None:
    texts = ["a b a", "a b c"]
    assert div.distinct_n(texts, 1) == pytest.approx(3 / 6)  # a b a a b c -> {a, b, c}
    assert div.distinct_n(texts, 2) == pytest.approx(3 / 4)  # ab ba ab bc
    assert div.distinct_n(texts, 3) == pytest.approx(2 / 2)
    assert div.distinct_n(["one"], 2) is None


def test_per_input_versus_across_inputs() -> None:
    groups = [["a b", "c d"], ["a b", "c d"]]  # each prompt's samples differ, but prompts repeat each other
    assert div.distinct_per_input(groups, 1) == pytest.approx(1.0)
    assert div.distinct_across_inputs(groups, 1) == pytest.approx(4 / 8)
    assert div.distinct_per_input(groups, 2) == pytest.approx(1.0)
    assert div.distinct_across_inputs(groups, 2) == pytest.approx(2 / 4)
    same = [["x y z", "x y z"]]
    assert div.distinct_per_input(same, 3) == pytest.approx(1 / 2)


def test_self_bleu4_by_hand() -> None:
    # clipped n-gram precisions worked out by hand (see the module docstring for the definition)
    b1 = (5 / 6 * 5 / 5 * 4 / 4 * 2 / 3) ** 0.25  # "the" clipped to 1 of 2; 4-gram "cat sat on the" unmatched
    b2 = (6 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    b3 = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert div.self_bleu4(SAMPLES) == pytest.approx((b1 + b2 + b3) / 3, abs=1e-9)
    assert div.self_bleu4(["same words here ok", "same words here ok"]) == pytest.approx(1.0)
    assert div.self_bleu4(["only one"]) is None


def test_self_bleu4_brevity_penalty_and_smoothing_by_hand() -> None:
    short_vs_long = math.exp(1 - 6 / 2)  # 2-word hypothesis: effective order 2, both precisions 1, BP = e^(1 - r/c)
    # 6-word hypothesis vs "the cat": p1 = 2/6, p2 = 1/5, p3 = 0 -> 1/(2*4), p4 = 0 -> 1/(4*3) (exp smoothing)
    long_vs_short = (2 / 6 * 1 / 5 * 1 / 8 * 1 / 12) ** 0.25
    assert div.self_bleu4(["the cat", "the cat sat on a mat"]) == pytest.approx((short_vs_long + long_vs_short) / 2, abs=1e-9)


def test_diversity_metrics_keys() -> None:
    out = div.diversity_metrics([SAMPLES, ["x y", "x z"]])
    assert set(out) == {
        "distinct_1",
        "distinct_1_across",
        "distinct_2",
        "distinct_2_across",
        "distinct_3",
        "distinct_3_across",
        "self_bleu4",
    }
    assert out["distinct_1"] == pytest.approx((div.distinct_n(SAMPLES, 1) + 3 / 4) / 2)


def test_diversity_task_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    from collapse_bench.evaluate import EvaluateRequest, evaluate

    def run(out: Path) -> dict:
        return evaluate(
            EvaluateRequest(
                model=str(tiny_model_dir), tasks=["diversity_quick"], limit=2, device="cpu", output=str(out), progress=False
            )
        )[1]

    res = run(tmp_path / "a.json")
    block = res["tasks"]["diversity_quick"]
    assert block["counts"]["prompts"] == 2 and block["counts"]["samples"] == 8
    assert block["sampling"]["k"] == 4 and block["samples"]["records"] == 2
    rows = [json.loads(line) for line in (tmp_path / "a.samples.jsonl").read_text().splitlines()]
    groups = [r["samples"] for r in rows]
    assert all(len(g) == 4 for g in groups) and len({s for g in groups for s in g}) > 1  # sampled, not greedy
    expected = div.diversity_metrics(groups)
    for key, value in expected.items():
        assert block["metrics"][key] == pytest.approx(value) if value is not None else block["metrics"][key] is None
    again = run(tmp_path / "b.json")["tasks"]["diversity_quick"]
    assert again["samples"]["sha256"] == block["samples"]["sha256"]  # same seed, same generations
