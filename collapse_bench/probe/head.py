"""The model's output head applied by the probe itself, so that a batch's (B, T, V) logits are never materialised.

The forward is asked for the last position's logits only (``logits_to_keep=1``, transformers' argument) and
:class:`~collapse_bench.metrics.base.LogitRows` computes the kept positions' logits from the last hidden state
(after the final norm) with the model's output embeddings — plus ``final_logit_softcapping`` where the config has
it (Gemma 2/3). Whether that equals the model's own logits is checked once per pass, before the first batch: the first
sequence's first ``CHECK_TOKENS`` tokens forwarded in full, every position's logits against ``head(hidden[-1])``. A
model whose forward has no ``logits_to_keep``, no output embeddings, or whose logits differ (another post-head
transform) keeps full logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..metrics.base import LogitRows

RTOL = 1e-5  # head(hidden[-1]) vs the forward's logits: same matmul, other row blocking
CHECK_TOKENS = 16


def head_of(model: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], int] | None:
    """(head, vocabulary size) of a causal LM whose forward takes ``logits_to_keep``, else None."""
    try:
        takes = "logits_to_keep" in inspect.signature(model.forward).parameters
        lm_head = model.get_output_embeddings() if takes else None
    except (AttributeError, TypeError, ValueError, NotImplementedError):
        return None
    weight = getattr(lm_head, "weight", None)
    if lm_head is None or weight is None or weight.dim() != 2:
        return None
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)

    def head(h: torch.Tensor) -> torch.Tensor:
        z = lm_head(h)
        return z if cap is None else torch.tanh(z / cap) * cap

    return head, int(weight.shape[0])


class DeferredHead:
    """Per model of a pass: the forward's extra arguments and the batch's logits (full or :class:`LogitRows`)."""

    def __init__(self, model: Any) -> None:
        self.fn = head_of(model)
        self.state = "unchecked" if self.fn is not None else "off"

    @property
    def deferred(self) -> bool:
        return self.state == "on"

    def forward_kwargs(self) -> dict[str, Any]:
        return {"logits_to_keep": 1} if self.state == "on" else {}

    @torch.inference_mode()
    def check(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Decide, once, on a short full forward of the first sequence whether the deferred head is the model's."""
        if self.state != "unchecked" or self.fn is None:
            return
        n = min(CHECK_TOKENS, int(attention_mask[0].sum()))
        out = model(
            input_ids=input_ids[:1, :n], attention_mask=attention_mask[:1, :n], output_hidden_states=True, use_cache=False
        )
        full = out.logits
        mine = self.fn[0](out.hidden_states[-1]).to(full.device)
        scale = RTOL * float(full.abs().max())
        self.state = "on" if mine.shape == full.shape and bool(torch.allclose(mine, full, rtol=RTOL, atol=scale)) else "off"

    def logits(self, out: Any, device: torch.device) -> torch.Tensor | LogitRows:
        """This batch's logits from the forward's output ``out`` (with ``hidden_states``)."""
        if self.state == "on":
            assert self.fn is not None
            return LogitRows(out.hidden_states[-1], self.fn[0], self.fn[1], device)
        return out.logits.to(device)
