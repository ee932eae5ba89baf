"""``collapse-bench data pull``: build the data dir from the Hugging Face hub at pinned revisions.

Writes ``<data_dir>/<dataset>/<split>.jsonl`` in the shared mirror's normalised layout (same
schemas, ids, domains and subset rules, see ``normalise.py``) plus ``MANIFEST.json`` with the sha256
of every file and the HF path and revision each dataset came from. Everything is downloaded and
normalised before the first file is written, so a failed pull leaves the data dir as it was.

The sources (HF paths, pinned revisions, split maps, subset rules, licences, schemas) are in
:mod:`.catalogue`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..hub import require_hub
from ..io import atomic_write_bytes, atomic_write_json, sha256_file
from .catalogue import SOURCES, Source, schema
from .normalise import NORMALISERS, Row

OFFLINE_HINT = (
    "Work offline with --data-dir DIR pointing at an existing data mirror "
    "(e.g. a copy of shared/data), or retry `collapse-bench data pull` with network access."
)


def _select(names: list[str] | None) -> list[str]:
    if names is None:
        return list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise CollapseBenchError(
            f"unknown dataset(s) {', '.join(map(repr, unknown)) or '(none given)'}; valid names: {', '.join(SOURCES)}"
        )
    return list(dict.fromkeys(names))


def _load(name: str, src: Source, config: str | None, split: str, revision: str | None) -> list[Row]:
    import datasets  # heavy import, only when actually pulling

    kwargs: dict[str, Any] = {"split": split, "revision": revision}
    if src.data_dir:
        kwargs["data_dir"] = src.data_dir
    try:
        return [dict(r) for r in datasets.load_dataset(src.hf_path, config, **kwargs)]
    except Exception as exc:  # network, missing revision, unsupported loading script, ...
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        where = f"{src.hf_path}{'/' + config if config else ''} split={split} revision={revision or 'default branch'}"
        raise CollapseBenchError(f"could not load {name} from the HF hub ({where}): {type(exc).__name__}: {detail}") from None


def _build_rows(name: str, src: Source, loaded: dict[tuple[str | None, str], list[Row]]) -> dict[str, list[Row]]:
    normalise = NORMALISERS[name]
    out: dict[str, list[Row]] = {}
    for sm in src.splits:
        indexed: list[tuple[int, Row]] = []
        for config in src.configs:
            rows = loaded[(config, sm.source)]
            offset = 0 if src.index_per_config else len(indexed)
            indexed.extend((offset + i, r) for i, r in enumerate(rows))
        if sm.head is not None:
            indexed = indexed[: sm.head]
        if sm.evenly is not None and indexed:
            indexed = [indexed[math.floor(i * len(indexed) / sm.evenly)] for i in range(min(sm.evenly, len(indexed)))]
        rows_out = [n for i, r in indexed if (n := normalise(r, index=i, split=sm.target)) is not None]
        if sm.first is not None:
            rows_out = rows_out[: sm.first]
        if sm.last is not None:
            rows_out = rows_out[-sm.last :]
        out[sm.target] = rows_out
    return out


def build_dataset(name: str, revision: str | None = None) -> dict[str, list[Row]]:
    """Download one dataset at ``revision`` and return {target split: normalised rows} (nothing written)."""
    src = SOURCES[name]
    loaded = {(c, s): _load(name, src, c, s, revision) for c in src.configs for s in dict.fromkeys(m.source for m in src.splits)}
    if src.builder is not None:
        return src.builder({s: rows for (_, s), rows in loaded.items()})
    return _build_rows(name, src, loaded)


def jsonl_bytes(rows: list[Row]) -> bytes:
    """One JSON object per line, UTF-8 (ensure_ascii=False), keys in the normalisers' fixed order."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def manifest_entry(name: str, revision: str | None, files: list[dict[str, Any]]) -> dict[str, Any]:
    src = SOURCES[name]
    return {
        "name": name,
        "kind": src.kind,
        "source_repository": f"https://huggingface.co/datasets/{src.hf_path}",
        "hf_path": src.hf_path,
        "hf_configs": list(src.configs),
        "hf_data_dir": src.data_dir,
        "revision": revision,
        "commit": revision,
        "source_paths": [f"{c or 'default'}/{s}" for c in src.configs for s in dict.fromkeys(m.source for m in src.splits)],
        "license": src.license,
        "subset_rule": src.subset_rule,
        "notes": src.notes,
        "schema": schema(name),
        "files": files,
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("datasets"), list) else None


def pull(
    data_dir: Path, datasets: list[str] | None = None, *, revision_overrides: Mapping[str, str | None] | None = None
) -> list[Path]:
    """Build ``data_dir`` from the hub: ``<dataset>/<split>.jsonl`` for each dataset (default: all of
    SOURCES) and ``MANIFEST.json``; returns the written paths (manifest last). Offline -> one-line error."""
    names = _select(datasets)
    overrides = dict(revision_overrides or {})
    bad = [n for n in overrides if n not in SOURCES]
    if bad:
        raise CollapseBenchError(f"revision override for unknown dataset(s) {', '.join(bad)}; valid names: {', '.join(SOURCES)}")
    require_hub(f"datasets ({', '.join(names)})" if len(names) <= 4 else f"{len(names)} datasets", OFFLINE_HINT)
    data_dir = Path(data_dir)
    revisions = {n: overrides.get(n, SOURCES[n].revision) for n in names}
    built = {n: build_dataset(n, revisions[n]) for n in names}  # all downloads before any write
    written: list[Path] = []
    entries: dict[str, dict[str, Any]] = {}
    for name, splits in built.items():
        files = []
        for split, rows in splits.items():
            if not rows:
                raise CollapseBenchError(f"{name}/{split}: no usable rows after normalisation (revision {revisions[name]})")
            path = data_dir / name / f"{split}.jsonl"
            payload = jsonl_bytes(rows)
            atomic_write_bytes(path, payload)
            written.append(path)
            files.append(
                {
                    "split": split,
                    "file": f"{name}/{split}.jsonl",
                    "rows": len(rows),
                    "sha256": sha256_file(path),
                    "bytes": len(payload),
                }
            )
        entries[name] = manifest_entry(name, revisions[name], files)
    manifest_path = data_dir / "MANIFEST.json"
    previous = _read_manifest(manifest_path)
    kept = [d for d in (previous or {}).get("datasets", []) if isinstance(d, dict) and d.get("name") not in entries]
    order = {n: i for i, n in enumerate(SOURCES)}
    datasets_out = sorted(kept + list(entries.values()), key=lambda d: order.get(d.get("name"), len(order)))
    atomic_write_json(
        manifest_path,
        {
            "description": "Benchmark data for the representation-collapse harness, built by `collapse-bench data pull` "
            "from the Hugging Face hub at pinned revisions. All files are JSONL, one object per line; "
            "paths are relative to this folder.",
            "folder": str(data_dir),
            "datasets": datasets_out,
        },
    )
    written.append(manifest_path)
    return written
