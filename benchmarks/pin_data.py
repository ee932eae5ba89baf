"""Regenerate ``collapse_bench/data/pinned.json`` (the leaderboard's pinned data hashes) from a mirror's MANIFEST.json.

    .venv/bin/python benchmarks/pin_data.py ../shared/data/MANIFEST.json

A maintainer step when the leaderboard's data mirror changes (every row on older data then fails `validate`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "collapse_bench" / "data" / "pinned.json"
DOC = ("sha256 and row count of every file of the leaderboard's data mirror (the layout <dataset>/<split>.jsonl). "
       "`validate` accepts a mirror file's hash only when it equals the one pinned here; generated from the mirror's "
       "MANIFEST.json (benchmarks/pin_data.py).")


def main(manifest: str) -> None:
    m = json.loads(Path(manifest).read_text(encoding="utf-8"))
    files = {f["file"]: {"sha256": f["sha256"], "rows": f["rows"]} for d in m["datasets"] for f in d["files"]}
    OUT.write_text(json.dumps({"_doc": DOC, "files": dict(sorted(files.items()))}, indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
    print(f"pinned {len(files)} files in {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/MANIFEST.json")
