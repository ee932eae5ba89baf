"""``kind: lm_eval`` — an lm-eval task over collapse-bench data, with calibration from its per-sample
log-likelihoods (multiple choice) and the XSTest refusal view (``refusal: true``).

Data: the wrapper's data references (role ``eval``, default, and ``fewshot``) are loaded like any task's
(sha256 of every file; ``--limit`` / suite limits take a seeded sample of the eval rows, in file order)
and written as JSONL into a per-run include dir, where a copy of the lm-eval YAML gets
``dataset_path: json`` and ``dataset_kwargs.data_files`` = {its eval split: the eval rows, its few-shot
split: the few-shot rows}. A plain user lm-eval YAML (no data references) is run as it is, with relative
local ``data_files`` made absolute (relative to the YAML) and hashed, and ``--limit`` passed to lm-eval
(its first N docs). The lm-eval YAML(s) are hashed into ``data`` as ``lm_eval:<file>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import RunContext
from ..data.sources import load_ref
from ..errors import CollapseBenchError
from ..io import sha256_file
from ..metrics.calibration import METRICS as CALIBRATION_METRICS
from ..metrics.calibration import calibration_block
from ..tasks.lmeval_yaml import config_hashes, index, merged_config
from ..tasks.loader import include_dir
from ..tasks.params import LM_EVAL_PARAMS
from . import backends, lmeval
from .refusal import refusal_rates
from .samples import gen_records, mc_records, sink_for

if TYPE_CHECKING:
    from ..models import ModelSource
    from ..tasks import Task

PARAMS_SCHEMA = LM_EVAL_PARAMS  # the kind's params schema (defined in tasks.params)


@dataclass
class Prepared:
    resolved: lmeval.ResolvedTask
    data_hashes: dict[str, str]
    lm_limit: int | None
    yaml_path: Path


def _local_data_files(config: dict[str, Any], yaml_dir: Path) -> dict[str, Any] | None:
    """``dataset_kwargs.data_files`` with relative local paths made absolute (None if it has none)."""
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if not files:
        return None

    def fix(p: Any) -> Any:
        if isinstance(p, list):
            return [fix(x) for x in p]
        return str((yaml_dir / str(p)).resolve()) if "://" not in str(p) else p

    return {k: fix(v) for k, v in files.items()} if isinstance(files, dict) else {"train": fix(files)}


def prepare(task: Task, data_dir: Path | None, limit: int | None) -> Prepared:
    src = include_dir(task)
    name = task.params["lm_eval_task"] or task.name
    found = index(src)
    if name not in found:
        raise CollapseBenchError(f"{task.path}: no lm-eval task '{name}' in {src} (known: {', '.join(sorted(found)) or 'none'})")
    yaml_path = found[name]
    hashes = config_hashes(src, yaml_path)
    tmp = lmeval.new_include_dir(src)
    config = merged_config(yaml_path)
    lm_limit = None
    if task.data:
        eval_split, fewshot_split = lmeval.data_split_names(config)
        files: dict[str, str] = {}
        for role, split in (("eval", eval_split), ("fewshot", fewshot_split)):
            refs = [r for r in task.data if r.get("role", "eval") == role]
            if not refs:
                continue
            if split is None:
                raise CollapseBenchError(f"{task.path}: lm-eval task '{name}' has no few-shot split for the fewshot data")
            rows = []
            for ref in refs:
                loaded = load_ref(
                    ref, task_path=task.path, data_dir=data_dir, seed=task.params["seed"], limit=limit if role == "eval" else None
                )
                hashes[loaded.key] = loaded.sha256
                rows += loaded.rows
            out = Path(tmp.name) / "_data" / f"{role}.jsonl"
            out.parent.mkdir(exist_ok=True)
            out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            files[split] = str(out)
        overrides = {
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files, "cache_dir": str(Path(tmp.name) / "_hf_cache")},
        }
    else:  # a plain user lm-eval YAML: its own data, --limit passed to lm-eval
        lm_limit = limit
        local_files = _local_data_files(config, yaml_path.parent)
        overrides = {}
        if local_files:
            for split_files in local_files.values():
                for f in split_files if isinstance(split_files, list) else [split_files]:
                    if "://" not in f:
                        if not Path(f).is_file():
                            raise CollapseBenchError(f"{yaml_path}: data file {f} not found")
                        hashes[f"task:{os.path.relpath(f, yaml_path.parent)}"] = sha256_file(f)
            overrides = {"dataset_kwargs": {**(config.get("dataset_kwargs") or {}), "data_files": local_files}}
    resolved = lmeval.resolve(name, tmp, yaml_path.relative_to(src), overrides, str(yaml_path))
    return Prepared(resolved, hashes, lm_limit, yaml_path)


DATA_PARALLEL = True  # under accelerate launch / torchrun: lm-eval shards the requests over the ranks (hf backend)


def run(task: Task, prep: Prepared, ctx: RunContext) -> dict[str, Any]:
    """The task's block; ``{}`` on ranks other than 0 of a data-parallel run (evaluate takes rank 0's)."""
    p = task.params
    config = backends.BackendConfig.from_options(ctx.options)
    with lmeval.quiet(ctx.progress):
        lm = backends.get_lm(ctx.model, config, batch_size=backends.lm_batch_size(ctx, p["batch_size"]), par=ctx.par)
    chat = bool(p["apply_chat_template"]) and (config.backend == "vllm" or backends.has_chat_template(ctx.model))
    out = lmeval.run(
        lm, prep.resolved, limit=prep.lm_limit, num_fewshot=p["num_fewshot"], apply_chat_template=chat, progress=ctx.progress
    )
    if out is None:
        return {}
    name = prep.resolved.name
    metrics = lmeval.flat_metrics(out["results"][name])
    samples = lmeval.in_doc_order(out["samples"][name])
    block: dict[str, Any] = {
        "lm_eval": {
            "task": name,
            "output_type": prep.resolved.output_type,
            "backend": config.backend,
            "num_fewshot": out.get("n-shot", {}).get(name),
            "chat_template": chat,
        }
    }
    counts: dict[str, Any] = {"docs": len({s["doc_id"] for s in samples})}
    if prep.resolved.output_type == "multiple_choice":
        records, skipped = mc_records(name, prep.resolved.task, samples)
        counts["skipped_no_gold"] = skipped
        if records:
            block["calibration"] = calibration_block(records)
            metrics.update({k: block["calibration"]["primary"][k] for k in CALIBRATION_METRICS})
    else:
        records = gen_records(name, samples)
    if p["refusal"]:
        docs = {s["doc_id"]: s["doc"] for s in samples}
        pairs = [(bool(docs[r["doc_id"]].get("should_refuse")), r["response"]) for r in records]
        rates, refusal_counts = refusal_rates(pairs)
        metrics.update(rates)
        counts.update(refusal_counts)
    sink_for(ctx).records[task.name] = records
    return {"metrics": metrics, **block, "counts": counts}


def preflight(task: Task, model: str, parent: ModelSource | None) -> None:
    """Nothing to check before the model loads (the kind contract: collapse_bench.kinds.TaskKind)."""
