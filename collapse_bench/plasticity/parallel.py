"""Data parallelism for the plasticity protocol: a no-op in one process; under ``accelerate launch``
(or ``torchrun``) with an initialised process group, DDP over ranks with a fixed micro-batch partition.

Every step's global batch is split into ``batch_size / micro_batch_size`` micro-batches; rank ``r``
of ``W`` processes micro-batches ``r, r + W, ...``. Each micro-batch's loss is
``W x (summed target NLL) / (target tokens of the whole global batch)`` and DDP averages gradients
over ranks, so every process count computes the same gradient as one process (up to float summation
order), and dropout is seeded per (seed, step, micro-batch), so its masks do not depend on it either.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch


class Parallel:
    def __init__(self) -> None:
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1
        nccl = self.on and dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, n: int) -> list[int]:
        """Indices ``0..n-1`` of micro-batches this rank processes."""
        return list(range(self.rank, n, self.world))

    def sum(self, values: list[float], dtype: torch.dtype = torch.float64) -> list[float]:
        """Element-wise sum over ranks (identity in one process)."""
        if not self.on:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=dtype, device=self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise float64 sum of a tensor over ranks (identity in one process), on ``t``'s device."""
        if not self.on:
            return t.double()
        import torch.distributed as dist

        buf = t.to(self.device, torch.float64, copy=True)
        dist.all_reduce(buf)
        return buf.to(t.device)

    def wrap(self, model: Any) -> Any:
        if not self.on:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = next(model.parameters()).device
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, wrapped: Any, sync: bool) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce on all but a rank's last micro-batch of a step."""
        return contextlib.nullcontext() if sync or not self.on else wrapped.no_sync()
