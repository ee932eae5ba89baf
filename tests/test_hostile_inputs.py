"""One parametrised test over the hostile-input catalogue (``tests/fixtures/hostile/``): every case ends in
one ``collapse-bench: error:`` line, exit != 0, and a workspace that is byte-identical afterwards."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "hostile"))
from catalogue import Case, all_cases
from cli_helpers import assert_one_line_error

from collapse_bench.cli import main

CASES = all_cases()
REPO = Path(__file__).resolve().parents[1]


def tree_state(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its bytes (files), link target (symlinks) or None (dirs)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else None if p.is_dir() else p.read_bytes()
    return out


def run_child(case: Case, argv: list[str], cwd: Path) -> tuple[int, str]:
    def limit() -> None:
        for name, value in case.limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "collapse_bench", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit if case.limits else None,
        timeout=600,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("COLLAPSE_BENCH_CACHE", str(tmp_path / "cache"))
    argv = case.setup(ws)
    before = tree_state(ws)
    if case.subprocess:
        code, err = run_child(case, argv, ws)
    else:
        code = main(argv)
        err = capsys.readouterr().err
    assert_one_line_error(code, err, case.error)
    assert "Traceback" not in err
    assert tree_state(ws) == before, "the workspace changed (something was written, removed or executed)"
    if case.check is not None:
        case.check(ws)


def test_catalogue_size() -> None:
    """The figure both READMEs quote ("N bad inputs tried, N handled") is this catalogue's size."""
    assert len({c.id for c in CASES}) == len(CASES)
    for readme in (REPO / "README.md", REPO / "submissions" / "README.md"):
        assert f"**{len(CASES)} bad inputs tried, {len(CASES)} handled**" in readme.read_text(encoding="utf-8"), readme
