"""Dormant MLP units (Sokar et al. 2023, ReDo score) over the ``sample`` tokens (<= K per sequence).

For MLP intermediate activations A (N tokens, I units) of one block (the input of its down projection):
  s_i = mean_t |a_ti| / ((1/I) sum_k mean_t |a_tk|),  dormant_fraction(A, tau) = #{i : s_i <= tau} / I
(None if every activation is 0). Reported per hidden-state index: 0 -> None, l -> block l (l = 1..L), at
tau = 0.025 (``dormant_fraction``) and tau = 0.1 (``dormant_fraction_01``).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64
from .state import SumState

TAUS = {"dormant_fraction": 0.025, "dormant_fraction_01": 0.1}


def dormant_fraction_from_sums(abs_sum: torch.Tensor, tau: float) -> Number:
    """Fraction of units with s_i <= tau given per-unit sums of |a| over the same tokens."""
    mean = abs_sum.double().mean()
    if mean <= 0:
        return None
    return to_number((abs_sum.double() / mean <= tau).double().mean())


def dormant_fraction(A: torch.Tensor | np.ndarray, tau: float = 0.025) -> Number:
    """Fraction of the I units (columns of A, (N, I)) whose normalised score s_i <= tau."""
    return dormant_fraction_from_sums(as_f64(A).abs().mean(0), tau)


class DormantAccumulator(SumState):
    """Per block: float64 sum over kept tokens of |a_i| per unit (I) and the token count. ``dim`` (the hidden
    size) is unused; ``intermediate_size`` I is taken from the first batch when not given."""

    def __init__(self, n_layers: int, dim: int | None = None, intermediate_size: int | None = None) -> None:
        self.n_layers, self.dim, self.intermediate_size = n_layers, dim, intermediate_size
        self.abs_sum: torch.Tensor | None = None  # (L, I): row j = block j + 1
        self.count = 0
        self.add_state("abs_sum")
        self.add_state("count", 0)

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        if batch.mlp is None:
            return
        mlp = list(batch.mlp)
        if len(mlp) != self.n_layers - 1:
            raise ValueError(f"expected {self.n_layers - 1} MLP activations, got {len(mlp)}")
        dev = mlp[0].device
        if self.abs_sum is None:
            self.intermediate_size = self.intermediate_size or mlp[0].shape[-1]
            self.abs_sum = torch.zeros(len(mlp), self.intermediate_size, dtype=torch.float64, device=dev)
        rows = (batch.sample & batch.keep).to(dev).reshape(-1).nonzero().squeeze(1)  # sampled tokens (protocol v1)
        n = rows.numel()
        if n == 0:
            return
        for j, a in enumerate(mlp):  # per block: gather the sampled rows, then a float64 column sum of |a|
            picked = a.reshape(-1, a.shape[-1]).index_select(0, rows)
            self.abs_sum[j] += picked.abs_().sum(0, dtype=torch.float64)
        self.count += n

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        out: dict[str, list[Number]] = {k: [None] * self.n_layers for k in TAUS}
        if self.abs_sum is not None and self.count > 0:
            for key, tau in TAUS.items():
                for j in range(self.abs_sum.shape[0]):
                    out[key][j + 1] = dormant_fraction_from_sums(self.abs_sum[j], tau)
        return MetricValues(per_layer=out, counts={"dormant_tokens": int(self.count)})


SPECS = (
    MetricSpec(
        id="dormant_fraction*",
        kind="probe",
        streams=True,
        definition="share of MLP units whose ReDo score is ≤ 0.025 (dormant_fraction_01: ≤ 0.1)",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="dormant fraction",
    ),
)
