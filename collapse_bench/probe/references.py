"""The references of one probe run: where each reference role's rows come from, and the caches this run writes.

For each reference role (``base``, ``parent`` from the lineage; ``reference`` from ``--reference``):
  1. its cache (:mod:`collapse_bench.probe.refcache`, keyed by this task and the reference's sha256) when there is
     one made with the same tokenisation;
  2. else, for ``--reference``, the reference model of this very pass (its rows computed live; its cache written);
  3. else its checkpoint, located by the lineage (``--parent``, the lineage's adapter dirs, a registry alias), runs
     its own probe pass first (a cache-only pass: forward + cache writer), announced on stderr;
  4. else its metrics are null and ``counts.kl_to_<role>_note`` says why.
The checkpoint's own batches always feed a writer of its own cache (when it has a sha256).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..context import ReferenceTarget, RunContext
from ..errors import CollapseBenchError
from ..metrics.base import ProbeBatch
from ..metrics.reference import SAMPLE_SIZE, ReferenceRows, keep_logits, pooled_states, sequence_sample
from ..models import load_model
from ..parallel import Parallel
from .corpus import ProbeCorpus, tokenize
from .refcache import CacheError, CacheWriter, ReferenceCache, cache_path, corpus_sha256, tokens_sha256
from .runner import ProbeInputs, RowsProvider, align_layers, run_probe

NOTE_CHARS = 100  # a count string's limit in the result schema


CardLayers = Callable[[int], list[int]]


@dataclass
class CachedProvider:
    cache: ReferenceCache
    layers: tuple[int, ...]  # this checkpoint's card layers
    align: list[int]  # the cache's card-layer rank paired with each of ours

    def rows(self, first_seq: int, keep: torch.Tensor, ref_batch: ProbeBatch | None = None) -> ReferenceRows:
        B = keep.shape[0]
        counts, index, logp, tail = self.cache.positions(first_seq, B)
        if counts.tolist() != keep.sum(1).tolist():
            raise CollapseBenchError(f"reference cache {self.cache.path} does not match the probe's positions")
        dev = keep.device
        pooled = np.zeros((B, len(self.align), int(self.cache.meta["pooled_dim"])), dtype=np.float32)
        mask = np.zeros(B, dtype=bool)
        for b in range(B):
            row = self.cache.pooled.get(first_seq + b)
            if row is not None:
                pooled[b], mask[b] = row[self.align], True
        return ReferenceRows(
            torch.from_numpy(index.astype(np.int64)).to(dev),
            torch.from_numpy(logp.copy()).to(dev),
            torch.from_numpy(tail.copy()).to(dev),
            torch.from_numpy(pooled).to(dev),
            torch.from_numpy(mask).to(dev),
            self.layers,
        )


@dataclass
class LiveProvider:
    """Rows of the reference model that runs in the same pass (``--reference``)."""

    layers: tuple[int, ...]
    ref_layers: list[int]  # the reference's hidden-state index paired with each of ours
    sample: set[int]

    def rows(self, first_seq: int, keep: torch.Tensor, ref_batch: ProbeBatch | None) -> ReferenceRows:
        assert ref_batch is not None  # a live provider only exists with a reference model in the pass
        stats = keep_logits(ref_batch)
        assert stats is not None
        B = keep.shape[0]
        mask = torch.tensor([first_seq + b in self.sample for b in range(B)], device=keep.device)
        pooled = pooled_states(ref_batch.hidden, keep, self.ref_layers)
        return ReferenceRows(stats.topk_index, stats.topk_logp, stats.log_tail, pooled, mask, self.layers)


@dataclass
class References:
    """Set up by :func:`prepare`: the providers per role, the writers, and the notes for the result's counts."""

    roles: tuple[str, ...]
    providers: dict[str, RowsProvider]
    writers: dict[str, CacheWriter]  # "model" (this checkpoint) and maybe "reference"
    notes: dict[str, str]

    def commit(self) -> None:
        for role, w in self.writers.items():
            w.commit()
            if w.error:
                self.notes[f"reference_cache_note_{role}"] = w.error[:NOTE_CHARS]

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


