"""``collapse-bench compare RESULT...``: results of one lineage, stage by stage.

Every result's ``model.lineage`` (base .. this checkpoint) places it in its chain; checkpoints are identified by
sha256 (by name where a sha256 is missing). The results are ordered by lineage depth (then by the order given),
and for every scalar ``tasks.<task>.metrics.<id>``:
    delta_base = value - value of the lineage's base (the result whose checkpoint is lineage[0], if given),
    delta_prev = value - value of the nearest given ancestor (lineage[-2], else further up).
Results with different bases are refused (one line, exit 1); branches of one base (e.g. two interventions) are
allowed: each result is compared with its own ancestors. Two results of the same checkpoint are refused. A task
whose config hash differs between results is compared anyway, with a warning on stderr.

The divergence section lists, per stage and probe task, the KL (nats per token) and the top-1 / mutual 10-NN
agreement of each checkpoint to its lineage's base and to its parent (``kl_to_base``, ``kl_to_parent``, ...,
measured by the probe against the references' caches; empty for a base or where a reference was unavailable).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import CollapseBenchError
from .io import atomic_write_bytes, atomic_write_json
from .results import validate_result
from .results.model import LineageEntry, Result

COLUMNS = ("task", "metric", "depth", "stage", "model", "result", "value", "delta_base", "delta_prev")


@dataclass
class Node:
    path: str
    result: Result
    lineage: tuple[LineageEntry, ...]  # base .. this checkpoint

    @property
    def key(self) -> str:
        return entry_key(self.lineage[-1])

    @property
    def root(self) -> str:
        return entry_key(self.lineage[0])

    @property
    def depth(self) -> int:
        return len(self.lineage) - 1

    @property
    def stage(self) -> str:
        return self.lineage[-1].stage or ("base" if self.depth == 0 else "?")


def entry_key(entry: LineageEntry) -> str:
    return entry.sha256 or f"name:{entry.name}"


def load_result(path: str) -> Node:
    """A validated result file; results written before lineage existed count as roots."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CollapseBenchError(f"result file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CollapseBenchError(f"cannot read result {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CollapseBenchError(f"{path}: not a JSON result ({exc.msg} at line {exc.lineno})") from None
    validate_result(result, path)
    typed = Result.from_doc(result)
    m = typed.model
    return Node(path, typed, m.lineage or (LineageEntry(m.name, m.sha256, m.revision, m.stage),))


def order(nodes: list[Node]) -> list[Node]:
    """Depth order; one-line errors for different bases or two results of one checkpoint."""
    first = nodes[0]
    for node in nodes[1:]:
        if node.root != first.root:
            raise CollapseBenchError(
                f"{node.path} and {first.path} belong to different lineages (bases "
                f"{node.lineage[0].name} and {first.lineage[0].name}); compare one lineage at a time"
            )
    seen: dict[str, str] = {}
    for node in nodes:
        if node.key in seen:
            raise CollapseBenchError(f"{seen[node.key]} and {node.path} are results of the same checkpoint; pass one of them")
        seen[node.key] = node.path
    return sorted(nodes, key=lambda n: n.depth)  # stable: ties keep the order given


def ancestor(node: Node, by_key: dict[str, Node]) -> Node | None:
    for item in reversed(node.lineage[:-1]):
        if entry_key(item) in by_key:
            return by_key[entry_key(item)]
    return None


def _delta(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def compare(nodes: list[Node]) -> list[dict[str, Any]]:
    """One row per (task, metric, result that has it) in depth order, with value, delta_base and delta_prev."""
    nodes = order(nodes)
    by_key = {n.key: n for n in nodes}
    base = by_key.get(nodes[0].root)
    values = {n.key: n.result.metrics() for n in nodes}
    _warn_hashes(nodes)
    keys = list(dict.fromkeys(k for n in nodes for k in values[n.key]))
    rows = []
    for task, metric in keys:
        for node in nodes:
            if (task, metric) not in values[node.key]:  # that result did not run the task
                continue
            value = values[node.key][(task, metric)]
            prev = ancestor(node, by_key)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "depth": node.depth,
                    "stage": node.stage,
                    "model": node.result.model.name,
                    "result": node.path,
                    "value": value,
                    "delta_base": _delta(value, values[base.key].get((task, metric))) if base and base is not node else None,
                    "delta_prev": _delta(value, values[prev.key].get((task, metric))) if prev else None,
                }
            )
    return rows


