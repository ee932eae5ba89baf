"""TwoNN intrinsic dimension: the pure function against scikit-dimension's ``skdim.id.TwoNN(discard_fraction=0.1)``
(the same linear fit through the origin), duplicates, the peak over layers, and the values through the token reservoir
(streaming, reordering and merging give the same sample, hence the same numbers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skdim
import torch
from metric_helpers import make_batches, run
from scipy.spatial.distance import cdist
from sklearn.datasets import make_swiss_roll

from collapse_bench.metrics import intrinsic as idm
from collapse_bench.metrics import spec as metric_spec
from collapse_bench.metrics.base import ProbeBatch
from collapse_bench.metrics.registry import probe_accumulators
from collapse_bench.metrics.reservoir import TokenReservoir


def skdim_twonn(X: np.ndarray) -> float:
    return float(skdim.id.TwoNN(discard_fraction=0.1).fit(X).dimension_)


def embed(Z: np.ndarray, D: int, rng: np.random.Generator, offset: float = 3.0) -> np.ndarray:
    """Z (n, k) isometrically into D dims (random orthonormal frame) plus a constant offset."""
    Q, _ = np.linalg.qr(rng.normal(size=(D, Z.shape[1])))
    return Z @ Q.T + offset * rng.normal(size=D)


def datasets() -> dict[str, tuple[np.ndarray, float]]:
    """name -> (points, true dimension)."""
    rng = np.random.default_rng(0)
    roll, _ = make_swiss_roll(1500, noise=0.0, random_state=1)
    return {
        "linear_3d_in_20d": (embed(rng.normal(size=(1200, 3)), 20, rng), 3.0),
        "swiss_roll_in_20d": (embed(roll, 20, rng), 2.0),
        "gaussian_5d": (rng.normal(size=(1000, 5)), 5.0),
        "linear_8d_in_64d": (embed(rng.normal(size=(2000, 8)) * np.linspace(1, 3, 8), 64, rng), 8.0),  # skdim's chunked path
    }


DATA = datasets()


@pytest.mark.parametrize("name", list(DATA))
def test_twonn_matches_scikit_dimension(name: str) -> None:
    X, true_dim = DATA[name]
    got = idm.twonn_dimension(X)
    assert got == pytest.approx(skdim_twonn(X), rel=1e-9)
    assert got == pytest.approx(true_dim, rel=0.15)  # and it is the dimension (finite-sample bias)
    assert idm.twonn_dimension(torch.tensor(X[::-1].copy())) == pytest.approx(got, rel=1e-12)  # order-free


def test_two_nearest_equals_brute_force_distances(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    X = 1e4 + rng.normal(size=(300, 30))  # large common offset: the expansion alone would lose digits
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, :2]
    monkeypatch.setattr(idm, "CHUNK_ELEMENTS", 7 * 300)  # 7 rows per chunk, last chunk partial
    r1, r2 = idm.two_nearest(X)
    assert np.allclose(r1.numpy(), ref[:, 0], rtol=1e-12) and np.allclose(r2.numpy(), ref[:, 1], rtol=1e-12)


def test_duplicates_are_removed_first() -> None:
    X, _ = DATA["linear_3d_in_20d"]
    rng = np.random.default_rng(4)
    dup = np.concatenate([X, X[rng.choice(len(X), 300, replace=False)], X[:50]])  # 350 extra copies
    rng.shuffle(dup)
    unique = np.unique(dup, axis=0)
    assert len(unique) == len(X)
    got = idm.twonn_dimension(dup)
    assert got == pytest.approx(idm.twonn_dimension(X), rel=1e-12)
    assert got == pytest.approx(skdim_twonn(unique), rel=1e-9)
    with warnings.catch_warnings():  # skdim drops every copy of a duplicate (documented difference)
        warnings.simplefilter("ignore", UserWarning)
        assert abs(skdim_twonn(dup) - got) > 1e-3


def test_undefined_cases() -> None:
    assert idm.twonn_dimension(np.ones((10, 4))) is None  # one distinct point
    assert idm.twonn_dimension(np.r_[np.zeros((5, 3)), np.ones((5, 3))]) is None  # two distinct points
    three = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    assert idm.twonn_dimension(three) == pytest.approx(skdim_twonn(three), rel=1e-9)


def test_id_peak_excludes_embedding_and_final_norm() -> None:
    series = [50.0, 3.0, 9.0, None, 9.0, 4.0, 2.0, 100.0]  # index 0 and L = 7 excluded; first on ties
    assert idm.id_peak(series) == (2, 9.0)
    assert idm.id_peak([1.0, None, None, 5.0]) == (None, None)
    assert idm.id_peak([1.0, 2.0]) == (None, None)  # L = 1: no block output before the final norm


def reservoir_batches():
    return make_batches(5, [20, 30, 25, 25, 10], T=20, d=8, n_layers=4, k=6, dtype=torch.float32)


def one_sequence(b: ProbeBatch, i: int) -> ProbeBatch:
    cut = slice(i, i + 1)
    return ProbeBatch(
        hidden=[h[cut] for h in b.hidden], keep=b.keep[cut], sample=b.sample[cut], seq_ids=b.seq_ids[cut], domains=b.domains[cut]
    )


def test_reservoir_values_match_scikit_dimension_and_do_not_depend_on_batching() -> None:
    bs = reservoir_batches()
    new = lambda: TokenReservoir(4, 8, size=300, seed=2, metrics=(idm.reservoir_intrinsic_dimension,))
    single = run(new(), bs)
    assert single.count == 300
    out = single.compute()
    values = out.per_layer["intrinsic_dimension"]
    for l in range(4):
        X = np.unique(single.layer_rows(l).double().numpy(), axis=0)
        assert values[l] == pytest.approx(skdim_twonn(X), rel=1e-9)
    peak = int(np.argmax(values[1:3])) + 1
    assert out.scalars == {"id_peak_layer": float(peak), "id_peak_value": values[peak]}

    streamed = run(new(), [one_sequence(b, i) for b in bs[::-1] for i in range(b.keep.shape[0])])  # rebatched
    merged = run(new(), bs[2:]).merge(run(new(), bs[:2])).merge(run(new(), bs[1:3]))  # overlap kept once
    for other in (streamed, merged):
        o = other.compute()
        assert o.per_layer["intrinsic_dimension"] == values
        assert o.scalars == out.scalars


def test_registered_with_the_probe_reservoir() -> None:
    accs = probe_accumulators(n_domains=3, reservoir_size=200, seed=0)(4, 8)
    (res,) = [a for a in accs if isinstance(a, TokenReservoir)]
    out = run(res, reservoir_batches()).compute()
    assert len(out.per_layer["intrinsic_dimension"]) == 4 and set(out.scalars) == {"id_peak_layer", "id_peak_value"}
    assert TokenReservoir(4, 8).compute().per_layer.keys() == {"anisotropy_centered"}  # hooks are opt-in
    empty = res.__class__(4, 8, metrics=res.metrics).compute()
    assert empty.per_layer["intrinsic_dimension"] == [None] * 4 and empty.scalars["id_peak_layer"] is None
    for m in ("intrinsic_dimension", "id_peak_layer", "id_peak_value"):
        s = metric_spec.spec_for(m)
        assert s is not None and s.module == "collapse_bench.metrics.intrinsic" and s.reservoir and s.direction is None
