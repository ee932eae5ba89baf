"""Chain recipes (``tasks/chains/*.yaml``): an ordered list of post-training stages plus profiles.

A stage fixes its kind, data references (the data dir layout), steps, batch size, sequence length,
LoRA config, optimiser and seed. A profile (``tiny`` | ``cpu`` | ``reference``) overrides the scale
(base model, steps, batch, length, rows per data reference) and nothing else, so two recipes that
differ only in stage order stay comparable under every profile.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.sources import DataRef
from ..errors import CollapseBenchError
from ..io import sha256_json
from ..lineagefile import CONTROL_KINDS, TRAINING_KINDS
from ..schemas import validate
from ..tasks.schema import DATA_REF_SCHEMA, NAME_PATTERN
from ..yamlio import read_yaml

# planted-collapse controls (chain/surgery.py, which imports torch; the recipe schema must not): kind -> dose key
SURGERY_KINDS = dict(zip(CONTROL_KINDS, ("rank", "alpha", "perm_seed")))
STAGE_KINDS = (*TRAINING_KINDS, *SURGERY_KINDS)  # surgery kinds: planted-collapse controls (chain/surgery.py)
PROFILES = ("tiny", "cpu", "reference")
METHODS = ("lora", "full")  # a fresh LoRA adapter per stage (merged afterwards), or full fine-tuning
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

_LORA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "r": {"type": "integer", "minimum": 1},
        "alpha": {"type": "number", "exclusiveMinimum": 0},
        "dropout": {"type": "number", "minimum": 0, "maximum": 1},
        "target_modules": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
}
_OPTIM = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "lr": {"type": "number", "minimum": 0},
        "weight_decay": {"type": "number", "minimum": 0},
        "schedule": {"enum": ["constant", "linear", "cosine"]},
        "warmup_ratio": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
}
_STAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "kind": {"enum": list(STAGE_KINDS)},
        "data": {"type": "array", "minItems": 1, "items": DATA_REF_SCHEMA},
        "steps": {"type": "integer", "minimum": 1},
        "batch_size": {"type": "integer", "minimum": 1},
        "max_length": {"type": "integer", "minimum": 16},
        "lora": _LORA,
        "optimizer": _OPTIM,
        "beta": {"type": "number", "exclusiveMinimum": 0},
        "seed": {"type": "integer", "minimum": 0},
        "method": {"enum": list(METHODS)},
        # surgery doses (one value = one checkpoint; several = a ladder of sibling checkpoints)
        "rank": {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "full"}]}},
        "alpha": {"type": "array", "minItems": 1, "items": {"type": "number"}},
        "perm_seed": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        "heldout": {"type": "integer", "minimum": 0},
    },
}
_PROFILE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "base": {"type": "string"},
        "steps_scale": {"type": "number", "exclusiveMinimum": 0},
        "steps": {"type": "integer", "minimum": 1},
        "batch_size": {"type": "integer", "minimum": 1},
        "max_length": {"type": "integer", "minimum": 16},
        "rows": {"type": "integer", "minimum": 1},
        "heldout": {"type": "integer", "minimum": 0},
    },
}
RECIPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "base", "stages"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "base": {"type": "string"},
        "chat_template": {"type": "string", "minLength": 1},
        "stages": {"type": "array", "minItems": 1, "items": _STAGE},
        "profiles": {"type": "object", "additionalProperties": False, "properties": dict.fromkeys(PROFILES, _PROFILE)},
    },
}
STAGE_DEFAULTS: dict[str, Any] = {
    "batch_size": 4,
    "max_length": 256,
    "beta": 0.1,
    "seed": 0,
    "method": "lora",
    "heldout": 0,  # held-out items per data file for the stage's own target (chain/target.py); 0 = not measured
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL_LINEAR},
    "optimizer": {"lr": 2e-4, "weight_decay": 0.0, "schedule": "cosine", "warmup_ratio": 0.0},
}


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based position in the chain
    name: str
    kind: str
    data: tuple[DataRef, ...]
    steps: int
    batch_size: int
    max_length: int
    lora: dict[str, Any]
    optimizer: dict[str, Any]
    beta: float
    seed: int
    method: str = "lora"
    heldout: int = 0
    doses: tuple[Any, ...] = ()  # surgery stages: the ladder's doses (rank | alpha | seed)

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.name}"


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str
    base: str
    stages: tuple[Stage, ...]
    profile: str
    path: Path
    config: dict[str, Any]
    chat_template: str | None = None  # for a base without one (a pretrained base); saved with every stage

    @property
    def recipe_hash(self) -> str:
        """sha256 of the canonical recipe as run (profile applied)."""
        return sha256_json({"config": self.config, "profile": self.profile})


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_stage(spec: dict[str, Any], last: bool, path: Path) -> None:
    """A training stage needs data and steps; a surgery stage its dose list (a ladder only as the last stage)."""
    where = f"{path}: stage '{spec['name']}'"
    if spec["kind"] in TRAINING_KINDS:
        missing = [k for k in ("data", "steps") if k not in spec]
        if missing:
            raise CollapseBenchError(f"{where}: a {spec['kind']} stage needs {' and '.join(missing)}")
        return
    key = SURGERY_KINDS[spec["kind"]]
    if key not in spec:
        raise CollapseBenchError(f"{where}: a {spec['kind']} stage needs its dose list '{key}'")
    if len(spec[key]) > 1 and not last:
        raise CollapseBenchError(f"{where}: a ladder ({len(spec[key])} doses) must be the recipe's last stage")


def load_recipe(path: str | Path, profile: str = "cpu", base: str | None = None) -> Recipe:
    """Read, validate and resolve a recipe under ``profile`` (``base`` overrides the base model)."""
    path = Path(path)
    if not path.is_file():
        raise CollapseBenchError(f"recipe not found: {path}")
    if profile not in PROFILES:
        raise CollapseBenchError(f"unknown profile '{profile}' (use {', '.join(PROFILES)})")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a recipe must be a YAML mapping")
    validate(raw, RECIPE_SCHEMA, str(path))
    prof = (raw.get("profiles") or {}).get(profile, {})
    stages = []
    for i, spec in enumerate(raw["stages"], 1):
        _check_stage(spec, i == len(raw["stages"]), path)
        s = _merge(STAGE_DEFAULTS, {"data": [], "steps": 0, **spec})
        steps = prof.get("steps") or max(1, round(s["steps"] * prof.get("steps_scale", 1.0)))
        data = tuple(
            DataRef(**{**ref, **({"n": min(ref.get("n", prof["rows"]), prof["rows"])} if "rows" in prof else {})})
            for ref in s["data"]
        )
        stages.append(
            Stage(
                i,
                s["name"],
                s["kind"],
                data,
                steps,
                prof.get("batch_size", s["batch_size"]),
                prof.get("max_length", s["max_length"]),
                s["lora"],
                s["optimizer"],
                float(s["beta"]),
                int(s["seed"]),
                s["method"],
                int(prof.get("heldout", s["heldout"])) if s["kind"] in TRAINING_KINDS else 0,
                tuple(s[SURGERY_KINDS[s["kind"]]]) if s["kind"] in SURGERY_KINDS else (),
            )
        )
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise CollapseBenchError(f"{path}: stage names must be unique ({', '.join(names)})")
    # a training stage's resolved form has no "doses" key: recipe hashes of training chains stay as they were
    stage_dicts = [{k: v for k, v in s.__dict__.items() if k != "doses" or v} for s in stages]
    resolved = {**raw, "stages": stage_dicts, "base": base or prof.get("base", raw["base"])}
    return Recipe(
        raw["name"],
        raw["version"],
        raw.get("description", ""),
        resolved["base"],
        tuple(stages),
        profile,
        path.resolve(),
        resolved,
        raw.get("chat_template"),
    )
