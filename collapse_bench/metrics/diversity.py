"""Diversity of sampled generations (pure functions).

Words are whitespace tokens of the raw text (``text.split()``, case kept); an n-gram is n consecutive words.

  distinct_n(texts)        = |set of n-grams over texts| / (number of n-grams over texts); None if 0 n-grams
  distinct_n per-input     = mean over prompts (with at least one n-gram) of distinct_n(the k samples of
                             that prompt)
  distinct_n across-input  = distinct_n(all samples of all prompts pooled)
  self_bleu4(samples)      = mean_i BLEU-4(sample_i ; references = the other k-1 samples), sacrebleu's
                             sentence BLEU (tokenize="none", i.e. the same whitespace words;
                             clipped n-gram precisions p_1..p_4 with counts clipped by the max count
                             in any reference; smooth_method="exp": the m-th zero precision becomes
                             1 / (2^m total_n); effective order: orders with no hypothesis n-grams are
                             dropped; brevity penalty exp(1 - r/c) against the closest reference
                             length r), divided by 100 to lie in [0, 1]; mean over prompts; needs k >= 2
"""

from __future__ import annotations

from collections.abc import Sequence

from .spec import MetricSpec, Range, Tolerance


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / total n-grams over ``texts`` (whitespace words); None without n-grams."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else None


def distinct_per_input(groups: Sequence[Sequence[str]], n: int) -> float | None:
    """Mean over prompts of distinct_n of that prompt's samples (prompts without n-grams skipped)."""
    values = [v for v in (distinct_n(g, n) for g in groups) if v is not None]
    return sum(values) / len(values) if values else None


def distinct_across_inputs(groups: Sequence[Sequence[str]], n: int) -> float | None:
    return distinct_n([t for g in groups for t in g], n)


def self_bleu4(samples: Sequence[str]) -> float | None:
    """Mean BLEU-4 of each sample against the other samples of the same prompt (0..1); None if k < 2."""
    if len(samples) < 2:
        return None
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="none", smooth_method="exp", effective_order=True)
    scores = [bleu.sentence_score(s, [r for j, r in enumerate(samples) if j != i]).score / 100.0 for i, s in enumerate(samples)]
    return sum(scores) / len(scores)


def mean_self_bleu4(groups: Sequence[Sequence[str]]) -> float | None:
    values = [v for v in (self_bleu4(g) for g in groups) if v is not None]
    return sum(values) / len(values) if values else None


def diversity_metrics(groups: Sequence[Sequence[str]]) -> dict[str, float | None]:
    """distinct-1/2/3 per-input and across-input, and self-BLEU-4, for k samples per prompt."""
    out: dict[str, float | None] = {}
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_per_input(groups, n)
        out[f"distinct_{n}_across"] = distinct_across_inputs(groups, n)
    out["self_bleu4"] = mean_self_bleu4(groups)
    return out


SPECS = (
    MetricSpec(
        id="distinct*",
        kind="diversity",
        definition="distinct-n: unique n-grams over all n-grams of the generations (within, or *_across generations)",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.03, 0.0),
        label="distinct-n",
    ),
    MetricSpec(
        id="self_bleu*",
        kind="diversity",
        definition="self-BLEU: mean BLEU of each generation against the others",
        direction="lower",
        range=Range(0, 1),
        tolerance=Tolerance(0.03, 0.0),
        label="self-BLEU",
    ),
)
