"""``collapse-bench chain run``: the reference sequential post-training chain, resumable stage by stage.

Layout of ``--out``:
  chain.json                 recipe, profile, interventions, seed, base, leakage check, stage status
  NN-<stage>/model/          merged checkpoint (safetensors + tokenizer) + lineage.yaml
  NN-<stage>/adapter/        the stage's LoRA adapter (for the LoRA-geometry task) + lineage.yaml (LoRA stages)
  NN-<stage>/stage.json      training log (losses, replay fractions, intervention reports, data hashes) and the
                             ``training`` block (method, steps, tokens, wall time, own held-out target before/after)
  NN-<stage>/result.json     the stage's evaluation (``--evaluate SUITE``), submission-ready
A stage directory appears only when complete (built in ``.NN-<stage>.tmp`` and renamed), so a crashed
chain restarts from the last finished stage.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import resolve_data_dir
from ..data.examples import fits, load_stage_refs, stage_examples
from ..errors import CollapseBenchError
from ..evaluate import EvaluateRequest, evaluate, seed_everything, slug
from ..interventions import StageContext, parse_interventions
from ..interventions.replay import to_sft
from ..io import atomic_write_bytes, atomic_write_json, sha256_json
from ..lora.task import TASK_NAME as LORA_TASK
from ..models import find_source
from ..paths import builtin_tasks_dir
from ..tasks import TaskRegistry
from ..yamlio import dump_yaml
from . import surgery
from .leakage import check_no_leakage
from .recipe import SURGERY_KINDS, Recipe, Stage, load_recipe
from .surgery import dose_label
from .target import HeldoutTarget, heldout_refs
from .trainer import checkpoint_dir, train_stage


@dataclass
class ChainRequest:
    recipe: str
    interventions: str | None = None
    profile: str = "cpu"
    out: str | None = None
    evaluate: str | None = None
    evaluate_stages: str = "all"  # all | final | comma-separated stage names
    eval_tasks: list[str] | None = None
    eval_limit: int | None = None
    seed: int = 0
    base: str | None = None
    data_dir: str | None = None
    device: str = "auto"
    progress: bool = True
    checkpoint_steps: int | None = None  # Trainer checkpoint every N steps (None: 1 for LoRA, 10 for full; 0: off)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # intervention parameter overrides


def recipe_path(name: str) -> Path:
    """A recipe file path, or the name of a built-in recipe in ``tasks/chains/``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    builtin = builtin_tasks_dir() / "chains" / f"{name}.yaml"
    if not builtin.is_file():
        known = sorted(p.stem for p in (builtin_tasks_dir() / "chains").glob("*.yaml"))
        raise CollapseBenchError(f"unknown recipe '{name}' (built-in: {', '.join(known)})")
    return builtin


