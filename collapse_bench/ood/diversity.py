"""``kind: diversity`` — k sampled generations per prompt through lm-eval (``generate_until`` with
``repeats: k``, ``do_sample: true``), scored for diversity (``collapse_bench.metrics.diversity``).

Prompts: each data reference's rows rendered with its ``template`` if given, else the row's ``prompt``,
the first user message of ``messages``, ``question`` or ``text`` (in that order), after the seeded sample.
Sampling: temperature / top-p / max_gen_toks from the params (defaults 1.0 / 1.0 / 48: the model's own
distribution, untruncated), the model's chat template when it has one and ``chat_template`` is true,
torch seed = the run's ``--seed``; no stop string but EOS. A sample is *truncated* when its re-tokenized
length (model tokenizer, no special tokens) reaches max_gen_toks; ``mean_length_tokens`` is the mean of
that length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import RunContext
from ..data.sources import load_ref, render
from ..errors import CollapseBenchError
from ..metrics.diversity import diversity_metrics
from ..metrics.spec import MetricSpec, Range
from ..tasks.params import DIVERSITY_PARAMS
from . import backends, lmeval
from .samples import gen_records, sink_for

if TYPE_CHECKING:
    from ..data.sources import DataRef
    from ..models import ModelSource
    from ..tasks import Task

PARAMS_SCHEMA = DIVERSITY_PARAMS  # the kind's params schema (defined in tasks.params)


@dataclass
class Prepared:
    resolved: lmeval.ResolvedTask
    data_hashes: dict[str, str]
    n_prompts: int


def prompt_of(row: dict[str, Any], ref: DataRef, where: str) -> str:
    if "template" in ref:
        return render(ref["template"], row, where)
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    for m in row.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user":
            return str(m.get("content", ""))
    for key in ("question", "text"):
        if isinstance(row.get(key), str):
            return row[key]
    raise CollapseBenchError(
        f"{where}: row {row.get('id', '?')} has no prompt, messages, question or text field (give a template)"
    )


def lm_eval_config(name: str, p: dict[str, Any], data_file: Path, cache: Path) -> dict[str, Any]:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}, "cache_dir": str(cache)},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{id}}",
        "generation_kwargs": {
            "until": [],
            "do_sample": True,
            "temperature": float(p["temperature"]),
            "top_p": float(p["top_p"]),
            "max_gen_toks": int(p["max_gen_toks"]),
        },
        "repeats": int(p["k"]),
        "metric_list": [{"metric": "bypass"}],
        "metadata": {"version": 1.0},
    }


def prepare(task: Task, data_dir: Path | None, limit: int | None) -> Prepared:
    if not task.data:
        raise CollapseBenchError(f"{task.path}: a diversity task needs data references for its prompts")
    hashes: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    for ref in task.data:
        loaded = load_ref(ref, task_path=task.path, data_dir=data_dir, seed=task.params["seed"], limit=limit)
        hashes[loaded.key] = loaded.sha256
        rows += [
            {"id": str(r.get("id", len(rows) + i)), "prompt": prompt_of(r, ref, str(task.path))}
            for i, r in enumerate(loaded.rows)
        ]
    tmp = lmeval.new_include_dir(None)
    data_file = Path(tmp.name) / "_data" / "prompts.jsonl"
    data_file.parent.mkdir()
    data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    name = f"{task.name}_generations"
    rel = Path(f"{name}.yaml")
    lmeval.write_config(Path(tmp.name) / rel, lm_eval_config(name, task.params, data_file, Path(tmp.name) / "_hf_cache"))
    return Prepared(lmeval.resolve(name, tmp, rel, {}, str(task.path)), hashes, len(rows))


def run(task: Task, prep: Prepared, ctx: RunContext) -> dict[str, Any]:
    p = task.params
    config = backends.BackendConfig.from_options(ctx.options)
    with lmeval.quiet(ctx.progress):
        lm = backends.get_lm(ctx.model, config, batch_size=backends.lm_batch_size(ctx, p["batch_size"]), seed=ctx.seed)
    chat = bool(p["chat_template"]) and (config.backend == "vllm" or backends.has_chat_template(ctx.model))
    out = lmeval.run(lm, prep.resolved, apply_chat_template=chat, torch_seed=ctx.seed, progress=ctx.progress)
    assert out is not None  # a single-process lm (rank 0)
    records = gen_records(task.name, out["samples"][prep.resolved.name])
    groups = [r["samples"] for r in records]
    lengths = [len(ctx.model.tokenizer(s, add_special_tokens=False)["input_ids"]) for g in groups for s in g]
    truncated = sum(n >= p["max_gen_toks"] for n in lengths)
    metrics: dict[str, Any] = diversity_metrics(groups)
    metrics["mean_length_tokens"] = sum(lengths) / len(lengths) if lengths else None
    metrics["truncated_fraction"] = truncated / len(lengths) if lengths else None
    sink_for(ctx).records[task.name] = records
    return {
        "metrics": metrics,
        "sampling": {
            "k": p["k"],
            "temperature": p["temperature"],
            "top_p": p["top_p"],
            "max_gen_toks": p["max_gen_toks"],
            "chat_template": chat,
            "seed": ctx.seed,
            "backend": config.backend,
        },
        "counts": {
            "prompts": len(groups),
            "samples": len(lengths),
            "truncated": truncated,
            "empty": sum(1 for g in groups for s in g if not s.strip()),
        },
    }


SPECS = (
    MetricSpec(id="*length*", kind="diversity", definition="mean length of the generations", range=Range(0), label="mean length"),
    MetricSpec(
        id="truncat*",
        kind="diversity",
        definition="fraction of generations cut off at the token limit",
        range=Range(0),
        label="truncated fraction",
    ),
)


def preflight(task: Task, model: str, parent: ModelSource | None) -> None:
    """Nothing to check before the model loads (the kind contract: collapse_bench.kinds.TaskKind)."""
