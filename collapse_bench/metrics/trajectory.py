"""Token-trajectory metrics over ``keep`` tokens (reference sections 3.1-3.3).

For one sequence, z_1..z_T are its kept tokens at one layer, in position order:
  curvature        : v_k = z_{k+1} - z_k, c_k = arccos(clip(v_k.v_{k+1} / (||v_k|| ||v_{k+1}||), -1, 1)) in [0, pi]
                     (signed cosine); angles with a zero-length v_k or v_{k+1} are skipped. All angles of all
                     sequences are pooled: curvature = sum c_k / count (radians).
  token_uniformity : ||X - 1 xbar^T||_F / ||X||_F for sequences with T >= 2 and X != 0; mean over sequences.
  layer_cosine     : for l >= 1, mean over kept tokens of cos(h^l_t, h^{l-1}_t) (tokens with a zero vector at
                     either layer skipped); index 0 is None.
The accumulator gets dot products from norms of differences, e.g. 2 v_k.v_{k+1} = ||z_{k+2} - z_k||^2 -
||v_k||^2 - ||v_{k+1}||^2, so a cosine carries an absolute error of a few float32 eps for float32 input.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view, gather_rows, scratch
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64
from .state import SumState


def curvature_angles(Z: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Angles c_k (float64) between consecutive steps of the trajectory Z (T, d), zero-length steps skipped."""
    Z = as_f64(Z)
    v = Z[1:] - Z[:-1]
    nv = torch.linalg.vector_norm(v, dim=1)
    a, b, na, nb = v[:-1], v[1:], nv[:-1], nv[1:]
    ok = (na > 0) & (nb > 0)
    cos = (a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok])
    return torch.arccos(cos.clamp(-1.0, 1.0))


def curvature(Z: torch.Tensor | np.ndarray) -> Number:
    """Mean curvature angle (radians) of one trajectory; None if no angle is defined (e.g. T < 3)."""
    angles = curvature_angles(Z)
    return to_number(angles.mean()) if angles.numel() else None


def token_uniformity(X: torch.Tensor | np.ndarray) -> Number:
    """||X - 1 xbar^T||_F / ||X||_F of one sequence X (T, d); None if T < 2 or X = 0."""
    X = as_f64(X)
    total = torch.linalg.norm(X)
    if X.shape[0] < 2 or total == 0:
        return None
    return to_number(torch.linalg.norm(X - X.mean(0, keepdim=True)) / total)


def layer_cosine(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray) -> Number:
    """Mean over rows of cos(a_t, b_t), rows with a zero vector skipped; None if none left."""
    A, B = as_f64(A), as_f64(B)
    na, nb = torch.linalg.vector_norm(A, dim=1), torch.linalg.vector_norm(B, dim=1)
    ok = (na > 0) & (nb > 0)
    return to_number(((A[ok] * B[ok]).sum(1) / (na[ok] * nb[ok])).mean()) if ok.any() else None


