"""Trajectory (curvature, token uniformity, layer cosine), dormant units and linear CKA: pure functions
against independent references and closed forms; accumulators against the pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metric_helpers import assert_values_close, make_batches, rows, run, sequences
from sklearn.metrics.pairwise import cosine_similarity

from collapse_bench.metrics import cka as ck
from collapse_bench.metrics import dormant as dr
from collapse_bench.metrics import trajectory as tr

# ----------------------------------------------------------------------------- trajectory


def _curvature_loop(Z: np.ndarray) -> list[float]:
    out = []
    for k in range(len(Z) - 2):
        a, b = Z[k + 1] - Z[k], Z[k + 2] - Z[k + 1]
        if np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0:
            out.append(math.acos(max(-1.0, min(1.0, a @ b / np.linalg.norm(a) / np.linalg.norm(b)))))
    return out


def test_curvature_reference_and_closed_forms() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(20, 6))
    Z[7] = Z[6]  # a zero-length step skips the two angles that touch it
    ref = _curvature_loop(Z)
    assert len(ref) == 16
    assert tr.curvature(Z) == pytest.approx(np.mean(ref), rel=1e-12)
    line = np.outer(np.cumsum(rng.uniform(0.5, 2.0, size=10)), rng.normal(size=6)) + rng.normal(size=6)
    assert tr.curvature(line) == pytest.approx(0.0, abs=1e-6)
    a, b = rng.normal(size=6), rng.normal(size=6)
    assert tr.curvature(np.stack([a, b] * 5)) == pytest.approx(math.pi, abs=1e-6)  # back and forth
    right_angle = np.array([[0.0, 0], [1, 0], [1, 1], [0, 1], [0, 0]])
    assert tr.curvature(right_angle) == pytest.approx(math.pi / 2, rel=1e-12)
    assert tr.curvature(Z[:2]) is None


def test_token_uniformity_and_layer_cosine_references() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 5)) + 2
    assert tr.token_uniformity(X) == pytest.approx(np.linalg.norm(X - X.mean(0)) / np.linalg.norm(X), rel=1e-12)
    assert tr.token_uniformity(np.tile(rng.normal(size=5), (7, 1))) == pytest.approx(0.0, abs=1e-12)
    assert tr.token_uniformity(X[:1]) is None
    A, B = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    A[3] = 0.0
    ok = np.arange(30) != 3
    assert tr.layer_cosine(A, B) == pytest.approx(np.diag(cosine_similarity(A[ok], B[ok])).mean(), rel=1e-12)


def _trajectory_refs(batches, n_layers: int) -> dict[str, list]:
    out: dict[str, list] = {"curvature": [], "token_uniformity": [], "layer_cosine": [None]}
    for l in range(n_layers):
        seqs = sequences(batches, l)
        angles = [a for z in seqs for a in _curvature_loop(z)]
        out["curvature"].append(np.mean(angles))
        out["token_uniformity"].append(np.mean([u for z in seqs if (u := tr.token_uniformity(z)) is not None]))
        if l:
            out["layer_cosine"].append(tr.layer_cosine(rows(batches, l), rows(batches, l - 1)))
    return out


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_trajectory_streaming_and_merge(holes: bool, dtype: torch.dtype, rtol: float) -> None:
    batches = make_batches(2, [4, 6, 1, 5], T=18, d=7, n_layers=3, holes=holes, dtype=dtype)
    single = run(tr.TrajectoryAccumulator(3, 7), batches).compute()
    for key, values in _trajectory_refs(batches, 3).items():
        for got, want in zip(single.per_layer[key], values, strict=True):
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, rel=rtol), key
    merged = run(tr.TrajectoryAccumulator(3, 7), batches[:2]).merge(run(tr.TrajectoryAccumulator(3, 7), batches[2:]))
    assert_values_close(merged.compute(), single, rtol=1e-12)


def test_trajectory_straight_and_zigzag_batches() -> None:
    batches = make_batches(3, [2], T=10, d=4, n_layers=2, lengths=[10, 10])
    t = torch.arange(10, dtype=torch.float64)[:, None]
    direction = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    batches[0].hidden[0][:] = t * direction + 1.0  # straight line (position 0 excluded by keep anyway)
    batches[0].hidden[1][:] = torch.where(t % 2 == 0, 1.0, -1.0) * direction  # back and forth
    out = run(tr.TrajectoryAccumulator(2, 4), batches).compute().per_layer
    assert out["curvature"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["curvature"][1] == pytest.approx(math.pi, abs=1e-6)
    assert out["layer_cosine"][0] is None


# ----------------------------------------------------------------------------- dormant


def test_dormant_fraction_reference_and_planted_unit() -> None:
    rng = np.random.default_rng(4)
    A = rng.normal(size=(50, 40)) * rng.uniform(0, 1, size=40)
    A[:, 3] = 0.0
    s = np.abs(A).mean(0) / np.abs(A).mean()
    for tau in (0.025, 0.1, 0.5):
        assert dr.dormant_fraction(A, tau) == pytest.approx(np.mean(s <= tau), abs=1e-12)
    assert dr.dormant_fraction(A, 0.025) >= 1 / 40
    B = rng.normal(size=(50, 40))
    assert dr.dormant_fraction(B, 0.1) == 0.0
    B[:, [5, 9]] = 0.0
    assert dr.dormant_fraction(B, 0.025) == pytest.approx(2 / 40)
    assert dr.dormant_fraction(np.zeros((4, 3))) is None


def test_dormant_streaming_and_merge() -> None:
    batches = make_batches(5, [4, 6, 3], T=12, d=5, n_layers=3, mlp_dim=30, k=4)
    assert any(bool((b.keep & ~b.sample).any()) for b in batches)  # the sample really is a subset
    for b in batches:
        b.mlp[1][..., 7] = 0.0
        b.mlp[1][:, 0, 7] = 1e6  # position 0 is not kept, so unit 7 stays dormant
        b.mlp[0][..., 3] = 0.0
        b.mlp[0][..., 3][b.keep & ~b.sample] = 1e3  # active only on kept-but-unsampled tokens: dormant by protocol
    single = run(dr.DormantAccumulator(3, 5), batches).compute()
    assert single.per_layer["dormant_fraction"][0] is None
    for j in range(2):
        A = np.concatenate([b.mlp[j][b.sample & b.keep].numpy() for b in batches])
        assert single.per_layer["dormant_fraction"][j + 1] == pytest.approx(dr.dormant_fraction(A, 0.025), abs=1e-12)
        assert single.per_layer["dormant_fraction_01"][j + 1] == pytest.approx(dr.dormant_fraction(A, 0.1), abs=1e-12)
    assert single.per_layer["dormant_fraction"][2] >= 1 / 30
    assert single.per_layer["dormant_fraction"][1] >= 1 / 30  # unit 3 counts: only sampled tokens are scored
    merged = run(dr.DormantAccumulator(3, 5), batches[:1]).merge(run(dr.DormantAccumulator(3, 5), batches[1:]))
    assert_values_close(merged.compute(), single)
    no_mlp = make_batches(5, [2], T=6, d=5, n_layers=3)
    assert run(dr.DormantAccumulator(3, 5), no_mlp).compute().per_layer["dormant_fraction"] == [None] * 3


# ----------------------------------------------------------------------------- CKA


def _cka_hsic(X: np.ndarray, Y: np.ndarray) -> float:
    n = len(X)
    H = np.eye(n) - 1.0 / n
    Kx, Ky = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float(np.sum(Kx * Ky) / np.sqrt(np.sum(Kx * Kx) * np.sum(Ky * Ky)))


def test_linear_cka_reference_and_invariances() -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(80, 10)) @ rng.normal(size=(10, 10))
    Y = X[:, :6] @ rng.normal(size=(6, 4)) + rng.normal(size=(80, 4))
    assert ck.linear_cka(X, Y) == pytest.approx(_cka_hsic(X, Y), rel=1e-10)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert ck.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert ck.linear_cka(X, 3.0 * X @ Q + 5.0) == pytest.approx(1.0, abs=1e-12)
    assert ck.linear_cka(rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))) < 0.01
    assert ck.linear_cka(X, np.ones((80, 3))) is None


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_cka_streaming_and_merge(dtype: torch.dtype, rtol: float) -> None:
    batches = make_batches(7, [5, 3, 7, 4], T=16, d=6, n_layers=3, k=5, ref_dim=4, dtype=dtype)
    single = run(ck.CKAAccumulator(3, 6, ref_dim=4), batches).compute()
    for l in range(3):
        want = ck.linear_cka(rows(batches, l, "sample"), rows(batches, l, "sample", "reference_hidden"))
        assert single.per_layer["cka_to_reference"][l] == pytest.approx(want, rel=rtol)
    merged = run(ck.CKAAccumulator(3, 6, 4), batches[2:]).merge(run(ck.CKAAccumulator(3, 6, 4), batches[:2]))
    assert_values_close(merged.compute(), single, rtol=rtol)
    no_ref = make_batches(7, [3], T=8, d=6, n_layers=3)
    assert run(ck.CKAAccumulator(3, 6), no_ref).compute().per_layer["cka_to_reference"] == [None] * 3
