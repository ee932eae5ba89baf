"""Post-training interventions against representation collapse; one module per intervention."""

from __future__ import annotations

from typing import Any

from ..errors import CollapseBenchError
from ..paths import builtin_tasks_dir
from ..schemas import validate
from ..yamlio import read_yaml
from .base import Intervention, StageContext
from .diversity_reg import DiversityRegularisation
from .feature_refresh import FeatureRefresh
from .lora_decorrelation import LoraDecorrelation
from .replay import Replay

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.name: cls for cls in (Replay, FeatureRefresh, DiversityRegularisation, LoraDecorrelation)
}


def default_params(name: str) -> dict[str, Any]:
    """The intervention's default strength from ``tasks/interventions/<name>.yaml``."""
    path = builtin_tasks_dir() / "interventions" / f"{name}.yaml"
    raw = read_yaml(path) if path.is_file() else {}
    if not isinstance(raw, dict) or not isinstance(raw.get("params", {}), dict):
        raise CollapseBenchError(f"{path}: expected a mapping with 'params'")
    return dict(raw.get("params") or {})


def parse_interventions(spec: str | None, overrides: dict[str, dict[str, Any]] | None = None) -> list[Intervention]:
    """``"replay,lora_decorrelation"`` -> plugin instances with default (or overridden) parameters."""
    names = [n.strip() for n in (spec or "").split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in INTERVENTIONS]
    if unknown:
        raise CollapseBenchError(f"unknown intervention '{unknown[0]}' (known: {', '.join(sorted(INTERVENTIONS))})")
    if len(set(names)) != len(names):
        raise CollapseBenchError(f"intervention listed twice in '{spec}'")
    overrides = overrides or {}
    out = []
    for n in sorted(names):
        params = {**default_params(n), **overrides.get(n, {})}
        validate(params, INTERVENTIONS[n].PARAMS_SCHEMA, f"intervention {n}: params")
        out.append(INTERVENTIONS[n](**params))
    return out


__all__ = ["INTERVENTIONS", "Intervention", "StageContext", "default_params", "parse_interventions"]