def _diff_sq_norms(X: torch.Tensor, Xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Squared norms (float64) of h^l - h^{l-1} on X (L, B, T, d), and of z_{k+1} - z_k and z_{k+2} - z_k on Xc
    (L, B, T', d); one pass per layer through a reused buffer, while the layer is in cache."""
    L, B, T, d = X.shape
    Tc = Xc.shape[2]
    buf = scratch("traj.tmp", (B, max(T, Tc), d), X.dtype, X.device)
    d2 = torch.empty(max(L - 1, 0), B, T, dtype=X.dtype, device=X.device)
    v2 = torch.empty(L, B, max(Tc - 1, 0), dtype=X.dtype, device=X.device)
    w2 = torch.empty(L, B, max(Tc - 2, 0), dtype=X.dtype, device=X.device)
    for l in range(L):
        if l:
            torch.linalg.vector_norm(torch.sub(X[l], X[l - 1], out=buf[:, :T]), dim=-1, out=d2[l - 1])
        if Tc >= 3:
            z = Xc[l]
            torch.linalg.vector_norm(torch.sub(z[:, 1:], z[:, :-1], out=buf[:, : Tc - 1]), dim=-1, out=v2[l])
            torch.linalg.vector_norm(torch.sub(z[:, 2:], z[:, :-2], out=buf[:, : Tc - 2]), dim=-1, out=w2[l])
    return d2.double() ** 2, v2.double() ** 2, w2.double() ** 2


class TrajectoryAccumulator(SumState):
    """Per layer (float64): sum and count of curvature angles, of per-sequence token uniformity, and of
    cos(h^l, h^{l-1}) over kept tokens."""

    KEYS = ("curvature", "token_uniformity", "layer_cosine")

    def __init__(self, n_layers: int, dim: int) -> None:
        self.n_layers, self.dim = n_layers, dim
        self.sums: torch.Tensor | None = None  # (3, L)
        self.counts: torch.Tensor | None = None  # (3, L)
        self.add_state("sums")
        self.add_state("counts")

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        self.sums = self.zeros("sums", (3, self.n_layers), view.device)
        self.counts = self.zeros("counts", (3, self.n_layers), view.device)
        X, keep, norms, L = view.X, view.keep, view.norms, view.L
        sq = norms.double() ** 2  # (L, B, T)

        # kept tokens of each sequence, left-aligned if keep has holes (curvature follows the kept order)
        Xc, keep_c = X, keep
        starts = keep[:, 0].int() + (keep[:, 1:] & ~keep[:, :-1]).sum(1)
        if bool((starts > 1).any()):
            Tm = int(view.n_keep.max())
            order = torch.sort(keep.int(), dim=1, descending=True, stable=True).indices[:, :Tm]
            flat = (torch.arange(view.B, device=view.device)[:, None] * view.T + order).reshape(-1)
            Xc = gather_rows(X.view(L, -1, view.d), flat).view(L, view.B, Tm, view.d)
            keep_c = torch.gather(keep, 1, order)
        d2, v2, w2 = _diff_sq_norms(X, Xc)

        # layer cosine: 2 a.b = ||a||^2 + ||b||^2 - ||a - b||^2
        if L > 1:
            a2, b2 = sq[1:], sq[:-1]
            ok = keep & (a2 > 0) & (b2 > 0)
            cos = (a2 + b2 - d2) / (2 * torch.sqrt(torch.where(ok, a2 * b2, 1.0)))
            self.sums[2, 1:] += torch.where(ok, cos, 0.0).sum((1, 2))
            self.counts[2, 1:] += ok.sum((1, 2))

        # token uniformity: ||X - 1 xbar^T||^2 = sum ||x||^2 - ||sum x||^2 / n
        n = view.n_keep.double()
        total = sq.sum(-1)
        resid = (total - (view.seq_sums**2).sum(-1) / n.clamp_min(1.0)).clamp_min(0.0)
        ok = (n >= 2) & (total > 0)
        self.sums[1] += torch.where(ok, torch.sqrt(resid / torch.where(ok, total, 1.0)), 0.0).sum(-1)
        self.counts[1] += ok.sum(-1)

        # curvature: 2 v_k.v_{k+1} = ||z_{k+2} - z_k||^2 - ||v_k||^2 - ||v_{k+1}||^2
        if keep_c.shape[1] < 3:
            return
        va, vb = v2[..., :-1], v2[..., 1:]
        ok = keep_c[:, :-2] & keep_c[:, 1:-1] & keep_c[:, 2:] & (va > 0) & (vb > 0)
        cos = (w2 - va - vb) / (2 * torch.sqrt(torch.where(ok, va * vb, 1.0)))
        angles = torch.arccos(cos.clamp(-1.0, 1.0))
        self.sums[0] += torch.where(ok, angles, 0.0).sum((1, 2))
        self.counts[0] += ok.sum((1, 2))

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        out: dict[str, list[Number]] = {k: [None] * self.n_layers for k in self.KEYS}
        if self.sums is not None:
            assert self.counts is not None
            for i, key in enumerate(self.KEYS):
                for l, (s, c) in enumerate(zip(self.sums[i].tolist(), self.counts[i].tolist())):
                    out[key][l] = to_number(s / c) if c > 0 else None
        counts = self.counts if self.counts is not None else torch.zeros(3, 1)
        return MetricValues(per_layer=out, counts={"trajectory_sequences": int(counts[1].max())})


SPECS = (
    MetricSpec(
        id="layer_cosine",
        kind="probe",
        streams=True,
        direction="lower",
        definition="mean cosine between a token's states at consecutive layers",
        range=Range(-1, 1),
        tolerance=Tolerance(0.005, 0.0),
        label="layer cosine",
    ),
    MetricSpec(
        id="token_uniformity",
        kind="probe",
        streams=True,
        definition="‖X − 1x̄ᵀ‖_F / ‖X‖_F of a sequence's token states, mean over sequences (→ 0 = rank collapse)",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.02),
        label="token uniformity",
    ),
    MetricSpec(
        id="curvature",
        kind="probe",
        streams=True,
        definition="mean turning angle (radians) between consecutive-token steps of a sequence's states",
        range=Range(0, 3.14159265358979),
        tolerance=Tolerance(0.01, 0.01),
        label="curvature",
    ),
)
