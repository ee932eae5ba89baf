"""``BatchView``: the tensors of one ``ProbeBatch`` that every hidden-state accumulator needs, computed
once per batch (stacked, masked hidden states, row norms, channel max |h|, sequence sums, sampled rows)
with the latest view cached, plus a pool of reusable buffers (large fresh allocations page-fault on
every batch on CPU)."""

from __future__ import annotations

import math
import weakref
from functools import cached_property

import torch

from .base import ProbeBatch

_SCRATCH: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reusable uninitialised buffer (large fresh allocations page-fault on every batch on CPU).

    Callers must not keep the returned view beyond the current call."""
    numel = math.prod(shape)
    key = (name, dtype, torch.device(device))
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < numel:
        buf = _SCRATCH[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel].view(shape)


def clear_scratch() -> None:
    """Free the reusable buffers (and the cached view that points into them)."""
    global _LAST_VIEW
    _SCRATCH.clear()
    _LAST_VIEW = None


def gather_rows(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """X[:, idx] for X (L, N, d) as one dim-0 index_select (~7x faster on CPU than index_select on dim 1)."""
    L, N, d = X.shape
    flat = (torch.arange(L, device=X.device)[:, None] * N + idx.to(X.device)[None, :]).reshape(-1)
    return X.reshape(L * N, d).index_select(0, flat).view(L, idx.numel(), d)


class BatchView:
    """Tensors of one ``ProbeBatch`` computed once and shared by all accumulators (not thread-safe).

    ``X`` (L+1, B, T, d): hidden states stacked into a reused buffer, rows outside ``keep`` set to 0, float32
    (float64 for float64 input); ``norms`` (L+1, B, T) row norms of X; ``maxabs`` (L+1, d) per-channel max |h|
    over kept tokens; ``seq_sums`` (L+1, B, d) float64 sums of each sequence's kept tokens; ``sample_index``
    flat b*T + t of the ``sample`` tokens (ascending); ``sample_rows`` (L+1, m, d) their hidden states;
    ``reference_sample_rows`` the same from ``reference_hidden`` (or None). Holds only a weak reference to
    the batch; a later batch overwrites the buffer behind X, so accumulators must not keep these tensors.
    """

    def __init__(self, batch: ProbeBatch) -> None:
        self._ref = weakref.ref(batch)
        h0 = batch.hidden[0]
        self.L = len(batch.hidden)
        self.B, self.T, self.d = h0.shape
        self.device = h0.device
        self.dtype = torch.float64 if h0.dtype == torch.float64 else torch.float32
        self.keep = batch.keep.to(self.device, torch.bool)
        self.sample = batch.sample.to(self.device, torch.bool) & self.keep
        self.n_keep = self.keep.sum(dim=1)  # (B,)

    def _batch(self) -> ProbeBatch:
        batch = self._ref()
        if batch is None:
            raise RuntimeError("the ProbeBatch of this view no longer exists")
        return batch

    @cached_property
    def _base(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # one pass per layer while it is in cache: ~2x faster on CPU than the same ops on the whole stack
        L, B, T, d, dt, dev = self.L, self.B, self.T, self.d, self.dtype, self.device
        X = scratch("view.X", (L, B, T, d), dt, dev)
        norms = torch.empty(L, B, T, dtype=dt, device=dev)
        maxabs = torch.empty(L, d, dtype=dt, device=dev)
        sums = torch.empty(L, B, d, dtype=dt, device=dev)
        drop = (~self.keep).reshape(-1).nonzero().squeeze(1)
        for l, h in enumerate(self._batch().hidden):
            x = X[l]
            x.copy_(h)
            if drop.numel():
                x.view(-1, d).index_fill_(0, drop, 0.0)
            torch.linalg.vector_norm(x, dim=-1, out=norms[l])
            torch.maximum(x.view(-1, d).amax(0), x.view(-1, d).amin(0).neg_(), out=maxabs[l])
            torch.sum(x, dim=1, out=sums[l])
        return X, norms, maxabs, sums.double()

    X = property(lambda self: self._base[0])
    norms = property(lambda self: self._base[1])
    maxabs = property(lambda self: self._base[2])
    seq_sums = property(lambda self: self._base[3])

    @cached_property
    def sample_index(self) -> torch.Tensor:
        return self.sample.reshape(-1).nonzero().squeeze(1)

    @cached_property
    def sample_rows(self) -> torch.Tensor:
        return gather_rows(self.X.view(self.L, -1, self.d), self.sample_index)

    @cached_property
    def reference_sample_rows(self) -> torch.Tensor | None:
        ref = self._batch().reference_hidden
        if ref is None:
            return None
        idx = self.sample_index.to(ref[0].device)
        dt = torch.float64 if ref[0].dtype == torch.float64 else torch.float32
        return torch.stack([r.reshape(-1, r.shape[-1]).index_select(0, idx).to(self.device, dt) for r in ref])


_LAST_VIEW: BatchView | None = None


def batch_view(batch: ProbeBatch) -> BatchView:
    """The view of ``batch``. Only the most recent batch's view is cached: its tensors live in the
    shared scratch buffers, which the next batch's view overwrites."""
    global _LAST_VIEW
    view = _LAST_VIEW
    if view is None or view._ref() is not batch:
        view = _LAST_VIEW = BatchView(batch)
    return view
