"""The accumulator base class (torchmetrics' ``add_state`` idea) for families whose state is additive.

A subclass declares its states in ``__init__`` with :meth:`SumState.add_state` and allocates them on the
first batch with :meth:`SumState.zeros` (shape and device are known only then); :meth:`SumState.merge`
adds the other accumulator's states (exact, order-independent), and :attr:`SumState.empty` says whether
any batch was seen. ``update`` and ``compute`` stay the family's own. Families whose merge is not a sum
(the bottom-k token reservoir; the pairwise mean/M² merges of the covariance-type accumulators) keep
their own ``merge`` and the same contract (``tests/test_accumulator_contract.py`` runs every one).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

S = TypeVar("S", bound="SumState")


class SumState:
    """Named float64 tensor (or Python number) states, merged by elementwise sum."""

    _state_names: tuple[str, ...] = ()

    def add_state(self, name: str, default: float | int | None = None) -> None:
        """Declare state ``name``: ``None`` = a tensor allocated lazily by :meth:`zeros`; a number = a scalar."""
        self._state_names = (*self._state_names, name)
        setattr(self, name, default)

    def zeros(self, name: str, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """Allocate tensor state ``name`` (float64 zeros) if it is not yet; returns it."""
        if getattr(self, name) is None:
            setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=device))
        value: torch.Tensor = getattr(self, name)
        return value

    @property
    def empty(self) -> bool:
        """No batch contributed (every tensor state unallocated and every scalar state 0)."""
        return all(
            getattr(self, n) is None or (not isinstance(getattr(self, n), torch.Tensor) and not getattr(self, n))
            for n in self._state_names
        )

    @torch.inference_mode()
    def merge(self: S, other: S) -> S:
        for name in self._state_names:
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is None:
                continue
            if mine is None:
                setattr(self, name, theirs.clone() if isinstance(theirs, torch.Tensor) else theirs)
            elif isinstance(mine, torch.Tensor):
                mine += theirs.to(mine)
            else:
                setattr(self, name, mine + theirs)
        return self

    def state(self) -> dict[str, Any]:
        """The sufficient statistics by name (what a data-parallel run would all-reduce)."""
        return {n: getattr(self, n) for n in self._state_names}
