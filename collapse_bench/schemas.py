"""JSON Schema helpers: validation with one-line errors, and parameter defaults from a schema."""

from __future__ import annotations

from typing import Any

import jsonschema

from .errors import CollapseBenchError


def validate(instance: Any, schema: dict[str, Any], where: str) -> None:
    """Validate against a JSON Schema; the first (best) error becomes one line naming file and field."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise CollapseBenchError(f"{where}: {field}: {error.message}")


def with_defaults(params: dict[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate ``params`` against a kind's schema and fill in its ``default`` values."""
    validate(params, schema, f"{where}: params")
    filled = {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}
    filled.update(params)
    return filled
