"""CLI reference generated from the argument parser (``collapse_bench.cli.build_parser``).

Run as a script it prints the reference as Markdown; as a mkdocs hook (``hooks:`` in ``mkdocs.yml``) it
replaces the line ``<!-- cli-reference -->`` of a page with the same Markdown, so the page cannot drift
from the parser: every command and subcommand, its ``--help`` text at a fixed width.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterator

PLACEHOLDER = "<!-- cli-reference -->"
WIDTH = 100  # fixed, so the page does not depend on the terminal that builds it


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:  # argparse has no public API for the subcommand tree
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command path, parser, one-line help) for the parser and every nested subcommand, depth first."""
    for name, sub, help_ in _subparsers(parser):
        yield (*path, name), sub, help_
        yield from walk(sub, (*path, name))


def fixed_width_help(parser: argparse.ArgumentParser) -> str:
    old = parser.formatter_class
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)  # type: ignore[assignment]
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = old


def render() -> str:
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from collapse_bench.cli import build_parser

    os.environ.setdefault("COLUMNS", str(WIDTH))
    parser = build_parser()
    commands = list(walk(parser))
    out = ["## Commands", "", "| command | what it does |", "|---|---|"]
    for path, _, help_ in commands:
        name = " ".join(path)
        out.append(f"| [`collapse-bench {name}`](#{'-'.join(path)}) | {help_.replace('|', '&#124;')} |")
    out += ["", "## `collapse-bench`", "", "```text", fixed_width_help(parser), "```"]
    for path, sub, _ in commands:
        out += ["", f"## `collapse-bench {' '.join(path)}` {{#{'-'.join(path)}}}", "", "```text", fixed_width_help(sub), "```"]
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the placeholder with the generated reference."""
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render())


if __name__ == "__main__":
    sys.stdout.write(render())
