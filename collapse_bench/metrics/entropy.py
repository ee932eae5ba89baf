"""Matrix-based Renyi entropy (alpha = 1) of token sets (Skean et al., arXiv 2502.02013).

matrix_entropy(Z), Z (N, d): u_i = z_i / ||z_i|| (zero rows stay zero), U~ = U - 1 mean(U)^T (column-centred),
K = U~ U~^T (or the dual U~^T U~: same non-zero spectrum; the smaller side is used), A = K / tr K,
S = -sum_i lambda_i(A) log lambda_i(A) (0 log 0 = 0), reported as S / log(min(N, d)). None if N < 2 or tr K = 0.

  prompt_entropy  = mean over sequences (with >= 2 tokens) of matrix_entropy(that sequence's ``keep`` tokens);
  dataset_entropy = matrix_entropy of one vector per sequence, the mean of its ``keep`` tokens; streamed as a
                    Chan mean + centred scatter of the L2-normalised pooled vectors (N = number of sequences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view, gather_rows, scratch
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64
from .state import SumState


def _entropy(lam: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """-sum p log p with p = lam / trace along the last dim (lam clamped at 0)."""
    p = lam.clamp_min(0.0) / trace.unsqueeze(-1)
    return -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).sum(-1)


def _unit_rows(Z: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(Z, dim=-1, keepdim=True)
    return torch.where(norms > 0, Z / torch.where(norms > 0, norms, 1.0), 0.0)


def matrix_entropy(Z: torch.Tensor | np.ndarray) -> Number:
    """Normalised matrix entropy S / log(min(N, d)) of the row-normalised, column-centred Z."""
    Z = as_f64(Z)
    N, d = Z.shape
    if N < 2:
        return None
    U = _unit_rows(Z)
    U = U - U.mean(dim=0, keepdim=True)
    K = U @ U.T if d >= N else U.T @ U
    trace = torch.trace(K)
    if trace <= 0:
        return None
    return to_number(_entropy(torch.linalg.eigvalsh(K), trace) / math.log(min(N, d)))


def prompt_entropy(sequences: Sequence[torch.Tensor | np.ndarray]) -> Number:
    """Mean of matrix_entropy over the sequences where it is defined."""
    values = [v for v in (matrix_entropy(z) for z in sequences) if v is not None]
    return sum(values) / len(values) if values else None


def mean_pool(H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) bool -> (B', d) float64 means of the masked tokens of sequences with any."""
    H, mask = as_f64(H), mask.bool()
    n = mask.sum(1)
    return ((H * mask[..., None]).sum(1) / n.clamp_min(1)[:, None])[n > 0]


