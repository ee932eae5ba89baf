"""The probe corpus: texts + domain labels from a probe task's data references, tokenized per protocol v1.

Protocol v1: each text (in file order after the task's seeded sample) is tokenized with the model's
tokenizer (``add_special_tokens=True``), truncated to ``max_tokens``. Position 0 and padding are
dropped from every statistic. Scored bytes for bits-per-byte are the UTF-8 bytes of the text span
covered by tokens 1..T-1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.sources import LoadedRef, load_ref, render


@dataclass
class ProbeCorpus:
    texts: list[str]
    domains: list[int]
    domain_names: list[str]
    data_hashes: dict[str, str]


@dataclass
class TokenizedText:
    ids: list[int]
    scored_bytes: int
    sample_positions: list[int]  # positions (>= 1) used for covariance-type statistics


def build_corpus(task: Any, data_dir: Path | None, limit: int | None) -> ProbeCorpus:
    """Resolve every data reference of ``task`` and render its texts (no model needed)."""
    seed = task.params["seed"]
    refs: list[LoadedRef] = [load_ref(r, task_path=task.path, data_dir=data_dir, seed=seed, limit=limit) for r in task.data]
    names = sorted({r.domain for r in refs})
    texts, domains = [], []
    for ref in refs:
        template = ref.ref.get("template", "{text}")
        for row in ref.rows:
            text = render(template, row, str(task.path))
            if text.strip():
                texts.append(text)
                domains.append(names.index(ref.domain))
    return ProbeCorpus(texts, domains, names, {r.key: r.sha256 for r in refs})


def tokenize(tokenizer: Any, texts: list[str], max_tokens: int, per_sequence: int, seed: int) -> list[TokenizedText]:
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(
        texts, add_special_tokens=True, truncation=True, max_length=max_tokens, return_offsets_mapping=fast, padding=False
    )
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        if fast:
            offsets = enc["offset_mapping"][i]
            end = max((o[1] for o in offsets[1:]), default=0)
            span = texts[i][offsets[0][1] : end] if len(ids) > 1 else ""
        else:
            span = tokenizer.decode(ids[1:], skip_special_tokens=True)
        positions = list(range(1, len(ids)))
        k = min(per_sequence, len(positions))
        sample = sorted(random.Random(f"{seed}:{i}").sample(positions, k)) if k else []
        out.append(TokenizedText(list(ids), len(span.encode("utf-8")), sample))
    return out
