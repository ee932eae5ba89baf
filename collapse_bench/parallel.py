"""Data parallelism on ``torch.distributed`` as ``accelerate launch`` / ``torchrun`` start it: a no-op in one process.

No communication layer of our own: every collective is one ``torch.distributed`` call (gloo on CPU, NCCL on GPU).
Users: the plasticity protocol (DDP over a fixed micro-batch partition, :mod:`collapse_bench.plasticity.protocol`),
the probe (batches strided over ranks, accumulators gathered and merged in rank order,
:mod:`collapse_bench.probe.runner`), lm-eval (its own request sharding, :mod:`collapse_bench.ood.backends`) and
``evaluate`` (rank 0 writes; kinds without data parallelism run on rank 0 and their block is broadcast).

Plasticity: every step's global batch is split into ``batch_size / micro_batch_size`` micro-batches; rank ``r``
of ``W`` processes micro-batches ``r, r + W, ...``. Each micro-batch's loss is
``W x (summed target NLL) / (target tokens of the whole global batch)`` and DDP averages gradients
over ranks, so every process count computes the same gradient as one process (up to float summation
order), and dropout is seeded per (seed, step, micro-batch), so its masks do not depend on it either.
"""

from __future__ import annotations

import contextlib
import io
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

A = TypeVar("A")
T = TypeVar("T")


def _pack(obj: Any) -> bytes:
    """``obj`` serialised by ``torch.save`` (nested tensors included), to be loaded onto any device."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unpack(data: bytes, device: torch.device) -> Any:
    return torch.load(io.BytesIO(data), map_location=device, weights_only=False)  # our own ranks' bytes only


class Parallel:
    """The ranks of an initialised process group (``enabled=False``: this process alone, even inside one)."""

    def __init__(self, enabled: bool = True) -> None:
        import torch.distributed as dist

        self.on = enabled and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
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

    def merged(self, accumulators: list[A]) -> list[A]:
        """Rank 0: every rank's accumulators merged in rank order, ``acc_0.merge(acc_1).merge(acc_2)...``; the other
        ranks get their own back unmerged (their block is discarded: ``evaluate`` broadcasts rank 0's). Identity in
        one process.

        Rank r sends its serialised state to rank 0 in turn (``send_object_list``), so rank 0 holds at most two
        states at a time (its own and the one being merged) and the other ranks none extra."""
        if not self.on:
            return accumulators
        import torch.distributed as dist

        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        if not self.main:
            dist.send_object_list([_pack(accumulators)], dst=0, device=self.device)
            return accumulators
        out: list[A] = accumulators
        for r in range(1, self.world):
            box: list[Any] = [None]
            dist.recv_object_list(box, src=r, device=self.device)
            part = _unpack(box[0], device)
            box.clear()
            if not part:  # a rank with no batch has none
                continue
            out = part if not out else [a.merge(b) for a, b in zip(out, part)]  # type: ignore[attr-defined]
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (identity in one process)."""
        if not self.on:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` concatenated along dim 0 in rank order (a 0-d tensor counts as 1-d)."""
        if not self.on:
            return t
        import torch.distributed as dist

        home = t.device
        t = (t.reshape(1) if t.dim() == 0 else t).to(self.device).contiguous()  # NCCL gathers CUDA tensors only
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts).to(home)

    def barrier(self) -> None:
        if self.on:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: Any) -> Any:
        if not self.on:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = next(model.parameters()).device
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, wrapped: Any, sync: bool) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce on all but a rank's last micro-batch of a step."""
        return contextlib.nullcontext() if sync or not self.on else wrapped.no_sync()
