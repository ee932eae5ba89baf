"""Shared fixtures: a tiny random Llama with its own BPE tokenizer (sub-second), the real SmolLM2
(slow tests), and the shared data mirror (through the data-dir setting, never copied)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from collapse_bench.models.tiny import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

# Probe runs write reference caches: this session's go to a fresh temporary dir (never the user's cache, never a
# stale cache of an earlier run); subprocess CLI tests inherit it.
_REFERENCE_CACHE = tempfile.TemporaryDirectory(prefix="cb-refcache-")
os.environ["COLLAPSE_BENCH_REFERENCE_CACHE"] = _REFERENCE_CACHE.name
# and the finished tasks of interrupted evaluate runs (collapse_bench/evaluate.py) likewise
_RUNS_CACHE = tempfile.TemporaryDirectory(prefix="cb-runs-")
os.environ["COLLAPSE_BENCH_RUNS_CACHE"] = _RUNS_CACHE.name


def shared_data_dir() -> Path | None:
    env = os.environ.get("COLLAPSE_BENCH_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "MANIFEST.json").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data mirror not found (set COLLAPSE_BENCH_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (GGUF -> cached safetensors on first use, ~30 s once)."""
    from collapse_bench.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu", dtype="float32")


MIRROR_SKIP = "shared data mirror not found"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the real SmolLM2 (the ``smollm2`` fixture) is ``slow``, marked or not."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI, a test must not skip for want of the data mirror when the mirror is there (a broken lookup
    would otherwise turn every data test into a silent skip)."""
    if not os.environ.get("CI") or shared_data_dir() is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    stray = [r for r in skipped if MIRROR_SKIP in str(getattr(r, "longrepr", ""))]
    if stray:
        print(f"\nCI: {len(stray)} test(s) skipped for want of the data mirror although it is present: {stray[0].nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
