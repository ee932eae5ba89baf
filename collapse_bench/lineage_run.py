"""``collapse-bench evaluate --lineage DIR``: every stage of a chain run evaluated in one process, the model built once.

The first stage's checkpoint is loaded as ``evaluate`` loads it; for each later stage the weights of the model
already in memory are replaced in place by that stage's saved tensors (every ``*.safetensors`` file of its dir,
every key present, only tied weights may be absent, shapes equal), after checking that the stage's config and
tokenizer files are the first stage's: the model and tokenizer are built once and the process starts once. The
weights are then exactly the ones a separate load of the stage reads, so each stage's result equals a separate
``evaluate`` of its dir (``tests/test_lineage_run.py``), and its provenance is that dir's: sha256, lineage
(``lineage.yaml``), parent.

Chain runs keep each stage's merged weights; the stages stack (stage k is trained on stage k-1), so a peft adapter
hot-swap on one base would give stage k only when every adapter is applied in turn. Swapping the merged tensors is
exact and as cheap; lineages stored as adapters of one base only are not handled here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .errors import CollapseBenchError
from .evaluate import EvaluateRequest, evaluate
from .lineagefile import chain_stages, stage_label
from .models import LoadedModel, find_source, load_model
from .models.resolve import model_info


def swap_weights(model: Any, checkpoint: Path) -> None:
    """Replace ``model``'s weights in place by the tensors of ``checkpoint``'s safetensors files (one clear error when
    they do not fit: another architecture or shape)."""
    import torch
    from safetensors.torch import load_file

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise CollapseBenchError(f"{checkpoint}: no *.safetensors weights to swap in (adapter-only stages are not handled)")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    own = model.state_dict()
    groups: dict[int, list[str]] = {}  # tensors sharing storage (tied embeddings / LM head): one must be given
    for k, v in own.items():
        groups.setdefault(v.data_ptr() if v.numel() else id(v), []).append(k)
    missing = sorted(g[0] for g in groups.values() if not any(k in state for k in g))
    unknown = sorted(set(state) - set(own))
    bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unknown or bad:
        what = missing[:1] or unknown[:1] or bad[:1]
        raise CollapseBenchError(f"{checkpoint}: its weights do not fit the loaded model (first: {what[0]})")
    with torch.no_grad():
        for k, t in state.items():
            own[k].copy_(t.to(own[k].dtype))


SAME_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
IGNORED_CONFIG = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")


def check_same_model(first: Path, ckpt: Path) -> None:
    """``ckpt`` has ``first``'s config (up to names and versions) and tokenizer files, so swapping weights is a load."""
    import json

    def config(d: Path) -> dict[str, Any]:
        try:
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CollapseBenchError(f"{d}: no readable config.json ({type(exc).__name__})") from None
        return {k: v for k, v in cfg.items() if k not in IGNORED_CONFIG}

    if config(first) != config(ckpt):
        raise CollapseBenchError(f"{ckpt}: its config.json differs from {first}'s; evaluate it separately")
    for name in SAME_FILES:
        a, b = first / name, ckpt / name
        if a.is_file() != b.is_file() or (a.is_file() and a.read_bytes() != b.read_bytes()):
            raise CollapseBenchError(f"{ckpt}: its {name} differs from {first}'s; evaluate it separately")


def evaluate_lineage(run_dir: Path, req: EvaluateRequest, out_dir: Path) -> list[Path]:
    """Every stage of ``run_dir`` with ``req``'s tasks and settings; results ``out_dir/<NN-stage>.json``."""
    from .ood import backends

    stages = chain_stages(run_dir)
    for ckpt in stages[1:]:  # every stage checked before any work (one line, nothing written)
        check_same_model(stages[0], ckpt)
    written: list[Path] = []
    loaded: LoadedModel | None = None
    for ckpt in stages:
        label = stage_label(ckpt)
        stage_req = dataclasses.replace(req, model=str(ckpt), output=str(out_dir / f"{label}.json"))
        if loaded is None:
            loaded = load_model(str(ckpt), device=req.device, dtype=req.dtype, trust_remote_code=req.trust_remote_code)
            current = loaded
        else:
            source = find_source(str(ckpt))
            swap_weights(loaded.model, Path(source.path))
            dtype, device = loaded.info["dtype"], loaded.info["device"]
            current = LoadedModel(loaded.model, loaded.tokenizer, source, model_info(source, loaded.model, dtype, device))
        backends.clear_cache()  # an lm-eval wrapper holds no weights, but start each stage as a separate run does
        path, _ = evaluate(stage_req, preloaded=current)
        print(f"{label}: {path}")
        written.append(path)
    return written
