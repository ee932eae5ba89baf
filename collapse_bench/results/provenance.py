"""Provenance that cannot lie: versions from package metadata, hashes of the harness's own code.

Never the current working directory's git hash (lm-eval's pitfall): the git sha is read from the
installed package's PEP 610 ``direct_url.json`` (VCS installs), or from the repository that holds
the package's source files (editable installs), with a ``dirty`` flag.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import collapse_bench

from .. import allocator

PACKAGES = ["torch", "transformers", "lm_eval", "peft", "trl", "accelerate", "datasets", "numpy", "vllm"]
_DIST_NAMES = {"lm_eval": "lm-eval"}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(_DIST_NAMES.get(name, name))
    except metadata.PackageNotFoundError:
        return None


def code_sha256() -> str:
    """sha256 over the harness's own Python sources and task YAMLs, in sorted path order."""
    from ..paths import builtin_tasks_dir

    pkg = Path(collapse_bench.__file__).resolve().parent
    tasks = builtin_tasks_dir()
    digest = hashlib.sha256()
    files = [("collapse_bench", pkg, f) for f in sorted(pkg.rglob("*.py"))]
    files += [("tasks", tasks, f) for f in sorted(tasks.rglob("*")) if f.is_file() and f.suffix in (".yaml", ".yml", ".jsonl")]
    for prefix, root, f in files:
        digest.update(f"{prefix}/{f.relative_to(root).as_posix()}\n".encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _git_info(pkg_dir: Path) -> tuple[str | None, bool | None]:
    try:
        dist = metadata.distribution("collapse-bench")
        direct = dist.read_text("direct_url.json")
        if direct:
            commit = json.loads(direct).get("vcs_info", {}).get("commit_id")
            if commit:
                return commit, False
    except metadata.PackageNotFoundError:
        pass
    try:
        sha = subprocess.run(["git", "-C", str(pkg_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(pkg_dir), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def harness_info() -> dict[str, Any]:
    pkg_dir = Path(collapse_bench.__file__).resolve().parent
    sha, dirty = _git_info(pkg_dir)
    return {
        "name": "collapse-bench",
        "version": package_version("collapse-bench") or collapse_bench.__version__,
        "git_sha": sha,
        "git_dirty": dirty,
        "code_sha256": code_sha256(),
    }


def _cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo, else platform.processor()), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()[:100]
    except OSError:
        pass
    return platform.processor()[:100] or None


def environment_info(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        # the CPU kernels torch dispatches to (e.g. AVX512 vs AVX2) change float rounding, so
        # training is bit-identical on one machine but not across CPU generations
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu_model(),
        "allocator": allocator.in_use(),  # what is mapped into this process (allocator.py), not the setting
    }
    for name in PACKAGES:
        env[name] = package_version(name)
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env
