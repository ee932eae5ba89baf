#!/usr/bin/env python3
"""Assemble the GitHub Pages artefact in the repository's layout, so that every link of the site resolves on Pages
exactly as it does in a checkout (model pages link the raw files as ``../../submissions/…``, the index as
``../submissions/…``):

    OUT/index.html      a redirect to leaderboard/
    OUT/leaderboard/    `collapse-bench leaderboard build --submissions SUBMISSIONS` (validates every file first)
    OUT/submissions/    a copy of SUBMISSIONS (results, samples files, noise floors, verifications; hidden files left out)

    python .github/scripts/pages_site.py [--submissions submissions] [--out _site]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REDIRECT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>collapse-bench leaderboard</title>
<meta http-equiv="refresh" content="0; url=leaderboard/"><link rel="canonical" href="leaderboard/"></head>
<body><p>The leaderboard is at <a href="leaderboard/">leaderboard/</a>.</p></body></html>
"""


def assemble(submissions: Path, out: Path) -> None:
    """Build the site into ``out/leaderboard`` and copy ``submissions`` beside it; ``out`` must be new or empty."""
    from collapse_bench.errors import CollapseBenchError
    from collapse_bench.leaderboard.site import build

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CollapseBenchError(f"--out {out} exists and is not an empty directory")
    build(submissions, out / "leaderboard")
    shutil.copytree(submissions, out / "submissions", ignore=shutil.ignore_patterns(".*"))
    (out / "index.html").write_text(REDIRECT, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    from collapse_bench.errors import CollapseBenchError

    ap = argparse.ArgumentParser(description="Assemble the GitHub Pages artefact (site + submissions, repository layout).")
    ap.add_argument("--submissions", default="submissions", help="default: submissions")
    ap.add_argument("--out", default="_site", help="default: _site (new or empty)")
    args = ap.parse_args(argv)
    try:
        assemble(Path(args.submissions), Path(args.out))
    except CollapseBenchError as exc:
        print(f"pages_site: error: {exc}", file=sys.stderr)
        return 1
    print(f"pages artefact written to {args.out} (leaderboard/, submissions/, index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
