"""The reference cache: what one checkpoint's probe pass leaves behind so that later checkpoints can be compared
with it (KL, neighbourhood geometry) without loading it again. Every probe run of a checkpoint with a sha256
writes one, streamed from the same forward pass; it is never part of a result.

Key and layout (one directory, built under a temporary name and renamed into place when complete)::

    <reference dir>/v2/<task hash>/<corpus sha256[:16]>/<checkpoint sha256>/   (paths.reference_cache_dir)
        meta.json          task, hashes, checkpoint name, K, vocab size, layers, sample, counts, dtype, harness
        topk_index.i32     (positions, K) int32   the top-K next-token ids at every kept position, descending
        topk_logp.f32      (positions, K) float32 their log-probabilities
        log_tail.f32       (positions,)  float32 log(1 − Σ_topK p), −inf when K ≥ vocab
        offsets.i64        (sequences + 1,) int64 first row of each sequence (kept positions in corpus order)
        pooled.f32         (samples, C, d) float32 mean-pooled states of the sequence sample at the card layers
        pooled_seq.i64     (samples,) int64 their sequence ids

The task hash is the provenance hash of the probe task (config + data file hashes); the corpus hash (sha256 of
the rendered texts) separates runs with a different ``--limit``. ``tokens_sha256`` in meta.json, the sha256 of
the kept sequences' token ids, refuses a cache made with a different tokenisation. Arrays are raw little-endian
and read by offset (no memory map), so neither writing nor reading grows the process with the corpus.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import sha256_bytes, sha256_json
from ..metrics.base import ProbeBatch
from ..metrics.reference import TOP_K, batch_pooled, keep_logits
from ..paths import reference_cache_dir

FORMAT = 4  # 2: top-k by reference.block_topk (tied ids may differ from 1); 3: logits from the deferred head
# (probe/head.py); 4: Σe of the log-sum-exp and the log tails as reference.py's docstring says (~1e-9 from 3's)
_FILES = {
    "topk_index": ("topk_index.i32", "<i4"),
    "topk_logp": ("topk_logp.f32", "<f4"),
    "log_tail": ("log_tail.f32", "<f4"),
    "offsets": ("offsets.i64", "<i8"),
    "pooled": ("pooled.f32", "<f4"),
    "pooled_seq": ("pooled_seq.i64", "<i8"),
}


class CacheError(Exception):
    """A cache directory that is not a complete, consistent reference cache."""


def cache_path(task_hash: str, corpus_sha256: str, sha256: str) -> Path:
    return reference_cache_dir() / f"v{FORMAT}" / task_hash / corpus_sha256[:16] / sha256


def corpus_sha256(texts: Sequence[str]) -> str:
    return sha256_json(list(texts))


def tokens_sha256(ids: Sequence[Sequence[int]]) -> str:
    """sha256 of the token ids of the kept sequences (lengths, then the ids, as int64)."""
    lengths = np.array([len(x) for x in ids], dtype="<i8")
    flat = np.fromiter((i for x in ids for i in x), dtype="<i8", count=int(lengths.sum()))
    return sha256_bytes(lengths.tobytes() + flat.tobytes())


class CacheWriter:
    """Streams a checkpoint's own batches into a temporary directory; ``commit`` renames it into place.

    An OSError while writing (a full disk) leaves no cache and is kept in ``error`` (the result's counts say it,
    ``counts.reference_cache_note``); the evaluation goes on, and stderr stays one line when the result cannot
    be written either."""

    def __init__(self, path: Path, meta: dict[str, Any], *, sample: np.ndarray, layers: Sequence[int], k: int = TOP_K) -> None:
        self.path, self.meta, self.k, self.layers = path, dict(meta), k, list(layers)
        self.sample = {int(s) for s in sample}
        self.offsets = [0]
        self.pooled: list[np.ndarray] = []
        self.pooled_seq: list[int] = []
        self.tmp: Path | None = None
        self.error: str | None = None
        self.handles: dict[str, Any] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:16]}.", suffix=".tmp", dir=path.parent))
            self.tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 -> what mkdir would give
            self.handles = {key: open(self.tmp / _FILES[key][0], "wb") for key in ("topk_index", "topk_logp", "log_tail")}  # noqa: SIM115
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = f"cannot write the reference cache: {exc.strerror or type(exc).__name__}"
        self.abort()

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        if self.tmp is None:
            return
        stats = keep_logits(batch, self.k)
        if stats is None:
            raise ValueError("the reference cache needs the batch's logits")
        try:
            self.handles["topk_index"].write(stats.topk_index.cpu().numpy().astype("<i4").tobytes())
            self.handles["topk_logp"].write(stats.topk_logp.cpu().numpy().astype("<f4").tobytes())
            self.handles["log_tail"].write(stats.log_tail.cpu().numpy().astype("<f4").tobytes())
        except OSError as exc:
            self._fail(exc)
            return
        for n in batch.keep.sum(1).tolist():
            self.offsets.append(self.offsets[-1] + int(n))
        seqs = batch.seq_ids.tolist()
        picked = [b for b, s in enumerate(seqs) if int(s) in self.sample]
        if picked:
            pooled = batch_pooled(batch, self.layers).cpu().numpy()
            self.pooled += [pooled[b] for b in picked]
            self.pooled_seq += [int(seqs[b]) for b in picked]

    def commit(self, **extra: Any) -> Path | None:
        """Write the small arrays and meta.json, fsync, and rename the directory into place."""
        if self.tmp is None:
            return None
        try:
            pooled_dim = self.pooled[0].shape[-1] if self.pooled else 0
            arrays = {
                "offsets": np.asarray(self.offsets, dtype="<i8"),
                "pooled": np.stack(self.pooled).astype("<f4") if self.pooled else np.zeros((0, len(self.layers), 0), "<f4"),
                "pooled_seq": np.asarray(self.pooled_seq, dtype="<i8"),
            }
            for key, arr in arrays.items():
                (self.tmp / _FILES[key][0]).write_bytes(arr.tobytes())
            for fh in self.handles.values():
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            meta = {
                **self.meta,
                **extra,
                "format": FORMAT,
                "k": self.k,
                "layers": self.layers,
                "n_sequences": len(self.offsets) - 1,
                "n_positions": self.offsets[-1],
                "n_pooled": len(self.pooled_seq),
                "pooled_dim": pooled_dim,
                "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            }
            (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            _replace_dir(self.tmp, self.path)
        except OSError as exc:
            self._fail(exc)
            return None
        self.tmp = None
        return self.path

    def abort(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.handles = {}
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name[:16]}.{os.getpid()}.old")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ReferenceCache:
    """A complete reference cache, read by offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            n, k, m = int(self.meta["n_positions"]), int(self.meta["k"]), int(self.meta["n_pooled"])
            c, d = len(self.meta["layers"]), int(self.meta["pooled_dim"])
            want = {"topk_index": n * k, "topk_logp": n * k, "log_tail": n, "offsets": int(self.meta["n_sequences"]) + 1}
            want.update(pooled=m * c * d, pooled_seq=m)
            for key, count in want.items():
                name, dtype = _FILES[key]
                if (path / name).stat().st_size != count * np.dtype(dtype).itemsize:
                    raise CacheError(f"{name} has the wrong size")
            self.offsets = self._read("offsets", 0, want["offsets"])
            pooled = self._read("pooled", 0, m * c * d).reshape(m, c, d)
            seqs = self._read("pooled_seq", 0, m)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"{path}: not a complete reference cache ({exc})") from None
        if self.offsets[0] != 0 or self.offsets[-1] != n or (np.diff(self.offsets) < 0).any():
            raise CacheError(f"{path}: inconsistent offsets")
        self.k = k
        self.pooled = {int(s): pooled[i] for i, s in enumerate(seqs)}

    @classmethod
    def find(cls, path: Path) -> ReferenceCache | None:
        return cls(path) if (path / "meta.json").is_file() else None

    def _read(self, key: str, start: int, count: int) -> np.ndarray:
        name, dtype = _FILES[key]
        size = np.dtype(dtype).itemsize
        with open(self.path / name, "rb") as fh:
            fh.seek(start * size)
            data = np.frombuffer(fh.read(count * size), dtype=dtype)
        if data.size != count:
            raise CacheError(f"{self.path / name}: truncated")
        return data

    def positions(self, first_seq: int, n_seq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(per-sequence counts, top-K ids (n, K), log-probs (n, K), log tails (n,)) of sequences first_seq.. ."""
        lo, hi = int(self.offsets[first_seq]), int(self.offsets[first_seq + n_seq])
        k = self.k
        index = self._read("topk_index", lo * k, (hi - lo) * k).reshape(-1, k)
        logp = self._read("topk_logp", lo * k, (hi - lo) * k).reshape(-1, k)
        tail = self._read("log_tail", lo, hi - lo)
        return np.diff(self.offsets[first_seq : first_seq + n_seq + 1]), index, logp, tail
