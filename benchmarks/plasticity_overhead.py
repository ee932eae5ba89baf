"""Plasticity-protocol overhead, measured side by side in one run on the same batches.

(a) protocol training time (deep copy + LoRA injection + training steps with micro-batch partition,
    per-micro-batch dropout seeding, target-span loss, grad clipping, diagnostics; evaluation excluded)
    / a bare peft loop (``get_peft_model``, AdamW, one ``model(input_ids, attention_mask, labels)`` per
    batch of the same examples, ``backward``, ``step``) of the same steps, batch and sequence length;
(b) the evaluation time of the protocol (held-out bpb at every eval step + exact match), reported apart.
The two loops alternate ``--reps`` times (bare first, then protocol, then the other order) so that
machine drift hits both alike; times are summed over repetitions.

Usage: python benchmarks/plasticity_overhead.py [--model smollm2-135m-instruct] [--task plasticity_quick] [--steps N] [--reps 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from collapse_bench.data import resolve_data_dir
from collapse_bench.models import load_model
from collapse_bench.plasticity.encode import encode, prompt_ids
from collapse_bench.plasticity.protocol import Protocol, batch_order, train_seed
from collapse_bench.plasticity.task import prepare
from collapse_bench.tasks import TaskRegistry


def bare_loop(model, tok, train, proto: Protocol, seed: int) -> float:
    """The reference: the plainest peft training loop over the same example batches; returns seconds."""
    from peft import LoraConfig, get_peft_model

    work = copy.deepcopy(model)  # not timed: the bare loop may train its model in place
    pad = tok.pad_token_id
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    pm = get_peft_model(work, LoraConfig(r=proto.lora_r, lora_alpha=proto.lora_alpha, lora_dropout=proto.lora_dropout,
                                         target_modules=proto.lora_target_modules, task_type="CAUSAL_LM"))
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=proto.lr, weight_decay=proto.weight_decay)
    for idx in batch_order(len(train), proto.steps, proto.batch_size, seed):
        items = [train[i] for i in idx]
        T = max(len(e.ids) for e in items)
        ids = torch.tensor([e.ids + [pad] * (T - len(e.ids)) for e in items])
        attn = torch.tensor([[1] * len(e.ids) + [0] * (T - len(e.ids)) for e in items])
        labels = torch.tensor([[-100] * e.start + e.ids[e.start:] + [-100] * (T - len(e.ids)) for e in items])
        loss = pm(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="plasticity_quick")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the task's steps (default: the task's)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    task = TaskRegistry().task(args.task)
    p = dict(task.params, steps=args.steps or task.params["steps"])
    data = prepare(task, resolve_data_dir(args.data_dir), None)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    proto = Protocol.from_params(p)
    train = encode(tok, data.train, p["chat_template"], proto.seq_len)
    held_out = encode(tok, data.eval, p["chat_template"])
    qa = ([prompt_ids(tok, q, p["chat_template"]) for q, _ in data.qa], [a for _, a in data.qa]) if data.qa else None
    tokens = sum(len(train[i].ids) for b in batch_order(len(train), proto.steps, proto.batch_size, 0) for i in b)
    print(f"model {args.model}, task {task.name}: {proto.steps} steps x batch {proto.batch_size} "
          f"(micro-batches of {proto.micro_batch_size}), seq_len {proto.seq_len}, {tokens} training tokens, "
          f"{torch.get_num_threads()} threads, {args.reps} repetitions")
    bare = prot = prot_eval = prot_wall = 0.0
    for rep in range(args.reps):
        for which in (("bare", "protocol") if rep % 2 == 0 else ("protocol", "bare")):
            if which == "bare":
                t = bare_loop(model, tok, train, proto, seed=0)
                bare += t
            else:
                t0 = time.perf_counter()
                run = train_seed(model, tok, train, held_out, proto, 0, qa=qa)
                prot_wall += time.perf_counter() - t0
                prot += run.train_s
                prot_eval += run.eval_s
                t = run.train_s
            print(f"  rep {rep} {which:8s} training {t:7.2f} s")
    n_evals = len(proto.eval_steps())
    print(f"(a) protocol training / bare peft loop: {prot / bare:.3f}  ({prot:.2f} s / {bare:.2f} s)   target <= 1.05")
    print(f"(b) protocol evaluation: {prot_eval / args.reps:.2f} s per run ({n_evals} held-out evals of "
          f"{len(held_out)} items{' + exact match on %d questions' % len(qa[0]) if qa else ''}); "
          f"whole protocol run {prot_wall / args.reps:.2f} s")


if __name__ == "__main__":
    main()