def run_chain(req: ChainRequest) -> Path:
    import torch

    from ..models.resolve import pick_device

    recipe = load_recipe(recipe_path(req.recipe), req.profile, req.base)
    interventions = parse_interventions(req.interventions, req.overrides)
    label = ",".join(i.name for i in interventions) or "none"
    for stage in recipe.stages:
        if stage.method == "full" and any(i.needs_lora for i in interventions):
            names = ", ".join(i.name for i in interventions if i.needs_lora)
            raise CollapseBenchError(f"stage '{stage.name}': {names} acts on LoRA adapters; this stage is method: full")
    evaluated = _evaluated_stages(req.evaluate_stages, [s.name for s in recipe.stages])
    data_dir = resolve_data_dir(req.data_dir)
    device = pick_device(req.device)
    out = Path(req.out or Path("runs") / f"{recipe.name}-{recipe.profile}-{slug(label)}-s{req.seed}")
    refs = [(s.name, load_stage_refs(s.data, recipe.path, data_dir, s.seed + req.seed)) for s in recipe.stages]
    registry = TaskRegistry()
    leakage = check_no_leakage(refs, registry, data_dir)
    base = find_source(recipe.base)
    header = {
        "recipe": recipe.name,
        "recipe_hash": recipe.recipe_hash,
        "profile": recipe.profile,
        "intervention": label,
        "seed": req.seed,
        "base": {"name": recipe.base, "sha256": base.sha256},
        "intervention_params": {i.name: i.params for i in interventions},
    }
    state = _open_state(out, header)
    state["leakage_check"] = leakage
    # lineage names are display names (base.name: an alias/hub id as given, a local base by its lineage/leaf name)
    lineage: list[dict[str, Any]] = [{"name": base.name, "sha256": base.sha256, "revision": base.revision, "stage": "base"}]
    parent_dir = Path(base.path)
    adapters: list[dict[str, str]] = []
    pool: list[dict[str, Any]] = []
    parent_ref = recipe.base  # what ``evaluate --parent`` resolves to the stage's parent (the lora task's dW)
    suite_tasks = req.eval_tasks or (list(registry.suite(req.evaluate).tasks) if req.evaluate else [])
    for stage, (_, stage_refs) in zip(recipe.stages, refs):
        seed = stage.seed + req.seed
        if stage.kind in SURGERY_KINDS:  # a planted-collapse control: one sibling checkpoint per dose
            for dose in stage.doses:
                sdir = out / f"{stage.dirname}-{dose_label(stage.kind, dose)}"
                if not (sdir / "stage.json").is_file():
                    _surgery(recipe, stage, dose, parent_dir, base.path, adapters, lineage, label, seed, sdir, torch)
                info = _record(req, state, out, sdir, parent_ref, suite_tasks, stage.name in evaluated)
            if len(stage.doses) == 1:  # a single dose continues the chain
                lineage.append({"name": info["name"], "sha256": info["sha256"], "revision": None, "stage": stage.name})
                parent_dir, parent_ref = sdir / "model", str(sdir / "model")
            continue
        examples = stage_examples(stage.kind, stage_refs, seed)
        sdir = out / stage.dirname
        if not (sdir / "stage.json").is_file():
            _train(
                recipe,
                stage,
                examples,
                stage_refs,
                interventions,
                parent_dir,
                base.path,
                adapters,
                pool,
                lineage,
                label,
                seed,
                data_dir,
                sdir,
                device,
                req,
                torch,
            )
        info = _record(req, state, out, sdir, parent_ref, suite_tasks, stage.name in evaluated)
        lineage.append({"name": info["name"], "sha256": info["sha256"], "revision": None, "stage": stage.name})
        if (sdir / "adapter").is_dir():
            adapters.append({"stage": stage.name, "path": f"../../{sdir.name}/adapter"})
        pool += [to_sft(e) for e in examples]
        parent_dir = sdir / "model"
        parent_ref = str(sdir / "model")
    return out


def _evaluated_stages(spec: str, names: list[str]) -> set[str]:
    """``--evaluate-stages``: ``all``, ``final`` (the last stage only) or a comma-separated list of stage names
    (e.g. to skip a stage whose checkpoint already has a row); an unknown name is refused before any training."""
    if spec == "all":
        return set(names)
    if spec == "final":
        return {names[-1]}
    wanted = {n.strip() for n in spec.split(",") if n.strip()}
    unknown = sorted(wanted - set(names))
    if unknown or not wanted:
        raise CollapseBenchError(
            f"--evaluate-stages: unknown stage {', '.join(unknown) or repr(spec)} (all, final or of: {', '.join(names)})"
        )
    return wanted


def _record(
    req: ChainRequest, state: dict[str, Any], out: Path, sdir: Path, parent_ref: str, suite_tasks: list[str], wanted: bool
) -> dict[str, Any]:
    """A finished stage dir into chain.json; with ``--evaluate``, its result (the suite plus the lora task: the
    stage's weight update vs its parent, overlap with earlier stages; not for a control rung that left the weights
    unchanged). Returns the stage's ``stage.json``."""
    info: dict[str, Any] = json.loads((sdir / "stage.json").read_text())
    key = sdir.name.partition("-")[2]
    state["stages"][key] = {"dir": sdir.name, "status": "trained", "duration_s": info["duration_s"]}
    atomic_write_json(out / "chain.json", state)
    if req.evaluate and wanted and not (sdir / "result.json").is_file():
        lora = LORA_TASK not in suite_tasks and not surgery.leaves_weights(info.get("control") or {})
        tasks = suite_tasks + [LORA_TASK] * lora
        evaluate(
            EvaluateRequest(
                model=str(sdir / "model"),
                suite=req.evaluate,
                tasks=tasks,
                parent=parent_ref,
                data_dir=req.data_dir,
                output=str(sdir / "result.json"),
                device=req.device,
                seed=req.seed,
                limit=req.eval_limit,
                progress=req.progress,
            )
        )
    if (sdir / "result.json").is_file():
        state["stages"][key]["status"] = "evaluated"
        atomic_write_json(out / "chain.json", state)
    return info


