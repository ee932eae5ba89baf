"""Gradient signal at the start of adaptation: per-example gradients of each seed's first training batch at the
freshly initialised LoRA (step 0, before any optimiser step).

For the n examples i of the first global batch, S_i = summed NLL (nats) of example i's target tokens,
N = max(1, Σ_i target tokens of i) (so Σ_i S_i / N is the protocol's step-1 training loss) and ∇ the gradient
w.r.t. all trainable LoRA parameters, flattened into one vector:

    g_i        = (n / N) ∇S_i          so that  ḡ = (1/n) Σ_i g_i = ∇(Σ_i S_i / N), the gradient of the step-1 loss
    grad_norm0 = ‖ḡ‖₂
    grad_snr   = ‖ḡ‖₂² / V,            V = (1/n) Σ_i ‖g_i − ḡ‖₂²   (population normalisation 1/n, not 1/(n − 1))

``grad_snr`` does not depend on the common factor n / N. It is ``None`` (infinite or 0/0) when
V ≤ ε² (V + ‖ḡ‖²), ε the machine epsilon of the model's least precise floating-point parameter dtype: the
examples' gradients agree to rounding (identical examples; n = 1). Both are computed in eval mode (no dropout,
no random number drawn), so ``grad_norm0`` is the pre-clipping gradient norm of step 1 without dropout masks:
it equals the diagnostics' first ``grad_norm`` when ``lora_dropout`` is 0 (and the model has no dropout of
its own).

Per-example gradients, exact: ``torch.func.vmap(grad(loss))`` over ``functional_call`` with the LoRA
parameters, one call per micro-batch, without attention mask (the batch is right-padded and attention causal:
no target token attends to a pad, and positions are 0..T−1 either way); where the model's forward cannot be
vmapped (data-dependent control flow), ``grad(loss)`` per example, unpadded (``"loop"``). Statistics in float64.
Data parallel: rank r holds micro-batches r, r + W, … of the global batch; per micro-batch c of m_c examples,
s_c = Σ_{i∈c} ∇S_i and M2_c = Σ_{i∈c} ‖∇S_i − s_c/m_c‖². All-reduced: the vector Σ_c s_c (→ the mean),
then Q = Σ_c M2_c + m_c ‖s_c/m_c − mean‖² (Chan et al.'s exact pairwise merge), so V = (n/N)² Q / n is the
two-pass value for every process count, up to summation order.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..parallel import Parallel
from .encode import Encoded, collate

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GradSignal:
    grad_norm0: float
    grad_snr: float | None
    method: str  # "vmap" or "loop"
    seconds: float


def snr(mean_sq: float, var: float, eps: float) -> float | None:
    """‖ḡ‖² / V; ``None`` when V is at or below the rounding of the gradients (module docstring)."""
    if var <= eps * eps * (var + mean_sq):
        return None
    return mean_sq / var


def _row_loss(model: Any) -> Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """S_i of one right-padded row as a function of the LoRA parameters (``functional_call``)."""
    from torch.func import functional_call

    def loss(theta: Params, ids: torch.Tensor, scored: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        inputs: dict[str, Any] = {"input_ids": ids[None], "use_cache": False}
        targets, mask = ids[1:], scored[1:]
        if pos is not None:  # LM head at the micro-batch's scored positions only
            inputs["logits_to_keep"] = pos
            targets, mask = targets[pos], mask[pos]
        logits = functional_call(model, theta, args=(), kwargs=inputs).logits[0]
        logits = logits if pos is not None else logits[:-1]
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        return torch.where(mask, nll, torch.zeros_like(nll)).sum()

    return loss


def _keep(scored: torch.Tensor, keep: bool) -> torch.Tensor | None:
    """``logits_to_keep`` positions (as in ``forward_nll``), or None without ``keep``."""
    if not keep:
        return None
    pos = scored.nonzero().squeeze(1)
    return pos if len(pos) else torch.zeros(1, dtype=torch.long, device=pos.device)


def per_example_grads(model: Any, items: Sequence[Encoded], pad_id: int, keep: bool, method: str = "vmap") -> torch.Tensor:
    """The rows ∇S_i (one per item, flattened over the trainable parameters in ``named_parameters`` order)."""
    from torch.func import grad, vmap

    device = next(model.parameters()).device
    theta = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    loss = _row_loss(model)
    with warnings.catch_warnings():  # no vmap batching rule for CPU/flash SDPA: functorch loops, correctly
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        if method == "vmap":
            batch = collate(items, pad_id, device)
            pos = _keep(batch["scored"][:, 1:].any(0), keep)
            g = vmap(grad(loss), in_dims=(None, 0, 0, None), randomness="error")(theta, batch["input_ids"], batch["scored"], pos)
            return torch.cat([g[k].flatten(1) for k in theta], 1)
        rows = []
        for e in items:
            one = collate([e], pad_id, device)
            pos = _keep(one["scored"][0, 1:], keep)
            g = grad(loss)(theta, one["input_ids"][0], one["scored"][0], pos)
            rows.append(torch.cat([g[k].flatten() for k in theta]))
        return torch.stack(rows)


def grad_signal(
    model: Any,
    micro: Sequence[Sequence[Encoded]],
    n: int,
    n_tokens: int,
    pad_id: int,
    keep: bool,
    par: Parallel,
    method: str = "vmap",
) -> GradSignal:
    """``grad_norm0`` and ``grad_snr`` of a global batch of ``n`` examples and ``n_tokens`` target tokens,
    of which this rank holds the micro-batches ``micro``, at the model's current LoRA parameters."""
    t0 = time.perf_counter()
    eps = max(torch.finfo(p.dtype).eps for p in model.parameters() if p.is_floating_point())
    was = model.training
    model.eval()
    sums: list[torch.Tensor] = []
    m2: list[float] = []
    try:
        for items in micro:
            try:
                g = per_example_grads(model, items, pad_id, keep, method).double()
            except RuntimeError as exc:  # the forward cannot be vmapped: one example at a time
                if method != "vmap" or "vmap" not in str(exc):
                    raise
                method = "loop"
                g = per_example_grads(model, items, pad_id, keep, method).double()
            s = g.sum(0)
            sums.append(s)
            m2.append(float((g - s / len(items)).pow(2).sum()))
            del g
    finally:
        model.train(was)
    mean = par.sum_tensor(torch.stack(sums).sum(0)) / n
    q = sum(m + len(items) * float((s / len(items) - mean).pow(2).sum()) for m, s, items in zip(m2, sums, micro))
    (q_total,) = par.sum([q])
    scale = n / max(1, n_tokens)
    mean_sq, var = float(mean.pow(2).sum()) * scale**2, q_total / n * scale**2
    return GradSignal(math.sqrt(mean_sq), snr(mean_sq, var, eps), method, time.perf_counter() - t0)


def first_batch_signal(
    model: Any, batch: Sequence[Encoded], micro_batch_size: int, pad_id: int, keep: bool, par: Parallel, method: str = "vmap"
) -> GradSignal:
    """:func:`grad_signal` of a global batch, split into micro-batches as the protocol splits it."""
    micro = [batch[j : j + micro_batch_size] for j in range(0, len(batch), micro_batch_size)]
    n_tokens = sum(max(0, len(e.ids) - e.start) for e in batch)
    return grad_signal(model, [micro[j] for j in par.mine(len(micro))], len(batch), n_tokens, pad_id, keep, par, method)
