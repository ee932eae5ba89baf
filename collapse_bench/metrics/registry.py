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
from .subset import LayerSubset
from .trajectory import TrajectoryAccumulator


def probe_accumulators(
    *,
    n_domains: int,
    reservoir_size: int,
    seed: int,
    with_reference: bool = False,
    references: Sequence[str] = (),
    domain_names: Sequence[str] | None = None,
    layers: Callable[[int, int], list[int] | None] | None = None,
) -> Callable[[int, int, int | None], list[Accumulator]]:
    """Factory of the probe task's accumulators, built once the model's (L+1, d) are known. ``references``: the
    reference roles (base, parent) compared by KL and neighbourhoods; ``with_reference`` adds CKA and the role
    ``reference``. ``layers(L+1, d)``: the hidden-state indices the d x d scatter families (covariance spectra,
    dataset entropy, CKA) keep (``None``: all; :class:`~collapse_bench.metrics.subset.LayerSubset`)."""
    roles = list(dict.fromkeys([*references, *(["reference"] if with_reference else [])]))

    def factory(n_layers: int, dim: int, ref_dim: int | None = None) -> list[Accumulator]:
        chosen = layers(n_layers, dim) if layers else None
        n_scatter = len(chosen) if chosen is not None else n_layers
        scatter: list[Accumulator] = [CovarianceAccumulator(n_scatter, dim), DatasetEntropyAccumulator(n_scatter, dim)]
        if with_reference:
            scatter.append(CKAAccumulator(n_scatter, dim, ref_dim))
        accs: list[Accumulator] = [
            scatter[0] if chosen is None else LayerSubset(scatter, chosen, n_layers),
            AnisotropyAccumulator(n_layers, dim),
            TokenReservoir(n_layers, dim, size=reservoir_size, seed=seed, metrics=(reservoir_intrinsic_dimension,)),
            PromptEntropyAccumulator(n_layers, dim, tokens="sample"),
            *(scatter[1:2] if chosen is None else []),
            DomainAccumulator(n_layers, dim, n_domains),
            TrajectoryAccumulator(n_layers, dim),
            DormantAccumulator(n_layers, dim),
            LogitAccumulator(),
            *(scatter[2:] if chosen is None else []),
        ]
        for role in roles:
            accs += [KLAccumulator(role, n_domains, domain_names), NeighbourAccumulator(role, n_layers, seed=seed)]
        return accs

    return factory
