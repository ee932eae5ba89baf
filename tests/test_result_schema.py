"""The result schema with its local ``$ref``s inlined (what ``validate_result`` runs, for speed) accepts and refuses
exactly what the schema as written does, judged by jsonschema's own reference-resolving validator."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema

from collapse_bench.results.schema import inline_refs, result_schema

REPO = Path(__file__).resolve().parents[1]


def mutants(doc: dict) -> list[dict]:
    """The committed row with one field broken at a time, in places reached through $refs and not."""
    out = []
    task = next(iter(doc["tasks"]))
    for path, value in (
        (("model", "sha256"), "not-a-sha"),
        (("tasks", task, "hash"), "zz"),
        (("tasks", task, "metrics"), {"bad id!": 1.0}),
        (("tasks", task, "metrics"), {"acc": "high"}),
        (("created_at",), "yesterday"),
        (("seed_free",), 1),
    ):
        m = copy.deepcopy(doc)
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        out.append(m)
    return out


def test_inlined_schema_judges_like_the_written_one() -> None:
    schema = result_schema()
    assert "$ref" in json.dumps(schema) and "$ref" not in json.dumps(inline_refs(schema, schema["$defs"]))
    written = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    inlined = jsonschema.Draft202012Validator(inline_refs(schema, schema["$defs"]), format_checker=jsonschema.FormatChecker())
    rows = [p for p in sorted((REPO / "submissions").rglob("*.json")) if not p.name.endswith(".verified.json")]
    docs = [json.loads(p.read_text()) for p in rows]
    docs = [d for d in docs if d.get("schema_version") == 1][:4]
    assert docs
    judged = 0
    for doc in docs:
        for candidate in [doc, *mutants(doc)]:
            a = sorted((list(e.absolute_path), e.validator) for e in written.iter_errors(candidate))
            b = sorted((list(e.absolute_path), e.validator) for e in inlined.iter_errors(candidate))
            assert a == b
            judged += bool(a)
    assert judged >= 5 * len(docs)  # the mutants really are invalid
