"""KL divergence of the checkpoint's next-token distributions from a reference checkpoint's, teacher-forced.

Positions: the kept positions t = 1..T−1 of every probe text (position 0 and padding dropped), i.e. the
next-token distributions *at* the positions of ``logit_entropy``/``top1_mass`` (the one at T−1 predicts past
the end of the text). p = the reference's distribution, q = the checkpoint's, both on the same token ids.

The reference is known by its top-K (K = 64, :mod:`collapse_bench.metrics.reference`): the ids S = topK(p),
their float32 log-probabilities and the log tail mass log p_T, p_T = 1 − Σ_{v∈S} p(v). With the tail lumped
into one outcome (q_T = 1 − Σ_{v∈S} q(v), computed like p_T in the checkpoint's own exp pass):
  KL_K(p‖q) = Σ_{v∈S} p(v) (log p(v) − log q(v)) + p_T (log p_T − log q_T)          (nats; 0 · log 0 = 0),
log q(v) rounded to float32 like the stored log p(v), and q_T floored at 1e-30 (only reached when every tail
exp underflows in float32).
Error: by the log-sum inequality KL_K ≤ KL, and with a = p/p_T, b = q/q_T on the tail T = V \\ S,
  0 ≤ KL − KL_K = p_T · KL(a‖b) ≤ p_T · [log(p_K / p_T) + log(q_T / q_min)],
where p_K = the K-th largest p (every tail p is ≤ p_K, so a ≤ p_K / p_T) and q_min = min_v q(v) (so
log(1/b) ≤ log(q_T / q_min)). With K ≥ V the tail is empty and KL_K = KL (up to float32 log-probabilities).

Per position: KL_K and top-1 agreement = [q(argmax p) = max q] (ties count as agreement). Results, for each
reference role r (``base``, ``parent``, ``reference``):
  kl_to_<r> = mean over positions, kl_to_<r>_q90 / _q99 = exact quantiles of the per-position values (numpy's
  default linear interpolation), top1_agreement_<r> = share of positions that agree, and per domain
  ``kl_to_<r>@<domain>``, ``top1_agreement_<r>@<domain>`` over that domain's positions.
State: the one exception to O(1) state: per position a float64 KL, its (seq_id, position), domain and agreement
(~30 bytes a token); merge = concatenation, compute() sorts by (seq_id, position), so streaming, merging in any
order and the batch computation agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .reference import keep_logits, rows_of, to_logp
from .spec import MetricSpec, Range, Tolerance

LOG_TAIL_FLOOR = math.log(1e-30)


def exact_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Reference definition: full-vocabulary KL(softmax(ref) ‖ softmax(z)) per row, float64."""
    lp = torch.log_softmax(ref_logits.double(), -1)
    lq = torch.log_softmax(logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def lumped_kl(ref_logp: torch.Tensor, ref_log_tail: torch.Tensor, q_logp: torch.Tensor, q_log_tail: torch.Tensor) -> torch.Tensor:
    """KL_K per row (module docstring) from the reference's top-K log-probs (n, K) and log tail (n,) and the
    checkpoint's log-probs at the same ids (n, K) and log mass outside them (n,); float64. A KL between two
    distributions over K + 1 outcomes is ≥ 0: values below 0 are float rounding (≈ -1e-9 for identical models,
    e.g. a permuted checkpoint) and are reported as 0."""
    lp, lq = ref_logp.double(), q_logp.float().double()
    head = (lp.exp() * (lp - lq)).sum(-1)
    lpt, lqt = ref_log_tail.double(), q_log_tail.double().clamp_min(LOG_TAIL_FLOOR)
    pt = lpt.exp()
    return (head + torch.where(pt > 0, pt * (lpt - lqt), torch.zeros_like(pt))).clamp_min(0.0)


class KLAccumulator:
    """Per-position KL_K and top-1 agreement to reference role ``role`` (module docstring)."""

    def __init__(self, role: str, n_domains: int, domain_names: Sequence[str] | None = None) -> None:
        self.role, self.n_domains = role, n_domains
        self.domain_names = list(domain_names) if domain_names is not None else [str(c) for c in range(n_domains)]
        self.parts: list[tuple[np.ndarray, ...]] = []  # (kl, seq_id, position, domain, agree)

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        rows = rows_of(batch, self.role)
        stats = keep_logits(batch)
        if rows is None or stats is None or batch.logits is None:
            return
        T = batch.logits.shape[1]
        index = stats.index
        if rows.topk_index.shape[0] != index.numel():
            raise ValueError(f"{self.role}: {rows.topk_index.shape[0]} reference rows for {index.numel()} kept positions")
        z = stats.ref_z[self.role]  # (n, K): the checkpoint's logits at the reference's top-K ids
        dev = z.device
        kl = lumped_kl(rows.topk_logp.to(dev), rows.log_tail.to(dev), to_logp(z, stats.lse), stats.ref_log_tail[self.role])
        agree = z[:, 0] >= stats.zmax
        b = index // T
        self.parts.append(
            (
                kl.cpu().numpy(),
                batch.seq_ids.to(dev)[b].cpu().numpy().astype(np.int64),
                (index % T).cpu().numpy().astype(np.int64),
                batch.domains.to(dev)[b].cpu().numpy().astype(np.int64),
                agree.cpu().numpy(),
            )
        )

    def merge(self, other: KLAccumulator) -> KLAccumulator:
        self.parts.extend(other.parts)
        return self

    def compute(self) -> MetricValues:
        r = self.role
        names = [f"kl_to_{r}", f"kl_to_{r}_q90", f"kl_to_{r}_q99", f"top1_agreement_{r}"]
        for d in self.domain_names:
            names += [f"kl_to_{r}@{d}", f"top1_agreement_{r}@{d}"]
        scalars: dict[str, Number] = dict.fromkeys(names)
        n = sum(len(p[0]) for p in self.parts)
        if n:
            kl, seq, pos, dom, agree = (np.concatenate([p[i] for p in self.parts]) for i in range(5))
            order = np.lexsort((pos, seq))
            kl, dom, agree = kl[order], dom[order], agree[order]
            scalars[f"kl_to_{r}"] = to_number(kl.mean())
            q90, q99 = np.quantile(kl, [0.9, 0.99])
            scalars[f"kl_to_{r}_q90"], scalars[f"kl_to_{r}_q99"] = to_number(q90), to_number(q99)
            scalars[f"top1_agreement_{r}"] = to_number(agree.mean())
            for c, d in enumerate(self.domain_names):
                mask = dom == c
                if mask.any():
                    scalars[f"kl_to_{r}@{d}"] = to_number(kl[mask].mean())
                    scalars[f"top1_agreement_{r}@{d}"] = to_number(agree[mask].mean())
        return MetricValues(scalars=scalars, counts={f"kl_to_{r}_positions": n})


SPECS = (
    MetricSpec(
        id="kl_to_*_q[0-9][0-9]",
        kind="probe",
        streams=True,
        definition="quantile of the per-position KL(reference ‖ checkpoint) in nats (top-64 + lumped tail)",
        range=Range(0),
        tolerance=Tolerance(1e-4, 0.05),
        label="KL quantile",
        reference="Shenfeld et al., 'RL's Razor', arXiv 2509.04259",
    ),
    MetricSpec(
        id="kl_to_*",
        kind="probe",
        streams=True,
        definition="mean KL(reference ‖ checkpoint) of the next-token distributions, nats per position (top-64 + lumped tail)",
        range=Range(0),
        tolerance=Tolerance(1e-4, 0.02),
        label="KL to reference",
        reference="Shenfeld et al., 'RL's Razor', arXiv 2509.04259",
    ),
    MetricSpec(
        id="top1_agreement_*",
        kind="probe",
        streams=True,
        definition="share of positions where the reference's most likely next token is the checkpoint's most likely",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="top-1 agreement",
        reference="Shenfeld et al., 'RL's Razor', arXiv 2509.04259",
    ),
)