class _Setup:
    def __init__(self, task: Any, corpus: ProbeCorpus, inputs: ProbeInputs, ctx: RunContext, card_layers: CardLayers) -> None:
        self.task, self.corpus, self.inputs, self.ctx, self.card_layers = task, corpus, inputs, ctx, card_layers
        self.task_hash = task.task_hash(corpus.data_hashes)
        self.corpus_sha = corpus_sha256(corpus.texts)
        self.tokens_sha = tokens_sha256([t.ids for t in inputs.tokens])
        self.seed = int(task.params["seed"])
        self.sample = sequence_sample(self.seed, len(inputs.tokens), SAMPLE_SIZE)
        self.layers = tuple(card_layers(int(ctx.model.info["num_layers"]) + 1))

    def meta(self, info: dict[str, Any]) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "task_hash": self.task_hash,
            "corpus_sha256": self.corpus_sha,
            "tokens_sha256": self.tokens_sha,
            "checkpoint": info["name"],
            "sha256": info["sha256"],
            "vocab_size": info.get("vocab_size"),
            "n_hidden": int(info["num_layers"]) + 1,
            "hidden_size": info.get("hidden_size"),
            "sample_size": SAMPLE_SIZE,
            "seed": self.seed,
            "dtype": info.get("dtype"),
            "device": info.get("device"),
            "harness_version": __version__,
        }

    def writer(self, info: dict[str, Any]) -> CacheWriter | None:
        if not info.get("sha256"):
            return None
        layers = self.card_layers(int(info["num_layers"]) + 1)
        return CacheWriter(
            cache_path(self.task_hash, self.corpus_sha, info["sha256"]), self.meta(info), sample=self.sample, layers=layers
        )

    def cached(self, sha256: str) -> ReferenceCache | None:
        try:
            cache = ReferenceCache.find(cache_path(self.task_hash, self.corpus_sha, sha256))
        except CacheError as exc:
            print(f"collapse-bench: warning: ignoring {exc}", file=sys.stderr)
            return None
        if cache is not None and cache.meta.get("tokens_sha256") != self.tokens_sha:
            raise _Unavailable("its cache was made with a different tokenisation of the probe texts")
        return cache

    def provider(self, cache: ReferenceCache) -> CachedProvider:
        return CachedProvider(cache, self.layers, align_layers(len(self.layers), len(cache.meta["layers"])))

    def run_first(self, target: ReferenceTarget) -> ReferenceCache:
        """Locate, load and run the reference's cache-only probe pass; its cache."""
        if target.locate is None:
            raise _Unavailable("no checkpoint to run it from")
        try:
            model = target.locate()
        except CollapseBenchError as exc:
            raise _Unavailable(f"checkpoint not found ({exc})") from None
        print(f"kl_to_{target.role}: no reference cache for {target.name}; running its probe pass first", file=sys.stderr)
        info = self.ctx.model.info
        loaded = load_model(model, device=info["device"], dtype=info["dtype"])
        try:
            if loaded.source.sha256 != target.sha256:
                raise _Unavailable(
                    f"the checkpoint found has sha256 {str(loaded.source.sha256)[:12]}, not {str(target.sha256)[:12]}"
                )
            inputs = self.same_tokens(loaded)
            writer = self.writer(loaded.info)
            assert writer is not None  # the sha256 matched a non-empty one
            p = self.task.params
            try:
                run_probe(
                    loaded.model,
                    inputs,
                    lambda *_: [],
                    batch_size=self.ctx.batch_size or p["batch_size"],
                    desc=f"{self.task.name} ({target.role})",
                    progress=self.ctx.progress,
                    writers={"model": writer},
                    par=Parallel(enabled=False),  # one process writes the whole cache (``first``)
                )
            except BaseException:
                writer.abort()
                raise
            if writer.commit() is None:
                raise _Unavailable("its reference cache could not be written")
        finally:
            del loaded
            gc.collect()
        cache = self.cached(str(target.sha256))
        if cache is None:
            raise _Unavailable("its reference cache could not be read back")
        return cache

    def first(self, target: ReferenceTarget) -> ReferenceCache:
        """:meth:`run_first`; under data parallelism rank 0 runs it alone and the other ranks read its cache."""
        par = self.ctx.par or Parallel()
        if not par.on:
            return self.run_first(target)
        why = None
        if par.main:
            try:
                self.run_first(target)
            except _Unavailable as exc:
                why = str(exc)
        why = par.broadcast(why)
        if why is not None:
            raise _Unavailable(why)
        cache = self.cached(str(target.sha256))
        if cache is None:
            raise _Unavailable("its reference cache could not be read back")
        return cache

    def same_tokens(self, loaded: Any) -> ProbeInputs:
        p = self.task.params
        tokens = tokenize(loaded.tokenizer, self.corpus.texts, p["max_tokens"], p["tokens_per_sequence"], p["seed"])
        kept = [t for t in tokens if len(t.ids) >= 3]
        if tokens_sha256([t.ids for t in kept]) != self.tokens_sha:
            raise _Unavailable("it tokenises the probe texts differently")
        return ProbeInputs(kept, self.inputs.domains, loaded.tokenizer.pad_token_id)


