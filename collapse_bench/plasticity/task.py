"""``kind: plasticity`` — how well does the checkpoint still learn? A fixed LoRA adaptation (protocol
v1, ``protocol.py``) per seed, its held-out bpb curve turned into scalars (``scores.py``).

Result block: ``metrics`` (mean over seeds of bpb_initial, bpb_final, bpb_auc, gain,
steps_to_threshold, threshold_bpb, grad_norm0, grad_snr (``gradsignal.py``) and, for novel knowledge,
exact_match; each with ``<id>_std``),
``per_seed`` (the same per seed), ``curves`` ({seed: {steps, bpb, train_loss}}; ``train_loss`` has one
entry per training step 1..steps), ``diagnostics`` (grad and update norms of the first ``diag_steps``
steps; ``grad_signal_method``) and ``counts``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import RunContext
from ..errors import CollapseBenchError
from ..parallel import Parallel
from ..tasks.params import PLASTICITY_PARAMS
from .data import PlasticityData, build_data
from .encode import encode, prompt_ids
from .protocol import Protocol, SeedRun, train_seed
from .scores import aggregate, curve_scores

if TYPE_CHECKING:
    from ..models import ModelSource
    from ..tasks import Task

PARAMS_SCHEMA = PLASTICITY_PARAMS  # the kind's params schema (defined in tasks.params)

PROTOCOL_VERSION = 1


def prepare(task: Task, data_dir: Path | None, limit: int | None) -> PlasticityData:
    numbers = [v for v in task.params.values() if isinstance(v, float)] + list(task.params["adam_betas"])
    if not all(math.isfinite(v) for v in numbers):  # JSON Schema bounds let NaN through
        raise CollapseBenchError(f"{task.path}: params: NaN or infinite number in a plasticity task")
    Protocol.from_params(task.params)  # fail on an inconsistent protocol before the model loads
    return build_data(task, data_dir, limit)


def seed_block(run: SeedRun, p: dict[str, Any]) -> dict[str, Any]:
    bad = [b for b in run.bpb + run.train_loss if not math.isfinite(b)]
    if bad:
        raise CollapseBenchError(f"plasticity seed {run.seed}: training diverged (non-finite loss or bpb)")
    scores: dict[str, Any] = curve_scores(run.steps, run.bpb, p["threshold_target_bpb"], p["threshold_fraction"])
    if run.exact_match is not None:
        scores["exact_match"] = run.exact_match
    if run.grad_signal is not None:
        if not math.isfinite(run.grad_signal.grad_norm0):
            raise CollapseBenchError(f"plasticity seed {run.seed}: training diverged (non-finite gradient at step 0)")
        scores["grad_norm0"], scores["grad_snr"] = run.grad_signal.grad_norm0, run.grad_signal.grad_snr
    return scores


def _summary(values: list[float]) -> dict[str, float | None]:
    return {
        "mean": sum(values) / len(values) if values else None,
        "max": max(values) if values else None,
        "first": values[0] if values else None,
    }


def run_task(
    model: Any,
    tok: Any,
    data: PlasticityData,
    p: dict[str, Any],
    *,
    eval_batch_size: int | None = None,
    progress: bool = False,
    desc: str = "plasticity",
    par: Parallel | None = None,
    grad_signal: bool = True,
) -> dict[str, Any]:
    """Every seed of the protocol on ``model`` (left unchanged) and the result block (``grad_signal``: with
    grad_norm0 and grad_snr, which leave every other number unchanged)."""
    proto = Protocol.from_params(p, eval_batch_size)
    train = encode(tok, data.train, p["chat_template"], proto.seq_len)
    held_out = encode(tok, data.eval, p["chat_template"])
    qa = ([prompt_ids(tok, q, p["chat_template"]) for q, _ in data.qa], [a for _, a in data.qa]) if data.qa else None
    runs = [
        train_seed(
            model,
            tok,
            train,
            held_out,
            proto,
            s,
            qa=qa,
            par=par,
            progress=progress,
            desc=f"{desc} seed {s}",
            grad_signal_at_0=grad_signal,
        )
        for s in p["seeds"]
    ]
    per_seed = {str(r.seed): seed_block(r, p) for r in runs}
    grad = [g for r in runs for g in r.grad_norm]
    upd = [u for r in runs for u in r.update_norm]
    return {
        "protocol": PROTOCOL_VERSION,
        "metrics": aggregate(per_seed),
        "per_seed": per_seed,
        "curves": {str(r.seed): {"steps": r.steps, "bpb": r.bpb, "train_loss": r.train_loss} for r in runs},
        "diagnostics": {
            "steps": proto.diag_steps,
            "grad_norm": _summary(grad),
            "update_norm": _summary(upd),
            "per_seed": {str(r.seed): {"grad_norm": r.grad_norm, "update_norm": r.update_norm} for r in runs},
            **({"grad_signal_method": runs[0].grad_signal.method} if runs[0].grad_signal else {}),
        },
        "counts": {
            "source": data.source,
            "train_examples": len(train),
            "eval_examples": len(held_out),
            "eval_bytes": sum(e.n_bytes for e in held_out),
            "eval_tokens": sum(len(e.ids) - e.start for e in held_out),
            "exact_match_items": len(data.qa),
            "seeds": len(runs),
            "steps": proto.steps,
            "train_tokens_per_seed": runs[0].train_tokens,
            "trainable_params": runs[0].trainable_params,
            "train_s": round(sum(r.train_s for r in runs), 3),
            "eval_s": round(sum(r.eval_s for r in runs), 3),
            "grad_signal_s": round(sum(r.grad_signal.seconds for r in runs if r.grad_signal), 3),
        },
    }


DATA_PARALLEL = True  # DDP over the fixed micro-batch partition (collapse_bench.parallel)


def run(task: Task, data: PlasticityData, ctx: RunContext) -> dict[str, Any]:
    # --batch-size changes only the eval batch size: the training batch is part of the protocol.
    return run_task(
        ctx.model.model,
        ctx.model.tokenizer,
        data,
        task.params,
        eval_batch_size=ctx.batch_size,
        progress=ctx.progress,
        desc=task.name,
        par=ctx.par,
    )


def preflight(task: Task, model: str, parent: ModelSource | None) -> None:
    """Nothing to check before the model loads (the kind contract: collapse_bench.kinds.TaskKind)."""
