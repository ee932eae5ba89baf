"""``collapse-bench sweep plan|run|merge``: checkpoints × suite as independent shards any scheduler can run.

``plan SPEC --out DIR`` writes ``DIR/plan.json``: one shard per (checkpoint, task group) -- a plain ``evaluate``
invocation writing ``DIR/shards/NNNN.json`` --, and prints the commands. ``run DIR --shard I`` runs shard I (default
``$SLURM_ARRAY_TASK_ID``; ``--all`` runs every shard without a result, in order); each shard is ``evaluate``, so it is
resumable task by task. ``merge DIR`` assembles each checkpoint's shards into ``DIR/results/<name>.json`` + samples:
the blocks in suite order, every shard checked to be the same checkpoint, harness code, versions and settings (else
one line naming the shard), the suite's completeness recomputed, durations summed. The merged result is what one
``evaluate`` of the whole suite writes (blocks, samples file bytes; tests/test_sweep.py), timestamps aside.

SPEC (YAML, read with ``safe_load`` rules)::

    suite: standard               # or tasks: [probe_standard, arc_easy]
    group: task                   # task (default) | kind | checkpoint: how a checkpoint's tasks are split
    evaluate: {device: cpu, seed: 0, limit: 8, batch_size: 8, data_dir: /data}
    checkpoints:
      - model: smollm2-135m-instruct
      - {model: runs/chain/02-dpo, parent: runs/chain/01-sft, stage: dpo}
      - lineage: runs/chain      # every NN-stage dir of a chain run, in order
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .errors import CollapseBenchError
from .evaluate import EvaluateRequest, evaluate, slug
from .io import commit_files, json_bytes, read_jsonl, sha256_file
from .lineagefile import chain_stages, is_adapter_dir, stage_label
from .lora.task import TASK_NAME as LORA_TASK
from .models.resolve import display_name
from .ood.samples import SampleSink, samples_path
from .results.complete import incompleteness
from .results.schema import validate_result
from .schemas import validate
from .tasks import TaskRegistry
from .yamlio import read_yaml

PLAN_VERSION = 1
GROUPS = ("task", "kind", "checkpoint")
SETTINGS = ("device", "dtype", "seed", "limit", "batch_size", "data_dir")
SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["checkpoints"],
    "properties": {
        "suite": {"type": "string"},
        "tasks": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "group": {"enum": list(GROUPS)},
        "evaluate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "device": {"type": "string"},
                "dtype": {"type": "string"},
                "seed": {"type": "integer"},
                "limit": {"type": "integer", "minimum": 1},
                "batch_size": {"type": "integer", "minimum": 1},
                "data_dir": {"type": "string"},
            },
        },
        "checkpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "parent": {"type": "string"},
                    "stage": {"type": "string"},
                    "lineage": {"type": "string"},
                },
                "oneOf": [{"required": ["model"]}, {"required": ["lineage"]}],
            },
        },
    },
}


def plan(spec_path: Path, out: Path) -> dict[str, Any]:
    """The shards of ``spec_path`` (module docstring), written to ``out/plan.json``."""
    spec = read_yaml(spec_path)
    validate(spec, SPEC_SCHEMA, str(spec_path))
    registry = TaskRegistry()
    suite = registry.suite(spec.get("suite", "standard"))
    names = spec.get("tasks") or list(suite.tasks)
    kinds = {n: registry.task(n).kind for n in names}  # unknown task: one line, before anything is written
    base = spec_path.parent
    entries: list[dict[str, Any]] = []
    for c in spec["checkpoints"]:
        if "lineage" in c:
            entries += [{"model": str(d)} for d in chain_stages((base / c["lineage"]).resolve())]
        else:
            entries.append({k: _path(base, v) if k in ("model", "parent") else v for k, v in c.items()})
    group = spec.get("group", "task")
    groups = _groups(names, kinds, group)
    settings = dict(spec.get("evaluate") or {})
    shards: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in entries:
        name = checkpoint_label(c["model"])
        if name in seen:
            raise CollapseBenchError(f"{spec_path}: two checkpoints are named {name}; give distinct directory names")
        seen.add(name)
        mine = []
        extra = [[LORA_TASK]] if is_adapter_dir(c["model"]) and LORA_TASK not in names else []  # what evaluate appends
        for tasks in groups + extra:
            index = len(shards)
            shards.append({"index": index, "checkpoint": name, **c, "tasks": tasks, "output": f"shards/{index:04d}.json"})
            mine.append(index)
        checkpoints.append({"name": name, "shards": mine, "result": f"results/{name}.json"})
    if (out / "shards").is_dir() and any((out / "shards").iterdir()):
        raise CollapseBenchError(f"{out}/shards holds results of an earlier plan; plan into an empty directory")
    doc = {
        "plan_version": PLAN_VERSION,
        "spec_sha256": sha256_file(spec_path),
        "suite": suite.name,
        "tasks": names,
        "settings": settings,
        "shards": shards,
        "checkpoints": checkpoints,
    }
    commit_files([(out / "plan.json", json_bytes(doc))])
    return doc


def expected_name(model: str) -> str:
    """The display name a result of ``model`` records (local dirs and files: their lineage name or leaf; aliases and
    hub ids as given, ``@revision`` included)."""
    p = Path(model)
    return display_name(p) if p.exists() else model


def checkpoint_label(model: str) -> str:
    """A checkpoint's file-name label: its dir's leaf (a chain stage's ``NN-stage`` for ``NN-stage/model``), or the
    alias / hub id."""
    p = Path(model)
    if not p.exists():
        return slug(model)
    return slug(stage_label(p))


def _path(base: Path, value: str) -> str:
    p = base / value
    return str(p.resolve()) if p.exists() else value  # a relative path from the spec, else an alias / hub id


def _groups(names: list[str], kinds: dict[str, str], group: str) -> list[list[str]]:
    if group == "checkpoint":
        return [names]
    if group == "task":
        return [[n] for n in names]
    by_kind: dict[str, list[str]] = {}
    for n in names:
        by_kind.setdefault(kinds[n], []).append(n)
    return list(by_kind.values())


def load_plan(plan_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((plan_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CollapseBenchError(f"{plan_dir}: no readable plan.json ({type(exc).__name__}); run sweep plan first") from None
    if not isinstance(doc, dict) or doc.get("plan_version") != PLAN_VERSION:
        raise CollapseBenchError(f"{plan_dir}/plan.json: not a sweep plan of version {PLAN_VERSION}")
    return doc


def request(doc: dict[str, Any], shard: dict[str, Any], plan_dir: Path, progress: bool = True) -> EvaluateRequest:
    s = doc["settings"]
    return EvaluateRequest(
        model=shard["model"],
        suite=doc["suite"],
        tasks=shard["tasks"],
        parent=shard.get("parent"),
        stage=shard.get("stage"),
        output=str(plan_dir / shard["output"]),
        progress=progress,
        add_lora=False,  # planned as its own shard
        **{k: s[k] for k in SETTINGS if k in s},
    )


def run_shard(plan_dir: Path, index: int, progress: bool = True) -> Path:
    doc = load_plan(plan_dir)
    if not 0 <= index < len(doc["shards"]):
        raise CollapseBenchError(f"--shard {index}: the plan has shards 0..{len(doc['shards']) - 1}")
    return evaluate(request(doc, doc["shards"][index], plan_dir, progress))[0]


SAME = ("model", "harness")  # result blocks every shard of one checkpoint must share exactly
SAME_ENV = ("python", "torch", "transformers", "lm_eval", "device", "cpu_capability", "processes")


def merge(plan_dir: Path) -> list[Path]:
    """Each checkpoint's shards as one result (module docstring); nothing is written unless every one merges."""
    doc = load_plan(plan_dir)
    files: list[tuple[Path, bytes | None]] = []
    written = []
    for c in doc["checkpoints"]:
        parts = [(doc["shards"][i], _read(plan_dir, doc["shards"][i])) for i in c["shards"]]
        result, records = _merged(doc, parts)
        out = plan_dir / c["result"]
        sink = SampleSink()  # what evaluate writes: one samples file in task order, each block's reference to it
        sink.records = records
        files += sink(result, out) or [(samples_path(out), None)]
        validate_result(result, str(out))
        files.append((out, json_bytes(result)))
        written.append(out)
    commit_files(files)
    return written


def _read(plan_dir: Path, shard: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = plan_dir / shard["output"]
    if not path.is_file():
        raise CollapseBenchError(
            f"shard {shard['index']} ({shard['checkpoint']}: {', '.join(shard['tasks'])}) has no result; "
            f"run: collapse-bench sweep run {plan_dir} --shard {shard['index']}"
        )
    result = json.loads(path.read_text(encoding="utf-8"))
    validate_result(result, str(path))
    side = samples_path(path)
    records = list(read_jsonl(side)) if side.is_file() else []
    refs = [b["samples"] for b in result["tasks"].values() if isinstance(b.get("samples"), dict)]
    if refs and (not side.is_file() or any(r["sha256"] != sha256_file(side) for r in refs)):
        raise CollapseBenchError(f"{side}: missing or not the samples file its result records (sha256 differs)")
    return result, records


Shard = tuple[dict[str, Any], tuple[dict[str, Any], list[dict[str, Any]]]]  # (plan entry, (result, samples records))


def _merged(doc: dict[str, Any], parts: list[Shard]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    first = parts[0][1][0]
    blocks: dict[str, Any] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for shard, (result, recs) in parts:
        where = f"shard {shard['index']} ({shard['output']})"
        if set(result["tasks"]) != set(shard["tasks"]):
            raise CollapseBenchError(f"{where}: has tasks {sorted(result['tasks'])}, the plan says {shard['tasks']}")
        if result["model"]["name"] != expected_name(shard["model"]):
            raise CollapseBenchError(f"{where}: is a result of {result['model']['name']}, the plan says {shard['model']}")
        for key in ("seed", "limit", "batch_size"):
            if key in doc["settings"] and result["config"].get(key) != doc["settings"][key]:
                raise CollapseBenchError(
                    f"{where}: was run with {key} {result['config'].get(key)}, the plan says {doc['settings'][key]}"
                )
        for key in SAME:
            if result[key] != first[key]:
                raise CollapseBenchError(
                    f"{where}: its {key} block differs from shard {parts[0][0]['index']}'s (not one checkpoint/harness)"
                )
        env = {k: result["environment"].get(k) for k in SAME_ENV}
        if env != {k: first["environment"].get(k) for k in SAME_ENV}:
            raise CollapseBenchError(f"{where}: run with other versions or on another device than shard {parts[0][0]['index']}")
        if result["config"] != first["config"]:
            raise CollapseBenchError(f"{where}: run with other settings (config) than shard {parts[0][0]['index']}")
        blocks.update(result["tasks"])
        for r in recs:
            records.setdefault(r["task"], []).append(r)
    names = [n for n in doc["tasks"] if n in blocks] + [n for n in blocks if n not in doc["tasks"]]  # + an adapter's lora
    kinds = {n: blocks[n]["kind"] for n in names}
    suite = dict(first["suite"], tasks=names)
    registry = TaskRegistry()
    s = registry.suite(doc["suite"])
    suite["complete"] = incompleteness(kinds, s.name, s.version, s.tasks, first["config"].get("limit")) is None
    merged = {
        **first,
        "suite": suite,
        "tasks": {n: blocks[n] for n in names},
        "created_at": max(r["created_at"] for _, (r, _) in parts),
        "duration_s": round(sum(float(r["duration_s"]) for _, (r, _) in parts), 3),
    }
    return merged, {n: records[n] for n in names if n in records}


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.sweep_command == "plan":
        doc = plan(Path(args.spec), Path(args.out))
        print(f"{len(doc['shards'])} shards for {len(doc['checkpoints'])} checkpoints written to {Path(args.out) / 'plan.json'}")
        print(f"run each (any scheduler): collapse-bench sweep run {args.out} --shard I   (I = 0..{len(doc['shards']) - 1})")
        print(f"then: collapse-bench sweep merge {args.out}")
        return 0
    plan_dir = Path(args.plan)
    if args.sweep_command == "run":
        doc = load_plan(plan_dir)
        if args.all:
            todo = [s["index"] for s in doc["shards"] if not (plan_dir / s["output"]).is_file()]
        else:
            index = args.shard if args.shard is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
            if index is None:
                raise CollapseBenchError("give --shard I, --all, or run inside a Slurm job array (SLURM_ARRAY_TASK_ID)")
            todo = [int(index)]
        for i in todo:
            print(f"shard {i}: {run_shard(plan_dir, i, progress=not args.no_progress)}")
        return 0
    for path in merge(plan_dir):
        print(f"merged: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="plan, run and merge sharded evaluations of many checkpoints",
        description="Checkpoints × suite as shards (plain evaluate runs) for any scheduler.",
    )
    ssub = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)
    sp = ssub.add_parser("plan", help="write DIR/plan.json from a sweep spec (YAML)")
    sp.add_argument("spec", metavar="SPEC")
    sp.add_argument("--out", required=True, metavar="DIR")
    sr = ssub.add_parser("run", help="run one shard (or --all missing ones)")
    sr.add_argument("plan", metavar="DIR")
    sr.add_argument("--shard", type=int, metavar="I", help="shard index (default: $SLURM_ARRAY_TASK_ID)")
    sr.add_argument("--all", action="store_true", help="every shard without a result, in order")
    sr.add_argument("--no-progress", action="store_true", help="no progress bars")
    sm = ssub.add_parser("merge", help="one result per checkpoint from its shards")
    sm.add_argument("plan", metavar="DIR")
    p.set_defaults(func=cmd_sweep)
