"""The probe pass: ONE streaming forward pass over the corpus feeding every accumulator.

Memory is independent of the corpus size: each batch's hidden states are reduced to the
accumulators' float64 sufficient statistics and dropped. Each batch also carries the rows of every
reference role (``providers``: a reference cache, or the ``--reference`` model of the same pass), and the
model's (and the live reference's) batches stream into the reference-cache ``writers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from ..errors import CollapseBenchError
from ..metrics.base import Accumulator, MetricValues, ProbeBatch
from ..metrics.reference import ReferencedBatch, ReferenceRows
from ..models.resolve import input_device
from ..parallel import Parallel
from .corpus import TokenizedText
from .head import DeferredHead
from .hooks import capture_mlp_inputs

AccumulatorFactory = Callable[[int, int, int | None], list[Accumulator]]  # (n_layers, dim, ref_dim) -> accumulators
V = TypeVar("V")


class RowsProvider(Protocol):
    """A reference role's rows for one batch (``references.CachedProvider`` / ``LiveProvider``)."""

    def rows(self, first_seq: int, keep: torch.Tensor, ref_batch: ProbeBatch | None) -> ReferenceRows: ...


class BatchSink(Protocol):
    """Something fed every batch of one model besides the accumulators (the reference cache writer)."""

    def update(self, batch: ProbeBatch) -> None: ...


@dataclass
class ProbeInputs:
    tokens: list[TokenizedText]
    domains: list[int]
    pad_id: int


