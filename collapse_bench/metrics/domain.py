"""Between-domain separation of token states (neural-collapse style, reference section 1.12), ``keep`` tokens.

With N tokens, domain c holding n_c of them with mean mu_c, and the global mean mu:
  Sigma_B = sum_c (n_c / N) (mu_c - mu)(mu_c - mu)^T,  Sigma_tot = (1/N) sum_i (h_i - mu)(h_i - mu)^T,
  domain_separation = tr Sigma_B / tr Sigma_tot in [0, 1]   (None if < 2 domains present or tr Sigma_tot = 0),
  domain_between_trace = tr Sigma_B,  domain_within_trace = tr Sigma_tot - tr Sigma_B.
Streaming state per layer and domain: count, sum of vectors, sum of squared norms (float64), so
tr Sigma_tot = sum_c sumsq_c / N - ||mu||^2 (relative error ~ float32 eps * ||mu||^2 / tr Sigma_tot for float32 input).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64


def domain_separation(H: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> Number:
    """tr(Sigma_B) / tr(Sigma_tot) of rows H (N, d) with integer domain ``labels`` (N,)."""
    H = as_f64(H)
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).to(H.device)
    classes = torch.unique(labels)
    if classes.numel() < 2:
        return None
    mu = H.mean(0)
    total = ((H - mu) ** 2).sum() / H.shape[0]
    between = sum((labels == c).double().mean() * ((H[labels == c].mean(0) - mu) ** 2).sum() for c in classes)
    return to_number(between / total) if total > 0 else None


def traces_from_stats(
    count: torch.Tensor, sums: torch.Tensor, sumsq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tr Sigma_B, tr Sigma_tot, number of domains present) from per-domain count (.., C), sum (.., C, d),
    sum of squared norms (.., C)."""
    N = count.sum(-1)
    Nc = N.clamp_min(1.0)
    mu = sums.sum(-2) / Nc[..., None]
    mu_c = sums / count.clamp_min(1.0)[..., None]
    between = (count / Nc[..., None] * ((mu_c - mu[..., None, :]) ** 2).sum(-1)).sum(-1)
    total = sumsq.sum(-1) / Nc - (mu**2).sum(-1)
    return between, total, (count > 0).sum(-1)


class DomainAccumulator:
    """Per layer and domain: token count, vector sum (d) and sum of squared norms, float64."""

    def __init__(self, n_layers: int, dim: int, n_domains: int) -> None:
        self.n_layers, self.dim, self.n_domains = n_layers, dim, n_domains
        self.count: torch.Tensor | None = None  # (L, C)
        self.sums: torch.Tensor | None = None  # (L, C, d)
        self.sumsq: torch.Tensor | None = None  # (L, C)

    def _init(self, device: torch.device) -> None:
        L, C, f = self.n_layers, self.n_domains, torch.float64
        self.count = torch.zeros(L, C, dtype=f, device=device)
        self.sums = torch.zeros(L, C, self.dim, dtype=f, device=device)
        self.sumsq = torch.zeros(L, C, dtype=f, device=device)

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        if self.count is None:
            self._init(view.device)
        dom = batch.domains.to(view.device)
        if bool(((dom < 0) | (dom >= self.n_domains)).any()):
            raise ValueError(f"domain index outside 0..{self.n_domains - 1}: {dom.tolist()}")
        onehot = dom[None, :] == torch.arange(self.n_domains, device=view.device)[:, None]  # (C, B)
        W = (onehot[:, :, None] & view.keep[None]).reshape(self.n_domains, -1)  # (C, B*T)
        Wf = W.to(view.dtype)
        assert self.count is not None and self.sums is not None and self.sumsq is not None
        self.sums += torch.matmul(Wf, view.X.view(view.L, -1, view.d))
        self.sumsq += torch.matmul(view.norms.view(view.L, -1).double() ** 2, W.double().T)
        self.count += W.sum(1).double()[None, :]

    @torch.inference_mode()
    def merge(self, other: DomainAccumulator) -> DomainAccumulator:
        if other.count is None:
            return self
        if self.count is None:
            self._init(other.count.device)
        assert (
            self.count is not None
            and self.sums is not None
            and self.sumsq is not None
            and other.count is not None
            and other.sums is not None
            and other.sumsq is not None
        )
        self.count += other.count.to(self.count)
        self.sums += other.sums.to(self.sums)
        self.sumsq += other.sumsq.to(self.sumsq)
        return self

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        L = self.n_layers
        keys = ("domain_separation", "domain_between_trace", "domain_within_trace")
        out: dict[str, list[Number]] = {k: [None] * L for k in keys}
        if self.count is None:
            return MetricValues(per_layer=out, counts={"domain_tokens": 0})
        assert self.sums is not None and self.sumsq is not None
        between, total, present = traces_from_stats(self.count, self.sums, self.sumsq)
        for l in range(L):
            if present[l] >= 2 and total[l] > 0:
                out["domain_separation"][l] = to_number(between[l] / total[l])
                out["domain_between_trace"][l] = to_number(between[l])
                out["domain_within_trace"][l] = to_number(total[l] - between[l])
        return MetricValues(per_layer=out, counts={"domain_tokens": int(self.count[0].sum())})


SPECS = (
    MetricSpec(
        id="domain_separation",
        kind="probe",
        streams=True,
        direction="higher",
        definition="tr Σ_between / tr Σ_total of the token states over the probe's domains",
        range=Range(0, 1),
        tolerance=Tolerance(0.0, 0.05),
        label="domain separation",
    ),
    MetricSpec(
        id="domain_*_trace",
        kind="probe",
        streams=True,
        definition="trace of the within- or between-domain scatter matrix",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.05),
        label="domain scatter trace",
    ),
)
