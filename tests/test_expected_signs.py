"""The pre-registered expected signs: every rule names a real metric of its task kind (by the metric specs), a
known stage kind and a citation; lookups pick the right rule; verdicts follow from the paired CI."""

from __future__ import annotations

import fnmatch

import pytest

from collapse_bench.chain.recipe import TRAINING_KINDS
from collapse_bench.leaderboard.paired import verdict
from collapse_bench.leaderboard.signs import expected_sign, expected_signs
from collapse_bench.metrics.spec import all_specs


def test_every_rule_names_a_registered_metric_of_its_kind() -> None:
    rules = expected_signs()
    assert len(rules) >= 20
    specs = all_specs()
    for rule in rules:
        assert rule.stage_kind in (*TRAINING_KINDS, "lora_stage"), rule
        probe_id = rule.metric.rstrip("*") or rule.metric
        matching = [s for s in specs if s.kind == rule.kind and (s.matches(probe_id) or fnmatch.fnmatchcase(s.id, rule.metric))]
        assert matching, f"{rule.kind}:{rule.metric} matches no metric spec"
        assert "arXiv" in rule.citation or "Nature" in rule.citation, rule


def test_lookup_and_the_literature_signs() -> None:
    assert expected_sign("sft", "probe", "effective_rank", "last").sign == 1  # entropy-seeking SFT (arXiv 2509.23024)
    assert expected_sign("dpo", "lm_eval", "sce").sign == 1
    assert expected_sign("long_cot", "diversity", "distinct_2").sign == -1  # the glob distinct*
    assert expected_sign("math", "probe", "effective_rank", "last").sign == 0  # shown, never judged
    assert expected_sign("sft", "probe", "effective_rank", "card") is None  # only the last-layer claim is made
    for kind in TRAINING_KINDS:
        assert expected_sign(kind, "probe", "kl_to_base").sign == 1  # every stage moves away from the base


@pytest.mark.parametrize(
    "ci,q,sign,want",
    [
        ((0.1, 0.3), 0.01, 1, "agrees"),
        ((-0.3, -0.1), 0.01, 1, "contradicts"),
        ((-0.1, 0.3), 0.01, 1, "within noise"),
        ((0.1, 0.3), 0.2, 1, "within noise"),  # significant alone, not after BH
    ],
)
def test_verdict_against_the_expected_sign(ci: tuple[float, float], q: float, sign: int, want: str) -> None:
    assert verdict(ci[0], ci[1], q, sign) == want
