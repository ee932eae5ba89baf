"""A deterministic, mergeable token sample (bottom-k by hash) for metrics that need individual vectors.

Every ``sample`` token gets key = splitmix64(splitmix64(splitmix64(seed) ^ seq_id) ^ position) >> 1
(a 63-bit non-negative integer; position = the column t of the token in its batch). The reservoir keeps the
``size`` tokens with the smallest keys and their hidden states at all layers (float32), so the kept set does
not depend on batch order, batch composition or merge order. A token seen twice (same key) is kept once.

compute(): per layer ``anisotropy_centered`` = anisotropy.centered_anisotropy of the stored vectors, plus the
values of each ``metrics`` hook (a function of the filled reservoir, e.g. intrinsic.reservoir_intrinsic_dimension;
the hooks are chosen in registry.py, so a reservoir metric needs no accumulator and no second copy of the sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .anisotropy import centered_anisotropy
from .base import MetricValues, Number, ProbeBatch
from .batchview import batch_view, gather_rows

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray | np.uint64) -> np.ndarray:
    """The splitmix64 output function of x + golden gamma, on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def token_keys(seed: int, seq_ids: torch.Tensor | np.ndarray, positions: torch.Tensor | np.ndarray) -> torch.Tensor:
    """63-bit int64 keys of tokens (seq_id, position) for ``seed`` (CPU tensor)."""
    seq = np.asarray(torch.as_tensor(seq_ids).cpu().numpy(), dtype=np.int64).astype(np.uint64)
    pos = np.asarray(torch.as_tensor(positions).cpu().numpy(), dtype=np.int64).astype(np.uint64)
    h = splitmix64(splitmix64(splitmix64(np.uint64(seed)) ^ seq) ^ pos) >> np.uint64(1)
    return torch.from_numpy(h.astype(np.int64))


ReservoirMetric = Callable[["TokenReservoir"], MetricValues]  # a metric computed from the filled reservoir


class TokenReservoir:
    """Bottom-``size`` sample of ``sample`` tokens by hash key; stores keys, (seq_id, position) and float32
    hidden states of all layers. Storage slots are unordered; accessors return rows sorted by key."""

    def __init__(self, n_layers: int, dim: int, size: int = 2048, seed: int = 0, metrics: Sequence[ReservoirMetric] = ()) -> None:
        self.n_layers, self.dim, self.size, self.seed = n_layers, dim, size, seed
        self.metrics = tuple(metrics)
        self.count = 0
        self._keys: torch.Tensor | None = None  # (size,) int64
        self._ids: torch.Tensor | None = None  # (size, 2) int64: seq_id, position
        self._rows: torch.Tensor | None = None  # (L, size, d) float32

    def _init(self, device: torch.device) -> None:
        self._keys = torch.zeros(self.size, dtype=torch.int64, device=device)
        self._ids = torch.zeros(self.size, 2, dtype=torch.int64, device=device)
        self._rows = torch.zeros(self.n_layers, self.size, self.dim, dtype=torch.float32, device=device)

    def _insert(self, keys: torch.Tensor, ids: torch.Tensor, rows: Callable[[torch.Tensor], torch.Tensor]) -> None:
        assert self._keys is not None and self._ids is not None and self._rows is not None
        c, dev = self.count, self._keys.device
        keys, ids = keys.to(dev), ids.to(dev)
        all_keys = torch.cat([self._keys[:c], keys])
        order = torch.argsort(all_keys, stable=True)  # stored tokens first among equal keys
        ordered = all_keys[order]
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[1:] = ordered[1:] != ordered[:-1]
        chosen_idx = order[first][: self.size]
        chosen = torch.zeros(all_keys.numel(), dtype=torch.bool, device=dev)
        chosen[chosen_idx] = True
        new_sel = chosen[c:].nonzero().squeeze(1)
        if new_sel.numel():
            free = torch.cat([torch.arange(c, self.size, device=dev), (~chosen[:c]).nonzero().squeeze(1)])
            free = free[: new_sel.numel()]
            self._keys[free] = keys[new_sel]
            self._ids[free] = ids[new_sel]
            L, size, d = self._rows.shape
            flat = (torch.arange(L, device=dev)[:, None] * size + free[None, :]).reshape(-1)
            self._rows.view(L * size, d).index_copy_(0, flat, rows(new_sel).to(self._rows).reshape(-1, d))
        self.count = int(chosen_idx.numel())

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        if self._keys is None:
            self._init(view.device)
        idx = view.sample_index
        if idx.numel() == 0:
            return
        b, t = idx // view.T, idx % view.T
        seq = batch.seq_ids.to(idx.device)[b]
        keys = token_keys(self.seed, seq, t)
        ids = torch.stack([seq, t], dim=1)
        self._insert(keys, ids, lambda sel: gather_rows(view.sample_rows, sel))

    @torch.inference_mode()
    def merge(self, other: TokenReservoir) -> TokenReservoir:
        if other._keys is None or other.count == 0:
            return self
        if (other.size, other.seed) != (self.size, self.seed):
            raise ValueError("cannot merge reservoirs with different size or seed")
        if self._keys is None:
            self._init(other._keys.device)
        c = other.count
        rows = other._rows
        assert rows is not None and other._ids is not None
        self._insert(other._keys[:c], other._ids[:c], lambda sel: gather_rows(rows, sel))
        return self

    def _order(self) -> torch.Tensor:
        assert self._keys is not None
        return torch.argsort(self._keys[: self.count])

    def keys(self) -> torch.Tensor:
        """Stored keys, ascending."""
        if self._keys is None:
            return torch.zeros(0, dtype=torch.int64)
        return self._keys[: self.count][self._order()]

    def token_ids(self) -> torch.Tensor:
        """(count, 2) (seq_id, position) of the stored tokens, in key order."""
        if self._ids is None:
            return torch.zeros(0, 2, dtype=torch.int64)
        return self._ids[: self.count][self._order()]

    def layer_rows(self, layer: int) -> torch.Tensor:
        """(count, d) float32 hidden states of the stored tokens at ``layer``, in key order."""
        if self._rows is None:
            return torch.zeros(0, self.dim)
        return self._rows[layer, : self.count][self._order()]

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        values: list[Number] = [None] * self.n_layers
        if self._rows is not None and self.count >= 2:
            values = [centered_anisotropy(self._rows[l, : self.count]) for l in range(self.n_layers)]
        out = MetricValues(per_layer={"anisotropy_centered": values}, counts={"reservoir_tokens": int(self.count)})
        for metric in self.metrics:
            extra = metric(self)
            out.per_layer.update(extra.per_layer)
            out.scalars.update(extra.scalars)
            out.counts.update(extra.counts)
        return out
