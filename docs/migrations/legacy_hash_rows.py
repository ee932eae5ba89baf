"""One-off migration of the committed chain-stage rows written before issue 12 (checkpoint hash, absolute paths).

    .venv/bin/python docs/migrations/legacy_hash_rows.py

Before issue 12 a checkpoint dir was hashed over its top-level weight files and ``*.json`` only, and a chain
stage's result recorded absolute paths of the submitter's disk (``model.name``, the lora task's
``update.parent`` and ``overlap.stages[*].path``). The fix hashes every file (scheme ``files-v2``) and records
display names. Re-hashing the committed rows needs their checkpoints; the chain runner re-creates them
deterministically *on one machine* — two re-trainings of stage 1 here gave byte-identical files — but
re-training all six chains on this session's machine (AVX512 AMD EPYC, kernel build fc-v669; the rows were
trained on fc-v657, CPU not recorded then) reproduced **none** of the 8 recorded old-scheme hashes nor any
of their ancestors': float rounding differs across machines, so these are not the evaluated checkpoints and
their ``files-v2`` hash cannot be given. The rows therefore keep the hash they were evaluated with, labelled
``model.sha256_scheme: "weights-json-v1"`` (legacy, weaker: code, templates and tokenizer text files are
outside it). ``validate`` accepts the label and says so, the site shows it, and ``reproduce`` refuses such a
row (re-evaluate it). Their absolute paths are replaced by the stage's lineage name / ``NN-stage/adapter``;
no metric is touched, and the file names (which hold the row identity, i.e. the unchanged hash) stay.

The two SmolLM2 alias rows (``submissions/huggingfacetb/``) only gained ``model.sha256_scheme: "file"``: an
alias is hashed by its GGUF file, which holds weights, tokenizer and chat template, so their recorded hash is
already a whole-checkpoint hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from collapse_bench.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]


def relative(path: str) -> str:
    return "/".join(Path(path).parts[-2:]) if path.startswith("/") else path


def main() -> None:
    for path in sorted((ROOT / "submissions" / "local").rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        m = doc["model"]
        if m.get("sha256_scheme"):
            continue  # migrated already
        m["sha256_scheme"] = "weights-json-v1"
        m["name"] = m["lineage"][-1]["name"]
        lora = doc["tasks"].get("lora")
        if lora:
            lora["update"]["parent"] = m["parent"]
            for stage in lora["overlap"]["stages"]:
                stage["path"] = relative(stage["path"])
            lora["overlap"]["missing_adapters"] = [relative(p) for p in lora["overlap"]["missing_adapters"]]
        atomic_write_json(path, doc)
        print(f"migrated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
