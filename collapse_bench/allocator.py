"""The CPU heap allocator: tcmalloc where it is installed, chosen once at process start.

Why (issue 14, docs/development/benchmarks.md): under glibc's malloc the probe pass's peak RSS grew by +2.6 … +14.2 %
from N to 8N texts over six runs (freed holes of per-batch tensors stay resident); under tcmalloc by +4.5 … +5.9 %
in three runs (its speed ratio is not yet separated from glibc's: one-repetition timings swing ±8 %). glibc's own
knobs cost speed (a fixed mmap threshold: bare forward 22.2 s vs 16.9 s; a trim per batch: probe ratio 1.093).
An allocator can only be chosen before the process starts (``LD_PRELOAD``), so the CLI re-executes itself once
with it preloaded, as ``python -m torch.backends.xeon.run_cpu --enable-tcmalloc`` does.

``COLLAPSE_BENCH_ALLOCATOR``: ``auto`` (default: tcmalloc if found, else the system's), ``system`` (never re-exec) or
``tcmalloc`` (an error if it is not found). Installing it: ``apt-get install libtcmalloc-minimal4`` (Debian/Ubuntu),
``conda install gperftools``. The allocator actually mapped into the process is recorded in every result's
``environment.allocator`` (read from ``/proc/self/maps``, not from the setting). It changes memory, not numbers.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

from .errors import CollapseBenchError

ENV = "COLLAPSE_BENCH_ALLOCATOR"
GUARD = "COLLAPSE_BENCH_ALLOCATOR_REEXEC"  # set in the re-executed process: never a second exec
LIBRARIES = ("tcmalloc_minimal", "tcmalloc")  # gperftools' names (find_library: "libtcmalloc_minimal.so.4")


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "system", "tcmalloc"):
        raise CollapseBenchError(f"{ENV}={value!r}: expected auto, system or tcmalloc")
    return value


def find_tcmalloc() -> str | None:
    """The tcmalloc shared library's name as the dynamic loader finds it (ldconfig's cache), or None."""
    for name in LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """``tcmalloc`` if a tcmalloc library is mapped into this process, else ``system`` (the C library's malloc);
    ``unknown`` where the process map cannot be read (not Linux)."""
    try:
        text = maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    return "tcmalloc" if "libtcmalloc" in text else "system"


def reexec_command() -> list[str]:
    """This process's own command line (interpreter options, ``-m`` or script, arguments)."""
    return [sys.executable, *sys.orig_argv[1:]]


def ensure() -> None:
    """Re-execute this process with tcmalloc preloaded when the setting asks for it and it is not in use yet;
    returns (without exec) when it is in use, not wanted, not found under ``auto``, or this is the re-executed run."""
    wanted = mode()
    if wanted == "system" or in_use() != "system":
        return
    lib = find_tcmalloc()
    if lib is None:
        if wanted == "tcmalloc":
            raise CollapseBenchError(f"{ENV}=tcmalloc, but no tcmalloc is installed (apt-get install libtcmalloc-minimal4)")
        return
    if os.environ.get(GUARD):
        if wanted == "tcmalloc":
            raise CollapseBenchError(f"{ENV}=tcmalloc: preloading {lib} did not load it")
        return  # it did not load (a loader that ignores LD_PRELOAD): carry on with the system's
    preload = " ".join(x for x in (lib, os.environ.get("LD_PRELOAD", "")) if x)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, reexec_command(), {**os.environ, "LD_PRELOAD": preload, GUARD: "1"})
