"""Geometry of one weight update: pure float64 functions (no model, no files).

Notation: W0 (m x n) is the parent weight, dW the update, Wt = W0 + dW; "SVD" means the thin SVD.

* Low-rank spectrum (QR trick): dW = s * B A with B (m x r), A (r x n). B = Q_B R_B, A^T = Q_A R_A (reduced QR),
  s * R_B R_A^T = U_r S V_r^T; then dW = (Q_B U_r) S (Q_A V_r)^T exactly, from one r x r SVD (no m x n SVD).
* Full SVD of a dense matrix (``thin_svd``): eigendecomposition of the float64 Gram matrix of the short side
  (W W^T if m <= n, else W^T W, then U = W V / S); it is the complete thin SVD (all min(m, n) vectors, never
  truncated), 2-5x faster than LAPACK's SVD on CPU; matrices with singular values below its resolution fall back
  to ``torch.linalg.svd`` where a complete basis is needed.
* delta_effective_rank = exp(-sum_k p_k log p_k), p_k = S_k / sum_j S_j over the singular values of dW (the probe's
  effective_rank definition, same round-off floor); delta_stable_rank = sum_k S_k^2 / S_1^2;
  delta_norm = ||dW||_F / ||W0||_F.
* Intruder dimensions (Shuttleworth et al. 2024, Alg. 1): j <= k (top-k left singular vectors u_j of Wt) is an
  intruder at eps iff max_i |<u_j, U0[:, i]>| < eps over ALL left singular vectors U0 of W0.
* top_alignment = ||U0_k^T dW||_F^2 / ||dW||_F^2 (share of the update inside the span of W0's top-k left
  singular vectors); chance level for a random direction: k / m.
* Subspace overlap of orthonormal U_i (m x k_i), U_j (m x k_j): phi = ||U_i^T U_j||_F^2 / min(k_i, k_j) in [0, 1]
  (Hu et al. 2021, section 7); principal angles theta_q = arccos sigma_q(U_i^T U_j); chance level max(k_i, k_j) / m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..metrics.base import Number, to_number
from ..metrics.spec import MetricSpec, Range, Tolerance
from ..metrics.spectral import effective_rank_from_eigvals, stable_rank_from_eigvals

SUBSPACE_REL_TOL = 1e-6  # singular directions with S_k <= 1e-6 S_1 are not part of an update's subspace
GRAM_REL_FLOOR = 1e-7  # float64 Gram resolves singular values down to ~sqrt(eps) S_1 = 1.5e-8 S_1


@dataclass(frozen=True)
class SVD:
    """Thin SVD W = U diag(S) V^T, S descending; U (m x k), V (n x k) with orthonormal columns."""

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor

    def dense(self) -> torch.Tensor:
        return (self.U * self.S) @ self.V.T

    def top(self, k: int) -> SVD:
        return SVD(self.U[:, :k], self.S[:k], self.V[:, :k])


def f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(dtype=torch.float64, device="cpu")


def lowrank_svd(B: torch.Tensor, A: torch.Tensor, scale: float = 1.0) -> SVD:
    """Exact thin SVD of scale * B @ A (B: m x r, A: r x n) by the QR trick; r singular triplets (some may be 0)."""
    B, A = f64(B), f64(A)
    Q_B, R_B = torch.linalg.qr(B)
    Q_A, R_A = torch.linalg.qr(A.T)
    U_r, S, Vh_r = torch.linalg.svd(scale * (R_B @ R_A.T), full_matrices=False)
    return SVD(Q_B @ U_r, S, Q_A @ Vh_r.T)


def thin_svd(W: torch.Tensor, k: int | None = None, *, complete: bool = True) -> SVD:
    """Thin SVD of W (float64) via the eigendecomposition of the Gram matrix of its short side.

    The decomposition is always full (all min(m, n) triplets); ``k`` returns only the top k. Singular values
    below GRAM_REL_FLOOR * S_1 are beneath the Gram's resolution: with ``complete`` (a basis of every singular
    direction is needed, e.g. the intruder test's parent side) such a matrix goes to ``torch.linalg.svd``;
    otherwise they are set to 0 with zero vectors (spectra, top-k subspaces).
    """
    W = f64(W)
    m, n = W.shape
    wide = m <= n
    lam, vecs = torch.linalg.eigh(W @ W.T if wide else W.T @ W)
    S, vecs = lam.flip(0).clamp_min(0.0).sqrt(), vecs.flip(1)
    ok = GRAM_REL_FLOOR * S[0] < S if S.numel() and S[0] > 0 else torch.zeros_like(S, dtype=torch.bool)
    if complete and not bool(ok.all()):
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        out = SVD(U, S, Vh.T)
    else:
        S = torch.where(ok, S, 0.0)
        other = (W.T @ vecs if wide else W @ vecs) / torch.where(ok, S, 1.0) * ok
        out = SVD(vecs, S, other) if wide else SVD(other, S, vecs)
    return out.top(k) if k else out


def effective_rank(S: torch.Tensor) -> Number:
    """exp(-sum p log p), p = S / sum S (None when S is all 0)."""
    return effective_rank_from_eigvals(f64(S) ** 2)


def stable_rank(S: torch.Tensor) -> Number:
    """sum S^2 / max S^2 (None when S is all 0)."""
    return stable_rank_from_eigvals(f64(S) ** 2)


def frobenius(S: torch.Tensor) -> float:
    return float(f64(S).pow(2).sum().sqrt())


def max_abs_cos(U0: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """For each column u_j of U: max_i |<u_j, U0[:, i]>| (columns are unit vectors)."""
    return (f64(U0).T @ f64(U)).abs().amax(dim=0)


def intruder_counts(U0: torch.Tensor, Ut_top: torch.Tensor, eps: Sequence[float]) -> dict[float, int]:
    """{eps: number of columns of Ut_top whose max |cos| with every column of U0 is < eps}."""
    cos = max_abs_cos(U0, Ut_top)
    return {e: int((cos < e).sum()) for e in eps}


def top_alignment(U0_top: torch.Tensor, delta: SVD) -> Number:
    """||U0_top^T dW||_F^2 / ||dW||_F^2 with dW = delta (None when dW = 0)."""
    total = float(delta.S.pow(2).sum())
    if total <= 0:
        return None
    inside = ((f64(U0_top).T @ delta.U) * delta.S).pow(2).sum()
    return to_number(inside / total)


def subspace(svd: SVD, k_max: int | None = None, rel_tol: float = SUBSPACE_REL_TOL) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) of the update's numerically non-zero directions (S_k > rel_tol * S_1), at most ``k_max``."""
    if not svd.S.numel() or svd.S[0] <= 0:
        return svd.U[:, :0], svd.V[:, :0]
    k = int((rel_tol * svd.S[0] < svd.S).sum())
    k = min(k, k_max) if k_max else k
    return svd.U[:, :k], svd.V[:, :k]


