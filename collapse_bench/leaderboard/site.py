"""``collapse-bench leaderboard build|check``: the static site in ``leaderboard/``.

Output: ``index.html`` (models, interventions and hypothesis tables; sortable and filterable with a small
inline script; works from ``file://``, no network), ``models/<slug>.html`` per submission, ``plots/*.svg``,
``data.csv`` (string cells starting with = + - @ tab CR prefixed with ' against formula injection),
``data.json`` and the marker ``.collapse-bench-leaderboard``: ``build`` replaces only a directory that is
empty or holds that marker. Jinja2 with autoescape on: every string from a submission is escaped.
Deterministic: no clock anywhere, rows ordered by submission id before any computation, bootstrap seeds
derived from ids, SVGs without dates; two builds from the same submissions are byte-identical, which
``check`` verifies by rebuilding into a temp dir.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from ..errors import CollapseBenchError
from ..io import sha256_json
from ..metrics.calibration import T_BOUNDS, temperature_at_bound
from ..results.provenance import package_version
from .aggregate import build_tables
from .comparisons import comparisons
from .entry import Entry, composite_config, entries_from, guard
from .forked import Background
from .hypothesis import Points, hypothesis_panel
from .hypothesis_plots import hypothesis_plots
from .index_view import glossary as glossary  # re-exported: the glossary rows (tests, docs)
from .index_view import index_context, ranks_by_suite
from .lineages import lineage_pages
from .model_view import model_page, shown_comparisons
from .noisefloor import NoiseFloor, load_noise_floors
from .numbers import wbr
from .plots import entry_plots
from .validate import validate_paths

MARKER = ".collapse-bench-leaderboard"
MARKER_TEXT = b"collapse-bench leaderboard: written by `collapse-bench leaderboard build`, which replaces this directory\n"
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return clean(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"))


def fmt_num(x: Any) -> str:
    x = clean(x)
    if x is None:
        return "—"
    if isinstance(x, (bool, int)):
        return str(x)
    if isinstance(x, float):
        return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


def shown(metric: str, x: Any) -> str | None:
    """ "≥ 20" / "≤ 0.05" for a ``temperature_opt`` at a bound of its search, else None (plain number)."""
    x = clean(x)
    if metric != "temperature_opt" or not isinstance(x, (int, float)):
        return None
    side = temperature_at_bound(float(x))
    return None if side is None else f"≥ {T_BOUNDS[1]:g}" if side == "upper" else f"≤ {T_BOUNDS[0]:g}"


def csv_safe(x: Any) -> Any:
    """OWASP CSV-injection rule: a string cell starting with = + - @ tab or CR gets a leading '."""
    return "'" + x if isinstance(x, str) and x.startswith(CSV_TRIGGERS) else x


