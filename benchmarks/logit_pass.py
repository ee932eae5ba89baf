"""The probe's logit statistics against the output head they follow, side by side in one run: per block of kept
rows, the head matmul (what the bare forward also pays) vs ``reference.keep_logits`` on those logits (block top-k,
the chunked exp pass: log-sum-exp, entropy, top-1, next-token logit, log tails), without and with two reference
roles (a lineage stage's base and parent). Batch 8 × 256 positions of a 49,152-token vocabulary (SmolLM2's shape),
random weights; run under each allocator (``COLLAPSE_BENCH_ALLOCATOR``, re-executed as the CLI does).

Usage: python benchmarks/logit_pass.py [--reps 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from collapse_bench import allocator
from collapse_bench.metrics.base import LogitRows
from collapse_bench.metrics.reference import ReferencedBatch, ReferenceRows, keep_logits

B, T, V, D = 8, 256, 49152, 576


def batch(final: torch.Tensor, head, keep: torch.Tensor, ids: torch.Tensor, refs: dict) -> ReferencedBatch:
    return ReferencedBatch(
        hidden=[final],
        keep=keep,
        sample=keep,
        seq_ids=torch.arange(B),
        domains=torch.zeros(B, dtype=torch.long),
        logits=LogitRows(final, head, V, torch.device("cpu")),
        input_ids=ids,
        references=refs,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    allocator.ensure()
    torch.set_grad_enabled(False)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(D, V, bias=False)
    lin.weight.copy_(torch.randn(V, D, generator=g) * 0.08)
    final = torch.randn(B, T, D, generator=g)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[:, 0] = False
    keep[5:, 180:] = False  # three shorter sequences: padding, as in a real batch
    ids = torch.randint(0, V, (B, T), generator=g)
    n = int(keep.sum())
    rows = keep.reshape(-1).nonzero().squeeze(1)
    refs = {}
    for role in ("base", "parent"):
        z = lin(final.reshape(-1, D)[rows]) + 0.5 * torch.randn(n, V, generator=g)
        v, i = torch.topk(z, 64)
        refs[role] = ReferenceRows(topk_index=i, topk_logp=v.float(), log_tail=torch.zeros(n))
    clock = dict.fromkeys(("head", "stats", "stats+2 roles"), 0.0)
    for r in range(a.reps + 1):  # the first repetition warms up and is not counted
        order = list(clock)[:: 1 if r % 2 else -1]
        for name in order:
            t0 = time.perf_counter()
            if name == "head":
                for s in range(0, n, 256):
                    lin(final.reshape(-1, D)[rows[s : s + 256]])
            else:
                keep_logits(batch(final, lin, keep, ids, refs if "roles" in name else {}))
            if r:
                clock[name] += time.perf_counter() - t0
    ms = {k: 1000 * v / a.reps for k, v in clock.items()}
    print(f"{n} kept rows x {V} vocabulary, {a.threads} threads, {a.reps} reps, allocator {allocator.in_use()}")
    print(f"head matmul {ms['head']:.1f} ms per batch")
    for name in ("stats", "stats+2 roles"):
        extra = ms[name] - ms["head"]  # keep_logits computes the head itself (LogitRows), block by block
        print(f"keep_logits, {name}: {ms[name]:.1f} ms = head + {extra:.1f} ms ({100 * extra / ms['head']:.1f}% of the head)")


if __name__ == "__main__":
    main()
