"""When a result is a complete run of its suite version (the one rule `evaluate` records and `validate` recomputes).

A result is complete when its tasks are exactly the suite version's (extra tasks of an OPTIONAL_KINDS kind
allowed: a chain stage's LoRA-update geometry) and it was run without ``--limit``. Only complete rows are ranked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OPTIONAL_KINDS = ("lora",)


def incompleteness(
    kinds: Mapping[str, str], suite: str, version: int, suite_tasks: Sequence[str], limit: int | None
) -> str | None:
    """Why a result with tasks ``kinds`` (name -> kind) is not a complete run of the suite, or None."""
    missing = [t for t in suite_tasks if t not in kinds]
    extra = [t for t in sorted(kinds) if t not in suite_tasks and kinds[t] not in OPTIONAL_KINDS]
    if missing:
        return f"task '{missing[0]}' of the suite is missing ({len(missing)} of {len(suite_tasks)} missing)"
    if extra:
        return f"task '{extra[0]}' is not in suite '{suite}' v{version}"
    if limit is not None:
        return f"it was run with --limit {limit}"
    return None


def result_incompleteness(doc: dict[str, Any], suite_tasks: Sequence[str]) -> str | None:
    return incompleteness(
        {t: b["kind"] for t, b in doc["tasks"].items()},
        doc["suite"]["name"],
        doc["suite"]["version"],
        suite_tasks,
        doc["config"].get("limit"),
    )
