"""Anisotropy: mean pairwise cosine of token vectors (Ethayarajh 2019), over ``keep`` tokens.

With unit vectors u_i = h_i / ||h_i|| (rows with h_i = 0 dropped) and N the number of them:
  anisotropy          = mean_{i != j} cos(h_i, h_j) = (||sum_i u_i||^2 - N) / (N (N - 1)), None if N < 2;
  anisotropy_centered = the same on h_i - mean_j h_j (the mean over the set itself). It does not stream
                        exactly, so it is computed on the bottom-k token sample of ``reservoir.TokenReservoir``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64
from .state import SumState


def anisotropy_from_sum(sum_u: torch.Tensor, n: torch.Tensor | float) -> torch.Tensor:
    """(||sum_u||^2 - n) / (n (n - 1)) elementwise over leading dims (nan where n < 2)."""
    n = torch.as_tensor(n, dtype=torch.float64, device=sum_u.device)
    value = ((sum_u.double() ** 2).sum(-1) - n) / (n * (n - 1))
    return torch.where(n >= 2, value, torch.full_like(value, float("nan")))


def mean_pairwise_cosine(H: torch.Tensor | np.ndarray) -> Number:
    """Mean over ordered pairs i != j of cos(h_i, h_j), zero rows dropped; None if fewer than 2 rows remain."""
    H = as_f64(H)
    norms = torch.linalg.vector_norm(H, dim=1)
    ok = norms > 0
    u = H[ok] / norms[ok, None]
    return to_number(anisotropy_from_sum(u.sum(0), float(u.shape[0])))


def centered_anisotropy(H: torch.Tensor | np.ndarray) -> Number:
    """mean_pairwise_cosine(H - 1 mean(H)^T)."""
    H = as_f64(H)
    return mean_pairwise_cosine(H - H.mean(dim=0, keepdim=True))


class AnisotropyAccumulator(SumState):
    """Per layer: sum of unit vectors (float64, d) and their count, over ``keep`` tokens."""

    def __init__(self, n_layers: int, dim: int) -> None:
        self.n_layers, self.dim = n_layers, dim
        self.sum_u: torch.Tensor | None = None  # (L, d)
        self.count: torch.Tensor | None = None  # (L,)
        self.add_state("sum_u")
        self.add_state("count")

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        self.zeros("sum_u", (self.n_layers, self.dim), view.device)
        self.zeros("count", (self.n_layers,), view.device)
        norms = view.norms.view(view.L, 1, -1)  # zero outside keep
        ok = norms > 0
        w = torch.where(ok, 1.0 / torch.where(ok, norms, 1.0), 0.0)
        assert self.sum_u is not None and self.count is not None
        self.sum_u += torch.bmm(w, view.X.view(view.L, -1, view.d)).squeeze(1)
        self.count += ok.sum(dim=(1, 2))

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        if self.sum_u is None:
            return MetricValues(per_layer={"anisotropy": [None] * self.n_layers}, counts={"anisotropy_tokens": 0})
        assert self.sum_u is not None and self.count is not None
        values = anisotropy_from_sum(self.sum_u, self.count)
        return MetricValues(
            per_layer={"anisotropy": [to_number(v) for v in values]},
            counts={"anisotropy_tokens": int(self.count[0])},
        )


SPECS = (
    MetricSpec(
        id="anisotropy_centered",
        kind="probe",
        definition="mean pairwise cosine of mean-centred token states (from the token reservoir)",
        direction="lower",
        range=Range(-1, 1),
        tolerance=Tolerance(0.01, 0.02),
        streams=False,
        reservoir=True,
        label="anisotropy (centred)",
    ),
    MetricSpec(
        id="anisotropy*",
        kind="probe",
        streams=True,
        definition="mean pairwise cosine similarity of a layer's token states",
        direction="lower",
        range=Range(-1, 1),
        tolerance=Tolerance(0.01, 0.02),
        label="anisotropy (mean cosine)",
    ),
)
