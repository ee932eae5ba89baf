"""Reading and writing the project's YAML safely.

Every YAML the harness reads from the user (tasks, suites, lineage files, chain recipes, interventions,
tolerances) goes through :func:`load_yaml_text`: ``yaml.SafeLoader`` without aliases and anchors (``&a``/``*a``
are refused: no alias bombs), UTF-8 only, a nesting limit; every failure is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import CollapseBenchError
from .io import clip


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and anchors (an alias bomb expands to gigabytes from a few lines)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors and aliases (&name, *name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(obj: Any) -> str:
    """YAML the project can read back: safe types only and no anchors/aliases (which :class:`StrictLoader` refuses)."""
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; a one-line error naming ``where`` (and the line) otherwise."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CollapseBenchError(f"{at}: invalid YAML ({clip(problem)})") from None
    except RecursionError:
        raise CollapseBenchError(f"{where}: invalid YAML (nested too deeply)") from None


def read_yaml(path: Path) -> Any:
    """:func:`load_yaml_text` of a UTF-8 file; unreadable or non-UTF-8 files are one-line errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CollapseBenchError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollapseBenchError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    return load_yaml_text(text, str(path))
