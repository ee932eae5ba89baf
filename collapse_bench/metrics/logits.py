"""Output (logit) metrics on fixed reference text, teacher-forced.

For next-token distributions p_t = softmax(z_t):
  logit_entropy      = mean_t H(p_t) in nats, over kept positions (position 0 and padding dropped);
  top1_mass          = mean_t max_v p_t(v);  confident_fraction = share of positions with max p > 0.99;
  bits_per_byte      = sum_t NLL_t / (B ln 2), NLL in nats of tokens 1..T-1 (each predicted from its
                       prefix), B = UTF-8 bytes of the text span those tokens cover (lm-eval's formula).
"""

from __future__ import annotations

import math

import torch

from .base import MetricValues, ProbeBatch, logit_select, to_number
from .reference import keep_logits, next_tokens
from .spec import MetricSpec, Range, Tolerance


def row_stats(z: torch.Tensor, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logsumexp, entropy, max prob) per row of logits ``z`` (n, V), float64 out.

    One exp pass per row, done in chunks of ``chunk`` rows so that the passes over a chunk stay in
    cache (~5x faster than whole-tensor ops for a 49k vocabulary): with m = max z, e = exp(z - m),
    s = sum e:  lse = m + log s,  H = lse - (e . z) / s,  max p = 1 / s.
    """
    n = z.shape[0]
    lse = torch.empty(n, dtype=torch.float64, device=z.device)
    ent = torch.empty_like(lse)
    top1 = torch.empty_like(lse)
    buf = torch.empty((min(chunk, n), z.shape[1]), dtype=torch.float32, device=z.device)
    for start in range(0, n, chunk):
        zz = z[start : start + chunk].float()
        e = buf[: zz.shape[0]]
        m = zz.amax(dim=-1, keepdim=True)
        torch.sub(zz, m, out=e).exp_()
        s = e.sum(dim=-1).double()
        ez = torch.linalg.vecdot(e, zz).double()
        rows = slice(start, start + zz.shape[0])
        lse[rows] = m.squeeze(-1).double() + torch.log(s)
        ent[rows] = lse[rows] - ez / s
        top1[rows] = 1.0 / s
    return lse, ent, top1


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Reference definition: H(softmax(z)) = -sum p log p per row (nats)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """lm-eval's bits-per-byte: total NLL in nats divided by (bytes * ln 2)."""
    return nll_nats / (n_bytes * math.log(2))


class LogitAccumulator:
    """Sums of entropy, top-1 mass, NLL and scored bytes over the probe text."""

    def __init__(self) -> None:
        self.n = 0
        self.entropy = 0.0
        self.top1 = 0.0
        self.confident = 0
        self.nll = 0.0
        self.n_targets = 0
        self.bytes = 0

    def update(self, batch: ProbeBatch) -> None:
        """Entropy and top-1 of the kept positions from ``reference.keep_logits``' pass (shared with the KL metrics
        and the reference cache); the log-sum-exp of a predicting position outside ``keep`` (position 0) from
        :func:`row_stats`."""
        stats = keep_logits(batch)
        if stats is None or batch.input_ids is None or batch.scored_bytes is None or stats.next_z is None:
            return
        z = batch.logits
        assert z is not None
        B, T = z.shape[:2]
        dev = z.device
        mask = batch.attention_mask
        lengths = mask.sum(dim=1).to(dev) if mask is not None else torch.full((B,), T, device=dev)
        self.entropy += float(stats.entropy.sum())
        self.top1 += float(stats.top1.sum())
        self.confident += int((stats.top1 > 0.99).sum())
        self.n += stats.index.numel()
        predicting = (torch.arange(T, device=dev)[None, :] < (lengths - 1)[:, None]).reshape(-1)
        lse = torch.zeros(B * T, dtype=torch.float64, device=dev)
        picked = torch.zeros(B * T, dtype=torch.float64, device=dev)  # the logit of the token each position predicts
        lse[stats.index] = stats.lse
        picked[stats.index] = stats.next_z.double()
        missing = predicting.clone()
        missing[stats.index] = False
        if bool(missing.any()):
            rows = missing.nonzero().squeeze(1)
            zm = logit_select(z, rows)
            lse[rows] = row_stats(zm)[0]
            picked[rows] = zm.gather(1, next_tokens(batch.input_ids.to(dev))[rows, None]).squeeze(1).double()
        rows = predicting.nonzero().squeeze(1)
        self.nll += float((lse[rows] - picked[rows]).sum())
        self.n_targets += rows.numel()
        self.bytes += int(batch.scored_bytes[(lengths >= 2).to(batch.scored_bytes.device)].sum())

    def merge(self, other: LogitAccumulator) -> LogitAccumulator:
        for key in ("n", "entropy", "top1", "confident", "nll", "n_targets", "bytes"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        return self

    def compute(self) -> MetricValues:
        if self.n == 0 or self.bytes == 0:
            return MetricValues()
        return MetricValues(
            scalars={
                "logit_entropy": to_number(self.entropy / self.n),
                "top1_mass": to_number(self.top1 / self.n),
                "confident_fraction": to_number(self.confident / self.n),
                "bits_per_byte": to_number(bits_per_byte(self.nll, self.bytes)),
                "nll_per_token": to_number(self.nll / max(self.n_targets, 1)),
            }
        )


SPECS = (
    MetricSpec(
        id="logit_entropy",
        kind="probe",
        streams=True,
        direction="higher",
        definition="mean entropy (nats) of the next-token distribution",
        range=Range(0, "ln_vocab_size"),
        tolerance=Tolerance(0.01, 0.02),
        label="logit entropy",
    ),
    MetricSpec(
        id="top1_mass",
        kind="probe",
        streams=True,
        direction="lower",
        definition="mean probability of the most likely next token",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="top-1 mass",
    ),
    MetricSpec(
        id="confident_fraction",
        kind="probe",
        streams=True,
        direction="lower",
        definition="share of positions whose top-1 probability exceeds 0.99",
        range=Range(0, 1),
        tolerance=Tolerance(0.01, 0.0),
        label="confident fraction",
    ),
    MetricSpec(
        id="bits_per_byte*",
        kind="probe",
        streams=True,
        definition="negative log-likelihood of the probe corpus in bits per UTF-8 byte",
        direction="lower",
        range=Range(0, 20, lo_open=True),
        tolerance=Tolerance(0.0, 0.01),
        label="bits per byte",
    ),
    MetricSpec(
        id="nll_per_token*",
        kind="probe",
        streams=True,
        definition="mean negative log-likelihood (nats) per predicted token of the probe corpus",
        direction="lower",
        range=Range(0),
        tolerance=Tolerance(0.0, 0.01),
        label="NLL per token",
    ),
)