def _open_state(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """chain.json of a previous run of the same chain (resume), or a fresh one; refuses a different chain."""
    path = out / "chain.json"
    if path.is_file():
        state = json.loads(path.read_text())
        for key in ("recipe_hash", "intervention", "seed", "base"):
            if state.get(key) != header[key]:
                raise CollapseBenchError(f"{out} holds a different chain ({key} differs); use another --out")
        return state
    out.mkdir(parents=True, exist_ok=True)
    return {**header, "stages": {}}


def _fresh_tmp(sdir: Path) -> Path:
    """The stage's build dir ``.NN-stage.tmp`` (renamed to ``sdir`` when complete), emptied."""
    tmp = sdir.parent / f".{sdir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _tokenizer(parent_dir: Path, recipe: Recipe) -> Any:
    from transformers import AutoTokenizer

    # local_files_only: transformers saves the flag it was loaded with into tokenizer_config.json, a hashed file;
    # fixed here so that a stage's sha256 does not depend on whether HF offline mode happened to be on
    tok = AutoTokenizer.from_pretrained(parent_dir, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template and recipe.chat_template:  # a pretrained base: the recipe's template, kept by every stage
        tok.chat_template = recipe.chat_template
    return tok


def _lineage_entry(recipe: Recipe, stage: Stage, name: str, lineage: list, label: str, seed: int, tok: Any) -> dict[str, Any]:
    """The lineage.yaml fields a trained stage and a surgery rung share (their data, adapters and training /
    control blocks are added by the caller)."""
    return {
        "name": name,
        "parent": lineage[-1]["name"],
        "parent_sha256": lineage[-1]["sha256"],
        "stage": stage.name,
        "stage_kind": stage.kind,
        "recipe": recipe.name,
        "recipe_hash": recipe.recipe_hash,
        "profile": recipe.profile,
        "intervention": label,
        "seed": seed,
        "lineage": list(lineage),
        "chat_template_sha256": sha256_json(tok.chat_template or ""),
    }


def _train(
    recipe: Recipe,
    stage: Any,
    examples: list,
    stage_refs: list,
    interventions: list,
    parent_dir: Path,
    base_dir: str,
    adapters: list,
    pool: list,
    lineage: list,
    label: str,
    seed: int,
    data_dir: Path | None,
    sdir: Path,
    device: str,
    req: ChainRequest,
    torch: Any,
) -> None:
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    tmp = _fresh_tmp(sdir)
    seed_everything(seed)
    tok = _tokenizer(parent_dir, recipe)
    # type-ignore: transformers' @wraps(Module.to) hides the bound self from mypy (it takes `device` for `self`)
    model = AutoModelForCausalLM.from_pretrained(parent_dir, dtype=torch.float32).to(device)  # type: ignore[arg-type]
    usable = [e for e in examples if fits(e, tok, stage.max_length)]
    if not usable:
        raise CollapseBenchError(f"stage '{stage.name}': no example fits max_length {stage.max_length}")
    dropped = len(examples) - len(usable)
    examples = usable
    ctx = StageContext(
        stage=stage,
        kind=stage.kind,
        batch_size=stage.batch_size,
        steps=stage.steps,
        seed=seed,
        tokenizer=tok,
        base_dir=Path(base_dir),
        recipe_path=recipe.path,
        previous_adapters=[sdir.parent / a["path"].removeprefix("../../") for a in adapters],
        replay_pool=list(pool),
        stage_examples=examples,
        data_dir=data_dir,
    )
    target = None
    if stage.heldout:
        held = heldout_refs(stage, stage_refs, recipe.path, data_dir, seed)
        target = HeldoutTarget(stage, held, tok, device, data_dir, seed)
        target.measure(model)  # the incoming model, before any intervention touches it
    arranged = examples
    for intervention in interventions:
        arranged = intervention.arrange(arranged, ctx)
    for intervention in interventions:
        intervention.before_stage(model, ctx)
    every = req.checkpoint_steps if req.checkpoint_steps is not None else (1 if stage.method == "lora" else 10)
    key = {"recipe_hash": recipe.recipe_hash, "stage": stage.dirname, "seed": seed, "intervention": label}
    ckpt = checkpoint_dir(sdir, {**key, "parent_sha256": lineage[-1]["sha256"], "params": [i.params for i in interventions]})
    trained, log = train_stage(
        model, tok, stage, arranged, interventions, ctx, ckpt, device=device, progress=req.progress, checkpoint_steps=every
    )
    if stage.method == "lora":
        trained.save_pretrained(tmp / "adapter")
        trained = trained.merge_and_unload()
    trained.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    training: dict[str, Any] = {
        "method": stage.method,
        **({"lora_r": stage.lora["r"], "lora_alpha": stage.lora["alpha"]} if stage.method == "lora" else {}),
        "steps": log["steps"],
        "batch_size": stage.batch_size,
        "max_length": stage.max_length,
        "lr": stage.optimizer["lr"],
        "tokens": log["tokens"],
        "wall_s": round(log.pop("wall_s"), 1),  # training time, summed over interrupted runs of the stage
        **({"resumed_at_steps": log["resumed_at"]} if log["resumed_at"] else {}),
    }
    del log["resumed_at"]
    if target is not None:
        target.measure(trained)
        training["target"] = target.block()
    name = f"{lineage[0]['name']}/{recipe.name}/{label}/s{seed - stage.seed}/{stage.dirname}"
    from ..models.resolve import dir_sha256

    sha = dir_sha256(tmp / "model")
    data_hashes = {r.key: r.sha256 for r in stage_refs}
    entry = {
        **_lineage_entry(recipe, stage, name, lineage, label, seed, tok),
        "data": data_hashes,
        "adapters": [*adapters, *([{"stage": stage.name, "path": f"../../{sdir.name}/adapter"}] * (stage.method == "lora"))],
        "training": training,
    }
    for sub in ("model", "adapter")[: 2 if stage.method == "lora" else 1]:
        atomic_write_bytes(tmp / sub / "lineage.yaml", dump_yaml(entry).encode())
    reports = {i.name: i.report() for i in interventions}
    atomic_write_json(
        tmp / "stage.json",
        {
            **log,
            "dropped_too_long": dropped,
            "name": name,
            "sha256": sha,
            "stage": stage.name,
            "kind": stage.kind,
            "data": data_hashes,
            "interventions": reports,
            "training": training,
            "duration_s": round(time.perf_counter() - t0, 3),
        },
    )
    tmp.rename(sdir)
    shutil.rmtree(ckpt, ignore_errors=True)


def _surgery(
    recipe: Recipe,
    stage: Stage,
    dose: Any,
    parent_dir: Path,
    base_dir: str,
    adapters: list,
    lineage: list,
    label: str,
    seed: int,
    sdir: Path,
    torch: Any,
) -> None:
    """One rung of a control: the incoming checkpoint, the surgery applied (chain/surgery.py), saved like a stage."""
    from transformers import AutoModelForCausalLM

    from ..models.resolve import dir_sha256

    t0 = time.perf_counter()
    tmp = _fresh_tmp(sdir)
    tok = _tokenizer(parent_dir, recipe)
    model = AutoModelForCausalLM.from_pretrained(parent_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32) if stage.kind == "extrapolate" else None
    report = surgery.apply(stage.kind, dose, model, base)
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    rung = f"{stage.dirname}-{dose_label(stage.kind, dose)}"
    name = f"{lineage[0]['name']}/{recipe.name}/{label}/s{seed - stage.seed}/{rung}"
    entry = {
        **_lineage_entry(recipe, stage, name, lineage, label, seed, tok),
        "data": {},
        "adapters": list(adapters),
        "control": {"kind": stage.kind, "dose": dose, **report},
    }
    atomic_write_bytes(tmp / "model" / "lineage.yaml", dump_yaml(entry).encode())
    atomic_write_json(
        tmp / "stage.json",
        {
            "name": name,
            "sha256": dir_sha256(tmp / "model"),
            "stage": stage.name,
            "kind": stage.kind,
            "control": entry["control"],
            "duration_s": round(time.perf_counter() - t0, 3),
        },
    )
    tmp.rename(sdir)