class _Unavailable(Exception):
    """Why a reference role's metrics are null."""


def prepare(task: Any, corpus: ProbeCorpus, inputs: ProbeInputs, ctx: RunContext, card_layers: CardLayers) -> References:
    """Resolve every reference role of ``ctx`` (module docstring); runs a reference's own pass where needed.
    ``card_layers(n_hidden)``: the card layers of a model with ``n_hidden`` hidden-state entries."""
    setup = _Setup(task, corpus, inputs, ctx, card_layers)
    providers: dict[str, RowsProvider] = {}
    writers: dict[str, CacheWriter] = {}
    notes: dict[str, str] = {}
    by_sha: dict[str, RowsProvider] = {}
    failed: dict[str, str] = {}  # sha256 -> why (a second role of the same checkpoint is not retried)
    for target in ctx.references:
        try:
            if not target.sha256:
                raise _Unavailable("no sha256 recorded for it")
            if target.sha256 in failed:
                raise _Unavailable(failed[target.sha256])
            if target.sha256 in by_sha:
                providers[target.role] = by_sha[target.sha256]
                continue
            cache = setup.cached(target.sha256)
            if cache is not None:
                provider: RowsProvider = setup.provider(cache)
            elif target.role == "reference" and ctx.reference is not None:
                ref_info = ctx.reference.info
                ref_cards = card_layers(int(ref_info["num_layers"]) + 1)
                align = align_layers(len(setup.layers), len(ref_cards))
                provider = LiveProvider(setup.layers, [ref_cards[a] for a in align], {int(s) for s in setup.sample})
                if target.sha256 != ctx.model.info.get("sha256") and (w := setup.writer(ref_info)) is not None:
                    writers["reference"] = w
            else:
                provider = setup.provider(setup.first(target))
        except _Unavailable as exc:
            notes[f"kl_to_{target.role}_note"] = _clip(f"{target.name}: {exc}")
            failed[str(target.sha256)] = str(exc)
            continue
        providers[target.role] = by_sha[target.sha256] = provider
    own = setup.writer(ctx.model.info)
    if own is not None:
        writers["model"] = own
    if ctx.par is not None and ctx.par.on:  # each rank sees part of the batches: no cache is written from them
        for w in writers.values():
            w.abort()  # removes its temp dir
        writers.clear()
        notes["reference_cache_note_model"] = "not written: data-parallel run (each rank sees part of the corpus)"
    return References(tuple(t.role for t in ctx.references), providers, writers, notes)


def _clip(text: str) -> str:
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…"


def cache_location(task: Any, corpus: ProbeCorpus, sha256: str) -> Path:
    """Where the reference cache of checkpoint ``sha256`` for this task and corpus lives (tests, tools)."""
    return cache_path(task.task_hash(corpus.data_hashes), corpus_sha256(corpus.texts), sha256)
