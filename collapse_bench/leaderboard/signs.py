"""The pre-registered expected signs (``expected_signs.yaml``): per stage kind, the (task kind, metric) pairs
whose direction of change the literature predicts, with citations. A lineage edge's verdict per metric
is :func:`collapse_bench.leaderboard.paired.verdict` of its paired CI against :func:`expected_sign`."""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ..errors import CollapseBenchError

LAYERS = ("card", "last")


@dataclass(frozen=True)
class ExpectedSign:
    stage_kind: str
    kind: str  # task kind
    metric: str  # metric id or fnmatch glob
    layer: str  # card | last
    sign: int  # +1 | -1 | 0 (no prediction)
    citation: str


@functools.lru_cache(maxsize=1)
def expected_signs() -> tuple[ExpectedSign, ...]:
    raw: dict[str, Any] = yaml.safe_load(resources.files(__package__).joinpath("expected_signs.yaml").read_text(encoding="utf-8"))
    cites = raw["citations"]
    out = []
    for stage_kind, rules in raw["signs"].items():
        for r in rules:
            if r["cite"] not in cites or r["sign"] not in (-1, 0, 1) or r["layer"] not in LAYERS:
                raise CollapseBenchError(f"expected_signs.yaml: bad rule for {stage_kind}: {r}")
            out.append(ExpectedSign(stage_kind, r["kind"], r["metric"], r["layer"], int(r["sign"]), cites[r["cite"]]))
    return tuple(out)


def expected_sign(stage_kind: str, kind: str, metric: str, layer: str = "card") -> ExpectedSign | None:
    """The first rule of ``stage_kind`` matching (task kind, metric, layer), or None (no prediction)."""
    for rule in expected_signs():
        if (
            rule.stage_kind == stage_kind
            and rule.kind == kind
            and rule.layer == layer
            and fnmatch.fnmatchcase(metric, rule.metric)
        ):
            return rule
    return None
