"""One contract test for every registered probe accumulator (collapse_bench/metrics/registry.py).

Streaming over batches == merging accumulators that each saw part of the batches (in either order), merging
an empty accumulator changes nothing, and an empty accumulator computes without NaN/inf. Each family's own test
checks its values against an independent reference; this one checks that every family keeps the contract.
"""

from __future__ import annotations

import math

import pytest
import torch
from metric_helpers import assert_values_close, make_batches, run

from collapse_bench.metrics.base import MetricValues
from collapse_bench.metrics.registry import probe_accumulators

N_LAYERS, DIM, REF_DIM, MLP_DIM, VOCAB = 4, 8, 6, 10, 40


def factory():
    return probe_accumulators(n_domains=3, reservoir_size=64, seed=0, with_reference=True)


def accumulators() -> list:
    return factory()(N_LAYERS, DIM, REF_DIM)


NAMES = [type(a).__name__ for a in accumulators()]


def fresh(i: int):
    return accumulators()[i]


def batches():
    return make_batches(7, [3, 2, 4], T=10, d=DIM, n_layers=N_LAYERS, mlp_dim=MLP_DIM, ref_dim=REF_DIM, vocab=VOCAB)


def finite_or_none(v: MetricValues) -> bool:
    values = [x for series in v.per_layer.values() for x in series] + list(v.scalars.values())
    return all(x is None or math.isfinite(x) for x in values)


def assert_same(a: MetricValues, b: MetricValues) -> None:
    assert_values_close(a, b, rtol=1e-9, atol=1e-12)
    assert a.counts == b.counts


@pytest.mark.parametrize("i", range(len(NAMES)), ids=NAMES)
def test_streaming_equals_merge_in_either_order(i: int) -> None:
    bs = batches()
    whole = run(fresh(i), bs).compute()
    left, right = run(fresh(i), bs[:1]), run(fresh(i), bs[1:])
    assert_same(whole, left.merge(right).compute())
    left, right = run(fresh(i), bs[:1]), run(fresh(i), bs[1:])
    assert_same(whole, right.merge(left).compute())


@pytest.mark.parametrize("i", range(len(NAMES)), ids=NAMES)
def test_empty_accumulator(i: int) -> None:
    empty = fresh(i).compute()
    assert finite_or_none(empty)
    bs = batches()
    whole = run(fresh(i), bs).compute()
    assert finite_or_none(whole)
    assert_same(whole, run(fresh(i), bs).merge(fresh(i)).compute())
    assert_same(whole, fresh(i).merge(run(fresh(i), bs)).compute())


def test_additive_families_use_the_base_class() -> None:
    """Families whose state is a sum inherit SumState's merge (no hand-written copy) and keep float64 states."""
    from collapse_bench.metrics.state import SumState

    additive = [a for a in accumulators() if isinstance(a, SumState)]
    assert {type(a).__name__ for a in additive} >= {
        "AnisotropyAccumulator",
        "DormantAccumulator",
        "TrajectoryAccumulator",
        "PromptEntropyAccumulator",
    }
    for acc in additive:
        assert type(acc).merge is SumState.merge, type(acc).__name__
        assert acc.empty
        for b in batches():
            acc.update(b)
        assert not acc.empty
        tensors = [v for v in acc.state().values() if isinstance(v, torch.Tensor)]
        assert tensors and all(t.dtype == torch.float64 for t in tensors), type(acc).__name__
