"""The result JSON (schema_version 1): its JSON Schema and the atomic, validated writer."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import CollapseBenchError
from ..io import atomic_write_json, check_finite

SCHEMA_VERSION = 1


@functools.lru_cache(maxsize=1)
def result_schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("result.schema.json").read_text(encoding="utf-8"))


def inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every local ``{"$ref": "#/$defs/x"}`` replaced by (a copy of) ``x`` and ``$defs`` dropped: the
    same constraints (the result schema's definitions are not recursive), without a reference lookup per value --
    half of the validation time of a result (benchmarks/leaderboard_build.py)."""
    if isinstance(node, list):
        return [inline_refs(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        rest = {k: inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
        return {"allOf": [target], **rest} if rest else target
    return {k: inline_refs(v, defs) for k, v in node.items() if k != "$defs"}


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = inline_refs(result_schema(), result_schema().get("$defs", {}))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_result(result: Any, where: str = "result") -> None:
    """Schema check + no NaN/inf anywhere; one-line error naming the field."""
    check_finite(result)
    validator = _validator()
    error = jsonschema.exceptions.best_match(validator.iter_errors(result))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise CollapseBenchError(f"{where}: {field}: {error.message[:300]}")


def write_result(path: Path, result: dict[str, Any]) -> None:
    validate_result(result, str(path))
    atomic_write_json(path, result)