def data_value(x: Any) -> str:
    x = clean(x)
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("collapse_bench.leaderboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, dv=data_value, wbr=wbr)
    return env


def stamp(entries: list[Entry]) -> dict[str, Any]:
    suites = sorted({(e.doc["suite"]["name"], e.doc["suite"]["version"]) for e in entries})
    return {
        "suites": ", ".join(f"suite {n} v{v}" for n, v in suites) or "no suites yet",
        "harness": package_version("collapse-bench") or "unknown",
        "n": len(entries),
        "inputs": sha256_json([[e.id, e.doc] for e in entries]),
    }


def render(entries: list[Entry], out: Path, floors: dict[str, NoiseFloor] | None = None) -> None:
    """Write the whole site into ``out`` (an empty or new dir, never the published one: :func:`build` renders into
    a temp dir and swaps it in); ``floors``: the committed noise floors by sha256."""
    entries = sorted(entries, key=lambda e: e.id)
    tables = build_tables(entries, floors=floors)
    with Background(lambda: clean(comparisons(tables, floors=floors))) as later:  # beside the hypothesis panel
        points: Points = {}
        hyp, hyp_hidden = hypothesis_panel(tables, points=points)
        hyp_rows = records(hyp)
        env = environment()
        models = records(tables.models)
        pages = {r["id"]: r["page"] for r in models}
        scalars = {rid: clean(tables.scalars.loc[rid].to_dict()) for rid in tables.scalars.index}
        cfg = composite_config()
        common = {"stamp": stamp(entries), "components": list(cfg["components"])}
        files: dict[str, bytes] = {MARKER: MARKER_TEXT, **hypothesis_plots(hyp_rows, points, tables)}
        found = later.result()
    by_row = shown_comparisons(found, tables, pages)
    ranked = ranks_by_suite(models)  # one ranking per suite version, for the index and every model page
    for row in models:
        entry = tables.entries[row["id"]]
        base = tables.entries.get(row["base_id"]) if row["base_id"] else None
        plots = []
        with guard(row["id"], "render"):
            for task, kind, svg in entry_plots(entry, base):
                name = f"{row['page']}--{task}-{kind}.svg"
                files[f"plots/{name}"] = svg
                plots.append({"file": name, "alt": f"{task}: {kind}"})
            page = model_page(env, row, tables, pages, plots, common, by_row.get(row["id"], []), ranked)
            files[f"models/{row['page']}.html"] = page.encode()
    files["index.html"] = (
        env.get_template("index.html.j2")
        .render(
            **index_context(tables, models, floors, ranked),  # the per-suite model tables, facets, column groups, glossary
            interventions=records(tables.interventions),
            hypothesis=hyp_rows,
            hypothesis_hidden=hyp_hidden,
            pages=pages,
            min_n=cfg["hypothesis"]["min_n"],
            weights=list(cfg["scores"]["score"]["weights"].items()),
            legacy_weights=list(cfg["scores"]["composite"]["weights"].items()),
            **common,
        )
        .encode()
    )
    extra, found_data = lineage_pages(env, tables, found, hyp_rows, common)  # lineages.html, findings.html
    files.update(extra)
    wide = tables.models.set_index("id").join(tables.scalars).join(tables.deltas.add_prefix("delta."))
    wide = wide.reset_index().rename(columns={"index": "id"})
    for col in wide.columns:
        if not pd.api.types.is_numeric_dtype(wide[col]):
            wide[col] = wide[col].map(csv_safe)
    wide = wide.rename(columns=csv_safe)
    files["data.csv"] = wide.to_csv(index=False, lineterminator="\n").encode()
    data = {
        "stamp": common["stamp"],
        "composite": cfg,
        "models": models,
        "scalars": scalars,
        "deltas": {rid: clean(tables.deltas.loc[rid].to_dict()) for rid in tables.deltas.index},
        "cis": tables.cis,
        "interventions": records(tables.interventions),
        "hypothesis": hyp_rows,
        "hypothesis_hidden": hyp_hidden,
        "comparisons": found,
        "noise_floors": sorted(f.path for f in (floors or {}).values()),
        "findings": found_data,
    }
    files["data.json"] = (json.dumps(clean(data), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
    for rel in sorted(files):  # plain writes: ``out`` is a fresh temp dir that build() swaps in whole (atomic there)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(files[rel])
        (out / rel).chmod(0o644)
    for d in (out, *{(out / rel).parent for rel in files}):
        d.chmod(0o755)


def load_entries(submissions: Path) -> list[Entry]:
    """Validate every submission (all must pass) and read them for the aggregator."""
    if not submissions.is_dir():
        raise CollapseBenchError(f"--submissions {submissions} is not a directory")
    report = validate_paths([submissions])
    if report.failures:
        raise CollapseBenchError(f"{len(report.failures)} invalid submission(s); first: {report.failures[0]}")
    return entries_from(report.ok, submissions)


def load_inputs(submissions: Path) -> tuple[list[Entry], dict[str, NoiseFloor]]:
    """What a build reads: the validated submissions and the committed noise floors."""
    return load_entries(submissions), load_noise_floors(submissions)


def is_leaderboard(out: Path) -> bool:
    """``out`` holds the marker only :func:`render` writes (index.html or data.json alone prove nothing)."""
    marker = out / MARKER
    return marker.is_file() and not marker.is_symlink() and marker.read_bytes() == MARKER_TEXT


def check_out(submissions: Path, out: Path) -> None:
    """Refuse an --out that ``build`` must never replace (it deletes the old directory)."""
    o, s, cwd = out.resolve(), submissions.resolve(), Path.cwd().resolve()
    if o == cwd or o in cwd.parents:
        raise CollapseBenchError(f"--out {out} is the current directory or one of its parents; refusing to replace it")
    if o == s or o in s.parents or s in o.parents:
        raise CollapseBenchError(f"--out {out} is, contains or lies inside --submissions {submissions}; refusing to replace it")
    if (o / ".git").exists() or (o / "pyproject.toml").exists():
        raise CollapseBenchError(f"--out {out} is a repository root; refusing to replace it")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_leaderboard(out)))):
        raise CollapseBenchError(
            f"--out {out} exists and is not a leaderboard directory (no {MARKER} marker written by "
            f"`leaderboard build`); refusing to replace it"
        )


