"""Small I/O helpers: hashing, canonical JSON, atomic writes, JSONL reading."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import CollapseBenchError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8); used for hashing configs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_json(obj: Any) -> str:
    return sha256_bytes(canonical_json(obj).encode("utf-8"))


def json_differences(
    fresh: Any, stored: Any, equal: Callable[[Any, Any], bool] = lambda a, b: a == b, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, fresh, stored) of every leaf where two JSON-like values differ under ``equal``, in sorted-key
    order; dicts are compared key by key, equal-length lists item by item, anything else as a leaf."""
    if isinstance(fresh, dict) and isinstance(stored, dict):
        for key in sorted(set(fresh) | set(stored)):
            yield from json_differences(fresh.get(key), stored.get(key), equal, (*path, key))
    elif isinstance(fresh, list) and isinstance(stored, list) and len(fresh) == len(stored):
        for i, (a, b) in enumerate(zip(fresh, stored)):
            yield from json_differences(a, b, equal, (*path, i))
    elif not equal(fresh, stored):
        yield path, fresh, stored


def is_absolute_path(text: str) -> bool:
    """A POSIX root or home path, a Windows drive, root-relative or UNC path (a path of someone's disk)."""
    return bool(_ABSOLUTE.match(text))


_ABSOLUTE = re.compile(r"^(/|~|\\|[A-Za-z]:[\\/])")  # POSIX root, home, a backslash root or UNC share, a drive


def check_finite(obj: Any, where: str = "$") -> None:
    """Raise if any float in a nested structure is NaN or infinite (they are never written silently)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise CollapseBenchError(f"non-finite number {obj!r} at {where}; refusing to write it")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            check_finite(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_finite(value, f"{where}[{i}]")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir + ``os.replace`` (never a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Validate finiteness, then write pretty, key-sorted JSON atomically."""
    check_finite(obj)
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield JSON objects from a JSONL file; a malformed line is a one-line error naming file and line."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 -- a `with` below; only open() maps to "not found"
    except FileNotFoundError:
        raise CollapseBenchError(f"data file not found: {path}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CollapseBenchError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise CollapseBenchError(f"{path}:{lineno}: expected a JSON object per line")
            yield row


def json_bytes(obj: Any, *, indent: int | None = 2) -> bytes:
    """The bytes :func:`atomic_write_json` writes (finiteness checked)."""
    check_finite(obj)
    return (json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def clip(value: Any, n: int = 200) -> str:
    """``str(value)`` cut to ``n`` characters (values quoted in error messages)."""
    text = str(value)
    return text if len(text) <= n else text[:n] + f"… ({len(text)} chars)"


def _os_error(path: Path, exc: OSError, what: str) -> CollapseBenchError:
    return CollapseBenchError(f"cannot {what} {path}: {exc.strerror or type(exc).__name__}")


def check_writable(path: str | Path) -> None:
    """Before any work: ``path`` can become a file (not a dir; every existing ancestor a writable dir; a temp
    file can be created and removed next to it). Creates nothing that outlives the check."""
    path = Path(path)
    if path.is_dir():
        raise CollapseBenchError(f"--output {path} is a directory; give a file path")
    probe_dir = path.parent
    while not probe_dir.exists():
        if probe_dir.is_symlink():  # dangling link where a directory should be
            raise CollapseBenchError(f"cannot write {path}: {probe_dir} is a broken symbolic link")
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise CollapseBenchError(f"cannot write {path}: {probe_dir} is a file where a directory should be")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".collapse-bench-probe-", suffix=".tmp", dir=probe_dir)
    except OSError as exc:
        raise _os_error(probe_dir, exc, "write in") from None
    try:
        os.close(fd)
    finally:
        Path(tmp).unlink(missing_ok=True)


def commit_files(files: list[tuple[Path, bytes | None]]) -> None:
    """Replace several files as one unit: every ``(path, data)`` is written to a temp name first, then renamed in
    order (``data=None``: remove ``path``); on any failure the previous files are restored and new dirs removed,
    so either all of them change or none. OSErrors become one-line errors naming the file."""
    for path, _ in files:
        if path.is_dir() and not path.is_symlink():
            raise CollapseBenchError(f"cannot write {path}: it is a directory")
    made: list[Path] = []  # directories this call created (removed on failure)
    temps: dict[Path, Path] = {}
    backups: dict[Path, Path | None] = {}
    try:
        for path, data in files:
            missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
            for d in reversed(missing):
                try:
                    d.mkdir()
                except OSError as exc:
                    raise _os_error(d, exc, "create directory") from None
                made.append(d)
            if data is None:
                continue
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:
                raise _os_error(path.parent, exc, "write in") from None
            temps[path] = Path(tmp)
            try:
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise _os_error(path, exc, "write") from None
        for path, data in files:
            if path.exists() or path.is_symlink():
                backup = path.with_name(f".{path.name}.{os.getpid()}.bak")
                try:
                    os.replace(path, backup)
                except OSError as exc:
                    raise _os_error(path, exc, "replace") from None
                backups[path] = backup
            else:
                backups[path] = None
            if data is not None:
                try:
                    os.replace(temps[path], path)
                except OSError as exc:
                    raise _os_error(path, exc, "write") from None
                del temps[path]
    except BaseException:
        for path, saved in reversed(list(backups.items())):
            with _suppress():
                if path not in temps:  # its new version is in place (or it was removed): undo that
                    path.unlink(missing_ok=True)
                if saved is not None:
                    os.replace(saved, path)
        for leftover in [*temps.values(), *reversed(made)]:
            with _suppress():
                leftover.rmdir() if leftover in made else leftover.unlink(missing_ok=True)
        raise
    for saved in backups.values():
        if saved is not None:
            saved.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _suppress():
    import contextlib

    return contextlib.suppress(OSError)
