"""The fixed LoRA adaptation protocol: one seed = a fresh LoRA on a deep copy of the model, trained for
``steps`` AdamW steps, with held-out bpb at step 0, every ``eval_every`` steps and at the end.

Seeds fix everything stochastic: the data order (seeded epoch-wise permutations of the train set,
``random.Random``), the LoRA init (``torch.manual_seed(seed)`` before injection) and the dropout masks
(``torch.manual_seed`` per (seed, step, micro-batch)). The torch RNG state and the deterministic-
algorithms flag are restored afterwards; the caller's model is never modified (only its copy is). Before
step 1 the first batch's gradient signal (``gradsignal.py``) is computed on the copy: it draws no random
number and writes no ``.grad``, so the trajectory is the same with or without it.

Training loss of a step = summed NLL of the target tokens of the global batch / their count (nats per
token). Learning-rate factor at step t (1-based): ``t / warmup`` while ``t <= warmup``, then 1
(constant), ``(steps - t + 1) / (steps - warmup + 1)`` (linear) or ``0.5 (1 + cos(pi u))`` with
``u = (t - warmup - 1) / (steps - warmup)`` (cosine).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CollapseBenchError
from ..parallel import Parallel
from .encode import Encoded, accepts_logits_to_keep, collate, forward_nll, left_padded
from .gradsignal import GradSignal, first_batch_signal
from .scores import bits_per_byte


@dataclass(frozen=True)
class Protocol:
    steps: int
    batch_size: int
    micro_batch_size: int
    seq_len: int
    eval_every: int
    eval_batch_size: int
    lr: float
    weight_decay: float
    adam_betas: tuple[float, float]
    schedule: str
    warmup_steps: int
    max_grad_norm: float | None
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_target_modules: str | tuple[str, ...]
    diag_steps: int

    @classmethod
    def from_params(cls, p: dict[str, Any], eval_batch_size: int | None = None) -> Protocol:
        if p["batch_size"] % p["micro_batch_size"]:
            raise CollapseBenchError(
                f"batch_size {p['batch_size']} is not a multiple of micro_batch_size {p['micro_batch_size']}"
            )
        tm = p["lora_target_modules"]
        return cls(
            p["steps"],
            p["batch_size"],
            p["micro_batch_size"],
            p["seq_len"],
            p["eval_every"],
            eval_batch_size or p["eval_batch_size"],
            p["lr"],
            p["weight_decay"],
            tuple(p["adam_betas"]),
            p["schedule"],
            p["warmup_steps"],
            p["max_grad_norm"],
            p["lora_r"],
            p["lora_alpha"],
            p["lora_dropout"],
            tm if isinstance(tm, str) else tuple(tm),
            p["diag_steps"],
        )

    @property
    def n_micro(self) -> int:
        return self.batch_size // self.micro_batch_size

    def eval_steps(self) -> list[int]:
        return sorted({0, self.steps, *range(self.eval_every, self.steps, self.eval_every)})

    def lr_factor(self, t: int) -> float:
        w = self.warmup_steps
        if t <= w:
            return t / w
        if self.schedule == "linear":
            return (self.steps - t + 1) / (self.steps - w + 1)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * (t - w - 1) / max(1, self.steps - w)))
        return 1.0


@dataclass
class SeedRun:
    seed: int
    steps: list[int] = field(default_factory=list)
    bpb: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    update_norm: list[float] = field(default_factory=list)
    exact_match: float | None = None
    grad_signal: GradSignal | None = None  # of the first batch, before step 1 (gradsignal.py)
    trainable_params: int = 0
    train_tokens: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of every step: consecutive slices of concatenated seeded permutations of range(n)."""
    rng = random.Random(f"plasticity-order-{seed}")
    flat: list[int] = []
    while len(flat) < steps * batch_size:
        perm = list(range(n))
        rng.shuffle(perm)
        flat += perm
    return [flat[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def _mix(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + micro


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Fork the torch RNGs and turn on deterministic algorithms; both restored on exit."""
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deterministic.*")
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def weights_sha256(model: Any) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes (checks that a protocol left the weights as found)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def inject_lora(model: Any, proto: Protocol, seed: int) -> Any:
    """``model`` with a freshly initialised (``seed``) trainable LoRA injected in place (peft ``get_peft_model``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=proto.lora_r,
        lora_alpha=proto.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; a float alpha works (scaling = alpha / r)
        lora_dropout=proto.lora_dropout,
        target_modules=list(proto.lora_target_modules)
        if isinstance(proto.lora_target_modules, tuple)
        else proto.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def lora_copy(model: Any, proto: Protocol, seed: int) -> Any:
    """A deep copy of ``model`` with the LoRA of :func:`inject_lora` (tests and benchmarks that keep the LoRA model)."""
    import copy

    return inject_lora(copy.deepcopy(model), proto, seed)


@contextlib.contextmanager
def lora_on(model: Any, proto: Protocol, seed: int) -> Iterator[Any]:
    """``model`` itself with a freshly initialised (``seed``) trainable LoRA injected -- no copy of the weights --;
    on exit the LoRA layers are removed (``unload``, not merged), every parameter's ``requires_grad`` and the train /
    eval mode are restored, and the weights are checked unchanged by :func:`weights_sha256`. A model whose weights are
    offloaded (``--device-map`` with ``disk``: parameters on ``meta``) cannot be trained here: one clear error."""
    if any(p.device.type == "meta" for p in model.parameters()):
        raise CollapseBenchError(
            "plasticity trains a LoRA on the model: not on one offloaded by --device-map (weights on disk); "
            "run the plasticity tasks without --device-map, or with a map that keeps every weight on a device"
        )
    before = weights_sha256(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    training = model.training
    peft_model = inject_lora(model, proto, seed)
    try:
        yield peft_model
    finally:
        restored = peft_model.unload()  # the LoRA layers replaced by the original modules
        for n, p in restored.named_parameters():
            p.requires_grad_(grads[n])
        restored.train(training)
        if weights_sha256(restored) != before:
            raise CollapseBenchError("plasticity changed the model's weights (LoRA unload failed); results after it are void")


def eval_bpb(model: Any, items: Sequence[Encoded], batch_size: int, pad_id: int, par: Parallel, keep: bool = False) -> float:
    """Held-out bpb over ``items`` (length-sorted micro-batches, sharded over ranks, sums reduced)."""
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: (len(items[i].ids), i))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    nll = 0.0
    model.eval()
    with torch.no_grad():
        for c in par.mine(len(chunks)):
            batch = collate([items[i] for i in chunks[c]], pad_id, device)
            nll += float(forward_nll(model, batch, keep)[0].double())
    (total,) = par.sum([nll])
    return bits_per_byte(total, sum(e.n_bytes for e in items))


def normalise_answer(text: str) -> str:
    """First line, stripped of whitespace and trailing punctuation, casefolded."""
    lines = text.strip().splitlines()
    return (lines[0] if lines else "").strip().rstrip(".!,;:").strip().casefold()


def exact_match(
    model: Any, tok: Any, prompts: Sequence[list[int]], answers: Sequence[str], batch_size: int, par: Parallel
) -> float:
    """Share of greedy continuations whose normalised first line equals the answer (casefolded)."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    budget = max(len(tok(" " + a, add_special_tokens=False).input_ids) for a in answers) + 2
    gen = GenerationConfig(max_new_tokens=budget, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    chunks = [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    hits = 0
    model.eval()
    with torch.no_grad():
        for c in par.mine(len(chunks)):
            ids, attn = left_padded([prompts[i] for i in chunks[c]], tok.pad_token_id, device)
            out = model.generate(input_ids=ids, attention_mask=attn, generation_config=gen)
            for row, i in zip(out[:, ids.shape[1] :], chunks[c]):
                hits += normalise_answer(tok.decode(row, skip_special_tokens=True)) == answers[i].casefold()
    (total,) = par.sum([float(hits)])
    return total / len(prompts)


def train_seed(
    model: Any,
    tok: Any,
    train: Sequence[Encoded],
    held_out: Sequence[Encoded],
    proto: Protocol,
    seed: int,
    *,
    qa: tuple[Sequence[list[int]], Sequence[str]] | None = None,
    par: Parallel | None = None,
    progress: bool = False,
    desc: str = "plasticity",
    grad_signal_at_0: bool = True,
) -> SeedRun:
    """Run the protocol for one seed and return its curve, diagnostics, exact match and (``grad_signal_at_0``)
    the gradient signal of its first batch, which leaves the trajectory unchanged."""
    from tqdm.auto import tqdm

    par = par or Parallel()
    if proto.n_micro % par.world:
        raise CollapseBenchError(f"{proto.n_micro} micro-batches per step cannot be split evenly over {par.world} processes")
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    keep = accepts_logits_to_keep(model)
    run = SeedRun(seed)
    evals = set(proto.eval_steps())
    with isolated_rng(device):
        t0 = time.perf_counter()
        with lora_on(model, proto, seed) as peft_model:  # on the model itself: no copy of the weights
            params = [p for p in peft_model.parameters() if p.requires_grad]
            run.trainable_params = sum(p.numel() for p in params)
            opt = torch.optim.AdamW(params, lr=proto.lr, betas=proto.adam_betas, weight_decay=proto.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: proto.lr_factor(i + 1))
            wrapped = par.wrap(peft_model)
            run.train_s += time.perf_counter() - t0

            def evaluate(step: int) -> None:
                t = time.perf_counter()
                run.steps.append(step)
                run.bpb.append(eval_bpb(peft_model, held_out, proto.eval_batch_size, pad, par, keep))
                run.eval_s += time.perf_counter() - t

            evaluate(0)
            order = batch_order(len(train), proto.steps, proto.batch_size, seed)
            if grad_signal_at_0:  # the unwrapped model in eval mode: no .grad, RNG draw or DDP hook touched
                run.grad_signal = first_batch_signal(
                    peft_model, [train[i] for i in order[0]], proto.micro_batch_size, pad, keep, par
                )
            bar = tqdm(
                order,
                desc=desc,
                unit="step",
                disable=not progress or not par.main,
                leave=False,
            )
            for step, idx in enumerate(bar, 1):
                t = time.perf_counter()
                peft_model.train()
                micro = [idx[j : j + proto.micro_batch_size] for j in range(0, len(idx), proto.micro_batch_size)]
                n_tokens = max(1, sum(max(0, len(train[i].ids) - train[i].start) for i in idx))
                mine = par.mine(len(micro))
                local = 0.0
                for k, j in enumerate(mine):
                    torch.manual_seed(_mix(seed, step, j))
                    batch = collate([train[i] for i in micro[j]], pad, device)
                    with par.no_sync(wrapped, sync=k == len(mine) - 1):
                        nll, _ = forward_nll(wrapped, batch, keep)
                        (nll * (par.world / n_tokens)).backward()
                    local += float(nll.detach())
                run.train_tokens += n_tokens
                (loss_sum,) = par.sum([local])
                run.train_loss.append(loss_sum / n_tokens)
                norm = torch.nn.utils.clip_grad_norm_(params, proto.max_grad_norm or math.inf)
                before = [p.detach().clone() for p in params] if step <= proto.diag_steps else None
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if before is not None:
                    run.grad_norm.append(float(norm))
                    run.update_norm.append(
                        math.sqrt(sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(params, before)))
                    )
                run.train_s += time.perf_counter() - t
                if step in evals:
                    evaluate(step)
                bar.set_postfix(loss=f"{run.train_loss[-1]:.3f}", bpb=f"{run.bpb[-1]:.3f}")
            bar.close()
            if qa is not None and qa[0]:
                t = time.perf_counter()
                run.exact_match = exact_match(peft_model, tok, qa[0], qa[1], proto.eval_batch_size, par)
                run.eval_s += time.perf_counter() - t
            del wrapped, opt
    return run
