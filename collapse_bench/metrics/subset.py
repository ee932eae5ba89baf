"""Per-layer families on a subset of the hidden-state layers (``--probe-layers``), so the scatter state fits.

:class:`LayerSubset` feeds its accumulators a view of each batch holding only the chosen layers' hidden states (and
the reference's, aligned), then maps their per-layer outputs back onto all ``n_layers`` indices, None elsewhere.
Every wrapped family computes each layer from that layer's states alone, so a chosen layer's value is the one the
all-layers run gives (tests/test_probe_layers.py); families that combine neighbouring layers (trajectory's
layer cosine) or read the MLP inputs (dormant) stay on every layer (their state is O(L d) or less).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from .base import Accumulator, MetricValues, ProbeBatch


class LayerSubset:
    """The accumulators ``accs`` on hidden-state indices ``layers`` of ``n_layers`` (one batch view for all)."""

    def __init__(self, accs: Sequence[Accumulator], layers: Sequence[int], n_layers: int) -> None:
        if not layers or any(not 0 <= i < n_layers for i in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"layers {list(layers)} must be increasing indices in 0..{n_layers - 1}")
        self.accs, self.layers, self.n_layers = list(accs), list(layers), n_layers

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        ref = batch.reference_hidden
        view = replace(
            batch,
            hidden=[batch.hidden[i] for i in self.layers],
            reference_hidden=[ref[i] for i in self.layers] if ref is not None else None,
        )
        for acc in self.accs:
            acc.update(view)

    def merge(self, other: LayerSubset) -> LayerSubset:
        for mine, theirs in zip(self.accs, other.accs):
            mine.merge(theirs)
        return self

    def compute(self) -> MetricValues:
        out = MetricValues()
        for acc in self.accs:
            values = acc.compute()
            for name, series in values.per_layer.items():
                full: list[float | None] = [None] * self.n_layers
                for i, v in zip(self.layers, series):
                    full[i] = v
                out.per_layer[name] = full
            out.scalars.update(values.scalars)
            out.counts.update(values.counts)
        return out
