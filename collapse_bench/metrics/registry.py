"""Which accumulators the probe pass feeds (a new metric family = one module + one line here; a metric of the token
reservoir's sample = one hook in the TokenReservoir's ``metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .anisotropy import AnisotropyAccumulator
from .base import Accumulator
from .cka import CKAAccumulator
from .divergence import KLAccumulator
from .domain import DomainAccumulator
from .dormant import DormantAccumulator
from .entropy import DatasetEntropyAccumulator, PromptEntropyAccumulator
from .intrinsic import reservoir_intrinsic_dimension
from .logits import LogitAccumulator
from .neighbours import NeighbourAccumulator
from .reservoir import TokenReservoir
from .spectral import CovarianceAccumulator
from .trajectory import TrajectoryAccumulator


def probe_accumulators(
    *,
    n_domains: int,
    reservoir_size: int,
    seed: int,
    with_reference: bool = False,
    references: Sequence[str] = (),
    domain_names: Sequence[str] | None = None,
) -> Callable[[int, int, int | None], list[Accumulator]]:
    """Factory of the probe task's accumulators, built once the model's (L+1, d) are known. ``references``: the
    reference roles (base, parent) compared by KL and neighbourhoods; ``with_reference`` adds CKA and the role
    ``reference``."""
    roles = list(dict.fromkeys([*references, *(["reference"] if with_reference else [])]))

    def factory(n_layers: int, dim: int, ref_dim: int | None = None) -> list[Accumulator]:
        accs: list[Accumulator] = [
            CovarianceAccumulator(n_layers, dim),
            AnisotropyAccumulator(n_layers, dim),
            TokenReservoir(n_layers, dim, size=reservoir_size, seed=seed, metrics=(reservoir_intrinsic_dimension,)),
            PromptEntropyAccumulator(n_layers, dim, tokens="sample"),
            DatasetEntropyAccumulator(n_layers, dim),
            DomainAccumulator(n_layers, dim, n_domains),
            TrajectoryAccumulator(n_layers, dim),
            DormantAccumulator(n_layers, dim),
            LogitAccumulator(),
        ]
        if with_reference:
            accs.append(CKAAccumulator(n_layers, dim, ref_dim))
        for role in roles:
            accs += [KLAccumulator(role, n_domains, domain_names), NeighbourAccumulator(role, n_layers, seed=seed)]
        return accs

    return factory
