"""Helpers for the leaderboard tests: submissions derived from the REAL tiny-model result fixture."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOOD = FIXTURES / "good_submission" / "tiny-quick.json"
BAD = FIXTURES / "bad_submissions"


def good_doc() -> dict[str, Any]:
    return json.loads(GOOD.read_text(encoding="utf-8"))


def child_doc(
    base: dict[str, Any],
    name: str,
    sha_digit: str,
    scale: float,
    stage: str = "sft",
    recipe: str | None = None,
    intervention: str | None = None,
) -> dict[str, Any]:
    """A later-stage checkpoint of ``base``: other weights hash, lineage to the base, geometry scaled."""
    doc = copy.deepcopy(base)
    m = doc["model"]
    m.update(
        name=name,
        sha256=sha_digit * 64,
        parent=base["model"]["name"],
        stage=stage,
        lineage=[
            {"name": base["model"]["name"], "sha256": base["model"]["sha256"], "revision": None, "stage": None},
            {"name": name, "sha256": sha_digit * 64, "revision": None, "stage": stage},
        ],
    )
    if recipe is not None:
        m["recipe"], m["intervention"] = recipe, intervention
    metrics = doc["tasks"]["probe_quick"]["metrics"]
    metrics["effective_rank"] = min(metrics["effective_rank"] * scale, 64.0)
    metrics["participation_ratio"] = min(metrics["participation_ratio"] * scale, 64.0)
    return doc


def write_submission(root: Path, doc: dict[str, Any], rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    return path


def submissions_tree(root: Path) -> list[Path]:
    """A small submissions dir: the base, two chain stages (baseline + an intervention) of one recipe."""
    base = good_doc()
    base["model"]["name"] = "collapse-bench/tiny-random-llama"
    base["model"]["source"] = "hub"
    docs = {
        "collapse-bench/tiny-random-llama/quick-a.json": base,
        "local/tiny-sft/quick-b.json": child_doc(base, "tiny-sft", "b", 0.8, recipe="tiny-chain", intervention="none"),
        "local/tiny-sft-reg/quick-c.json": child_doc(
            base, "tiny-sft-reg", "c", 1.1, recipe="tiny-chain", intervention="lora-orthogonal"
        ),
    }
    return [write_submission(root, doc, rel) for rel, doc in docs.items()]


def snapshot(root: Path) -> dict[str, bytes]:
    return (
        {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}
    )
