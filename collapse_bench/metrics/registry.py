"""Which accumulators the probe pass feeds (a new metric family = one module + one line here)."""

from __future__ import annotations

from collections.abc import Callable

from .anisotropy import AnisotropyAccumulator
from .base import Accumulator
from .cka import CKAAccumulator
from .domain import DomainAccumulator
from .dormant import DormantAccumulator
from .entropy import DatasetEntropyAccumulator, PromptEntropyAccumulator
from .logits import LogitAccumulator
from .reservoir import TokenReservoir
from .spectral import CovarianceAccumulator
from .trajectory import TrajectoryAccumulator


def probe_accumulators(
    *, n_domains: int, reservoir_size: int, seed: int, with_reference: bool = False
) -> Callable[[int, int, int | None], list[Accumulator]]:
    """Factory of the probe task's accumulators, built once the model's (L+1, d) are known."""

    def factory(n_layers: int, dim: int, ref_dim: int | None = None) -> list[Accumulator]:
        accs: list[Accumulator] = [
            CovarianceAccumulator(n_layers, dim),
            AnisotropyAccumulator(n_layers, dim),
            TokenReservoir(n_layers, dim, size=reservoir_size, seed=seed),
            PromptEntropyAccumulator(n_layers, dim, tokens="sample"),
            DatasetEntropyAccumulator(n_layers, dim),
            DomainAccumulator(n_layers, dim, n_domains),
            TrajectoryAccumulator(n_layers, dim),
            DormantAccumulator(n_layers, dim),
            LogitAccumulator(),
        ]
        if with_reference:
            accs.append(CKAAccumulator(n_layers, dim, ref_dim))
        return accs

    return factory