def _warn_hashes(nodes: list[Node]) -> None:
    hashes: dict[str, tuple[str, str]] = {}
    for node in nodes:
        for task, block in node.result.tasks.items():
            if task in hashes and hashes[task][0] != block.hash:
                print(
                    f"collapse-bench: warning: task {task} has a different config/data hash in {hashes[task][1]} and "
                    f"{node.path}; its deltas compare different measurements",
                    file=sys.stderr,
                )
            hashes.setdefault(task, (block.hash, node.path))


DIVERGENCE = (
    ("kl_to_base", "KL base"),
    ("kl_to_parent", "KL parent"),
    ("top1_agreement_base", "top1 base"),
    ("top1_agreement_parent", "top1 parent"),
    ("mutual_knn_base", "kNN base"),
    ("mutual_knn_parent", "kNN parent"),
)


def divergence(nodes: list[Node]) -> list[dict[str, Any]]:
    """Per result (depth order) and task that reports them: the DIVERGENCE metrics (None where not measured)."""
    rows = []
    for node in order(nodes):
        values = node.result.metrics()
        for task in dict.fromkeys(t for t, m in values if m in dict(DIVERGENCE)):
            rows.append(
                {"task": task, "depth": node.depth, "stage": node.stage, "result": node.path}
                | {m: values.get((task, m)) for m, _ in DIVERGENCE}
            )
    return rows


def _format_divergence(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    head = f"{'task':20} {'stage':16} " + " ".join(f"{label:>11}" for _, label in DIVERGENCE)
    lines = ["divergence from the lineage (KL in nats per token; agreement: top-1 token, mutual 10-NN)", head]
    for r in rows:
        lines.append(f"{r['task'][:20]:20} {r['stage'][:16]:16} " + " ".join(f"{_fmt(r[m]):>11}" for m, _ in DIVERGENCE))
    return [*lines, ""]


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.4g}" if signed else f"{value:.6g}"


def format_table(nodes: list[Node], rows: list[dict[str, Any]]) -> str:
    nodes = order(nodes)
    root = nodes[0].lineage[0]
    out = [
        f"lineage base: {root.name} (sha256 {str(root.sha256)[:12]})",
        f"{'depth':>5}  {'stage':16} {'model':40} result",
    ]
    out += [f"{n.depth:>5}  {n.stage[:16]:16} {n.result.model.name[-40:]:40} {n.path}" for n in nodes]
    out.append("")
    out += _format_divergence(divergence(nodes))
    out.append(f"{'task':20} {'metric':34} {'stage':16} {'value':>12} {'Δ base':>11} {'Δ prev':>11}")
    last = None
    for r in rows:
        label = (r["task"], r["metric"])
        task, metric = (r["task"][:20], r["metric"][:34]) if label != last else ("", "")
        last = label
        out.append(
            f"{task:20} {metric:34} {r['stage'][:16]:16} {_fmt(r['value']):>12} "
            f"{_fmt(r['delta_base'], True):>11} {_fmt(r['delta_prev'], True):>11}"
        )
    return "\n".join(out)


def cmd_compare(args: argparse.Namespace) -> int:
    nodes = [load_result(p) for p in args.results]
    rows = compare(nodes)
    if args.match:
        rows = [r for r in rows if args.match in f"{r['task']}.{r['metric']}"]
    print(format_table(nodes, rows))
    if args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(args.csv, buf.getvalue().encode("utf-8"))
    if args.json:
        ordered = order(nodes)
        atomic_write_json(
            args.json,
            {
                "base": asdict(ordered[0].lineage[0]),
                "results": [
                    {
                        "result": n.path,
                        "model": n.result.model.name,
                        "stage": n.stage,
                        "depth": n.depth,
                        "sha256": n.lineage[-1].sha256,
                    }
                    for n in ordered
                ],
                "rows": rows,
                "divergence": divergence(nodes),
            },
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare results of one lineage stage by stage",
        description="Compare result JSONs of one lineage (base -> stage 1 -> ...): every scalar metric "
        "with its change vs the base and vs the previous stage.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT", help="result JSON files (any order)")
    p.add_argument("--match", metavar="TEXT", help="only metrics whose '<task>.<metric>' contains TEXT")
    p.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.set_defaults(func=cmd_compare)
