"""``collapse-bench submit RESULT``: validate, then file the result under its canonical path

    submissions/<org>/<model>/<suite>-<short hash>.json     (+ <same stem>.samples.jsonl if referenced)

``org``/``model`` come from the model block (hub id ``org/model``; an alias's upstream org; a PEFT
adapter inherits its base's org; local dirs and GGUF files are ``local``, a chain stage's dir is named by its
lineage name, ``/`` -> ``--``), every part slugged with
:func:`collapse_bench.evaluate.slug` (``[a-z0-9._-]``, no leading dot, so no part can be ``..`` or hold a
separator), and the final path is checked to lie inside the submissions dir. ``short hash`` = the first
12 hex digits of :func:`.submission.identity` (model sha256 + suite + task hashes): a resubmission of
the same row lands on the same path and is refused as a duplicate. Nothing is written unless every
check passes; samples files are copied first (re-hashed) and removed again if the result cannot be written.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..evaluate import slug
from ..io import atomic_write_bytes, atomic_write_json, sha256_bytes
from ..models import LOCAL_SOURCES, SourceKind
from ..results.model import ModelInfo, Result
from .submission import (
    SAMPLES_SUFFIX,
    read_submission,
    row_key,
    samples_path,
    samples_refs,
    short_hash,
    submission_files,
)
from .validate import validate_paths


def _alias_org(name: str) -> str | None:
    from ..models.registry import ALIASES

    upstream = ALIASES[name].upstream if name in ALIASES else ""
    return upstream.split("/", 1)[0] if "/" in upstream else None


def org_and_model(model: ModelInfo) -> tuple[str, str]:
    """Unslugged (org, model) for the canonical path."""
    name, source = model.name, model.source
    if source is SourceKind.HUB:
        org, _, rest = name.partition("@")[0].partition("/")
        return org, rest
    if source is SourceKind.ALIAS:
        return _alias_org(name) or "collapse-bench", name
    leaf = Path(name.rstrip("/")).name or name
    if source is SourceKind.GGUF and leaf.endswith(".gguf"):
        leaf = leaf[: -len(".gguf")]
    base = model.base
    if source is SourceKind.PEFT and base is not None and base.source:
        return org_and_model(ModelInfo.from_doc({"name": base.name, "source": base.source}))[0], leaf
    named = model.own_name if source is SourceKind.LOCAL else None
    if named:  # a chain stage: its lineage name
        return "local", named.replace("/", "--")
    return "local", leaf


def canonical_path(doc: dict[str, Any], submissions_dir: Path, org: str | None = None) -> Path:
    """``<dir>/<org>/<model>/<suite>-<short hash>.json``, guaranteed inside ``submissions_dir``."""
    auto_org, model = org_and_model(Result.from_doc(doc).model)
    root = submissions_dir.resolve()
    target = root / slug(org or auto_org) / slug(model) / f"{slug(doc['suite']['name'])}-{short_hash(doc)}.json"
    if not target.resolve().is_relative_to(root):  # slugging makes this impossible; checked anyway
        raise CollapseBenchError(f"refusing to write outside {root}: {target}")
    return target


def existing_identities(submissions_dir: Path) -> dict[tuple[str, str, int], Path]:
    """row key -> file for every readable submission already in the dir (unreadable ones are skipped)."""
    found: dict[tuple[str, str, int], Path] = {}
    if not submissions_dir.is_dir():
        return found
    for f in submission_files([submissions_dir]):
        try:
            found.setdefault(row_key(read_submission(f)), f)
        except (CollapseBenchError, KeyError, TypeError):
            continue
    return found


def submit(result: Path, submissions_dir: Path, org: str | None = None) -> Path:
    """Validate ``result`` (against the files already submitted too) and write its canonical copy."""
    if not result.is_file():
        raise CollapseBenchError(f"{result}: (file): no such file")
    report = validate_paths([result], existing=existing_identities(submissions_dir))
    if report.failures:
        raise CollapseBenchError(report.failures[0])
    doc = copy.deepcopy(report.ok[0].doc)
    target = canonical_path(doc, submissions_dir, org)
    if target.exists():
        raise CollapseBenchError(f"{target} already exists (this row was submitted before)")
    copies: dict[Path, tuple[Path, bytes, str]] = {}
    for fpath, ref in samples_refs(doc):
        source = samples_path(result, "/".join(fpath), ref)
        if source not in copies:
            suffix = "" if not copies else f"-{len(copies) + 1}"
            copies[source] = (target.with_name(f"{target.stem}{suffix}{SAMPLES_SUFFIX}"), source.read_bytes(), ref["sha256"])
        ref["path"] = copies[source][0].name
    written: list[Path] = []
    try:
        for source, (dest, data, expected) in copies.items():
            if sha256_bytes(data) != expected:
                raise CollapseBenchError(f"{source} changed after it was validated")
            atomic_write_bytes(dest, data)
            written.append(dest)
        atomic_write_json(target, doc)
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return target


def _shown(path: Path, repo_root: Path) -> str:
    try:
        return path.resolve().relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


PREVIEW = "/tmp/collapse-bench-preview"  # where the optional local preview of the site goes (never committed)


def pr_instructions(target: Path, repo_root: Path, local: bool = False, submissions_dir: Path | None = None) -> str:
    """The PR steps for the arguments ``submit`` was given (``--submissions-dir``): a pull request that adds only the
    row's folder (CI refuses a submission PR that touches anything else; the site is built and published on merge),
    a fork for contributors without push access, an optional throw-away preview build, the PR template, and the
    reproduce command (a local checkpoint is not found by name: ``--model PATH``)."""
    rel = _shown(target, repo_root)
    subs = _shown(submissions_dir, repo_root) if submissions_dir is not None else "submissions"
    folder = rel.rsplit("/", 1)[0]
    branch = "submit/" + slug(Path(rel).stem + "-" + Path(folder).name)
    return "\n".join(
        [
            f"wrote {rel}",
            f"Next, open a pull request that changes only files under {subs}/ (CI runs `collapse-bench validate {subs}/`,",
            "a throw-away `collapse-bench leaderboard build` and a check of the changed paths; the site is published on merge):",
            "  (no push access to the repository: fork it on GitHub, then `git remote add fork <your fork's URL>`",
            "   and push to `fork` instead of `origin` below; open the pull request from the fork)",
            f"  git checkout -b {branch}",
            f"  collapse-bench validate {subs}/",
            f"  collapse-bench leaderboard build --submissions {subs}/ --out {PREVIEW}   # optional preview, not committed",
            f"  git add {folder}",
            f"  git commit -m 'Submit {Path(folder).name} ({Path(rel).stem})'",
            f"  git push -u origin {branch}",
            "Fill in the pull request template: hardware, wall time, model link, licence, suite and the exact command.",
            "Anyone can then check the row with:",
            f"  collapse-bench reproduce {rel}" + (" --model PATH/TO/THE/CHECKPOINT" if local else ""),
        ]
    )


def cmd_submit(args: argparse.Namespace) -> int:
    target = submit(Path(args.result), Path(args.submissions_dir), args.org)
    local = read_submission(target)["model"]["source"] in LOCAL_SOURCES
    print(pr_instructions(target, Path.cwd(), local, Path(args.submissions_dir)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="validate a result and file it under submissions/",
        description="Validate RESULT and write it (and its samples file) to its canonical path "
        "submissions/<org>/<model>/<suite>-<short hash>.json; prints the PR steps.",
    )
    p.add_argument("result", metavar="RESULT", help="result JSON written by `collapse-bench evaluate`")
    p.add_argument("--submissions-dir", default="submissions", metavar="DIR", help="default: submissions/")
    p.add_argument("--org", help="organisation part of the path (default: from the model; slugged)")
    p.set_defaults(func=cmd_submit)
