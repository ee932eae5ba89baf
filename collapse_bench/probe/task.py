"""``kind: probe`` — hidden-state, trajectory and logit collapse metrics from one forward pass.

Scalar summaries (``metrics``): for every per-layer metric, the mean over the v1 card layers
{round(L/4), round(L/2), round(3L/4), L-1} (hidden-state indices; index L, after the final norm, is
reported per layer but excluded from the summary), skipping undefined entries. Logit metrics are
scalars at the output.
"""

from __future__ import annotations

import sys
from typing import Any

from ..context import RunContext
from ..errors import CollapseBenchError
from ..metrics import registry
from ..metrics.base import MetricValues
from ..tasks.params import PROBE_PARAMS
from . import memory, references
from .corpus import ProbeCorpus, build_corpus, tokenize
from .runner import ProbeInputs, combine, run_probe

PARAMS_SCHEMA = PROBE_PARAMS  # the kind's params schema (defined in tasks.params)

PROTOCOL_VERSION = 1
DATA_PARALLEL = True  # batches strided over the ranks, accumulators merged (probe.runner.run_probe)


def summary_layers(n_layers: int) -> list[int]:
    """The v1 card layers as hidden-state indices, for ``n_layers`` = L+1 entries."""
    L = n_layers - 1
    return sorted({max(1, round(L / 4)), max(1, round(L / 2)), max(1, round(3 * L / 4)), max(1, L - 1)})


def summarise(values: MetricValues, n_layers: int) -> dict[str, float | None]:
    layers = summary_layers(n_layers)
    scalars: dict[str, float | None] = {}
    for name, series in values.per_layer.items():
        picked = [v for v in (series[i] for i in layers) if v is not None]
        scalars[name] = sum(picked) / len(picked) if picked else None
    scalars.update(values.scalars)
    return scalars


def prepare(task: Any, data_dir: Any, limit: int | None) -> ProbeCorpus:
    return build_corpus(task, data_dir, limit)


def run(task: Any, corpus: ProbeCorpus, ctx: RunContext) -> dict[str, Any]:
    p = task.params
    tok = ctx.model.tokenizer
    tokens = tokenize(tok, corpus.texts, p["max_tokens"], p["tokens_per_sequence"], p["seed"])
    if ctx.reference is not None:
        ref_tokens = tokenize(ctx.reference.tokenizer, corpus.texts, p["max_tokens"], p["tokens_per_sequence"], p["seed"])
        if [t.ids for t in ref_tokens] != [t.ids for t in tokens]:
            raise CollapseBenchError("--reference model tokenizes the probe text differently; CKA needs the same tokenizer")
    kept = [(t, d) for t, d in zip(tokens, corpus.domains) if len(t.ids) >= 3]
    if not kept:
        raise CollapseBenchError(f"task {task.name}: no probe text has at least 3 tokens")
    inputs = ProbeInputs([t for t, _ in kept], [d for _, d in kept], tok.pad_token_id)
    batch_size = ctx.batch_size or p["batch_size"]
    scatter = plan_memory(task, ctx, batch_size=batch_size, roles=len(ctx.references), n_domains=len(corpus.domain_names))
    refs = references.prepare(task, corpus, inputs, ctx, summary_layers)  # may run a reference's own pass first
    factory = registry.probe_accumulators(
        layers=None if scatter is None else (lambda n, d: scatter),
        n_domains=len(corpus.domain_names),
        reservoir_size=p["reservoir_size"],
        seed=p["seed"],
        with_reference=ctx.reference is not None,
        references=refs.roles,
        domain_names=corpus.domain_names,
    )
    try:
        accs, counts = run_probe(
            ctx.model.model,
            inputs,
            factory,
            batch_size=ctx.batch_size or p["batch_size"],
            reference=ctx.reference.model if ctx.reference else None,
            desc=task.name,
            progress=ctx.progress,
            providers=refs.providers,
            writers=refs.writers,
            par=ctx.par,
        )
    except BaseException:
        refs.abort()
        raise
    refs.commit()
    if ctx.par is not None and not ctx.par.main:  # rank 0 holds the merged state; evaluate broadcasts its block
        return {}
    values = combine([a.compute() for a in accs])
    n_layers = len(next(iter(values.per_layer.values())))
    per_layer: dict[str, Any] = {"layers": list(range(n_layers)), "post_final_norm": [i == n_layers - 1 for i in range(n_layers)]}
    per_layer.update(values.per_layer)
    return {
        "protocol": PROTOCOL_VERSION,
        **({"scatter_layers": scatter} if scatter is not None else {}),
        "metrics": summarise(values, n_layers),
        "per_layer": per_layer,
        "summary_layers": summary_layers(n_layers),
        "counts": {
            **counts,
            **values.counts,
            "texts": len(corpus.texts),
            "dropped_short": len(tokens) - len(kept),
            "domains": corpus.domain_names,
            **refs.notes,
        },
    }


def plan_memory(task: Any, ctx: RunContext, *, batch_size: int, roles: int, n_domains: int) -> list[int] | None:
    """The scatter families' layers (``--probe-layers``; None: all) after printing the memory estimate (rank 0, with
    progress output) and refusing a run whose estimate exceeds the device's free memory (:mod:`collapse_bench.probe.memory`)."""
    info, p = ctx.model.info, task.params
    n_hidden, dim = int(info["num_layers"]) + 1, int(info["hidden_size"])
    card = summary_layers(n_hidden)
    chosen = memory.resolve_layers(memory.parse_layers(ctx.options.get("probe_layers")), n_hidden, dim, card)
    cfg = ctx.model.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    ref_dim = int(ctx.reference.info["hidden_size"]) if ctx.reference is not None else None
    shape = dict(
        n_hidden=n_hidden,
        dim=dim,
        vocab=int(info["vocab_size"]),
        batch_tokens=batch_size * int(p["max_tokens"]),
        reservoir=int(p["reservoir_size"]),
        n_domains=n_domains,
        intermediate=int(getattr(cfg, "intermediate_size", 0) or 0),
        ref_dim=ref_dim,
        roles=roles,
        card_layers=len(card),
    )
    device = str(info["device"])
    copies = memory.copies(ctx.par.world if ctx.par is not None and ctx.par.on else 1, device)
    est = memory.estimate(scatter_layers=len(chosen) if chosen is not None else n_hidden, **shape).times(copies)  # type: ignore[arg-type]
    card_est = memory.estimate(scatter_layers=len(card), **shape).times(copies)  # type: ignore[arg-type]
    if ctx.par is None or not ctx.par.on:
        line = memory.check(est, card_est, device, task.name)
    else:  # rank 0 decides for all (the ranks must not diverge at the threshold)
        verdict: tuple[str, str | None] = ("", None)
        if ctx.par.main:
            try:
                verdict = (memory.check(est, card_est, device, task.name), None)
            except CollapseBenchError as exc:
                verdict = ("", str(exc))
        line, why = ctx.par.broadcast(verdict)
        if why is not None:
            raise CollapseBenchError(why)
    if ctx.progress and (ctx.par is None or ctx.par.main):  # beside the progress bars (--no-progress: quiet)
        print(line, file=sys.stderr)
    return chosen


def preflight(task: Any, model: str, parent: Any) -> None:
    """Nothing to check before the model loads (the kind contract: collapse_bench.kinds.TaskKind)."""
