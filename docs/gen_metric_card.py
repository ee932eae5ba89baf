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
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the placeholder with the generated card."""
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render())


if __name__ == "__main__":
    sys.stdout.write(render())
