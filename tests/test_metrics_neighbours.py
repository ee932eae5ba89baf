"""Mutual k-NN and CKNNA (collapse_bench/metrics/neighbours.py) against a direct numpy recomputation written here
from the definitions (Huh et al. 2024; HSIC_u of Song et al. 2012, eq. 5, as a trace), on random data; the
identity case; and the accumulator (pooled states, streaming == merge, the bottom-k sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_helpers import make_batches, run

from collapse_bench.metrics.neighbours import NeighbourAccumulator, cknna, mutual_knn
from collapse_bench.metrics.reference import sequence_keys, sequence_sample


def np_neighbour_sets(X: np.ndarray, k: int) -> list[set[int]]:
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    return [set(np.argsort(-S[i], kind="stable")[:k].tolist()) for i in range(len(X))]


def np_mutual_knn(A: np.ndarray, B: np.ndarray, k: int) -> float:
    na, nb = np_neighbour_sets(A, k), np_neighbour_sets(B, k)
    return float(np.mean([len(a & b) / k for a, b in zip(na, nb)]))


def np_hsic_u(K: np.ndarray, L: np.ndarray) -> float:
    m = len(K)
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(m)
    return float(
        (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((m - 1) * (m - 2)) - 2 / (m - 2) * one @ Kt @ Lt @ one)
        / (m * (m - 3))
    )


def np_cknna(A: np.ndarray, B: np.ndarray, k: int) -> float:
    UA, UB = (X / np.linalg.norm(X, axis=1, keepdims=True) for X in (A, B))
    K, L = UA @ UA.T, UB @ UB.T
    m = len(A)

    def mask(sets: list[set[int]]) -> np.ndarray:
        M = np.zeros((m, m))
        for i, s in enumerate(sets):
            M[i, list(s)] = 1
        return M

    MK, ML = mask(np_neighbour_sets(A, k)), mask(np_neighbour_sets(B, k))
    kl = np_hsic_u(MK * ML * K, MK * ML * L)
    return kl / np.sqrt(np_hsic_u(MK * K, MK * K) * np_hsic_u(ML * L, ML * L))


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_against_numpy(noise: float) -> None:
    rng = np.random.default_rng(int(noise * 10))
    A = rng.normal(size=(80, 24)) + 0.5
    B = A @ rng.normal(size=(24, 16)) + noise * rng.normal(size=(80, 16))
    assert mutual_knn(A, B) == pytest.approx(np_mutual_knn(A, B, 10), abs=1e-12)
    assert cknna(A, B) == pytest.approx(np_cknna(A, B, 10), rel=1e-9)
    assert 0 < mutual_knn(A, B) < 1  # neither trivial case
    assert mutual_knn(A, rng.normal(size=(80, 16))) < 0.3  # unrelated: ~ k / m


def test_identity_and_undefined() -> None:
    A = np.random.default_rng(0).normal(size=(40, 8))
    assert mutual_knn(A, A) == 1.0
    assert cknna(A, A) == pytest.approx(1.0, abs=1e-12)
    assert cknna(A, 3 * A) == pytest.approx(1.0, abs=1e-12)  # cosine geometry: scale-free
    assert mutual_knn(A[:10], A[:10]) is None and cknna(A[:10], A[:10]) is None  # m <= k


def test_accumulator_pooled_states_and_merge() -> None:
    bs = make_batches(5, [6, 5, 7, 4], T=9, d=6, n_layers=3, vocab=30, ref_dim=5)
    whole = run(NeighbourAccumulator("reference", 3, seed=0), bs).compute()
    # numpy: mean over kept positions, float32, for the sequences whose reference rows carry pooled states
    own: list[np.ndarray] = []
    ref: list[np.ndarray] = []
    for b in bs:
        rows = b.references["reference"]
        for i in np.flatnonzero(rows.pooled_mask.numpy()):
            own.append(np.stack([b.hidden[l][i][b.keep[i]].double().numpy().mean(0) for l in rows.layers]).astype(np.float32))
            ref.append(rows.pooled[i].numpy())
    O, R = np.stack(own).astype(np.float64), np.stack(ref).astype(np.float64)
    assert whole.counts["neighbours_reference_sequences"] == len(O) > 10
    for c, layer in enumerate(bs[0].references["reference"].layers):
        assert whole.per_layer["mutual_knn_reference"][layer] == pytest.approx(np_mutual_knn(O[:, c], R[:, c], 10), abs=1e-12)
        assert whole.per_layer["cknna_reference"][layer] == pytest.approx(np_cknna(O[:, c], R[:, c], 10), rel=1e-6)
    assert whole.per_layer["mutual_knn_reference"][0] is None  # not a paired layer
    merged = run(NeighbourAccumulator("reference", 3, seed=0), bs[2:]).merge(
        run(NeighbourAccumulator("reference", 3, seed=0), bs[:2])
    )
    assert merged.compute() == whole


def test_bottom_k_sample_is_the_corpus_sample() -> None:
    bs = make_batches(6, [7, 8, 6], T=8, d=4, n_layers=2, vocab=20)
    acc = run(NeighbourAccumulator("reference", 2, size=5, seed=3), bs)
    offered = torch.cat([b.seq_ids[b.references["reference"].pooled_mask] for b in bs])
    keys = sequence_keys(3, offered)
    assert sorted(acc.keys.tolist()) == sorted(keys.sort().values[:5].tolist())
    assert sequence_sample(3, 21, 5).tolist() == sorted(np.argsort(sequence_keys(3, torch.arange(21)).numpy())[:5].tolist())