def make_batch_tensors(items: Sequence[TokenizedText], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, keep mask (drops position 0 + padding) and the sample mask."""
    width = max(len(t.ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    sample = torch.zeros((len(items), width), dtype=torch.bool)
    for b, t in enumerate(items):
        ids[b, : len(t.ids)] = torch.tensor(t.ids)
        attn[b, : len(t.ids)] = 1
        sample[b, t.sample_positions] = True
    keep = attn.bool().clone()
    keep[:, 0] = False
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": attn, "keep": keep, "sample": sample}.items()}


def align_layers(n_model: int, n_ref: int) -> list[int]:
    """Reference hidden-state index for each model index, by relative depth (identity when equal)."""
    if n_model == n_ref:
        return list(range(n_model))
    return [round(i * (n_ref - 1) / (n_model - 1)) for i in range(n_model)]


class ProbePass:
    """One streaming pass: ``step`` forwards a batch and feeds every accumulator (state is O(1) in tokens)."""

    def __init__(
        self,
        model: Any,
        factory: AccumulatorFactory,
        reference: Any | None = None,
        providers: Mapping[str, RowsProvider] | None = None,
        writers: Mapping[str, BatchSink] | None = None,
    ) -> None:
        self.model, self.factory, self.reference = model, factory, reference
        self.providers, self.writers = providers or {}, writers or {}
        self.device = torch.device(input_device(model))  # with a device map: the inputs' device; states gathered there
        self.accumulators: list[Accumulator] | None = None
        self.align: list[int] | None = None
        self.tokens = 0
        self.sequences = 0
        self.mlp_captured = False
        self.head = DeferredHead(model)  # logits computed row-wise by the accumulators (probe/head.py)
        self.ref_head = DeferredHead(reference) if reference is not None else None

    def _reference_forward(self, t: dict[str, torch.Tensor], n_hidden: int) -> tuple[list[torch.Tensor], ProbeBatch]:
        """The reference's hidden states aligned to the model's layers (CKA) and its own batch (live rows, cache)."""
        assert self.reference is not None and self.ref_head is not None  # only called with a reference model
        ref_device = next(self.reference.parameters()).device
        self.ref_head.check(self.reference, t["input_ids"].to(ref_device), t["attention_mask"].to(ref_device))
        out = self.reference(
            input_ids=t["input_ids"].to(ref_device),
            attention_mask=t["attention_mask"].to(ref_device),
            output_hidden_states=True,
            use_cache=False,
            **self.ref_head.forward_kwargs(),
        )
        if self.align is None:
            self.align = align_layers(n_hidden, len(out.hidden_states))
        own = ProbeBatch(
            hidden=out.hidden_states,
            keep=t["keep"].to(ref_device),
            sample=t["sample"].to(ref_device),
            seq_ids=t["seq_ids"].to(ref_device),
            domains=t["domains"].to(ref_device),
            logits=self.ref_head.logits(out, ref_device),
            input_ids=t["input_ids"].to(ref_device),
        )
        return [out.hidden_states[j].to(self.device).float() for j in self.align], own

    @torch.inference_mode()
    def step(self, items: Sequence[TokenizedText], first_seq_id: int, domains: Sequence[int], pad_id: int) -> None:
        t = make_batch_tensors(items, pad_id, str(self.device))
        self.head.check(self.model, t["input_ids"], t["attention_mask"])
        with capture_mlp_inputs(self.model) as mlp_inputs:
            out = self.model(
                input_ids=t["input_ids"],
                attention_mask=t["attention_mask"],
                output_hidden_states=True,
                use_cache=False,
                **self.head.forward_kwargs(),
            )
        hidden = [h.to(self.device).float() for h in out.hidden_states]  # no-op on one device
        t["seq_ids"] = torch.arange(first_seq_id, first_seq_id + len(items), device=self.device)
        t["domains"] = torch.tensor(list(domains), device=self.device)
        ref_hidden, ref_batch = self._reference_forward(t, len(hidden)) if self.reference is not None else (None, None)
        rows: dict[int, ReferenceRows] = {}  # roles with one provider (base = parent) share its rows
        for p in self.providers.values():
            if id(p) not in rows:
                rows[id(p)] = p.rows(first_seq_id, t["keep"], ref_batch)
        batch = ReferencedBatch(
            hidden=hidden,
            keep=t["keep"],
            sample=t["sample"],
            seq_ids=t["seq_ids"],
            domains=t["domains"],
            mlp=[m.to(self.device) for m in mlp_inputs] if mlp_inputs else None,
            logits=self.head.logits(out, self.device),
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            scored_bytes=torch.tensor([x.scored_bytes for x in items]),
            reference_hidden=ref_hidden,
            references={role: rows[id(p)] for role, p in self.providers.items()},
        )
        if self.accumulators is None:
            self.accumulators = self.factory(len(hidden), hidden[0].shape[-1], ref_hidden[0].shape[-1] if ref_hidden else None)
        for acc in self.accumulators:
            acc.update(batch)
        for source, writer in self.writers.items():
            fed = batch if source == "model" else ref_batch  # "reference": the live reference model's own batch
            if fed is not None:
                writer.update(fed)
        self.tokens += int(t["attention_mask"].sum())
        self.sequences += len(items)
        self.mlp_captured = batch.mlp is not None


def run_probe(
    model: Any,
    inputs: ProbeInputs,
    factory: AccumulatorFactory,
    *,
    batch_size: int,
    reference: Any | None = None,
    desc: str = "probe",
    progress: bool = True,
    providers: Mapping[str, RowsProvider] | None = None,
    writers: Mapping[str, BatchSink] | None = None,
    par: Parallel | None = None,
) -> tuple[list[Accumulator], dict[str, Any]]:
    """Forward the corpus batch by batch and update the accumulators (and writers); returns them and run counts.

    Data parallel (``par`` with several ranks): the batches are those of one process, rank ``r`` of ``W`` forwards
    batches ``r, r + W, ...`` (same composition, same sequence ids), and rank 0 merges every rank's accumulators in rank
    order (``Parallel.merged``; the other ranks keep their own), so its metrics equal the single-process ones up to the
    float64 summation order
    of the merges. ``writers`` see only this rank's batches (the caller passes none under data parallelism)."""
    par = par or Parallel()
    probe = ProbePass(model, factory, reference, providers, writers)
    starts = list(range(0, len(inputs.tokens), batch_size))
    mine = [starts[i] for i in par.mine(len(starts))]
    bar = tqdm(mine, desc=desc, unit="batch", disable=not progress or not par.main, leave=False)
    for start in bar:
        probe.step(inputs.tokens[start : start + batch_size], start, inputs.domains[start : start + batch_size], inputs.pad_id)
        bar.set_postfix(tokens=probe.tokens)
    sequences, tokens, captured = par.sum([probe.sequences, probe.tokens, float(probe.mlp_captured)])
    if not sequences:
        raise CollapseBenchError("the probe corpus is empty after tokenization")
    accumulators = par.merged(probe.accumulators or [])
    return accumulators, {"sequences": int(sequences), "tokens": int(tokens), "mlp_captured": captured > 0}  # a model property


def combine(values: Sequence[MetricValues]) -> MetricValues:
    """Union of several accumulators' outputs (names are unique across metric families)."""
    out = MetricValues()
    for v in values:
        _merge_unique(out.per_layer, v.per_layer)
        _merge_unique(out.scalars, v.scalars)
        _merge_unique(out.counts, v.counts)
    return out


def _merge_unique(table: dict[str, V], part: dict[str, V]) -> None:
    clash = set(table) & set(part)
    if clash:
        raise AssertionError(f"duplicate metric names: {sorted(clash)}")
    table.update(part)
