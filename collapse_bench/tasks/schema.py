"""The task schema: one JSON Schema for the envelope every task YAML shares (each kind's parameter schema
is in :mod:`collapse_bench.tasks.params`)."""

from __future__ import annotations

from typing import Any

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,79}$"

DATA_REF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dataset": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"},
        "split": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"},
        "path": {"type": "string", "minLength": 1},
        "builtin": {"type": "string"},
        "domain": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"},
        "n": {"type": "integer", "minimum": 1},
        "template": {"type": "string", "minLength": 1},
        "role": {"type": "string", "pattern": r"^[a-z_]+$"},
        "filter": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    },
    "oneOf": [
        {"required": ["dataset", "split"], "not": {"anyOf": [{"required": ["path"]}, {"required": ["builtin"]}]}},
        {"required": ["path"], "not": {"anyOf": [{"required": ["dataset"]}, {"required": ["builtin"]}]}},
        {"required": ["builtin"], "not": {"anyOf": [{"required": ["dataset"]}, {"required": ["path"]}]}},
    ],
}

TASK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "kind"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "integer", "minimum": 1},
        "kind": {"type": "string"},
        "description": {"type": "string"},
        "data": {"type": "array", "items": DATA_REF_SCHEMA},
        "params": {"type": "object"},
        "superseded_by": {"type": "string"},
    },
}

SUITE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "tasks"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "tasks": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": NAME_PATTERN}},
        "limits": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
    },
}
