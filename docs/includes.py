"""mkdocs hook: text that lives elsewhere in the repo, put into the docs without a second copy.

``<!-- import-layers -->``: the import-linter layers contract of ``pyproject.toml`` as a table.

``<!-- validate-guarantees -->``:

The list lives in ``submissions/README.md`` (and, verbatim, in ``README.md``; a test keeps the two equal).
A page line ``<!-- validate-guarantees -->`` is replaced by that section's body, taken the same way
``tests/test_leaderboard_validate.py`` takes it: from the line after the heading "What `validate`
guarantees" to the next heading (or the end of the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PLACEHOLDER = "<!-- validate-guarantees -->"
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "submissions" / "README.md"
LAYERS = "<!-- import-layers -->"
HEADING = "What `validate` guarantees"


def guarantees() -> str:
    text = SOURCE.read_text(encoding="utf-8")
    if HEADING not in text:
        raise ValueError(f"{SOURCE}: no section '{HEADING}'")
    body = text[text.index(HEADING):].split("\n", 1)[1]
    end = body.find("\n#")
    return body[: end if end >= 0 else len(body)].strip() + "\n"


def import_layers() -> str:
    """Every layers contract of ``[tool.importlinter]``: one row per layer, top (may import everything below) first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("importlinter", {})
    contracts = [c for c in config.get("contracts", []) if c.get("type") == "layers"]
    if not contracts:
        return "*(no layers contract in `pyproject.toml` yet)*\n"
    out = []
    for c in contracts:
        containers = ", ".join(f"`{x}`" for x in c.get("containers", [])) or "—"
        out += [f"**{c.get('name', 'layers')}** (containers: {containers})", "", "| layer (top first) | modules |", "|---|---|"]
        for i, layer in enumerate(c.get("layers", []), 1):
            out.append(f"| {i} | " + " · ".join(f"`{m.strip()}`" for m in layer.split("|")) + " |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, guarantees())
    if LAYERS in markdown:
        markdown = markdown.replace(LAYERS, import_layers())
    return markdown
