"""The heap allocator the CLI runs on (collapse_bench/allocator.py): tcmalloc preloaded by one re-exec where it is
installed, the system's malloc on request, the allocator really mapped into the process recorded in results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collapse_bench import allocator
from collapse_bench.cli import entry
from collapse_bench.errors import CollapseBenchError
from collapse_bench.results.provenance import environment_info

SHOW = "from collapse_bench import allocator; allocator.ensure(); import sys; print(allocator.in_use(), sys.argv[1:])"


def run(setting: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.GUARD)} | {allocator.ENV: setting}
    return subprocess.run([sys.executable, "-c", SHOW, *extra], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="no tcmalloc installed (make install installs it)")
def test_auto_reexecutes_once_with_tcmalloc_and_keeps_the_arguments() -> None:
    out = run("auto", "a b", "--x=1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "tcmalloc ['a b', '--x=1']"
    forced = run("tcmalloc", "c")
    assert forced.returncode == 0 and forced.stdout.startswith("tcmalloc ['c']"), forced.stderr


def test_system_keeps_the_c_librarys_malloc() -> None:
    out = run("system", "a")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("system ['a']")


def test_maps_decide_what_is_in_use(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n")
    assert allocator.in_use(maps) == "tcmalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.in_use(maps) == "system"
    assert allocator.in_use(tmp_path / "absent") == "unknown"
    assert environment_info("cpu")["allocator"] == allocator.in_use()


def test_a_bad_setting_or_a_missing_tcmalloc_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(CollapseBenchError, match="expected auto, system or tcmalloc"):
        allocator.ensure()
    monkeypatch.setattr(allocator, "in_use", lambda: "system")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    monkeypatch.setenv(allocator.ENV, "auto")
    allocator.ensure()  # auto without tcmalloc: carries on, no exec
    monkeypatch.setenv(allocator.ENV, "tcmalloc")
    monkeypatch.setattr(sys, "argv", ["collapse-bench", "--version"])
    assert entry() == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = "collapse-bench: error: COLLAPSE_BENCH_ALLOCATOR=tcmalloc, but no tcmalloc is installed"
    assert err == [line + " (apt-get install libtcmalloc-minimal4)"]
