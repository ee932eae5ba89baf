"""Neighbourhood geometry shared with a reference checkpoint, on mean-pooled sequence states.

Rows: the seeded sample of sequences (:mod:`collapse_bench.metrics.reference`), one mean-pooled state per
sequence at each card layer; the checkpoint's layer l is paired with the reference's card layer of the same rank.
Rows are L2-normalised (cosine geometry), as in Huh et al. 2024, "The Platonic Representation Hypothesis"
(reference code: minyoungg/platonic-rep ``metrics.py``, ``AlignmentMetrics.mutual_knn`` / ``cknna``, features
passed through ``F.normalize``), with k = 10:
  N_A(i) = the k rows with the largest cosine to row i of A, i itself excluded;
  mutual_knn(A, B) = mean_i |N_A(i) ∩ N_B(i)| / k;
  cknna(A, B) = s(K, L) / sqrt(s(K, K) s(L, L)),  K = A Aᵀ, L = B Bᵀ,
  s(K, L) = HSIC_u(M ∘ K, M ∘ L), M_ij = [j ∈ N_K(i)] [j ∈ N_L(i)] (neighbours by kernel value, diagonal excluded),
  HSIC_u(K, L) = [Σ K̃ ∘ L̃ᵀ + 1ᵀK̃1 1ᵀL̃1 / ((m−1)(m−2)) − 2 1ᵀK̃L̃1 / (m−2)] / (m(m−3)), K̃, L̃ = K, L with zero diagonal
  (Song et al. 2012, eq. 5). Deviations from the reference code: no ``+1e-6`` in the cknna denominator (so that
  cknna(A, A) = 1), None when s(K, K) s(L, L) ≤ 0 or m ≤ k, no outlier clipping and no best-layer search.
Values are per layer at the card layers (``mutual_knn_<role>``, ``cknna_<role>``; None elsewhere), so the scalar
is their mean. State: the sample's pooled rows (≤ 512 sequences × card layers × (d + d_ref), float32), kept as a
bottom-k by sequence key, so streaming and merging in any order give the same rows.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .reference import SAMPLE_SIZE, batch_pooled, rows_of, sequence_keys
from .spec import MetricSpec, Range, Tolerance

K_NEIGHBOURS = 10


def _unit(X: torch.Tensor | np.ndarray) -> torch.Tensor:
    X = torch.as_tensor(X).double()
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-300)


def neighbours(K: torch.Tensor, k: int) -> torch.Tensor:
    """(m, m) 0/1 mask of each row's k largest off-diagonal entries of the kernel K."""
    hat = K.clone().fill_diagonal_(float("-inf"))
    return torch.zeros_like(K).scatter_(1, torch.topk(hat, k, dim=1).indices, 1.0)


def mutual_knn(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray, k: int = K_NEIGHBOURS) -> Number:
    A, B = _unit(A), _unit(B)
    if A.shape[0] <= k:
        return None
    both = neighbours(A @ A.T, k) * neighbours(B @ B.T, k)
    return to_number(both.sum(1).mean() / k)


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    m = K.shape[0]
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    value = (Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * (Kt @ Lt).sum() / (m - 2)
    return value / (m * (m - 3))


def cknna(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray, k: int = K_NEIGHBOURS) -> Number:
    A, B = _unit(A), _unit(B)
    if A.shape[0] <= max(k, 3):
        return None
    K, L = A @ A.T, B @ B.T
    nK, nL = neighbours(K, k), neighbours(L, k)

    def s(X: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor) -> float:
        return float(hsic_unbiased(mask * X, mask * Y))

    den = s(K, K, nK) * s(L, L, nL)
    return to_number(s(K, L, nK * nL) / den**0.5) if den > 0 else None


class NeighbourAccumulator:
    """mutual_knn and cknna of the pooled sample to reference role ``role`` (module docstring)."""

    def __init__(self, role: str, n_layers: int, size: int = SAMPLE_SIZE, seed: int = 0, k: int = K_NEIGHBOURS) -> None:
        self.role, self.n_layers, self.size, self.seed, self.k = role, n_layers, size, seed, k
        self.layers: tuple[int, ...] | None = None
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.own: torch.Tensor | None = None  # (m, C, d) float32
        self.ref: torch.Tensor | None = None  # (m, C, d_ref) float32

    def _insert(self, keys: torch.Tensor, own: torch.Tensor, ref: torch.Tensor, layers: tuple[int, ...]) -> None:
        if self.layers is not None and layers != self.layers:
            raise ValueError(f"{self.role}: reference layers {layers} differ from {self.layers}")
        self.layers = layers
        if self.own is not None and self.ref is not None:
            keys, own, ref = torch.cat([self.keys, keys]), torch.cat([self.own, own]), torch.cat([self.ref, ref])
        order = torch.argsort(keys, stable=True)
        first = torch.ones(order.numel(), dtype=torch.bool)
        first[1:] = keys[order][1:] != keys[order][:-1]  # a sequence seen twice is kept once
        chosen = order[first][: self.size]
        self.keys, self.own, self.ref = keys[chosen], own[chosen], ref[chosen]

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        rows = rows_of(batch, self.role)
        if rows is None or rows.pooled is None or rows.pooled_mask is None:
            return
        sel = (rows.pooled_mask.cpu() & (batch.keep.sum(1).cpu() > 0)).nonzero().squeeze(1)
        if sel.numel() == 0:
            return
        own = batch_pooled(batch, rows.layers).cpu()[sel]
        keys = sequence_keys(self.seed, batch.seq_ids.cpu()[sel])
        self._insert(keys, own, rows.pooled.cpu()[sel].float(), tuple(rows.layers))

    def merge(self, other: NeighbourAccumulator) -> NeighbourAccumulator:
        if other.own is not None and other.ref is not None and other.layers is not None:
            self._insert(other.keys, other.own, other.ref, other.layers)
        return self

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        knn: list[Number] = [None] * self.n_layers
        ck: list[Number] = [None] * self.n_layers
        if self.own is not None and self.ref is not None and self.layers is not None:
            for c, layer in enumerate(self.layers):
                knn[layer] = mutual_knn(self.own[:, c], self.ref[:, c], self.k)
                ck[layer] = cknna(self.own[:, c], self.ref[:, c], self.k)
        r = self.role
        return MetricValues(
            per_layer={f"mutual_knn_{r}": knn, f"cknna_{r}": ck}, counts={f"neighbours_{r}_sequences": int(self.keys.numel())}
        )


SPECS = (
    MetricSpec(
        id="mutual_knn_*",
        kind="probe",
        streams=True,
        definition="mean share of the 10 cosine nearest neighbours (mean-pooled sequence states) shared with the reference",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="mutual k-NN to reference",
        reference="Huh et al., ICML 2024 (minyoungg/platonic-rep metrics.py)",
    ),
    MetricSpec(
        id="cknna_*",
        kind="probe",
        streams=True,
        definition="CKA restricted to mutual 10-nearest neighbours (CKNNA, Huh et al. 2024) to the reference",
        tolerance=Tolerance(0.02, 0.0),
        label="CKNNA to reference",
        reference="Huh et al., ICML 2024 (minyoungg/platonic-rep metrics.py)",
    ),
)
