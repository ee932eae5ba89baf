"""``collapse-bench evaluate``: resolve tasks, check ``--batch-size``, ``--device``, ``--dtype`` and the output
location, then lineage and data (fail fast: before a model is hashed, converted or loaded), load the model, run
every task, and commit the provenance-stamped result JSON together with its samples file (all or nothing: a
failed write leaves the previous result + samples pair intact).

Task by task resumable: each finished task's block and samples records go to the cache
(``paths.unfinished_runs_dir()/<sha256 of the output path>/<task>.json``, never next to the result: a failed run
leaves the user's directory as it was) with a key over everything that can change its numbers (the model as
loaded — sha256, lineage, device, dtype —, the task hash with its data hashes, seed, limit, batch size, options,
reference, harness code sha256); a re-run of the same request reuses the blocks whose key matches (a crash in
task 9 keeps tasks 1–8) and the entry is removed once the result is committed. Saving is best effort: a cache
that cannot be written never fails an evaluation.

No absolute path of the user's disk goes into a result: models are recorded by display name
(``models.resolve.display_name``), ``--tasks-dir`` and ``--include_path`` dirs by their leaf name."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .context import RunContext
from .data import resolve_data_dir
from .errors import CollapseBenchError
from .io import atomic_write_json, check_writable, commit_files, json_bytes, sha256_bytes, sha256_json
from .kinds import kind_module
from .lineage import reference_targets, resolve_lineage
from .lineagefile import is_adapter_dir
from .lora.task import TASK_NAME as LORA_TASK
from .models import LoadedModel, load_model
from .models.resolve import check_device_dtype
from .ood.samples import samples_path, sink_for
from .paths import unfinished_runs_dir
from .results import SCHEMA_VERSION
from .results.complete import incompleteness
from .results.provenance import code_sha256, environment_info, harness_info
from .results.schema import validate_result
from .schemas import with_defaults
from .tasks import Task, TaskRegistry
from .tasks.params import KIND_PARAMS


@dataclass
class EvaluateRequest:
    model: str
    suite: str = "quick"
    tasks: list[str] | None = None
    tasks_dirs: list[str] = field(default_factory=list)
    lm_eval_dirs: list[str] = field(default_factory=list)  # lm-eval include dirs (``--include_path``)
    data_dir: str | None = None
    reference: str | None = None
    output: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | str | None = None  # None: each task's own; "auto": lm-eval finds it, other kinds their own
    limit: int | None = None
    seed: int = 0
    trust_remote_code: bool = False
    progress: bool = True
    parent: str | None = None  # the checkpoint this one was trained from (lineage; full-weight updates)
    stage: str | None = None  # this checkpoint's post-training stage
    options: dict[str, Any] = field(default_factory=dict)
    # task -> params replacing the YAML's (validated against the kind's schema; the task hash records them):
    # how `collapse-bench noise` re-runs the stochastic parts with other seeds
    param_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_map: str | dict[str, Any] | None = None  # accelerate big-model inference (models.resolve.load_model)
    offload_folder: str | None = None  # where "disk" entries of the device map are offloaded
    add_lora: bool = True  # a PEFT adapter dir gets the lora task appended (sweep shards plan it as its own shard)


AUTO = "auto"  # --batch-size auto


def check_batch_size(batch_size: int | str | None) -> None:
    """A positive int, None (each task's own) or ``"auto"``."""
    ok = batch_size is None or batch_size == AUTO or (type(batch_size) is int and batch_size >= 1)
    if not ok:
        raise CollapseBenchError(f"--batch-size {batch_size!r}: expected a positive integer or 'auto'")


def slug(text: str) -> str:
    """Filesystem-safe name: lowercase [a-z0-9._-], no leading dot, at most 80 chars."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return s[:80] or "model"


def default_output(model: str, suite: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (
        Path("results") / slug(Path(model).name if "/" not in model or Path(model).exists() else model) / f"{suite}-{stamp}.json"
    )


def with_params(task: Task, overrides: dict[str, Any] | None) -> Task:
    """``task`` with some of its params replaced (validated against its kind's schema), or ``task`` itself."""
    if not overrides:
        return task
    params = with_defaults({**task.params, **overrides}, KIND_PARAMS[task.kind], f"task {task.name}")
    return replace(task, params=params)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(req: EvaluateRequest, preloaded: LoadedModel | None = None) -> tuple[Path, dict[str, Any]]:
    """Run ``req`` (module docstring); ``preloaded``: the checkpoint ``req.model`` names, already in memory (``evaluate
    --lineage``, :mod:`collapse_bench.lineage_run`), used instead of loading it."""
    started = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    registry = TaskRegistry(req.tasks_dirs, req.lm_eval_dirs)
    suite = registry.suite(req.suite)
    names = req.tasks or list(suite.tasks)
    tasks = [with_params(registry.task(n), req.param_overrides.get(n)) for n in names]
    if (
        req.add_lora and is_adapter_dir(req.model) and not any(t.kind == "lora" for t in tasks)
    ):  # a PEFT adapter: measure its update
        tasks, names = [*tasks, registry.task(LORA_TASK)], [*names, LORA_TASK]
    # everything that can fail on input fails before the model is resolved (hashed, converted) or loaded:
    # flags first, then the output location, lineage, data and each task's own checks
    check_batch_size(req.batch_size)
    check_device_dtype(req.device, req.dtype)
    if req.options.get("backend") == "vllm" and launched():
        raise CollapseBenchError(
            "--backend vllm parallelises inside one process (--data-parallel-size, --tensor-parallel-size); "
            "run it without accelerate launch / torchrun"
        )
    output = Path(req.output) if req.output else default_output(req.model, suite.name)
    check_writable(output)
    if samples_path(output).is_dir():
        raise CollapseBenchError(f"{samples_path(output)} is a directory; the result's samples file goes there")
    lineage = resolve_lineage(req.model, req.parent, req.stage)
    data_dir = resolve_data_dir(req.data_dir)
    prepared = {}
    for task in tasks:
        limit = req.limit or suite.limits.get(task.name)
        module = kind_module(task.kind)
        prepared[task.name] = module.prepare(task, data_dir, limit)
        module.preflight(task, req.model, lineage.parent_source)  # the model's files (e.g. adapter fits its base)

    par = start_parallel()
    device = par_device(req.device, par)
    seed_everything(req.seed)
    loaded = preloaded or load_model(
        req.model,
        device=device,
        dtype=req.dtype,
        trust_remote_code=req.trust_remote_code,
        device_map=req.device_map,
        offload_folder=req.offload_folder,
    )
    loaded.info.update(lineage.fields(loaded.source))
    reference = None
    if req.reference:
        reference = load_model(req.reference, device=device, dtype=req.dtype, trust_remote_code=req.trust_remote_code)
    ctx = RunContext(
        loaded,
        seed=req.seed,
        batch_size=req.batch_size if isinstance(req.batch_size, int) else None,
        auto_batch_size=req.batch_size == AUTO,
        reference=reference,
        progress=req.progress,
        options=req.options,
        parent=lineage.parent_source,
        references=reference_targets(lineage, loaded, req.reference, reference),
        par=par,
    )
    blocks: dict[str, Any] = {}
    done = partial_dir(output)
    common = {
        "model": loaded.info,
        "seed": req.seed,
        "limit": req.limit,
        "batch_size": req.batch_size,
        "options": req.options,
        "reference": reference.info if reference else None,
        "code": code_sha256(),
    }
    resumed = 0.0
    for task in tasks:
        prep = prepared[task.name]
        hashes = prep.data_hashes
        task_hash = task.task_hash(hashes)
        task_id = {"task": task.name, "hash": task_hash, "limit_task": suite.limits.get(task.name)}
        key = sha256_json({**common, **task_id})
        saved = par.broadcast(_finished(done, task.name, key) if par.main else None)  # rank 0's view of the cache
        if saved is not None:  # this task of this exact request finished in an earlier, interrupted run
            blocks[task.name] = saved["block"]
            if saved["records"]:
                sink_for(ctx).records[task.name] = saved["records"]
            resumed += float(saved["block"]["duration_s"])
            continue
        seed_everything(req.seed)
        t0 = time.perf_counter()
        block = run_task(task, prep, ctx, par)
        blocks[task.name] = {
            "kind": task.kind,
            "version": task.version,
            "hash": task_hash,
            "data": dict(sorted(hashes.items())),
            **block,
            "duration_s": round(par.broadcast(time.perf_counter() - t0), 3),
        }
        records = sink_for(ctx).records.get(task.name, [])
        if not par.main:
            continue
        with contextlib.suppress(OSError, CollapseBenchError):  # best effort (docstring): no resume point, no failure
            atomic_write_json(done / f"{task.name}.json", {"key": key, "block": blocks[task.name], "records": records})
    result = {
        "schema_version": SCHEMA_VERSION,
        "model": loaded.info,
        "harness": harness_info(),
        "environment": {**environment_info(loaded.info["device"]), **({"processes": par.world} if par.on else {})},
        "suite": {
            "name": suite.name,
            "version": suite.version,
            "tasks": names,
            "complete": incompleteness({t.name: t.kind for t in tasks}, suite.name, suite.version, suite.tasks, req.limit)
            is None,
        },
        "config": {
            "seed": req.seed,
            "batch_size": req.batch_size,
            "limit": req.limit,
            "device": loaded.info["device"],
            "dtype": loaded.info["dtype"],
            "trust_remote_code": req.trust_remote_code,
            "tasks_dirs": [d.name for d in [*registry.dirs[1:], *registry.lm_eval_dirs]],
            "reference": reference.info if reference else None,
            **req.options,
        },
        "tasks": blocks,
        "created_at": created,
        "duration_s": round(time.perf_counter() - started + resumed, 3),  # + the resumed tasks' own time
    }
    if not par.main:  # rank 0 writes the result; the others return theirs (same blocks, no samples refs) after it
        par.barrier()
        return output, result
    try:
        files = [f for hook in ctx.on_result for f in (hook(result, output) or [])]
        validate_result(result, str(output))
        if not any(path == samples_path(output) for path, _ in files):
            files.append((samples_path(output), None))  # a replaced result's old samples file goes with it
        commit_files([*files, (output, json_bytes(result))])  # samples first, the result last
    finally:
        par.barrier()
    shutil.rmtree(done, ignore_errors=True)
    return output, result


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def start_parallel() -> Any:
    """The ranks of this run: under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    initialised by accelerate (gloo on CPU, NCCL on GPU); one process otherwise."""
    from .parallel import Parallel

    if launched():
        from accelerate import PartialState

        PartialState(timeout=dt.timedelta(hours=6))  # rank-0-only phases (a reference pass, generation) outlast NCCL's 10 min
    return Parallel()


def par_device(device: str, par: Any) -> str:
    """``--device auto`` under data parallelism: each rank's own (``cuda:LOCAL_RANK``, or ``cpu``)."""
    if not par.on or device != "auto":
        return device
    from accelerate import PartialState

    state = PartialState()
    return str(state.device) if state.device.type != "cuda" else f"cuda:{state.local_process_index}"


def run_task(task: Task, prep: Any, ctx: RunContext, par: Any) -> dict[str, Any]:
    """The task's block on every rank: kinds with ``DATA_PARALLEL`` run on all ranks (they shard their own work),
    the others on rank 0 alone; rank 0's block and samples records are broadcast to the rest."""
    module = kind_module(task.kind)
    block = module.run(task, prep, ctx) if par.main or getattr(module, "DATA_PARALLEL", False) else {}
    if not par.on:
        return block
    sink = sink_for(ctx)
    block, records = par.broadcast((block, sink.records.get(task.name)) if par.main else None)
    if records is not None:
        sink.records[task.name] = records
    return block


def partial_dir(output: Path) -> Path:
    """Where the finished tasks of an unfinished run of ``output`` are kept (in the cache, keyed by its path)."""
    return unfinished_runs_dir() / sha256_bytes(str(output.resolve()).encode())[:32]


def _finished(done: Path, task: str, key: str) -> dict[str, Any] | None:
    """The saved block + records of ``task`` when its key matches (anything else: run the task again)."""
    path = done / f"{task}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("block"), dict)
    return saved if ok and isinstance(saved.get("records"), list) else None
