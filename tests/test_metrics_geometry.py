"""Anisotropy, token reservoir, matrix entropy and domain separation: pure functions against independent
references and closed forms; accumulators against the pure functions on the concatenated rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from metric_helpers import assert_values_close, labels, make_batches, rows, run, sequences

from collapse_bench.metrics import anisotropy as an
from collapse_bench.metrics import domain as dm
from collapse_bench.metrics import entropy as en
from collapse_bench.metrics import reservoir as rs

# ----------------------------------------------------------------------------- anisotropy


def _pair_loop_cosine(H: np.ndarray) -> float:
    H = H[np.linalg.norm(H, axis=1) > 0]
    vals = [H[i] @ H[j] / np.linalg.norm(H[i]) / np.linalg.norm(H[j]) for i, j in itertools.permutations(range(len(H)), 2)]
    return float(np.mean(vals))


def test_mean_pairwise_cosine_matches_double_loop() -> None:
    H = np.random.default_rng(0).normal(size=(13, 5)) + 0.7
    H[4] = 0.0  # zero rows are dropped
    assert an.mean_pairwise_cosine(H) == pytest.approx(_pair_loop_cosine(H), rel=1e-12)
    assert an.centered_anisotropy(H) == pytest.approx(_pair_loop_cosine(H - H.mean(0)), rel=1e-12)
    assert an.mean_pairwise_cosine(H[:1]) is None


def test_anisotropy_closed_forms() -> None:
    rng = np.random.default_rng(1)
    direction = rng.normal(size=16)
    same = rng.uniform(0.1, 5.0, size=(50, 1)) * direction
    assert an.mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-12)
    assert abs(an.mean_pairwise_cosine(rng.normal(size=(4000, 64)))) < 0.002
    # centring removes a shared offset
    assert an.mean_pairwise_cosine(rng.normal(size=(500, 8)) + 20) > 0.9
    assert abs(an.centered_anisotropy(rng.normal(size=(500, 8)) + 20)) < 0.01


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_anisotropy_streaming_and_merge(dtype: torch.dtype, rtol: float) -> None:
    batches = make_batches(2, [4, 7, 1, 5], T=15, d=6, n_layers=3, dtype=dtype)
    single = run(an.AnisotropyAccumulator(3, 6), batches).compute()
    for l in range(3):
        assert single.per_layer["anisotropy"][l] == pytest.approx(an.mean_pairwise_cosine(rows(batches, l)), rel=rtol)
    with torch.inference_mode():  # state made in inference mode (as in the probe loop) must merge outside it
        first = run(an.AnisotropyAccumulator(3, 6), batches[:2])
    merged = run(an.AnisotropyAccumulator(3, 6), batches[2:]).merge(first)
    first.merge(run(an.AnisotropyAccumulator(3, 6), batches[2:]))
    assert_values_close(first.compute(), single, rtol=rtol)
    assert_values_close(merged.compute(), single, rtol=rtol)
    assert single.counts["anisotropy_tokens"] == len(rows(batches, 0))


# ----------------------------------------------------------------------------- reservoir


def _splitmix_ref(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def test_token_keys_match_python_splitmix64() -> None:
    seqs, pos = [0, 1, 7, 123456789], [1, 5, 2, 4095]
    keys = rs.token_keys(3, torch.tensor(seqs), torch.tensor(pos)).tolist()
    assert keys == [_splitmix_ref(_splitmix_ref(_splitmix_ref(3) ^ s) ^ p) >> 1 for s, p in zip(seqs, pos)]
    assert all(k >= 0 for k in keys)


def _all_sampled(batches, seed: int):
    out = []
    for b in batches:
        bb, tt = b.sample.nonzero(as_tuple=True)
        keys = rs.token_keys(seed, b.seq_ids[bb], tt).tolist()
        out += [(k, b, int(i), int(t)) for k, i, t in zip(keys, bb, tt)]
    return sorted(out, key=lambda x: x[0])


def test_reservoir_keeps_bottom_k_independent_of_order_and_merge() -> None:
    batches = make_batches(3, [5, 8, 3, 6, 4], T=20, d=5, n_layers=2, k=6)
    size = 40
    expected = _all_sampled(batches, seed=11)[:size]
    assert len(_all_sampled(batches, seed=11)) > size
    single = run(rs.TokenReservoir(2, 5, size=size, seed=11), batches)
    assert single.keys().tolist() == [e[0] for e in expected]
    assert single.token_ids().tolist() == [[int(e[1].seq_ids[e[2]]), e[3]] for e in expected]
    for l in range(2):
        ref = np.stack([e[1].hidden[l][e[2], e[3]].numpy() for e in expected]).astype(np.float32)
        assert np.array_equal(single.layer_rows(l).numpy(), ref)
    reordered = run(rs.TokenReservoir(2, 5, size=size, seed=11), batches[::-1])
    merged = run(rs.TokenReservoir(2, 5, size=size, seed=11), batches[3:])
    merged.merge(run(rs.TokenReservoir(2, 5, size=size, seed=11), batches[:3]))
    merged.merge(run(rs.TokenReservoir(2, 5, size=size, seed=11), batches[1:2]))  # duplicates are kept once
    for other in (reordered, merged):
        assert torch.equal(other.keys(), single.keys())
        assert torch.equal(other.layer_rows(1), single.layer_rows(1))
        assert_values_close(other.compute(), single.compute(), rtol=1e-12)
    out = single.compute()
    assert out.per_layer["anisotropy_centered"][1] == pytest.approx(an.centered_anisotropy(single.layer_rows(1)), rel=1e-12)
    assert out.counts["reservoir_tokens"] == size
    assert run(rs.TokenReservoir(2, 5, size=size, seed=12), batches).keys().tolist() != single.keys().tolist()


def test_reservoir_smaller_than_size_keeps_everything() -> None:
    batches = make_batches(4, [3, 2], T=10, d=4, n_layers=2, k=3)
    res = run(rs.TokenReservoir(2, 4, size=1000), batches)
    assert res.count == len(rows(batches, 0, "sample"))
    got = np.sort(res.layer_rows(0).numpy(), axis=0)
    assert np.array_equal(got, np.sort(rows(batches, 0, "sample").astype(np.float32), axis=0))


# ----------------------------------------------------------------------------- entropy


def _entropy_ref(Z: np.ndarray) -> float:
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    U = np.divide(Z, norms, out=np.zeros_like(Z), where=norms > 0)
    U = U - U.mean(0)
    K = U @ U.T  # always the N x N Gram here
    lam = np.clip(scipy.linalg.eigh(K / np.trace(K), eigvals_only=True), 0, None)
    lam = lam[lam > 0]
    return float(-(lam * np.log(lam)).sum() / np.log(min(Z.shape)))


@pytest.mark.parametrize("shape", [(9, 20), (40, 6)])  # Gram side and dual side
def test_matrix_entropy_matches_scipy_gram(shape: tuple[int, int]) -> None:
    Z = np.random.default_rng(5).normal(size=shape) * np.linspace(0.1, 3, shape[1]) + 1.0
    assert en.matrix_entropy(Z) == pytest.approx(_entropy_ref(Z), rel=1e-10)


def test_matrix_entropy_closed_forms() -> None:
    r, d = 5, 12
    E = np.eye(d)[:r] * np.arange(1, r + 1)[:, None]
    Z = np.vstack([E, -E])  # 2r rows +-e_i: unit after normalisation, mean 0, r equal eigenvalues
    assert en.matrix_entropy(Z) == pytest.approx(np.log(r) / np.log(2 * r), rel=1e-12)
    assert en.matrix_entropy(np.ones((6, 4))) is None  # identical rows: trace 0
    assert en.matrix_entropy(np.ones((1, 4))) is None


@pytest.mark.parametrize("tokens,T,d", [("keep", 14, 9), ("sample", 14, 9), ("keep", 30, 4)])
def test_prompt_entropy_streaming(tokens: str, T: int, d: int) -> None:
    batches = make_batches(6, [4, 6, 2, 5], T=T, d=d, n_layers=3, k=5)
    acc = run(en.PromptEntropyAccumulator(3, d, tokens=tokens), batches)
    out = acc.compute()
    for l in range(3):
        ref = en.prompt_entropy(sequences(batches, l, tokens))
        assert out.per_layer["prompt_entropy"][l] == pytest.approx(ref, rel=1e-9)
    n_ok = sum(len(z) >= 2 for z in sequences(batches, 0, tokens))
    assert out.counts["prompt_entropy_sequences"] == n_ok
    merged = run(en.PromptEntropyAccumulator(3, d, tokens=tokens), batches[:2])
    merged.merge(run(en.PromptEntropyAccumulator(3, d, tokens=tokens, chunk_elements=1), batches[2:]))
    assert_values_close(merged.compute(), out)


def test_prompt_entropy_with_holes_in_keep() -> None:
    batches = make_batches(7, [5, 4], T=16, d=6, n_layers=2, holes=True)
    out = run(en.PromptEntropyAccumulator(2, 6), batches).compute()
    for l in range(2):
        assert out.per_layer["prompt_entropy"][l] == pytest.approx(en.prompt_entropy(sequences(batches, l)), rel=1e-9)


def test_dataset_entropy_streaming_and_merge() -> None:
    batches = make_batches(8, [4, 6, 3, 7, 5], T=10, d=7, n_layers=3)
    single = run(en.DatasetEntropyAccumulator(3, 7, flush_every=8), batches).compute()
    for l in range(3):
        pooled = np.stack([z.mean(0) for z in sequences(batches, l) if len(z)])
        assert single.per_layer["dataset_entropy"][l] == pytest.approx(_entropy_ref(pooled), rel=1e-9)
    a = run(en.DatasetEntropyAccumulator(3, 7), batches[:3])
    b = run(en.DatasetEntropyAccumulator(3, 7, flush_every=1), batches[3:])
    assert_values_close(b.merge(a).compute(), single)
    assert single.counts["dataset_entropy_sequences"] == 25


# ----------------------------------------------------------------------------- domain separation


def _separation_ref(H: np.ndarray, y: np.ndarray) -> float:
    mu = H.mean(0)
    between = sum((y == c).mean() * np.sum((H[y == c].mean(0) - mu) ** 2) for c in np.unique(y))
    return float(between / np.mean(np.sum((H - mu) ** 2, axis=1)))


def test_domain_separation_pure() -> None:
    rng = np.random.default_rng(9)
    H, y = rng.normal(size=(60, 5)), rng.integers(0, 3, size=60)
    H[y == 1] += 2.0
    assert dm.domain_separation(H, y) == pytest.approx(_separation_ref(H, y), rel=1e-12)
    base = rng.normal(size=(10, 5))
    assert dm.domain_separation(np.vstack([base, base, base]), np.repeat([0, 1, 2], 10)) == pytest.approx(0.0, abs=1e-12)
    centres = rng.normal(size=(3, 5))
    assert dm.domain_separation(np.repeat(centres, [4, 7, 2], axis=0), np.repeat([0, 1, 2], [4, 7, 2])) == pytest.approx(
        1.0, rel=1e-12
    )
    assert dm.domain_separation(H, np.zeros(60, dtype=int)) is None


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_domain_streaming_and_merge(dtype: torch.dtype, rtol: float) -> None:
    batches = make_batches(10, [5, 3, 6, 4], T=12, d=6, n_layers=3, n_domains=4, dtype=dtype)
    single = run(dm.DomainAccumulator(3, 6, 4), batches).compute()
    for l in range(3):
        assert single.per_layer["domain_separation"][l] == pytest.approx(
            dm.domain_separation(rows(batches, l), labels(batches)), rel=rtol
        )
    merged = run(dm.DomainAccumulator(3, 6, 4), batches[:1]).merge(run(dm.DomainAccumulator(3, 6, 4), batches[1:]))
    assert_values_close(merged.compute(), single, rtol=rtol)
    one = make_batches(10, [5], T=12, d=6, n_layers=2, n_domains=1)
    assert run(dm.DomainAccumulator(2, 6, 4), one).compute().per_layer["domain_separation"] == [None, None]