def build(submissions: Path, out: Path) -> None:
    """Render into a temp dir next to ``out``, then replace ``out`` (only if it is empty or a leaderboard)."""
    check_out(submissions, out)
    entries, floors = load_inputs(submissions)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        render(entries, tmp / "site", floors)
        (tmp / "site").mkdir(exist_ok=True)
        if out.exists():
            out.rename(tmp / "old")
        (tmp / "site").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tree(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}


def compare_trees(fresh: Path, out: Path, submissions: Path) -> int:
    """Raise naming the first file (sorted) that is missing, stale or different in ``out``."""
    new, committed = tree(fresh), tree(out)
    for rel in sorted(set(new) | set(committed)):
        shown = (out / rel).as_posix()
        if rel not in committed:
            raise CollapseBenchError(
                f"{shown}: missing; the leaderboard is out of date (run `collapse-bench leaderboard build` and commit {out})"
            )
        if rel not in new:
            raise CollapseBenchError(f"{shown}: not produced by a fresh build (stale file); rebuild and commit {out}")
        if committed[rel].read_bytes() != new[rel].read_bytes():
            raise CollapseBenchError(
                f"{shown}: differs from a fresh build of {submissions}; run `collapse-bench leaderboard build` and commit {out}"
            )
    return len(new)


def check(submissions: Path, out: Path) -> int:
    """Rebuild into a temp dir and compare with ``out`` (:func:`compare_trees`)."""
    entries, floors = load_inputs(submissions)
    with tempfile.TemporaryDirectory(prefix="collapse-bench-check-") as tmp:
        render(entries, Path(tmp), floors)
        return compare_trees(Path(tmp), out, submissions)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    submissions, out = Path(args.submissions), Path(args.out)
    if args.leaderboard_command == "build":
        build(submissions, out)
        print(f"leaderboard written to {out} ({len(tree(out))} files)")
    else:
        n = check(submissions, out)
        print(f"{out} is up to date ({n} files identical to a fresh build)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="build or check the static leaderboard site",
        description="Build the static leaderboard from validated submissions, or check that it is up to date.",
    )
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="SUBCOMMAND", required=True)
    for name, text in (
        ("build", "render submissions/ into leaderboard/"),
        ("check", "rebuild into a temp dir and fail if leaderboard/ differs"),
    ):
        q = lsub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument("--submissions", default="submissions", metavar="DIR", help="default: submissions/")
        q.add_argument("--out", default="leaderboard", metavar="DIR", help="default: leaderboard/")
        q.set_defaults(func=cmd_leaderboard)
