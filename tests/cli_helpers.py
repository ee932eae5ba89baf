"""CLI assertions shared by the test modules: one-line errors with a non-zero exit."""

from __future__ import annotations


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """The command failed (exit != 0) with exactly one ``collapse-bench: error:`` line containing every needle."""
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("collapse-bench: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
