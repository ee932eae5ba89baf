"""``--probe-layers`` and the probe's memory estimate, printed before the pass and checked against what is free.

Layers (hidden-state indices 0..L): ``all``; ``card`` = the v1 card layers (the summary's; the per-layer arrays are
None elsewhere for the scatter families); or a comma list. Default ``auto``: ``card`` when d >= 8192, else ``all``.
The scatter families (covariance spectra, dataset entropy, CKA) hold float64 d x d matrices per kept layer, which is
what grows: 81 layers x d = 8192 is 43.5 GB per family (docs/user-guide/scaling.md has the table).

The estimate counts the accumulators' float64/float32 state from their shapes (the sizes below mirror each
family's ``zeros``/``_init``; ``tests/test_probe_layers.py`` checks them against the tensors a run allocates) plus one
batch's hidden states and logits; the model's weights are already loaded and not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CollapseBenchError

AUTO_CARD_DIM = 8192  # d at and above which ``auto`` keeps the card layers only
GIB = 2**30


def parse_layers(spec: str | None) -> str | list[int]:
    """``--probe-layers``: 'auto', 'all', 'card' or a comma list of non-negative ints (one clear error otherwise)."""
    spec = (spec or "auto").strip()
    if spec in ("auto", "all", "card"):
        return spec
    try:
        picked = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        picked = []
    if not picked or picked[0] < 0:
        raise CollapseBenchError(f"--probe-layers {spec!r}: expected card, all, auto or a comma list of layer indices")
    return picked


def resolve_layers(spec: str | list[int], n_hidden: int, dim: int, card: list[int]) -> list[int] | None:
    """The hidden-state indices the scatter families keep for a model with ``n_hidden`` = L+1 entries (None: all)."""
    if spec == "auto":
        spec = "card" if dim >= AUTO_CARD_DIM else "all"
    if spec == "all":
        return None
    if spec == "card":
        return list(card)
    assert isinstance(spec, list)
    bad = [i for i in spec if i >= n_hidden]
    if bad:
        raise CollapseBenchError(f"--probe-layers {bad[0]}: this model has hidden-state layers 0..{n_hidden - 1}")
    return list(spec)


@dataclass(frozen=True)
class Estimate:
    accumulators: int  # bytes of accumulator state
    batch: int  # bytes of one batch's hidden states + logits (float32)
    scatter_layers: int

    @property
    def total(self) -> int:
        return self.accumulators + self.batch

    def times(self, c: Copies) -> Estimate:
        """The memory of ``c.ranks`` ranks sharing this device, plus rank 0's merge (one more state at a time)."""
        if c.ranks == 1 and not c.merge:
            return self
        return Estimate(self.accumulators * (c.ranks + c.merge), self.batch * c.ranks, self.scatter_layers)


@dataclass(frozen=True)
class Copies:
    ranks: int  # processes whose state lives in this device's memory
    merge: int  # extra states rank 0 holds while merging (``Parallel.merged``)


def copies(world: int, device: str) -> Copies:
    """Data-parallel ranks on one host share its RAM (CPU: the ranks of this node, ``LOCAL_WORLD_SIZE`` as torchrun
    and accelerate set it); on GPUs each rank has its own device."""
    if world <= 1:
        return Copies(1, 0)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or world)
    return Copies(local if not device.startswith("cuda") else 1, 1)


def estimate(
    *,
    n_hidden: int,
    dim: int,
    scatter_layers: int,
    vocab: int,
    batch_tokens: int,
    reservoir: int,
    n_domains: int,
    intermediate: int,
    ref_dim: int | None = None,
    roles: int = 0,
    card_layers: int = 4,
    flush_every: int = 256,
) -> Estimate:
    """Bytes of the probe's state for a model with ``n_hidden`` = L+1 hidden-state entries of width ``dim``
    (``flush_every``: the dataset-entropy rows pending between folds; ``roles``: reference roles, ≤ 512 pooled rows of
    each at the card layers)."""
    S, L, d, f64, f32 = scatter_layers, n_hidden, dim, 8, 4
    covariance = S * f64 * (1 + 2 * d + d * d)  # n, mean, maxabs, M2
    dataset_entropy = S * f64 * (d + d * d) + flush_every * S * d * f64  # mean, M2; pending pooled rows
    dr = ref_dim or 0
    cka = S * f64 * (1 + d + dr + d * d + dr * dr + d * dr) if ref_dim else 0  # n, means, Sxx, Syy, Sxy
    reservoir_b = reservoir * (8 + 16) + L * reservoir * d * f32  # keys, (seq, pos) ids, rows
    anisotropy = L * f64 * (d + 1)
    prompt_entropy = L * 2 * f64
    domain = L * n_domains * f64 * (d + 2)  # count, sums, sumsq
    trajectory = L * 6 * f64
    dormant = (L - 1) * intermediate * f64
    neighbours = roles * 512 * card_layers * (d + (ref_dim or d)) * f32
    total = covariance + dataset_entropy + cka + reservoir_b + anisotropy + prompt_entropy + domain + trajectory + dormant
    return Estimate(total + neighbours, batch_tokens * (L * d + vocab) * f32, S)


def available_bytes(device: str) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's ``MemAvailable`` (Linux ``/proc/meminfo``: free
    plus reclaimable page cache -- free pages alone would refuse runs on a machine that has read many files); None
    when unknown (no check)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check(est: Estimate, card: Estimate, device: str, task: str) -> str:
    """The line printed before the pass; raises when the estimate exceeds the free memory of ``device``."""
    line = (
        f"{task}: probe memory estimate {est.total / GIB:.2f} GiB ({est.accumulators / GIB:.2f} GiB of accumulators for "
        f"{est.scatter_layers} scatter layers, {est.batch / GIB:.2f} GiB per batch)"
    )
    free = available_bytes(device)
    if free is not None and est.total > free:
        hint = f"--probe-layers card (≈ {card.total / GIB:.2f} GiB)" if card.total < est.total else "a smaller --batch-size"
        raise CollapseBenchError(f"{line} exceeds the {free / GIB:.2f} GiB free on {device}; use {hint} or a larger device")
    return line
