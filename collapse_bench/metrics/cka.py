"""Linear CKA to a reference model's hidden states (Kornblith et al. 2019), over ``sample`` tokens.

With X (N, d_x) and Y (N, d_y) for the same tokens, column-centred X~, Y~:
  linear_cka(X, Y) = ||X~^T Y~||_F^2 / (||X~^T X~||_F ||Y~^T Y~||_F)   (None if a denominator is 0 or N < 2).
Streaming state per layer (float64): n, means, centred scatters Sxx, Syy and cross scatter Sxy; merged with Chan's
formula, the cross term adding n_A n_B / n (mu_x,B - mu_x,A)(mu_y,B - mu_y,A)^T.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view, scratch
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64


def linear_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray) -> Number:
    """Linear CKA of two representations of the same rows."""
    X, Y = as_f64(X), as_f64(Y)
    if X.shape[0] < 2:
        return None
    X = X - X.mean(0, keepdim=True)
    Y = Y - Y.mean(0, keepdim=True)
    den = torch.linalg.norm(X.T @ X) * torch.linalg.norm(Y.T @ Y)
    return to_number(torch.linalg.norm(X.T @ Y) ** 2 / den) if den > 0 else None


class CKAAccumulator:
    """Per layer: n, mean_x, mean_y, Sxx, Syy, Sxy (float64) of (hidden, reference_hidden) ``sample`` rows,
    folded in with the same float64 Chan update as CovarianceAccumulator."""

    def __init__(self, n_layers: int, dim: int, ref_dim: int | None = None) -> None:
        self.n_layers, self.dim, self.ref_dim = n_layers, dim, ref_dim or dim
        self.n: torch.Tensor | None = None  # (L,)
        self.mx: torch.Tensor | None = None
        self.my: torch.Tensor | None = None
        self.Sxx: torch.Tensor | None = None
        self.Syy: torch.Tensor | None = None
        self.Sxy: torch.Tensor | None = None

    def _init(self, device: torch.device) -> None:
        L, dx, dy, f = self.n_layers, self.dim, self.ref_dim, torch.float64
        self.n = torch.zeros(L, dtype=f, device=device)
        self.mx, self.my = torch.zeros(L, dx, dtype=f, device=device), torch.zeros(L, dy, dtype=f, device=device)
        self.Sxx = torch.zeros(L, dx, dx, dtype=f, device=device)
        self.Syy = torch.zeros(L, dy, dy, dtype=f, device=device)
        self.Sxy = torch.zeros(L, dx, dy, dtype=f, device=device)

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        if batch.reference_hidden is None:
            return
        view = batch_view(batch)
        if self.n is None:
            self._init(view.device)
        m = view.sample_index.numel()
        if m == 0:
            return
        rows_x, rows_y = view.sample_rows, view.reference_sample_rows
        assert rows_y is not None
        assert (
            self.n is not None
            and self.mx is not None
            and self.my is not None
            and self.Sxx is not None
            and self.Syy is not None
            and self.Sxy is not None
        )
        n_a, n_ab = self.n, self.n + m
        zs = []
        # centre at the combined mean and append sqrt(n_A)(mu_A - mu_AB): Z^T Z is then the Chan increment
        for name, rows, mu in (("cka.Zx", rows_x, self.mx), ("cka.Zy", rows_y, self.my)):
            mu_ab = mu + (m / n_ab)[:, None] * (rows.sum(1, dtype=torch.float64) / m - mu)
            Z = scratch(name, (view.L, m + 1, rows.shape[-1]), torch.float64, rows.device)
            torch.sub(rows, mu_ab[:, None, :], out=Z[:, :m])
            Z[:, m] = n_a.sqrt()[:, None] * (mu - mu_ab)
            zs.append((Z, mu_ab))
        (Zx, self.mx), (Zy, self.my) = zs
        for S, A, B in ((self.Sxx, Zx, Zx), (self.Syy, Zy, Zy), (self.Sxy, Zx, Zy)):
            S.baddbmm_(A.transpose(1, 2), B)
        self.n = n_ab

    @torch.inference_mode()
    def merge(self, other: CKAAccumulator) -> CKAAccumulator:
        if other.n is None:
            return self
        if self.n is None:
            self._init(other.n.device)
        assert (
            self.n is not None
            and self.mx is not None
            and self.my is not None
            and self.Sxx is not None
            and self.Syy is not None
            and self.Sxy is not None
            and other.n is not None
            and other.mx is not None
            and other.my is not None
            and other.Sxx is not None
            and other.Syy is not None
            and other.Sxy is not None
        )
        dev = self.n.device
        n_b = other.n.to(dev)
        n = self.n + n_b
        coef = torch.where(n > 0, self.n * n_b / n.clamp_min(1), torch.zeros_like(n))[:, None, None]
        frac = torch.where(n > 0, n_b / n.clamp_min(1), torch.zeros_like(n))[:, None]
        dx, dy = other.mx.to(dev) - self.mx, other.my.to(dev) - self.my
        self.Sxx += other.Sxx.to(dev) + coef * dx[:, :, None] * dx[:, None, :]
        self.Syy += other.Syy.to(dev) + coef * dy[:, :, None] * dy[:, None, :]
        self.Sxy += other.Sxy.to(dev) + coef * dx[:, :, None] * dy[:, None, :]
        self.mx, self.my, self.n = self.mx + frac * dx, self.my + frac * dy, n
        return self

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        values: list[Number] = [None] * self.n_layers
        if self.n is not None:
            num = torch.linalg.matrix_norm(self.Sxy) ** 2
            den = torch.linalg.matrix_norm(self.Sxx) * torch.linalg.matrix_norm(self.Syy)
            values = [
                to_number(a / b) if b > 0 and c >= 2 else None for a, b, c in zip(num.tolist(), den.tolist(), self.n.tolist())
            ]
        n = float(self.n[0]) if self.n is not None else 0.0
        return MetricValues(per_layer={"cka_to_reference": values}, counts={"cka_tokens": int(n)})


SPECS = (
    MetricSpec(
        id="cka_to_reference",
        kind="probe",
        streams=True,
        definition="linear CKA between this model's and the reference model's token states, per layer",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="CKA to reference",
    ),
)
