"""The datasets ``collapse-bench data pull`` knows: where each comes from on the Hugging Face hub (path,
configs, pinned revision), how its splits map onto the mirror's, its subset rule, licence and row schema.

Revisions are commit shas of the HF dataset repositories, taken from public pins (lm-eval protocol
files, license registries and provenance tables in public repositories). ``revision=None`` marks
a source whose sha could not be confirmed (``# TODO pin``); it loads the hub's default branch.
tinyshakespeare loads the hub's parquet conversion (``refs/convert/parquet``) because its main branch
is a loading script that ``datasets`` >= 4 no longer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .normalise import Row, build_tinyshakespeare, build_wikitext2


@dataclass(frozen=True)
class SplitMap:
    """Source split -> target split, with the subset rule applied in this order:
    ``head`` (only the first N source rows), ``evenly`` (N evenly spaced source rows, floor(i*len/N)),
    normalise (dropping unusable rows), then ``first`` / ``last`` N usable rows."""

    source: str
    target: str
    head: int | None = None
    evenly: int | None = None
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class Source:
    hf_path: str
    configs: tuple[str | None, ...]  # several configs are concatenated in this order (MMLU subjects, MATH types)
    splits: tuple[SplitMap, ...]  # for text builders: the source splits to load (target names unused)
    revision: str | None
    kind: str
    subset_rule: str
    license: str
    notes: str = ""
    data_dir: str | None = None  # datasets' data_dir= (hh-rlhf subsets)
    index_per_config: bool = False  # ids count rows within each config (MMLU) rather than across configs
    builder: Callable[[dict[str, list[Row]]], dict[str, list[Row]]] | None = None  # whole-split text datasets


def _build_tinyshakespeare(loaded: dict[str, list[Row]]) -> dict[str, list[Row]]:
    # HF splits are the 90/5/5 character slices of input.txt: concatenated they give the file back.
    return build_tinyshakespeare("".join(r["text"] for split in ("train", "validation", "test") for r in loaded[split]))


def _build_wikitext2(loaded: dict[str, list[Row]]) -> dict[str, list[Row]]:
    return {split: build_wikitext2([r["text"] for r in rows], split) for split, rows in loaded.items()}


def _one(source: str, target: str | None = None, **rule: int) -> tuple[SplitMap, ...]:
    return (SplitMap(source, target or source, **rule),)


_ARC = "allenai/ai2_arc"
_ARC_REV = "210d026faf9955653af8916fad021475a3f00453"
_GSM8K_REV = "740312add88f781978c0658806c59bc2815b9866"
MMLU_SUBJECTS = (
    "abstract_algebra",
    "astronomy",
    "college_biology",
    "computer_security",
    "econometrics",
    "high_school_macroeconomics",
    "high_school_physics",
    "philosophy",
    "professional_medicine",
    "world_religions",
)
MATH_TYPES = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
_MC_NOTE = "Normalised like the shared mirror; HF row order may differ from the mirror's llm-foundry copy."

# Revision provenance (commit shas seen pinned in public repositories):
#   ai2_arc, super_glue, winogrande, hellaswag, baber/piqa: an lm-eval "frozen evaluation protocol" table
#     (dataset path / revision per task), the ai2_arc/super_glue/winogrande ones also in a license
#     registry and a DataDecide provenance table; openbookqa, mmlu, gsm8k, mbpp: the same registry/table
#     (mmlu and gsm8k also in several HF cache snapshot paths); hendrycks_math, openai_humaneval,
#     tatsu-lab/alpaca, Anthropic/hh-rlhf, Salesforce/wikitext, qiaojin/PubMedQA, walledai/XSTest: pins in
#     several independent repositories (load_dataset(..., revision=...) calls, provenance docs).
SOURCES: dict[str, Source] = {
    "arc_easy": Source(
        _ARC,
        ("ARC-Easy",),
        _one("test", first=2000),
        _ARC_REV,
        "mc",
        "first 2000 of 2376 test rows in source order",
        "ARC: CC BY-SA 4.0 (AI2)",
        _MC_NOTE,
    ),
    "arc_challenge": Source(
        _ARC, ("ARC-Challenge",), _one("test"), _ARC_REV, "mc", "all 1172 test rows", "ARC: CC BY-SA 4.0 (AI2)", _MC_NOTE
    ),
    "openbookqa": Source(
        "allenai/openbookqa",
        ("main",),
        _one("test"),
        "388097ea7776314e93a529163e0fea805b8a6454",
        "mc",
        "all 500 test rows",
        "OpenBookQA: Apache-2.0 (AI2)",
        "question = question_stem.",
    ),
    "piqa": Source(
        "baber/piqa",
        (None,),
        _one("validation"),
        "142f6d7367fd9877f0fb3b5734ea6a545f54cdd1",
        "mc",
        "all 1838 validation rows",
        "PIQA: AFL-3.0 (per authors)",
        "lm-eval's parquet copy of ybisk/piqa (whose loading script datasets no longer runs).",
    ),
    "boolq": Source(
        "aps/super_glue",
        ("boolq",),
        _one("validation", first=2000),
        "3de24cf8022e94f4ee4b9d55a6f539891524d646",
        "mc_ctx",
        "first 2000 of 3270 validation rows in source order",
        "BoolQ: CC BY-SA 3.0 (Google)",
        "choices are ['no','yes']; context = passage; question mark appended where missing.",
    ),
    "winogrande": Source(
        "allenai/winogrande",
        ("winogrande_xl",),
        _one("validation"),
        "01e74176c63542e6b0bcb004dcdea22d94fb67b5",
        "mc",
        "all 1267 validation rows",
        "WinoGrande: CC-BY (AI2)",
        "Extra fields context_options/continuation for partial scoring (score continuation given context_options[i]).",
    ),
    "hellaswag": Source(
        "Rowan/hellaswag",
        (None,),
        _one("validation", first=2000),
        "218ec52e09a7e7462a5400043bb9a69a41d06b76",
        "mc_ctx",
        "first 2000 of 10042 validation rows in source order",
        "HellaSwag: MIT (rowanz/hellaswag)",
        "context = activity_label + ': ' + ctx, lm-eval preprocessing; score context + ' ' + choice.",
    ),
    "mmlu": Source(
        "cais/mmlu",
        MMLU_SUBJECTS,
        (SplitMap("test", "test"), SplitMap("validation", "validation"), SplitMap("dev", "dev")),
        "c30699e8356da336a370243923dbaf21066bb9fe",
        "mc",
        "all rows of the listed subjects: " + ", ".join(MMLU_SUBJECTS),
        "MIT (hendrycks/test)",
        "dev = 5 few-shot examples per subject.",
        index_per_config=True,
    ),
    "math": Source(
        "EleutherAI/hendrycks_math",
        MATH_TYPES,
        _one("test", evenly=2000),
        "21a5633873b6a120296cce3e2df9d5550074f4a3",
        "gen",
        "2000 evenly spaced rows (index floor(i*5000/2000)) of the 5000 test rows, the 7 type "
        "configs concatenated in alphabetical order",
        "MATH (Hendrycks et al.): MIT",
        "answer = content of the last \\boxed{} of the solution.",
    ),
    "pubmed_abstracts": Source(
        "qiaojin/PubMedQA",
        ("pqa_labeled",),
        _one("train", "test"),
        "9001f2853fb87cab8d220904e0de81ac6973b318",
        "text",
        "all contexts with 200-2000 chars of the 1000 pqa_labeled rows",
        "PubMedQA: MIT",
        "Abstract bodies (without conclusions) as 'LABEL. text' lines.",
    ),
    "gsm8k": Source(
        "openai/gsm8k",
        ("main",),
        (SplitMap("train", "train", first=2000), SplitMap("test", "test")),
        _GSM8K_REV,
        "gen",
        "train: first 2000 of 7473; test: all 1319",
        "MIT (openai/grade-school-math)",
        "answer = text after '####' with thousands separators removed; solution kept verbatim.",
    ),
    "gsm8k_socratic": Source(
        "openai/gsm8k",
        ("socratic",),
        _one("test"),
        _GSM8K_REV,
        "gen",
        "all 1319 test rows",
        "MIT (openai/grade-school-math)",
        "Steps posed as sub-questions ('... ** ...').",
    ),
    "humaneval": Source(
        "openai/openai_humaneval",
        (None,),
        _one("test"),
        "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544",
        "code",
        "all 164",
        "MIT (openai/human-eval)",
        "call check(entry_point) after exec(prompt + completion + test).",
    ),
    "mbpp": Source(
        "google-research-datasets/mbpp",
        ("full",),
        tuple(SplitMap(s, s) for s in ("train", "validation", "test", "prompt")),
        "4bb6404fdc6cacfda99d4ac4205087b89d32030c",
        "code",
        "all 974 tasks; HF splits = test 11-510, validation 511-600, train 601-974, prompt 1-10",
        "CC BY 4.0 (MBPP)",
        "entry_point parsed from the first assert; test = setup code + asserts. "
        "Extra fields text/test_list/challenge_test_list kept.",
    ),
    "alpaca": Source(
        "tatsu-lab/alpaca",
        (None,),
        (SplitMap("train", "train", head=5000, first=2000), SplitMap("train", "validation", head=5000, last=500)),
        "dce01c9b08f87459cf36a430d809084718273017",
        "sft",
        "of the first 5000 source rows, rows with empty output dropped; train = first 2000, "
        "validation = last 500 (disjoint); ids keep the source row index",
        "CC BY-NC 4.0 (research use only, non-commercial)",
        "No official split: validation is a held-out slice. input appended to instruction after a blank line.",
    ),
    "hh_rlhf_harmless_base": Source(
        "Anthropic/hh-rlhf",
        (None,),
        _one("test", first=2000),
        "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa",
        "pref",
        "first 2000 usable test rows (skipping rows whose two dialogues' prefixes differ or whose final reply is empty)",
        "MIT (anthropics/hh-rlhf)",
        "prompt = dialogue up to and including the last '\\n\\nAssistant:'. Contains offensive content by design.",
        data_dir="harmless-base",
    ),
    "advbench": Source(
        "walledai/AdvBench",
        (None,),
        _one("train", "test"),
        None,  # TODO pin: no commit sha of walledai/AdvBench could be confirmed
        "safety",
        "all 520",
        "MIT (llm-attacks/llm-attacks)",
        "Only the goal (prompt) is kept.",
    ),
    "xstest": Source(
        "walledai/XSTest",
        (None,),
        _one("test"),
        "f1d713187c61b6ae64e602d74f0b3d812cc2e8e8",
        "safety",
        "all 450",
        "CC BY 4.0",
        "XSTest v2: 250 safe prompts (should_refuse=false) + 200 unsafe contrast prompts (should_refuse=true).",
    ),
    "tinyshakespeare": Source(
        "karpathy/tiny_shakespeare",
        (None,),
        tuple(SplitMap(s, s) for s in ("train", "validation", "test")),
        # the main branch is a loading script, which datasets>=4 refuses; the hub's
        # parquet conversion holds the same three splits (a ref; no commit sha confirmed)
        "refs/convert/parquet",
        "text",
        "file split at the last blank line before 90% of characters (train = "
        "first 90%, test = rest); speeches merged into 200-2000 char chunks; first 2000 "
        "chunks per split",
        "public-domain Shakespeare (karpathy/char-rnn)",
        "HF train+validation+test concatenated give input.txt back.",
        builder=_build_tinyshakespeare,
    ),
    "wikitext2": Source(
        "Salesforce/wikitext",
        ("wikitext-2-v1",),
        (SplitMap("validation", "validation"), SplitMap("test", "test")),
        "b08601e04326c79dfdd32d625aee71d232d685c3",
        "text",
        "all paragraphs (headings dropped) merged/split into 200-2000 char chunks; first 2000 chunks per split",
        "WikiText: CC BY-SA 3.0 (Salesforce)",
        "wikitext-2-v1 (tokenized, '<unk>' kept) with light detokenisation (@-@, @,@, @.@, spaces before punctuation).",
        builder=_build_wikitext2,
    ),
}

_BASE = {"id": "str"}
SCHEMAS: dict[str, dict[str, str]] = {
    "mc": {"question": "str", "choices": "list[str]", "label": "int (index into choices)"},
    "mc_ctx": {"question": "str", "context": "str", "choices": "list[str]", "label": "int (index into choices)"},
    "gen": {"question": "str", "answer": "str (final short answer)", "solution": "str (worked solution)"},
    "code": {"prompt": "str", "canonical_solution": "str", "test": "str", "entry_point": "str"},
    "sft": {"messages": "list[{role: user|assistant, content: str}]"},
    "pref": {"prompt": "str", "chosen": "str", "rejected": "str"},
    "safety": {"prompt": "str", "should_refuse": "bool"},
    "text": {"text": "str (200-2000 chars)"},
}
EXTRA_FIELDS = {
    "winogrande": {"context_options": "list[str]", "continuation": "str"},
    "mbpp": {"text": "str", "test_list": "list[str]", "challenge_test_list": "list[str]"},
}


def schema(name: str) -> dict[str, str]:
    return {**_BASE, **SCHEMAS[SOURCES[name].kind], "domain": "str", **EXTRA_FIELDS.get(name, {})}
