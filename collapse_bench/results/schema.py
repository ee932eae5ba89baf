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


def validate_result(result: Any, where: str = "result") -> None:
    """Schema check + no NaN/inf anywhere; one-line error naming the field."""
    check_finite(result)
    validator = jsonschema.Draft202012Validator(result_schema(), format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(result))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise CollapseBenchError(f"{where}: {field}: {error.message[:300]}")


def write_result(path: Path, result: dict[str, Any]) -> None:
    validate_result(result, str(path))
    atomic_write_json(path, result)
