"""User-facing errors: one clear line, non-zero exit, nothing partial written."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CollapseBenchError(Exception):
    """An error caused by the user's input or environment (unknown model, missing data, bad YAML...).

    The CLI prints ``collapse-bench: error: <message>`` on one line and exits with code 1.
    Messages must say what was wrong and, where possible, what to do.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


def close_matches(word: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``known`` closest to ``word``: difflib's ratio at least 0.6 and within 0.15 of the best one
    (so a clear winner comes alone); when none is that close, the names that start with ``word``."""
    names = sorted(set(known))
    scored = sorted(((difflib.SequenceMatcher(None, word, k).ratio(), k) for k in names), key=lambda rk: (-rk[0], rk[1]))
    if scored and scored[0][0] >= 0.6:
        return [k for r, k in scored if r >= max(0.6, scored[0][0] - 0.15)][:n]
    return [k for k in names if word and k.lower().startswith(word.lower())][:n]


def did_you_mean(word: str, known: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'a' or 'b'?"`` for the close matches of ``word`` among ``known`` (each shown after
    ``prefix``), or ``""``."""
    found = [f"'{prefix}{m}'" for m in close_matches(word, known)]
    if not found:
        return ""
    return "; did you mean " + (found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}") + "?"
