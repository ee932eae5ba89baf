"""The metric contract: pure functions + mergeable streaming accumulators (torchmetrics style).

Every metric family lives in one module with
  * pure functions on whole matrices (the definition, tested against independent references), and
  * an accumulator with ``update(batch)``, ``merge(other)`` and ``compute()`` whose state is float64
    sufficient statistics of size independent of the number of probe tokens.
Streaming over batches, merging partial accumulators, and the pure function on the concatenated
data must agree (tests check this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

Number = float | None


class LogitRows:
    """A batch's next-token logits (B, T, V), computed on demand for the rows asked for from the last hidden state by
    the model's output head (``head``: (n, d) -> (n, V)): the (B, T, V) tensor is never materialised and the head
    does not run on padding."""

    def __init__(self, final: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], vocab: int, device: torch.device):
        self.final, self.head, self.device = final, head, torch.device(device)
        self.shape = (*final.shape[:2], vocab)
        self.dtype = final.dtype

    def select(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits of the flat rows ``rows`` (n,) (flat row = b*T + t), (n, V)."""
        d = self.final.shape[-1]
        return self.head(self.final.reshape(-1, d).index_select(0, rows.to(self.final.device))).to(self.device)


def logit_select(z: torch.Tensor | LogitRows, rows: torch.Tensor) -> torch.Tensor:
    """Flat rows ``rows`` of logits (B, T, V), (n, V)."""
    return z.select(rows) if isinstance(z, LogitRows) else z.reshape(-1, z.shape[-1]).index_select(0, rows)


@dataclass
class ProbeBatch:
    """Everything one forward batch gives the accumulators (HF ``hidden_states`` convention).

    ``hidden[l]`` for l = 0..L: index 0 is the embedding output, 1..L-1 the decoder block outputs,
    index L the last block's output *after the final norm*.
    """

    hidden: Sequence[torch.Tensor]  # L+1 tensors (B, T, d), float32
    keep: torch.Tensor  # (B, T) bool: real tokens, position 0 and padding dropped
    sample: torch.Tensor  # (B, T) bool: subset of keep (<= K per sequence) for covariance-type stats
    seq_ids: torch.Tensor  # (B,) int64: index of each sequence in the probe corpus
    domains: torch.Tensor  # (B,) int64: domain index of each sequence
    mlp: Sequence[torch.Tensor] | None = None  # L tensors (B, T, I): input of block l+1's MLP down-projection
    logits: torch.Tensor | LogitRows | None = None  # (B, T, V), or computed on demand
    input_ids: torch.Tensor | None = None  # (B, T)
    attention_mask: torch.Tensor | None = None  # (B, T)
    scored_bytes: torch.Tensor | None = None  # (B,) UTF-8 bytes of the span whose tokens are scored
    reference_hidden: Sequence[torch.Tensor] | None = None  # reference model, aligned to len(hidden)


@dataclass
class MetricValues:
    """What an accumulator computes: per-layer arrays (length L+1, ``None`` where undefined), scalars, counts."""

    per_layer: dict[str, list[Number]] = field(default_factory=dict)
    scalars: dict[str, Number] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # sample sizes behind the values


A = TypeVar("A", bound="Accumulator")


class Accumulator(Protocol):
    """Streaming accumulator; ``merge`` combines two partial states exactly (order-independent)."""

    def update(self, batch: ProbeBatch) -> None: ...

    def merge(self: A, other: A) -> A: ...

    def compute(self) -> MetricValues: ...


def to_number(x: float | torch.Tensor) -> Number:
    """Python float, or None if not finite (the caller documents why a value can be undefined)."""
    value = float(x)
    return value if value == value and abs(value) != float("inf") else None