def _sequence_entropies(
    X: torch.Tensor, norms: torch.Tensor, mask: torch.Tensor, n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised entropies (L', B) and trace (L', B) of the masked token sets of each (layer, sequence).

    X (L', B, T, d) with zeros outside ``mask`` (B, T), norms (L', B, T), n (B,) float64 token counts (>= 2)."""
    L, B, T, d = X.shape
    dt = X.dtype
    k = mask.to(dt)
    w = torch.where(mask & (norms > 0), 1.0 / torch.where(norms > 0, norms, 1.0), 0.0).to(dt)  # (L, B, T)
    if d >= T:  # Gram side, in place: K = P G P with G = D X X^T D, D = diag(w), P = diag(k) - k k^T / n
        Xf = X.reshape(L * B, T, d)
        G = scratch("pe.G", (L * B, T, T), dt, X.device)
        G = torch.bmm(Xf, Xf.transpose(1, 2), out=G).view(L, B, T, T)
        G.mul_(w[..., :, None]).mul_(w[..., None, :])
        nt = n.to(dt)
        r = (G @ k[:, :, None]) / nt[:, None, None]  # (L, B, T, 1): row means over the kept tokens
        s = (r.squeeze(-1) * k).sum(-1) / nt  # (L, B): grand mean
        G.addcmul_(r, k[:, None, :], value=-1.0).addcmul_(k[:, :, None], r.transpose(-1, -2), value=-1.0)
        G.addcmul_(s[..., None, None] * k[:, :, None], k[:, None, :])
        K = G.double()
    else:  # dual side: sum_i u_i u_i^T - n m m^T
        U = X.double() * w.double()[..., None]
        m = U.sum(2) / n[:, None]  # (L, B, d)
        K = U.transpose(-1, -2) @ U - n[:, None, None] * m[..., :, None] * m[..., None, :]
    trace = torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)
    return _entropy(torch.linalg.eigvalsh(K), torch.where(trace > 0, trace, 1.0)), trace


class PromptEntropyAccumulator(SumState):
    """Per layer: sum and count of per-sequence matrix entropies (float64).

    ``tokens="keep"`` is protocol v1 (all kept tokens; one min(T, d)-sized eigendecomposition per sequence
    and layer, which dominates the metric cost on CPU); ``tokens="sample"`` uses the ``sample`` tokens.
    Layers are processed in chunks of at most ``chunk_elements`` Gram entries to bound memory."""

    def __init__(self, n_layers: int, dim: int, tokens: Literal["keep", "sample"] = "keep", chunk_elements: int = 2**24) -> None:
        if tokens not in ("keep", "sample"):
            raise ValueError(f"tokens must be 'keep' or 'sample', not {tokens!r}")
        self.n_layers, self.dim, self.tokens, self.chunk_elements = n_layers, dim, tokens, chunk_elements
        self.sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.add_state("sum")
        self.add_state("count")

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        self.sum = self.zeros("sum", (self.n_layers,), view.device)
        self.count = self.zeros("count", (self.n_layers,), view.device)
        L, d = view.L, view.d
        mask = view.keep if self.tokens == "keep" else view.sample
        n = mask.sum(1)
        if not bool((n >= 2).any()):
            return
        Tm = int(n.max())
        if self.tokens == "keep" and Tm > view.T // 2:  # rows outside keep are already zero: no gather
            X, norms = view.X, view.norms
        else:  # gather the masked tokens of each sequence to the left of a (B, Tm) grid
            order = torch.sort(mask.int(), dim=1, descending=True, stable=True).indices[:, :Tm]
            mask = torch.gather(mask, 1, order)
            flat = (torch.arange(view.B, device=view.device)[:, None] * view.T + order).reshape(-1)
            X = gather_rows(view.X.view(L, -1, d), flat).view(L, view.B, Tm, d)
            norms = view.norms.view(L, -1).index_select(1, flat).view(L, view.B, Tm)
        valid = n >= 2
        n = n.double().clamp_min(2.0)  # undefined sequences are masked out below
        side = min(X.shape[2], d)
        step = max(1, self.chunk_elements // (view.B * side * side))
        for lo in range(0, L, step):
            H, trace = _sequence_entropies(X[lo : lo + step], norms[lo : lo + step], mask, n)
            ok = (trace > 0) & valid
            H = H / torch.log(n.clamp(max=d))
            self.sum[lo : lo + step] += torch.where(ok, H, 0.0).sum(1)
            self.count[lo : lo + step] += ok.sum(1)

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        if self.sum is None:
            return MetricValues(per_layer={"prompt_entropy": [None] * self.n_layers}, counts={"prompt_entropy_sequences": 0})
        assert self.sum is not None and self.count is not None
        values = [to_number(s / c) if c > 0 else None for s, c in zip(self.sum.tolist(), self.count.tolist())]
        return MetricValues(per_layer={"prompt_entropy": values}, counts={"prompt_entropy_sequences": int(self.count.max())})


class DatasetEntropyAccumulator:
    """Per layer: n, mean (d) and centred scatter (d x d) of the L2-normalised mean-pooled sequence vectors,
    float64. Pooled vectors are buffered (at most ``flush_every`` per layer) and folded in with Chan's update."""

    def __init__(self, n_layers: int, dim: int, flush_every: int = 256) -> None:
        self.n_layers, self.dim, self.flush_every = n_layers, dim, flush_every
        self.n = 0
        self.mean: torch.Tensor | None = None  # (L, d)
        self.M2: torch.Tensor | None = None  # (L, d, d)
        self._pending: list[torch.Tensor] = []  # (L, b, d) float64 unit vectors

    def _init(self, device: torch.device) -> None:
        self.mean = torch.zeros(self.n_layers, self.dim, dtype=torch.float64, device=device)
        self.M2 = torch.zeros(self.n_layers, self.dim, self.dim, dtype=torch.float64, device=device)

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self.mean is not None and self.M2 is not None
        P = torch.cat([p.to(self.mean.device) for p in self._pending], dim=1)
        self._pending = []
        m = P.shape[1]
        n_ab = self.n + m
        mu_ab = self.mean + (m / n_ab) * (P.mean(dim=1) - self.mean)
        Z = torch.cat([P - mu_ab[:, None, :], (math.sqrt(self.n) * (self.mean - mu_ab))[:, None, :]], dim=1)
        self.M2.baddbmm_(Z.transpose(1, 2), Z)
        self.mean, self.n = mu_ab, n_ab

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        if self.mean is None:
            self._init(view.device)
        n = view.n_keep
        seqs = (n > 0).nonzero().squeeze(1)
        if seqs.numel() == 0:
            return
        pooled = view.seq_sums[:, seqs] / n[seqs].double()[None, :, None]
        self._pending.append(_unit_rows(pooled))
        if sum(p.shape[1] for p in self._pending) >= self.flush_every:
            self._flush()

    @torch.inference_mode()
    def merge(self, other: DatasetEntropyAccumulator) -> DatasetEntropyAccumulator:
        other._flush()
        if other.mean is None or other.n == 0:
            return self
        if self.mean is None:
            self._init(other.mean.device)
        self._flush()
        assert self.M2 is not None and other.M2 is not None
        n = self.n + other.n
        assert self.mean is not None and self.M2 is not None and other.mean is not None and other.M2 is not None
        delta = other.mean.to(self.mean) - self.mean
        self.M2 += other.M2.to(self.M2) + (self.n * other.n / n) * delta[:, :, None] * delta[:, None, :]
        self.mean = self.mean + (other.n / n) * delta
        self.n = n
        return self

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        self._flush()
        values: list[Number] = [None] * self.n_layers
        if self.M2 is not None and self.n >= 2:
            trace = torch.diagonal(self.M2, dim1=-2, dim2=-1).sum(-1)
            H = _entropy(torch.linalg.eigvalsh(self.M2), torch.where(trace > 0, trace, 1.0))
            H = H / math.log(min(self.n, self.dim))
            values = [to_number(h) if t > 0 else None for h, t in zip(H.tolist(), trace.tolist())]
        return MetricValues(per_layer={"dataset_entropy": values}, counts={"dataset_entropy_sequences": int(self.n)})


SPECS = (
    MetricSpec(
        id="prompt_entropy",
        kind="probe",
        streams=True,
        definition="matrix entropy of each prompt's token Gram matrix, normalised by its maximum, averaged over prompts",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.02),
        label="prompt entropy",
    ),
    MetricSpec(
        id="dataset_entropy",
        kind="probe",
        streams=True,
        definition="matrix entropy of the Gram matrix of mean-pooled prompt states, normalised",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.02),
        label="dataset entropy",
    ),
)
