#!/usr/bin/env python3
"""The PR workflow's path check: a pull request that adds a submission changes only files under ``submissions/``.

A pull request that *adds* a file under ``submissions/`` is a submission PR, and every path it changes must lie under
``submissions/`` (no code, no ``leaderboard/``: the site is built and published on merge, so two submission PRs never
conflict). A pull request that adds no file there (a code PR) may change anything. The changes are those of
``git diff --name-status --no-renames BASE...HEAD`` (from the merge base; a rename is a deletion plus an addition).
Exit 1 with one line naming the first path outside ``submissions/``; 2 when git cannot compute the diff.

    python .github/scripts/pr_paths.py --base origin/main [--repo DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SUBMISSIONS = "submissions/"


def changes(repo: Path, base: str) -> list[tuple[str, str]]:
    """(status letter, path) of every file changed between the merge base of ``base`` and HEAD, and HEAD."""
    cmd = ["git", "-C", str(repo), "diff", "--name-status", "--no-renames", "-z", f"{base}...HEAD"]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode("utf-8", "surrogateescape")
    fields = out.split("\0")[:-1]  # "A\0path\0M\0path\0"
    return [(fields[i][:1], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]


def problem(changed: list[tuple[str, str]]) -> str | None:
    """Why these changes are refused (one line), or None: a submission added together with a path elsewhere."""
    added = sorted(p for s, p in changed if s == "A" and p.startswith(SUBMISSIONS))
    outside = sorted(p for _, p in changed if not p.startswith(SUBMISSIONS))
    if not added or not outside:
        return None
    more = f" (and {len(outside) - 1} other path{'s' * (len(outside) > 2)})" if len(outside) > 1 else ""
    return (
        f"{outside[0]}{more}: a pull request that adds a submission ({added[0]}) may change only files under "
        f"{SUBMISSIONS}; open the other changes as their own pull request (the site is rebuilt on merge)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--base", required=True, help="the base branch, e.g. origin/main")
    ap.add_argument("--repo", default=".", help="the repository (default: the current directory)")
    args = ap.parse_args(argv)
    try:
        changed = changes(Path(args.repo), args.base)
    except (OSError, subprocess.CalledProcessError) as exc:
        err = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
        print(f"pr_paths: error: git diff {args.base}...HEAD failed: {err[-1] if err else exc}", file=sys.stderr)
        return 2
    why = problem(changed)
    if why is not None:
        print(f"pr_paths: error: {why}", file=sys.stderr)
        return 1
    added = sum(s == "A" and p.startswith(SUBMISSIONS) for s, p in changed)
    kind = f"a submission PR ({added} file{'s' * (added != 1)} added under {SUBMISSIONS})" if added else "no submission added"
    print(f"pr_paths: ok: {len(changed)} changed path{'s' * (len(changed) != 1)}, {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
