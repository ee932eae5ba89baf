"""Helpers shared by the test modules: running the CLI in-process, one-line errors with a non-zero exit, and
comparing two results' task blocks."""

from __future__ import annotations

import math

import pytest

from collapse_bench.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``collapse-bench ARGS`` in this process (argparse's SystemExit as its code)."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: --version, usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def blocks(doc: dict, drop: tuple[str, ...] = ("duration_s", "samples")) -> dict:
    """A result's task blocks without the keys that may differ between equal runs (wall time, samples file name)."""
    return {n: {k: v for k, v in b.items() if k not in drop} for n, b in doc["tasks"].items()}


def close(a: object, b: object, rel: float) -> bool:
    """Floats within ``rel`` (absolute 1e-12 near 0), lists elementwise, anything else equal."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    return a == b


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """The command failed (exit != 0) with exactly one ``collapse-bench: error:`` line containing every needle."""
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("collapse-bench: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