def subspace_overlap(Ui: torch.Tensor, Uj: torch.Tensor) -> tuple[Number, list[float]]:
    """(phi, principal angles in radians, ascending) of the column spans of orthonormal Ui and Uj."""
    ki, kj = Ui.shape[1], Uj.shape[1]
    if ki == 0 or kj == 0:
        return None, []
    M = f64(Ui).T @ f64(Uj)
    phi = to_number(M.pow(2).sum() / min(ki, kj))
    cosines = torch.linalg.svdvals(M).clamp(0.0, 1.0)
    return phi, [math.acos(float(c)) for c in cosines]


def update_metrics(
    W0: torch.Tensor, base: SVD, delta: SVD, *, top_k: int, eps: Sequence[float], alignment_k: int
) -> dict[str, Number]:
    """Every per-module metric of the update ``delta`` on the parent ``W0`` whose complete SVD is ``base``."""
    W0 = f64(W0)
    m = W0.shape[0]
    w_norm = float(torch.linalg.matrix_norm(W0))
    Wt = W0 + delta.dense()
    top = thin_svd(Wt, k=top_k, complete=False)
    counts = intruder_counts(base.U, top.U, eps)
    k_align = min(alignment_k, base.U.shape[1])
    return {
        "delta_effective_rank": effective_rank(delta.S),
        "delta_stable_rank": stable_rank(delta.S),
        "delta_norm": frobenius(delta.S) / w_norm if w_norm > 0 else None,
        **{intruder_id(e): c for e, c in counts.items()},
        "top_alignment": top_alignment(base.U[:, :k_align], delta),
        "top_alignment_chance": k_align / m,
    }


def intruder_id(eps: float) -> str:
    return f"intruder_count_eps{eps:g}"


SPECS = (
    MetricSpec(
        id="delta_effective_rank*",
        kind="lora",
        definition="effective rank of the weight update ΔW (per matrix type after ':')",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.05),
        label="ΔW effective rank",
    ),
    MetricSpec(
        id="delta_stable_rank*",
        kind="lora",
        definition="stable rank of the weight update ΔW",
        tolerance=Tolerance(0.0, 0.05),
        label="ΔW stable rank",
    ),
    MetricSpec(id="delta_norm*", kind="lora", definition="Frobenius norm of the weight update ΔW", label="ΔW norm"),
    MetricSpec(
        id="intruder_count*",
        kind="lora",
        definition="intruder dimensions: top singular vectors of the updated matrix with max cosine < eps to every base vector",
        range=Range(0),
        label="intruder dimensions",
    ),
    MetricSpec(
        id="overlap*",
        kind="lora",
        definition="subspace overlap of this stage's update with the previous stage's (*_chance: expected by chance)",
        range=Range(0, 1),
        label="update overlap",
    ),
    MetricSpec(
        id="top_alignment*",
        kind="lora",
        definition="alignment of the update's top singular directions with the base matrix's (*_chance: by chance)",
        label="top alignment",
    ),
)
