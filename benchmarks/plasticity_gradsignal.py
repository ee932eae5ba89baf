"""Cost of the step-0 gradient signal (collapse_bench/plasticity/gradsignal.py) on a task's first batch.

Times, alternated ``--reps`` times on the fresh LoRA of seed 0 (after one untimed warm-up of each):
the signal with ``vmap`` (per micro-batch), with the per-example ``loop``, and one protocol training step of the
same batch (forward + backward per micro-batch, as ``train_seed`` does; no optimiser step). Medians and minima of
wall seconds and of process CPU seconds (all threads; steadier than wall time on a busy machine); the overhead per
seed is one signal.

Usage: python benchmarks/plasticity_gradsignal.py [--model smollm2-135m-instruct] [--task plasticity_standard_world] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from collapse_bench.data import resolve_data_dir
from collapse_bench.models import load_model
from collapse_bench.plasticity.encode import accepts_logits_to_keep, collate, encode, forward_nll
from collapse_bench.plasticity.gradsignal import first_batch_signal
from collapse_bench.parallel import Parallel
from collapse_bench.plasticity.protocol import Protocol, batch_order, lora_copy
from collapse_bench.plasticity.task import prepare
from collapse_bench.tasks import TaskRegistry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="plasticity_standard_world")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    task = TaskRegistry().task(args.task)
    data = prepare(task, resolve_data_dir(args.data_dir), None)
    loaded = load_model(args.model, device="cpu", dtype=args.dtype)
    tok, p = loaded.tokenizer, task.params
    proto = Protocol.from_params(p)
    train = encode(tok, data.train, p["chat_template"], proto.seq_len)
    batch = [train[i] for i in batch_order(len(train), proto.steps, proto.batch_size, 0)[0]]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    keep = accepts_logits_to_keep(loaded.model)
    with torch.random.fork_rng():
        model = lora_copy(loaded.model, proto, 0)
    n_tokens = sum(len(e.ids) - e.start for e in batch)
    micro = [batch[j : j + proto.micro_batch_size] for j in range(0, len(batch), proto.micro_batch_size)]

    def step() -> None:
        model.train()
        for items in micro:
            nll, _ = forward_nll(model, collate(items, pad, "cpu"), keep)
            (nll / n_tokens).backward()
        model.zero_grad(set_to_none=True)

    runs = {
        "vmap": lambda: first_batch_signal(model, batch, proto.micro_batch_size, pad, keep, Parallel()),
        "loop": lambda: first_batch_signal(model, batch, proto.micro_batch_size, pad, keep, Parallel(), "loop"),
        "train step": step,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(args.reps + 1):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            if rep:
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            elif out is not None:
                print(f"{name}: grad_norm0 {out.grad_norm0:.6g} grad_snr {out.grad_snr} ({out.method})")
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    print(
        f"{args.model} {args.task}: batch {len(batch)} (micro {proto.micro_batch_size}), {n_tokens} target tokens, "
        f"{trainable} LoRA parameters, {torch.get_num_threads()} threads"
    )
    for name, xs in times.items():
        c = cpu[name]
        print(
            f"  {name:10s} wall median {statistics.median(xs):.3f} s, min {min(xs):.3f} s; "
            f"cpu median {statistics.median(c):.3f} s, min {min(c):.3f} s"
        )


if __name__ == "__main__":
    main()
