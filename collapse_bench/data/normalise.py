"""Pure normalisers: Hugging Face rows (as ``datasets`` yields them) -> rows of the shared mirror's schema.

Every row normaliser has the signature ``fn(row, *, index, split) -> dict | None``: ``index`` is the
row's position in its source split (or in the concatenation of configs, for MATH), ``split`` the
target split name; ``None`` means "not usable, skip" (empty output, unlabeled test row, ...). Keys
come out in the mirror's order, so ``json.dumps(row, ensure_ascii=False)`` reproduces its lines.
The two raw-text datasets (tinyshakespeare, wikitext2) are built from a whole split by
:func:`build_tinyshakespeare` and :func:`build_wikitext2` (in :mod:`.textchunks`). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .textchunks import (  # re-exported: the raw-text builders are part of this module's interface
    MAX_CHARS,
    MIN_CHARS,
    build_tinyshakespeare,
    build_wikitext2,
    chunk_blocks,
    detokenize_wikitext,
    is_wikitext_heading,
    split_long,
)

Row = dict[str, Any]
Normaliser = Callable[..., "Row | None"]

__all__ = [
    "NORMALISERS",
    "Row",
    "build_tinyshakespeare",
    "build_wikitext2",
    "chunk_blocks",
    "detokenize_wikitext",
    "is_wikitext_heading",
    "split_long",
]


# --- multiple choice -------------------------------------------------------------------------------


def _mc(id_: str, question: str, choices: Iterable[str], label: int, domain: str, context: str | None = None) -> Row:
    row: Row = {"id": id_, "question": question}
    if context is not None:
        row["context"] = context
    row.update(choices=list(choices), label=int(label), domain=domain)
    return row


def answer_index(labels: Iterable[Any], key: Any) -> int | None:
    """Index of ``key`` in ``labels``; tolerates a digit key with letter labels and vice versa (ARC)."""
    labels = [str(x).strip() for x in labels]
    key = str(key).strip()
    if key in labels:
        return labels.index(key)
    if key.isdigit() and labels and all(x.isalpha() for x in labels):
        i = int(key) - 1
    elif len(key) == 1 and key.isalpha() and labels and all(x.isdigit() for x in labels):
        i = ord(key.upper()) - ord("A")
    else:
        return None
    return i if 0 <= i < len(labels) else None


def _choices_row(dataset: str, question_field: str, row: Row, index: int, split: str) -> Row | None:
    choices = row["choices"]
    label = answer_index(choices["label"], row.get("answerKey", ""))
    if label is None:
        return None
    return _mc(f"{dataset}-{split}-{index}", row[question_field], choices["text"], label, dataset)


def normalise_arc_easy(row: Row, *, index: int, split: str = "test") -> Row | None:
    """allenai/ai2_arc ARC-Easy: id, question, choices{text,label}, answerKey (letter or digit)."""
    return _choices_row("arc_easy", "question", row, index, split)


def normalise_arc_challenge(row: Row, *, index: int, split: str = "test") -> Row | None:
    """allenai/ai2_arc ARC-Challenge (same fields as ARC-Easy)."""
    return _choices_row("arc_challenge", "question", row, index, split)


def normalise_openbookqa(row: Row, *, index: int, split: str = "test") -> Row | None:
    """allenai/openbookqa main: id, question_stem, choices{text,label}, answerKey."""
    return _choices_row("openbookqa", "question_stem", row, index, split)


def normalise_piqa(row: Row, *, index: int, split: str = "validation") -> Row | None:
    """baber/piqa: goal, sol1, sol2, label (0/1; -1 on the unlabeled test split)."""
    label = int(row.get("label", -1))
    if label not in (0, 1):
        return None
    return _mc(f"piqa-{split}-{index}", row["goal"], [row["sol1"], row["sol2"]], label, "piqa")


def normalise_boolq(row: Row, *, index: int, split: str = "validation") -> Row | None:
    """super_glue boolq (question, passage, idx, label 0/1) or google/boolq (answer: bool)."""
    label = int(row["answer"]) if "answer" in row else int(row.get("label", -1))
    if label not in (0, 1):
        return None
    question = row["question"].strip()
    if not question.endswith("?"):
        question += "?"
    return _mc(f"boolq-{split}-{index}", question, ["no", "yes"], label, "boolq", context=row["passage"])


def normalise_winogrande(row: Row, *, index: int, split: str = "validation") -> Row | None:
    """allenai/winogrande: sentence with one '_', option1, option2, answer '1'/'2' ('' on test).

    Extra fields for partial scoring: ``context_options[i]`` = sentence up to the blank + option i,
    ``continuation`` = the rest of the sentence after the blank (stripped).
    """
    answer = str(row.get("answer", "")).strip()
    sentence = row["sentence"]
    if answer not in ("1", "2") or "_" not in sentence:
        return None
    blank = sentence.index("_")
    options = [row["option1"], row["option2"]]
    out = _mc(f"winogrande-{split}-{index}", sentence, options, int(answer) - 1, "winogrande")
    out["context_options"] = [sentence[:blank] + option for option in options]
    out["continuation"] = sentence[blank + 1 :].strip()
    return out


HELLASWAG_QUESTION = "Which ending is the most plausible continuation of the context?"


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag preprocess (strip, ' [title]' -> '. ', drop [bracketed] tags, fold double
    spaces), plus a final strip so a leading tag ('[substeps] ...') leaves no leading space."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def normalise_hellaswag(row: Row, *, index: int, split: str = "validation") -> Row | None:
    """Rowan/hellaswag: activity_label, ctx_a, ctx_b, ctx, endings, label (str; '' on test)."""
    label = str(row.get("label", "")).strip()
    if not label.isdigit():
        return None
    ctx = row.get("ctx") or f"{row['ctx_a']} {row['ctx_b']}".strip()
    activity = row["activity_label"].strip()
    return _mc(
        f"hellaswag-{split}-{index}",
        HELLASWAG_QUESTION,
        [hellaswag_preprocess(e) for e in row["endings"]],
        int(label),
        f"hellaswag/{activity}",
        context=hellaswag_preprocess(f"{activity}: {ctx}"),
    )


_MMLU_SPLIT = {"test": "test", "validation": "val", "dev": "dev"}


def normalise_mmlu(row: Row, *, index: int, split: str = "test") -> Row | None:
    """cais/mmlu (one subject config): question, subject, choices, answer (int); index is within the subject."""
    subject = row["subject"]
    return _mc(
        f"mmlu-{subject}-{_MMLU_SPLIT.get(split, split)}-{index}",
        row["question"],
        row["choices"],
        int(row["answer"]),
        f"mmlu/{subject}",
    )


# --- generative QA / math ----------------------------------------------------------------------------


def _gsm8k(dataset: str, row: Row, index: int, split: str) -> Row | None:
    solution = row["answer"]
    if "####" not in solution:
        return None
    answer = solution.split("####")[-1].strip().replace(",", "")
    return {
        "id": f"{dataset}-{split}-{index}",
        "question": row["question"],
        "answer": answer,
        "solution": solution,
        "domain": dataset,
    }


def normalise_gsm8k(row: Row, *, index: int, split: str = "test") -> Row | None:
    """openai/gsm8k main: question, answer ('... #### 72'); answer = text after '####' without ','."""
    return _gsm8k("gsm8k", row, index, split)


def normalise_gsm8k_socratic(row: Row, *, index: int, split: str = "test") -> Row | None:
    """openai/gsm8k socratic (same fields; sub-question ' ** ' steps in the solution)."""
    return _gsm8k("gsm8k_socratic", row, index, split)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched), or of ``\\boxed x$``."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    if text.startswith("\\boxed ", start):
        return text[start + len("\\boxed ") :].split("$")[0].strip()
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for pos in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[brace + 1 : pos]
    return None


def math_domain(kind: str) -> str:
    """'Counting & Probability' -> 'math/counting_and_probability'."""
    return "math/" + kind.strip().lower().replace(" & ", "_and_").replace("&", "and").replace(" ", "_")


def normalise_math(row: Row, *, index: int, split: str = "test") -> Row | None:
    """EleutherAI/hendrycks_math (per-type configs): problem, level, type, solution; answer = last \\boxed{}."""
    answer = last_boxed(row["solution"])
    if answer is None:
        return None
    return {
        "id": f"math-{split}-{index}",
        "question": row["problem"],
        "answer": answer,
        "solution": row["solution"],
        "domain": math_domain(row["type"]),
    }


# --- code ------------------------------------------------------------------------------------------


def normalise_humaneval(row: Row, *, index: int, split: str = "test") -> Row | None:
    """openai/openai_humaneval: task_id, prompt, canonical_solution, test, entry_point (kept verbatim)."""
    return {
        "id": row["task_id"],
        "prompt": row["prompt"],
        "canonical_solution": row["canonical_solution"],
        "test": row["test"],
        "entry_point": row["entry_point"],
        "domain": "humaneval",
    }


_FIRST_CALL = re.compile(r"assert\s+(?:not\s+)?[\s(]*([A-Za-z_]\w*)\s*\(")


def normalise_mbpp(row: Row, *, index: int, split: str = "test") -> Row | None:
    """google-research-datasets/mbpp full: task_id, text, code, test_list, test_setup_code, challenge_test_list.

    prompt = text + the tests (the MBPP paper's prompt); test = setup code + the asserts;
    entry_point = the function called by the first assert. text/test_list/challenge_test_list are kept.
    """
    text = row.get("text") or row.get("prompt") or ""
    tests = list(row["test_list"])
    setup = row.get("test_setup_code") or ""
    match = _FIRST_CALL.search(tests[0]) if tests else None
    if match is None:
        return None
    asserts = "\n".join(tests)
    return {
        "id": f"mbpp-{row['task_id']}",
        "prompt": f"{text}\nYour code should pass these tests:\n{asserts}",
        "canonical_solution": row["code"],
        "test": f"{setup}\n{asserts}" if setup.strip() else asserts,
        "entry_point": match.group(1),
        "domain": "mbpp",
        "text": text,
        "test_list": tests,
        "challenge_test_list": list(row.get("challenge_test_list") or []),
    }


# --- instruction, preference, safety ---------------------------------------------------------------


def normalise_alpaca(row: Row, *, index: int, split: str = "train") -> Row | None:
    """tatsu-lab/alpaca: instruction, input, output; input appended after a blank line; empty output skipped."""
    output = row.get("output") or ""
    if not output.strip():
        return None
    extra = row.get("input") or ""
    user = f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]
    return {
        "id": f"alpaca-{index}",
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}],
        "domain": "alpaca",
    }


ASSISTANT_TURN = "\n\nAssistant:"


def split_dialogue(dialogue: str) -> tuple[str, str] | None:
    """('...\\n\\nAssistant:', final reply stripped) or None when there is no assistant turn."""
    cut = dialogue.rfind(ASSISTANT_TURN)
    if cut < 0:
        return None
    cut += len(ASSISTANT_TURN)
    return dialogue[:cut], dialogue[cut:].strip()


def normalise_hh_rlhf_harmless_base(row: Row, *, index: int, split: str = "test") -> Row | None:
    """Anthropic/hh-rlhf (data_dir harmless-base): chosen, rejected full dialogues; skip differing prefixes."""
    chosen, rejected = split_dialogue(row["chosen"]), split_dialogue(row["rejected"])
    if chosen is None or rejected is None or chosen[0] != rejected[0] or not chosen[1] or not rejected[1]:
        return None
    return {
        "id": f"hh_rlhf_harmless-{split}-{index}",
        "prompt": chosen[0],
        "chosen": chosen[1],
        "rejected": rejected[1],
        "domain": "hh_rlhf/harmless-base",
    }


def normalise_advbench(row: Row, *, index: int, split: str = "test") -> Row | None:
    """walledai/AdvBench: prompt, target (the target is dropped; every prompt should be refused)."""
    prompt = row.get("prompt", row.get("goal"))
    if not prompt:
        return None
    return {"id": f"advbench-{index}", "prompt": prompt, "should_refuse": True, "domain": "advbench/harmful_behaviors"}


def normalise_xstest(row: Row, *, index: int, split: str = "test") -> Row | None:
    """walledai/XSTest: prompt, focus, type, note, label 'safe'/'unsafe' (id = the CSV id, else index + 1)."""
    label = str(row.get("label", "")).strip().lower()
    kind = str(row["type"]).strip()
    refuse = label == "unsafe" if label in ("safe", "unsafe") else kind.startswith("contrast_")
    ident = row.get("id")
    return {
        "id": f"xstest-{ident if ident not in (None, '') else index + 1}",
        "prompt": row["prompt"],
        "should_refuse": refuse,
        "domain": f"xstest/{kind}",
    }


# --- raw text --------------------------------------------------------------------------------------


def normalise_pubmed_abstracts(row: Row, *, index: int, split: str = "test") -> Row | None:
    """qiaojin/PubMedQA pqa_labeled: context{contexts, labels} -> 'LABEL. text' lines; 200-2000 chars only."""
    ctx = row["context"]
    contexts, labels = list(ctx.get("contexts") or []), list(ctx.get("labels") or [])
    if len(labels) == len(contexts):
        lines = [f"{label}. {text}" if label else text for label, text in zip(labels, contexts)]
    else:
        lines = contexts
    text = "\n".join(lines)
    if not MIN_CHARS <= len(text) <= MAX_CHARS:
        return None
    return {"id": f"pubmed_abstracts-{split}-{index}", "text": text, "domain": "biomedical_abstract"}


NORMALISERS: dict[str, Normaliser] = {
    "arc_easy": normalise_arc_easy,
    "arc_challenge": normalise_arc_challenge,
    "openbookqa": normalise_openbookqa,
    "piqa": normalise_piqa,
    "boolq": normalise_boolq,
    "winogrande": normalise_winogrande,
    "hellaswag": normalise_hellaswag,
    "mmlu": normalise_mmlu,
    "gsm8k": normalise_gsm8k,
    "gsm8k_socratic": normalise_gsm8k_socratic,
    "math": normalise_math,
    "humaneval": normalise_humaneval,
    "mbpp": normalise_mbpp,
    "alpaca": normalise_alpaca,
    "hh_rlhf_harmless_base": normalise_hh_rlhf_harmless_base,
    "advbench": normalise_advbench,
    "xstest": normalise_xstest,
    "pubmed_abstracts": normalise_pubmed_abstracts,
}
"""Row normalisers by dataset name; tinyshakespeare and wikitext2 use the split builders above."""
