"""What a probe batch carries about a *reference* checkpoint (the lineage base, the parent, ``--reference``).

A reference is summarised, per probe text, by what its own probe pass saw (``collapse_bench.probe.refcache``
stores it; a reference loaded in the same pass gives it live):
  * at every kept position t (position 0 and padding dropped, the positions of ``logit_entropy``): its top-K
    next-token ids (descending probability), their log-probabilities and the log tail mass
    log(1 − Σ_topK p) (−inf when the top K are the whole vocabulary);
  * for a seeded sample of sequences: mean-pooled hidden states at the card layers.
Log-probabilities are log p(v) = z_v − logsumexp(z) in float64, stored rounded to float32; of the float32 values
e_v = exp(z_v − max z), Σe is the top K's float64 sum plus the other e's float32 sums over blocks of 64 ids, summed
in float64 (relative error ~1e-9); a log tail mass is Σe minus the float64 sum of e at the ids (or the tail's own
float64 sum where that difference would cancel) and is stored as float32. The checkpoint
compared with a reference gets its values at the same ids by the same code, so a checkpoint compared with itself
gets bitwise equal values.
The sequence sample is the ``size`` sequences with the smallest key = the token reservoir's key of
(seq_id, position 0), a position no statistic uses, so every checkpoint of one corpus gets the same sample.
A pooled state is the float64 mean of the kept positions' states, rounded to float32.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import LogitRows, ProbeBatch
from .reservoir import token_keys

TOP_K = 64  # top-K of the reference cache
SAMPLE_SIZE = 512  # sequences of the neighbourhood sample
_CHUNK = 16  # rows per exp pass (stays in cache; 16 measured fastest here, benchmarks/probe_overhead.py)
_BLOCK = 64  # vocabulary block of the two-level top-k
_TOPK_ROWS = 256  # rows per top-k call (per-call overhead vs memory)


@dataclass
class ReferenceRows:
    """One reference's data for one batch. Rows of ``topk_*``/``log_tail`` are the batch's kept positions in
    (b, t) order (``batch.keep`` flattened)."""

    topk_index: torch.Tensor  # (n, K) int64
    topk_logp: torch.Tensor  # (n, K) float32, descending
    log_tail: torch.Tensor  # (n,) float32
    pooled: torch.Tensor | None = None  # (B, C, d_ref) float32 (rows outside pooled_mask are unused)
    pooled_mask: torch.Tensor | None = None  # (B,) bool: the sequence is in the reference's sample
    layers: tuple[int, ...] = ()  # the checkpoint's hidden-state index paired with pooled[:, c]


@dataclass
class ReferencedBatch(ProbeBatch):
    """A ProbeBatch plus the rows of every reference role (``base``, ``parent``, ``reference``)."""

    references: Mapping[str, ReferenceRows] = field(default_factory=dict)


def rows_of(batch: ProbeBatch, role: str) -> ReferenceRows | None:
    refs = getattr(batch, "references", None)
    return refs.get(role) if refs else None


@dataclass
class KeepLogits:
    """Per kept position of a batch (flat index b*T+t): log-sum-exp, entropy and top-1 probability (float64), max
    logit, top-k ids, their float32 log-probs, the log tail mass, the logit of the next token (``next_z``; the
    sequence's first token at its last position), and per reference role the log mass outside its top-K ids
    (``ref_log_tail``) and the logits at those ids (``ref_z``). ``metrics.logits`` and ``metrics.divergence`` read
    their sums from the same pass."""

    index: torch.Tensor
    lse: torch.Tensor
    entropy: torch.Tensor
    top1: torch.Tensor
    zmax: torch.Tensor
    topk_index: torch.Tensor
    topk_logp: torch.Tensor
    log_tail: torch.Tensor
    ref_log_tail: dict[str, torch.Tensor]
    next_z: torch.Tensor | None = None
    ref_z: dict[str, torch.Tensor] = field(default_factory=dict)


def to_logp(z: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """float64 log-probabilities z − lse for logits ``z`` (n, m) and their rows' ``lse`` (n,)."""
    return z.double() - lse[:, None]


def _log_tail(z: torch.Tensor, zmax: torch.Tensor, total: torch.Tensor, head: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """float32 log of the share of ``total`` = Σ_v e_v (e = exp(z − zmax), float64) outside each row's ``ids``, given
    ``head`` = Σ e over them (float64), for the logits ``z`` (n, V): total − head (relative error ~1e-16 · total /
    tail), or, where that difference is under 1e-7 of the total, the tail's own float64 sum (e recomputed for those
    rows, the head zeroed). −inf where the ids cover the vocabulary or the share is 0."""
    if ids.shape[-1] >= z.shape[-1]:
        return torch.full(total.shape, float("-inf"), dtype=torch.float32, device=total.device)
    tail = total - head
    small = (tail < 1e-7 * total).nonzero().squeeze(1)
    if small.numel():
        e = z.index_select(0, small).sub_(zmax.index_select(0, small)[:, None]).exp_()
        tail[small] = e.scatter_(1, ids.index_select(0, small), 0.0).sum(-1, dtype=torch.float64)
    share = tail / total
    return torch.where(share > 0, share.clamp_min(1e-300).log(), torch.full_like(share, float("-inf"))).float()


def block_topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row max, top-k values descending, their ids) of each row of ``z`` (n, V); the values equal torch.topk's.

    Own code for speed (~5x less than torch.topk over a 49k vocabulary on CPU): the row is cut into blocks of 64;
    the k blocks with the largest maxima hold the k largest values (any block left out has a max <= the k-th chosen
    block max, itself <= each chosen block's max, so <= the k-th largest candidate); top-k of those k·64 candidates.
    Among tied values the ids may differ from torch.topk's. Falls back to torch.topk when V is not a multiple of 64
    or has fewer than 2k blocks."""
    n, V = z.shape
    nb = V // _BLOCK
    if V % _BLOCK or nb < 2 * k:
        values, ids = torch.topk(z, k, dim=-1)
        return z.amax(dim=-1), values, ids
    blocks = z.reshape(n, nb, _BLOCK)
    bmax = blocks.amax(dim=-1)
    top_blocks = torch.topk(bmax, k, dim=-1).indices  # (n, k)
    cand = blocks.gather(1, top_blocks[:, :, None].expand(n, k, _BLOCK)).reshape(n, k * _BLOCK)
    values, where = torch.topk(cand, k, dim=-1)
    ids = top_blocks.gather(1, where // _BLOCK) * _BLOCK + where % _BLOCK
    return bmax.amax(dim=-1), values, ids


def _runs(index: torch.Tensor) -> list[tuple[int, int]]:
    """[lo, hi) spans of ``index`` (sorted) whose values are consecutive integers."""
    if index.numel() == 0:
        return []
    breaks = ((index[1:] - index[:-1]) != 1).nonzero().squeeze(1).add(1).tolist()
    edges = [0, *breaks, index.numel()]
    return list(itertools.pairwise(edges))


_CACHE: list[tuple[weakref.ref, int, KeepLogits]] = []


def next_tokens(input_ids: torch.Tensor) -> torch.Tensor:
    """Flat (B*T,) id of the token each position predicts (the sequence's first token at its last position)."""
    return torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1).reshape(-1)


def _blocks(z: torch.Tensor | LogitRows, index: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(a, b, logits of kept rows a..b-1) in blocks of up to ``_TOPK_ROWS``: for LogitRows one head call per block
    (padding skipped; at most ``_TOPK_ROWS`` x V logits alive, so the peak does not grow with a batch's kept rows);
    for a tensor, views of its runs of consecutive rows (no copy)."""
    n = index.numel()
    if isinstance(z, LogitRows):
        for a in range(0, n, _TOPK_ROWS):
            b = min(a + _TOPK_ROWS, n)
            yield a, b, z.select(index[a:b])
        return
    flat = z.reshape(-1, z.shape[-1])
    for lo, hi in _runs(index):
        for a in range(lo, hi, _TOPK_ROWS):
            b = min(a + _TOPK_ROWS, hi)
            first = int(index[a])
            yield a, b, flat[first : first + b - a]


@torch.inference_mode()
def keep_logits(batch: ProbeBatch, k: int = TOP_K) -> KeepLogits | None:
    """The kept positions' logit summary of ``batch`` (None without logits), in one pass per run of up to
    ``_TOPK_ROWS`` consecutive kept rows: their logits (computed there when ``batch.logits`` is a
    :class:`~.base.LogitRows`), the two-level top-k, then a chunked exp pass (``logits.row_stats``' formulas: with
    m = max z, e = exp(z − m), s = Σe: lse = m + log s, H = lse − (e·z)/s, max p = 1/s; s summed as the module
    docstring says) with the sums of e at every reference role's ids (``batch.references``); their logits and the
    next token's logit are gathered on the way, the log tails taken once per block. The last few summaries are
    cached."""
    if batch.logits is None:
        return None
    for ref, kk, value in _CACHE:
        if ref() is batch and kk == k:
            return value
    z = batch.logits
    V = z.shape[-1]
    dev = z.device
    index = batch.keep.to(dev).reshape(-1).nonzero().squeeze(1)
    n, k = index.numel(), min(k, V)
    refs = {role: r.topk_index.to(dev) for role, r in (getattr(batch, "references", None) or {}).items()}
    nxt = next_tokens(batch.input_ids.to(dev))[index] if batch.input_ids is not None else None
    lse = torch.empty(n, dtype=torch.float64, device=dev)
    ent, top1 = torch.empty_like(lse), torch.empty_like(lse)
    zmax = torch.empty(n, dtype=z.dtype, device=dev)
    top_i = torch.empty((n, k), dtype=torch.int64, device=dev)
    top_v = torch.empty((n, k), dtype=z.dtype, device=dev)
    tail = torch.empty(n, dtype=torch.float32, device=dev)
    next_z = torch.empty(n, dtype=z.dtype, device=dev) if nxt is not None else None
    ref_tail = {role: torch.empty_like(tail) for role in refs}
    ref_z = {role: torch.empty((n, ids.shape[1]), dtype=z.dtype, device=dev) for role, ids in refs.items()}
    buf = torch.empty((min(_CHUNK, max(n, 1)), V), dtype=z.dtype, device=dev)
    for a, b, block in _blocks(z, index):
        zmax[a:b], top_v[a:b], top_i[a:b] = block_topk(block, k)
        if next_z is not None and nxt is not None:
            next_z[a:b] = block.gather(1, nxt[a:b, None]).squeeze(1)
        for role, ids in refs.items():
            ref_z[role][a:b] = block.gather(1, ids[a:b])
        total = torch.empty(b - a, dtype=torch.float64, device=dev)
        heads = {role: torch.empty_like(total) for role in ("", *refs)}  # "": this checkpoint's own top k
        sets = {"": top_i[a:b], **{role: ids[a:b] for role, ids in refs.items()}}
        for s in range(0, b - a, _CHUNK):
            rows = slice(s, min(s + _CHUNK, b - a))
            out = slice(a + rows.start, a + rows.stop)
            zz = block[rows]
            e = buf[: zz.shape[0]]
            m = zmax[out][:, None]
            torch.sub(zz, m, out=e).exp_()
            ez = torch.linalg.vecdot(e.float(), zz.float()).double()
            for role, ids in sets.items():
                heads[role][rows] = e.gather(1, ids[rows]).sum(-1, dtype=torch.float64)
            # Σe = the top k's float64 sum + the rest's (top k zeroed) float32 sums of 64, summed in float64: no
            # float64 copy of the chunk (half the exp pass's time), relative error ~1e-9
            rest = e.scatter_(1, sets[""][rows], 0.0)
            part = rest.view(rest.shape[0], -1, _BLOCK).sum(-1) if V % _BLOCK == 0 else rest
            total[rows] = heads[""][rows] + part.sum(-1, dtype=torch.float64)
            lse[out] = m.squeeze(-1).double() + total[rows].log()
            ent[out] = lse[out] - ez / total[rows]
            top1[out] = 1.0 / total[rows]
        tail[a:b] = _log_tail(block, zmax[a:b], total, heads[""], sets[""])
        for role in refs:
            ref_tail[role][a:b] = _log_tail(block, zmax[a:b], total, heads[role], sets[role])
    value = KeepLogits(index, lse, ent, top1, zmax, top_i, to_logp(top_v, lse).float(), tail, ref_tail, next_z, ref_z)
    _CACHE[:] = [*[c for c in _CACHE if c[0]() is not None][-3:], (weakref.ref(batch), k, value)]
    return value


def sequence_keys(seed: int, seq_ids: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The sample key of each sequence (module docstring)."""
    seq = torch.as_tensor(seq_ids).cpu()
    return token_keys(seed, seq, torch.zeros_like(seq))


def sequence_sample(seed: int, n_sequences: int, size: int = SAMPLE_SIZE) -> np.ndarray:
    """Sorted seq ids of the sample of a corpus of ``n_sequences``."""
    keys = sequence_keys(seed, torch.arange(n_sequences)).numpy()
    return np.sort(np.argsort(keys, kind="stable")[:size])


def pooled_states(hidden: Sequence[torch.Tensor], keep: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """(B, C, d) float32 mean over the kept positions of ``hidden[l]`` for l in ``layers`` (float64 sums)."""
    w = keep.to(hidden[0].device, torch.float64)
    count = w.sum(1).clamp_min(1.0)[:, None]
    return torch.stack([(torch.einsum("bt,btd->bd", w, hidden[l].double()) / count).float() for l in layers], dim=1)


_POOLED: list[tuple[weakref.ref, tuple[int, ...], torch.Tensor]] = []


def batch_pooled(batch: ProbeBatch, layers: Sequence[int]) -> torch.Tensor:
    """pooled_states of ``batch`` (its hidden states and keep mask), cached for the last few batches."""
    key = tuple(layers)
    for ref, k, value in _POOLED:
        if ref() is batch and k == key:
            return value
    value = pooled_states(batch.hidden, batch.keep, key)
    _POOLED[:] = [*[c for c in _POOLED if c[0]() is not None][-3:], (weakref.ref(batch), key, value)]
    return value
