"""``collapse-bench chain target RUN --stage NAME --heldout N``: a finished stage's own held-out target measured
again, on N held-out items per data file, without retraining.

The incoming model (the previous stage's, or the chain's base) and the trained one are measured exactly as the
chain measures them after training (:class:`.target.HeldoutTarget`: same held-out rule, seed and formulas), only
``heldout`` differs. The block is added to the stage's ``training`` as ``target_remeasured`` — in ``stage.json``
and in the stage's ``lineage.yaml`` files, which the checkpoint hash leaves out (``models.resolve``), so the
stage's sha256, and every checkpoint keyed by it, is unchanged; the training-time ``target`` stays as it was. A
stage that already has its ``result.json`` is refused (that result records the training block it was evaluated
with). Why: a training-time target on few items can miss the 3 SE bar through its own noise; the remeasure says
so with both numbers, it does not replace the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from ..cliutil import add_common, positive_int, quiet_libraries
from ..errors import CollapseBenchError
from ..io import atomic_write_bytes, atomic_write_json
from ..yamlio import dump_yaml


def remeasure(run: Path, stage_name: str, heldout: int, data_dir: str | None, device: str = "cpu") -> dict[str, Any]:
    """The ``target_remeasured`` block of one stage of the chain run in ``run`` (written; module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..data import resolve_data_dir
    from ..data.examples import load_stage_refs
    from ..models import find_source
    from ..models.resolve import dir_sha256, pick_device
    from .recipe import load_recipe
    from .runner import _tokenizer, recipe_path
    from .target import TARGETS, HeldoutTarget, heldout_refs

    try:
        state = json.loads((run / "chain.json").read_text(encoding="utf-8"))
        _ = [state[k] for k in ("recipe", "profile", "recipe_hash", "seed")] + [state["base"][k] for k in ("name", "sha256")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CollapseBenchError(f"{run}: not a chain run (chain.json: {type(exc).__name__}: {exc})") from None
    recipe = load_recipe(recipe_path(state["recipe"]), state["profile"], state["base"]["name"])
    if recipe.recipe_hash != state["recipe_hash"]:
        raise CollapseBenchError(f"{run}: the recipe '{recipe.name}' changed since this chain ran (recipe hash differs)")
    stage = next((s for s in recipe.stages if stage_name in (s.name, s.dirname)), None)
    if stage is None or stage.kind not in TARGETS:
        names = ", ".join(s.name for s in recipe.stages if s.kind in TARGETS)
        raise CollapseBenchError(f"{run}: no training stage '{stage_name}' (stages with a target: {names})")
    sdir = run / stage.dirname
    if not (sdir / "stage.json").is_file():
        raise CollapseBenchError(f"{sdir}: the stage has not finished training")
    if (sdir / "result.json").exists():
        raise CollapseBenchError(
            f"{sdir}: already evaluated (result.json records the training block it had); remeasure before evaluating"
        )
    if stage.index == 1:
        base = find_source(recipe.base)
        if base.sha256 != state["base"]["sha256"]:
            raise CollapseBenchError(
                f"{run}: the base {recipe.base} is not the checkpoint this chain trained from (sha256 differs)"
            )
        incoming, before_sha = Path(base.path), base.sha256
    else:
        prev = run / recipe.stages[stage.index - 2].dirname
        incoming, before_sha = prev / "model", json.loads((prev / "stage.json").read_text(encoding="utf-8"))["sha256"]
        if dir_sha256(incoming) != before_sha:
            raise CollapseBenchError(f"{incoming}: its files changed since the chain recorded them (sha256 differs)")
    after_sha = json.loads((sdir / "stage.json").read_text(encoding="utf-8"))["sha256"]
    if dir_sha256(sdir / "model") != after_sha:
        raise CollapseBenchError(f"{sdir / 'model'}: its files changed since the chain recorded them (sha256 differs)")
    data = resolve_data_dir(data_dir)
    seed = stage.seed + int(state["seed"])
    train_refs = load_stage_refs(stage.data, recipe.path, data, seed)
    wider = dataclasses.replace(stage, heldout=heldout)
    held = heldout_refs(wider, train_refs, recipe.path, data, seed)
    dev = pick_device(device)
    target = HeldoutTarget(wider, held, _tokenizer(incoming, recipe), dev, data, seed)
    for path in (incoming, sdir / "model"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev)  # type: ignore[arg-type]
        target.measure(model)
        del model
    shas = {"before": before_sha, "after": after_sha}
    block = {**target.block(), "heldout": heldout, "seed": seed, "models_sha256": shas}
    _add(sdir, block)
    return block


def _add(sdir: Path, block: dict[str, Any]) -> None:
    """``training.target_remeasured`` into stage.json and the lineage files (each written atomically)."""
    log = json.loads((sdir / "stage.json").read_text(encoding="utf-8"))
    log["training"]["target_remeasured"] = block
    for sub in ("model", "adapter"):
        path = sdir / sub / "lineage.yaml"
        if path.is_file():
            entry = yaml.safe_load(path.read_text(encoding="utf-8"))
            entry["training"]["target_remeasured"] = block
            atomic_write_bytes(path, dump_yaml(entry).encode())
    atomic_write_json(sdir / "stage.json", log)


def cmd_chain_target(args: argparse.Namespace) -> int:
    quiet_libraries()
    block = remeasure(Path(args.run), args.stage, args.heldout, args.data_dir, args.device)
    main = block["metrics"][block["target"]]
    print(
        f"{args.stage}: {block['target']} {main['before']:.4g} -> {main['after']:.4g} (Δ {main['delta']:.4g}, paired SE "
        f"{main['se_paired']:.3g}, n = {block['n']}): {'moved' if block['moved'] else 'not moved'} by the 3 SE rule"
    )
    return 0


def register(csub: argparse._SubParsersAction) -> None:
    p = csub.add_parser(
        "target",
        help="measure a finished stage's own held-out target again on more items",
        description="Measure a trained stage's own held-out target again (before/after, N held-out items per data "
        "file) and add it to the stage's training block as target_remeasured; the checkpoint hash is unchanged.",
    )
    p.add_argument("run", metavar="RUN", help="a chain run dir (chain.json)")
    p.add_argument("--stage", required=True, metavar="NAME", help="stage name (sft) or dir name (01-sft)")
    p.add_argument("--heldout", required=True, type=positive_int, metavar="N", help="held-out items per data file")
    add_common(p, "data_dir", "device")
    p.set_defaults(func=cmd_chain_target)
