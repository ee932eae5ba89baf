"""Spectral metrics: pure functions against independent numpy/scipy references, closed forms, and the streaming
CovarianceAccumulator against the pure functions on the concatenated sampled rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_helpers import assert_values_close, make_batches, rows, run

from collapse_bench.metrics import spectral as sp


def _entropy_rank(s: np.ndarray) -> float:
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.fixture
def H() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)) + 3.0


def test_effective_rank_and_rankme_match_svd(H: np.ndarray) -> None:
    s_centred = np.linalg.svd(H - H.mean(0), compute_uv=False)
    s_raw = np.linalg.svd(H, compute_uv=False)
    assert sp.effective_rank(H) == pytest.approx(_entropy_rank(s_centred), rel=1e-10)
    assert sp.rankme(torch.tensor(H)) == pytest.approx(_entropy_rank(s_raw), rel=1e-10)
    assert sp.rankme(H) < sp.effective_rank(H)  # the large mean is one dominant direction


def test_stable_rank_participation_ratio_match_numpy(H: np.ndarray) -> None:
    Hc = H - H.mean(0)
    assert sp.stable_rank(H) == pytest.approx(np.linalg.norm(Hc, "fro") ** 2 / np.linalg.norm(Hc, 2) ** 2, rel=1e-10)
    lam = np.linalg.eigvalsh(np.cov(H.T, bias=True))
    assert sp.participation_ratio(H) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-10)
    assert np.allclose(sp.eigvals_centered(H).numpy(), np.sort(np.clip(lam, 0, None))[::-1], atol=1e-10)


def test_planted_rank_equal_singular_values() -> None:
    rng = np.random.default_rng(1)
    N, d, r = 200, 30, 7
    U, _ = np.linalg.qr(np.c_[np.ones(N), rng.normal(size=(N, r))])
    V, _ = np.linalg.qr(rng.normal(size=(d, r)))
    H = 5.0 * U[:, 1:] @ V.T + rng.normal(size=d)  # centred part has r equal singular values
    for fn in (sp.effective_rank, sp.participation_ratio, sp.stable_rank):
        assert fn(H) == pytest.approx(r, rel=1e-9)


def test_alpha_req_power_law_exact() -> None:
    for a in (0.7, 1.0, 2.3):
        lam = np.arange(1, 301, dtype=float) ** -a
        alpha, r2 = sp.alpha_req_fit(np.random.default_rng(0).permutation(lam))
        assert alpha == pytest.approx(a, abs=1e-6)
        assert r2 == pytest.approx(1.0, abs=1e-9)


def test_alpha_req_matches_weighted_polyfit() -> None:
    lam = np.sort(np.random.default_rng(2).gamma(0.3, size=150))[::-1]
    k = np.arange(12, 101)
    slope, _ = np.polyfit(np.log(k), np.log(lam[k - 1]), 1, w=np.sqrt(1.0 / k))  # polyfit weights residuals
    alpha, r2 = sp.alpha_req_fit(lam)
    assert alpha == pytest.approx(-slope, rel=1e-9)
    assert 0.0 < r2 < 1.0


def test_alpha_req_undefined_with_few_ranks() -> None:
    assert sp.alpha_req_fit(np.arange(15, 0, -1.0))[0] is None  # ranks 12..15: only 4 points
    lam = np.r_[np.ones(13), np.zeros(50)]  # lambda_k above the floor only up to rank 13
    assert sp.alpha_req_fit(lam) == (None, None)
    assert sp.alpha_req(np.random.default_rng(0).normal(size=(10, 200))) is None  # rank <= 9


def test_isotropic_gaussian_effective_rank_close_to_d() -> None:
    H = np.random.default_rng(3).normal(size=(20000, 20))
    assert 19.5 < sp.effective_rank(H) <= 20.0
    assert sp.participation_ratio(H) > 19.0


def test_massive_channel_dropped_from_robust_variant() -> None:
    batches = make_batches(5, [6, 9, 7], T=40, d=12, n_layers=2, k=30)
    for b in batches:
        for h in b.hidden:
            h[..., 5] *= 1e4
    acc = run(sp.CovarianceAccumulator(2, 12), batches)
    out = acc.compute().per_layer
    for l in range(2):
        X = rows(batches, l, "sample")
        assert out["massive_channels"][l] == 1.0
        assert out["effective_rank"][l] < 1.01  # one channel dominates
        assert out["effective_rank_robust"][l] == pytest.approx(sp.effective_rank(np.delete(X, 5, axis=1)), rel=1e-9)
        assert out["rankme_robust"][l] == pytest.approx(sp.rankme(np.delete(X, 5, axis=1)), rel=1e-9)
        assert out["effective_rank_robust"][l] > 5


def test_massive_channels_rule() -> None:
    m = np.array([1.0, 2.0, 3.0, 4.0, 1000.0, 149.0])  # median 3.5 -> threshold 175
    assert sp.massive_channels(m).tolist() == [False, False, False, False, True, False]


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_streaming_equals_batch(dtype: torch.dtype, rtol: float) -> None:
    batches = make_batches(7, [5, 3, 8, 1, 6], T=30, d=16, n_layers=3, k=10, dtype=dtype)
    acc = run(sp.CovarianceAccumulator(3, 16), batches)
    out = acc.compute()
    for l in range(3):
        X = rows(batches, l, "sample")
        ref = sp.spectrum_metrics(sp.eigvals_centered(X), sp.eigvals_second_moment(X))
        for key, value in ref.items():
            assert out.per_layer[key][l] == pytest.approx(value, rel=rtol), (key, l)
            assert out.per_layer[f"{key}_robust"][l] == out.per_layer[key][l]  # no massive channel here
        assert np.allclose(acc.eigvals(l).numpy(), sp.eigvals_centered(X).numpy(), rtol=rtol, atol=1e-9 * float(X.var()))
        maxabs = np.abs(rows(batches, l, "keep")).max(0)
        assert np.allclose(acc.maxabs[l].numpy(), maxabs, rtol=1e-6)
    assert out.counts["spectral_tokens"] == len(rows(batches, 0, "sample"))


def test_merge_equals_single() -> None:
    batches = make_batches(8, [4, 7, 2, 5], T=25, d=10, n_layers=2, k=6)
    single = run(sp.CovarianceAccumulator(2, 10), batches).compute()
    a = run(sp.CovarianceAccumulator(2, 10), batches[:1])
    b = run(sp.CovarianceAccumulator(2, 10), batches[1:])
    assert_values_close(b.merge(a).compute(), single)
    empty = sp.CovarianceAccumulator(2, 10)
    assert_values_close(empty.merge(run(sp.CovarianceAccumulator(2, 10), batches)).compute(), single)


def test_too_few_tokens_is_none() -> None:
    batches = make_batches(9, [1], T=3, d=4, n_layers=2, k=1, lengths=[2])
    out = run(sp.CovarianceAccumulator(2, 4), batches).compute()
    assert out.per_layer["effective_rank"] == [None, None]
    assert sp.CovarianceAccumulator(2, 4).compute().per_layer["alpha_req"] == [None, None]


def _np_epsilon_rank(H: np.ndarray, mass: float = 0.99) -> tuple[int, float]:
    """(99 % mass rank of the singular values of the centred H, relative margin of the cumulative sum to the cut)."""
    s = np.linalg.svd(H - H.mean(0), compute_uv=False)
    c = np.cumsum(s) / s.sum()
    k = int(np.argmax(c >= mass)) + 1
    margin = min(c[k - 1] - mass, mass - c[k - 2]) if k > 1 else c[0] - mass
    return k, float(margin)


def _epsilon_rank_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    N, d = 400, 48
    U, _ = np.linalg.qr(rng.normal(size=(N, d)))
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    power = U @ np.diag(np.arange(1, d + 1) ** -1.5) @ V.T + 2.0
    lowrank = rng.normal(size=(N, 9)) @ np.diag(np.geomspace(10, 0.5, 9)) @ rng.normal(size=(9, d)) - 1.0  # rank 9
    return {
        "anisotropic": rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)) + 3.0,
        "power_law": power,
        "low_rank_9": lowrank,
        "isotropic": rng.normal(size=(2000, 30)),
        "one_direction": np.outer(rng.normal(size=N), rng.normal(size=d)) + 5.0,  # rank 1 after centring
    }


@pytest.mark.parametrize("name", list(_epsilon_rank_cases()))
def test_epsilon_rank_matches_svd(name: str) -> None:
    H = _epsilon_rank_cases()[name]
    k, margin = _np_epsilon_rank(H)
    assert margin > 1e-9  # the cut is not a float tie (eigvalsh round-off moves the cumulative sum by ~1e-13)
    assert sp.epsilon_rank(H) == k and sp.epsilon_rank(torch.tensor(H)) == k
    assert sp.epsilon_rank_from_eigvals(np.random.default_rng(0).permutation(sp.eigvals_centered(H).numpy())) == k
    if name == "low_rank_9":
        assert k <= 9
    if name == "one_direction":
        assert k == 1


def test_epsilon_rank_streams_and_closed_forms() -> None:
    assert sp.epsilon_rank_from_eigvals(np.r_[np.ones(7), np.zeros(5)]) == 7  # equal sigma: 6/7 < 0.99 <= 7/7
    assert sp.epsilon_rank_from_eigvals(np.zeros(4)) is None
    batches = make_batches(12, [6, 4, 7], T=30, d=12, n_layers=3, k=12)
    out = run(sp.CovarianceAccumulator(3, 12), batches).compute().per_layer
    for l in range(3):
        assert out["epsilon_rank"][l] == _np_epsilon_rank(rows(batches, l, "sample"))[0]
