"""The light commands stay light: ``tasks list`` and ``validate`` import no torch; the kind tables agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _torch_after(argv: list[str]) -> str:
    code = (
        f"import sys\nfrom collapse_bench.cli import main\nrc = main({argv!r})\nprint('rc', rc, 'torch', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_tasks_list_imports_no_torch() -> None:
    assert _torch_after(["tasks", "list"]) == "rc 0 torch False"


def test_validate_imports_no_torch() -> None:
    assert _torch_after(["validate", "tests/fixtures/good_submission/tiny-quick.json"]) == "rc 0 torch False"


def test_every_kind_has_a_params_schema_and_a_module() -> None:
    from collapse_bench.kinds import KINDS, TaskKind, kind_module
    from collapse_bench.tasks.params import KIND_PARAMS

    assert set(KINDS) == set(KIND_PARAMS)
    for kind in KINDS:  # every kind module implements the protocol and re-exports its schema
        module = kind_module(kind)
        assert isinstance(module, TaskKind), kind
        assert module.PARAMS_SCHEMA is KIND_PARAMS[kind], kind
