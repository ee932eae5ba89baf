"""Metric card generated from the metric specs (``collapse_bench.metrics.spec``).

Run as a script it prints the card as Markdown; as a mkdocs hook (``hooks:`` in ``mkdocs.yml``) it replaces
the line ``<!-- metric-card -->`` of a page with the same Markdown, so the card cannot drift from the specs
that ``validate`` (ranges), ``reproduce`` (tolerances), the plots (labels) and the site's glossary read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PLACEHOLDER = "<!-- metric-card -->"
FLAGS = (("streams", "streams"), ("reservoir", "reservoir"), ("backward", "backward"))


def _cell(text: str) -> str:
    return text.replace("|", "&#124;")


def render() -> str:
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from collapse_bench.metrics import spec as metric_spec

    out = [
        "| metric | kind | label | dir. | definition | valid range | tolerance (abs + rel·\\|old\\|) | computed | declared in |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in metric_spec.all_specs():
        rng = s.range.show() if s.range is not None else "any finite"
        tol = f"{s.tolerance.abs:g} + {s.tolerance.rel:g}"
        how = ", ".join(name for attr, name in FLAGS if getattr(s, attr)) or "—"
        out.append(
            f"| `{_cell(s.id)}` | {s.kind} | {_cell(s.display_label)} | {s.arrow} | {_cell(s.definition)} | {rng} | {tol} "
            f"| {how} | `{s.module}` |"
        )
    d = metric_spec.DEFAULT_TOLERANCE
    out += ["", f"A metric id that matches no spec: any finite number or null, tolerance {d.abs:g} + {d.rel:g}·|old|."]
    return "\n".join(out + ["", *_expectations(metric_spec)]) + "\n"


def _expectations(metric_spec: Any) -> list[str]:
    """Per metric: the source of its definition and the pre-registered change under each post-training stage kind
    (``collapse_bench/leaderboard/expected_signs.yaml``), citations below the table."""
    import fnmatch

    from collapse_bench.leaderboard.signs import expected_signs

    rules = expected_signs()
    cites = sorted({r.citation for r in rules})
    arrow = {1: "↑", -1: "↓", 0: "no sign"}
    out = [
        "### Where each definition comes from, and what post-training is expected to do to it",
        "",
        "Expected change of a stage's row vs its parent's, per stage kind, pre-registered in",
        "`collapse_bench/leaderboard/expected_signs.yaml` (*last*: the value at the last block; otherwise the",
        "card-layer summary); [n] = the citation below. The leaderboard's verdict per lineage edge compares it",
        "with the paired CI ([statistics](../leaderboard/statistics.md)). A dash: the cited literature makes no",
        "prediction for this metric that the leaderboard registers (the metric is shown, never judged).",
        "",
        "| metric | definition from | expected under post-training |",
        "|---|---|---|",
    ]
    for s in metric_spec.all_specs():
        mine = [
            r
            for r in rules
            if r.kind == s.kind and (s.matches(r.metric.rstrip("*") or r.metric) or fnmatch.fnmatchcase(s.id, r.metric))
        ]
        if not (s.reference or mine):
            continue
        signs = "; ".join(
            f"{r.stage_kind} {arrow[r.sign]}{' (last)' if r.layer == 'last' else ''} [{cites.index(r.citation) + 1}]"
            for r in mine
        )
        out.append(f"| `{_cell(s.id)}` | {_cell(s.reference) or '—'} | {signs or '—'} |")
    out += ["", *[f"{i}. {_cell(c)}" for i, c in enumerate(cites, 1)]]
    return out


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the placeholder with the generated card."""
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render())


if __name__ == "__main__":
    sys.stdout.write(render())
