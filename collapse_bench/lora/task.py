"""``kind: lora`` — geometry of the weight update that produced the evaluated checkpoint, from weights only.

The update is (a) the evaluated PEFT LoRA adapter (dW = scaling * B A on the base's W0), or (b) with
``--parent P`` the difference of two full checkpoints (dW = W_t - W_P per linear weight in the decoder blocks;
modules with dW = 0 are counted as ``unchanged`` and left out). Per module (formulas in ``geometry``):
delta_effective_rank, delta_stable_rank, delta_norm, intruder_count_eps<e> (e in ``eps``), top_alignment (and its
chance level k/m), and, when the model's ``lineage.yaml`` lists earlier stages' adapters, overlap_prev (phi of the
left singular subspaces, mean over earlier stages) and overlap_prev_input (right singular subspaces).

Aggregation: intruder counts are summed, every other metric is averaged over modules (undefined values skipped):
``metrics.<id>`` over all modules, ``metrics.<id>:<type>`` per module type (q, k, v, o, gate, up, down),
``per_layer.<id>`` and ``per_layer.<id>:<type>`` per decoder block (``per_layer.layers`` = block indices 0..L-1,
``null`` where a block has no such module), ``metrics["overlap_prev@<stage>"]`` per earlier stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CollapseBenchError
from ..models import SourceKind
from ..tasks.params import LORA_PARAMS

if TYPE_CHECKING:
    from ..context import RunContext
    from ..models import ModelSource
    from ..tasks import Task

PARAMS_SCHEMA = LORA_PARAMS  # the kind's params schema (defined in tasks.params)

TASK_NAME = "lora"  # the built-in task ``evaluate`` adds for PEFT adapters
NEEDS = "the lora task needs a PEFT adapter dir as MODEL, or --parent MODEL (the checkpoint the update is measured from)"

OVERLAP_IDS = ("overlap_prev", "overlap_prev_input", "overlap_prev_chance")
SUMMED = ("intruder_count",)  # metric id prefixes aggregated by sum (all others: mean)


@dataclass
class Prepared:
    data_hashes: dict[str, str] = field(default_factory=dict)  # weights only: no data


def prepare(task: Task, data_dir: Any, limit: int | None) -> Prepared:
    return Prepared()


def preflight(task: Task, model: str, parent: ModelSource | None) -> None:
    """Before the model loads: the update source exists and fits (adapter vs base, model vs --parent shapes)."""
    from ..lineagefile import is_adapter_dir
    from ..models import find_source
    from .updates import WeightFiles, match_adapter, match_checkpoints, read_adapter

    if is_adapter_dir(model):
        adapter = read_adapter(Path(model).expanduser())
        match_adapter(adapter, WeightFiles(_weights_dir(find_source(adapter.base_name), "base"), "base"))
    elif parent is not None:
        match_checkpoints(
            WeightFiles(_weights_dir(find_source(model), "model"), "model"),
            WeightFiles(_weights_dir(parent, "--parent"), "--parent"),
        )
    else:
        raise CollapseBenchError(f"{NEEDS}; {model} is neither")


def _weights_dir(source: Any, what: str) -> Path:
    if source.kind is SourceKind.PEFT:
        raise CollapseBenchError(f"{what} {source.name} is a PEFT adapter; the lora task needs full weights there")
    return Path(source.path)


def run(task: Task, prepared: Prepared, ctx: RunContext) -> dict[str, Any]:
    from ..lineagefile import read_lineage
    from .updates import WeightFiles, adapter_updates, checkpoint_updates, read_adapter

    source = ctx.model.source
    unchanged: list[str] = []
    if source.kind is SourceKind.PEFT:
        assert source.base is not None  # a PEFT source always resolves its base
        adapter = read_adapter(source.path)
        updates = adapter_updates(adapter, WeightFiles(_weights_dir(source.base, "base"), "base"))
        info: dict[str, Any] = {"source": "adapter", "adapter": source.name, "base": source.base.name, **adapter.summary()}
    elif ctx.parent is not None:
        updates = checkpoint_updates(
            WeightFiles(_weights_dir(source, "model"), "model"),
            WeightFiles(_weights_dir(ctx.parent, "--parent"), "--parent"),
            unchanged,
        )
        info = {"source": "checkpoints", "parent": ctx.parent.name}
    else:
        raise CollapseBenchError(NEEDS)
    lineage = read_lineage(source.path) if Path(source.path).is_dir() else None
    with one_thread():
        previous, missing = earlier_updates(lineage, Path(source.path))
        records = [analyse(upd, task.params, previous) for upd in updates]
    if not records:
        raise CollapseBenchError(f"task {task.name}: the model and its parent have identical weights (no update to measure)")
    metrics, per_layer = aggregate(records, int(ctx.model.info["num_layers"]))
    stages = []
    for stage, (path, _) in previous.items():
        rows = [r["stages"][stage] for r in records if stage in r["stages"]]
        summary = {k: _mean(row[k] for row in rows) for k in (*OVERLAP_IDS[:2], "min_angle_deg")}
        metrics[f"overlap_prev@{stage}"] = summary["overlap_prev"]
        stages.append({"stage": stage, "path": path, "modules": len(rows), **summary})
    types = sorted({r["type"] for r in records}, key=_type_rank)
    counts = {
        "modules": len(records),
        "unchanged": len(unchanged),
        "previous_stages": len(previous),
        **{f"modules:{t}": sum(r["type"] == t for r in records) for t in types},
    }
    return {
        "metrics": metrics,
        "per_layer": per_layer,
        "counts": counts,
        "update": {**info, "module_types": types, "unchanged_modules": unchanged},
        "overlap": {"stages": stages, "missing_adapters": missing},
    }


@contextmanager
def one_thread() -> Iterator[None]:
    """Run LAPACK single-threaded: these matrices are small (<= a few thousand), where a second OpenMP thread gains
    little and, on a busy machine, stalls eigh/SVD by orders of magnitude (see benchmarks/lora_geometry_cost.py);
    it also makes the numbers independent of the core count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def analyse(upd: Any, p: dict[str, Any], previous: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-module record {module, type, layer, values, stages}: every metric of one update."""
    from .geometry import subspace, subspace_overlap, thin_svd, update_metrics

    values = update_metrics(upd.W0, thin_svd(upd.W0), upd.delta, top_k=p["top_k"], eps=p["eps"], alignment_k=p["alignment_k"])
    U, V = subspace(upd.delta, upd.rank or p["subspace_k"])
    per_stage = {}
    for stage, (_, modules) in previous.items():
        if upd.module in modules:
            Ui, Vi = modules[upd.module]
            phi, angles = subspace_overlap(U, Ui)
            per_stage[stage] = {
                "overlap_prev": phi,
                "overlap_prev_input": subspace_overlap(V, Vi)[0],
                "overlap_prev_chance": max(U.shape[1], Ui.shape[1]) / U.shape[0],
                "min_angle_deg": math.degrees(angles[0]) if angles else None,
            }
    values.update({k: _mean(v[k] for v in per_stage.values()) for k in OVERLAP_IDS})
    return {"module": upd.module, "type": upd.type, "layer": upd.layer, "values": values, "stages": per_stage}


def earlier_updates(lineage: Any, own: Path) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """{stage: (path, {module: (U, V)})} of the earlier stages' adapters listed in ``lineage`` (this stage's own
    adapter excluded; U, V = the update's non-zero singular directions), and the listed paths that are missing."""
    from .geometry import subspace
    from .updates import read_adapter

    previous: dict[str, tuple[str, dict[str, Any]]] = {}
    missing: list[str] = []
    if lineage is None:
        return previous, missing
    for stage, path in lineage.adapters:
        if stage == lineage.stage or path == own.resolve():
            continue
        if not (path / "adapter_config.json").is_file():
            missing.append(shown(path))
            continue
        adapter = read_adapter(path)
        previous[stage] = (shown(path), {m: subspace(adapter.delta(m)) for m in adapter.factors})
    return previous, missing


def shown(path: Path) -> str:
    """An adapter as a result records it: its last two path components (a chain run's ``NN-stage/adapter``),
    never the absolute path of the user's disk."""
    return "/".join(Path(path).parts[-2:])


def _mean(values: Iterable[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _type_rank(t: str) -> tuple[int, str]:
    from .updates import type_rank

    return type_rank(t)


def _combine(metric: str, values: list[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return sum(kept) if metric.startswith(SUMMED) else sum(kept) / len(kept)


def aggregate(records: list[dict[str, Any]], n_layers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, per_layer) from per-module records {type, layer, values}: sums for intruder counts, means otherwise,
    over all modules, per module type (``<id>:<type>``) and per decoder block."""
    ids = list(dict.fromkeys(k for r in records for k in r["values"]))
    types = sorted({r["type"] for r in records}, key=_type_rank)
    metrics: dict[str, Any] = {}
    per_layer: dict[str, Any] = {"layers": list(range(n_layers))}
    for scope in (None, *types):
        chosen = [r for r in records if scope is None or r["type"] == scope]
        suffix = "" if scope is None else f":{scope}"
        for metric in ids:
            metrics[metric + suffix] = _combine(metric, [r["values"].get(metric) for r in chosen])
            if any(r["values"].get(metric) is not None for r in chosen):
                per_layer[metric + suffix] = [
                    _combine(metric, [r["values"].get(metric) for r in chosen if r["layer"] == i]) for i in range(n_layers)
                ]
    return metrics, per_layer
