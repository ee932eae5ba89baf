"""lm-eval tasks: prompts equal lm-eval's built-in tasks on HF-shaped rows, real lm-eval runs through
``evaluate()`` (tiny model), saved samples and ``rescore``, user lm-eval YAMLs, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lm_eval
import numpy as np
import pytest

from collapse_bench.cli import main
from collapse_bench.ood import lmeval
from collapse_bench.ood.samples import _gold
from collapse_bench.ood.task import prepare
from collapse_bench.tasks import TaskRegistry
from collapse_bench.tasks.lmeval_yaml import index

LM_TASKS = Path(lm_eval.__file__).parent / "tasks"
LETTERS = "ABCDE"

# HF rows of Rowan/hellaswag validation (ids 0, 1, 3): ctx_b is stored lower-case, lm-eval capitalises it.
HELLASWAG_HF = [
    {
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "label": "3",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
    },
    {
        "activity_label": "Clean and jerk",
        "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
        "ctx_b": "the lady",
        "label": "3",
        "endings": [
            "swings and lands in her arms.",
            "pulls the barbell forward.",
            "pulls a rope attached to the barbell.",
            "stands and lifts the weight over her head.",
        ],
    },
    {
        "activity_label": "High jump",
        "ctx_a": "A boy is running down a track.",
        "ctx_b": "the boy",
        "label": "2",
        "endings": [
            "runs into a car.",
            "gets in a mat.",
            "lifts his body above the height of a pole.",
            "stands on his hands and springs.",
        ],
    },
]


def to_hf(task: str, r: dict[str, Any]) -> dict[str, Any]:
    """The mirror row in the field layout of the HF dataset lm-eval's built-in task reads."""
    labels = list(LETTERS[: len(r.get("choices", []))])
    if task in ("arc_easy", "arc_challenge"):
        return {
            "id": r["id"],
            "question": r["question"],
            "choices": {"text": r["choices"], "label": labels},
            "answerKey": labels[r["label"]],
        }
    if task == "openbookqa":
        return {
            "id": r["id"],
            "question_stem": r["question"],
            "choices": {"text": r["choices"], "label": labels},
            "answerKey": labels[r["label"]],
        }
    if task == "piqa":
        return {"goal": r["question"], "sol1": r["choices"][0], "sol2": r["choices"][1], "label": r["label"]}
    if task == "boolq":  # HF questions carry no "?" (the mirror appended one)
        return {"question": r["question"].rstrip("?"), "passage": r["context"], "label": r["label"], "idx": 0}
    if task == "winogrande":
        return {"sentence": r["question"], "option1": r["choices"][0], "option2": r["choices"][1], "answer": str(r["label"] + 1)}
    if task in ("mmlu", "mmlu_cloze"):
        return {"question": r["question"], "subject": r["domain"].split("/")[1], "choices": r["choices"], "answer": r["label"]}
    if task == "gsm8k":
        return {"question": r["question"], "answer": r["solution"]}
    raise KeyError(task)


# (our task, mirror dataset/split, built-in YAML dir, built-in task name, mirror row indices)
CASES = [
    ("arc_easy", "arc_easy/test", "arc", "arc_easy", [0, 1, 2, 3]),
    ("arc_challenge", "arc_challenge/test", "arc", "arc_challenge", [0, 1, 2]),
    ("piqa", "piqa/validation", "piqa", "piqa", [0, 1, 2]),
    ("hellaswag", "hellaswag/validation", "hellaswag", "hellaswag", [0, 1, 3]),
    ("boolq", "boolq/validation", "super_glue/boolq", "boolq", [0, 1, 2]),
    ("winogrande", "winogrande/validation", "winogrande", "winogrande", [0, 1, 2]),
    ("openbookqa", "openbookqa/test", "openbookqa", "openbookqa", [0, 1, 2]),
    ("mmlu", "mmlu/test", "mmlu/default", "mmlu_abstract_algebra", [0, 1, 2]),
    ("mmlu_cloze", "mmlu/test", "mmlu/continuation", "mmlu_abstract_algebra_continuation", [0, 1, 2]),
    ("gsm8k", "gsm8k/test", "gsm8k", "gsm8k", [0, 1]),
]


def build_builtin(src: str, name: str, rows: list[dict[str, Any]], tmp: Path) -> Any:
    """lm-eval's own YAML for ``name`` (its Jinja / !function helpers) over local HF-shaped rows."""
    data = tmp / f"hf_{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inc = lmeval.new_include_dir(LM_TASKS / src)
    rel = index(Path(inc.name))[name].relative_to(inc.name)
    splits = {s: str(data) for s in ("train", "validation", "test", "dev")}
    overrides = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": splits}}
    return lmeval.resolve(name, inc, rel, overrides, "builtin").task


def requests(task: Any, doc: dict[str, Any]) -> list[tuple]:
    ctx = task.fewshot_context(doc, 0)
    inst = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.config.task, 0, 1))
    return [
        (*i.args[:1], i.args[1] if isinstance(i.args[1], str) else None) for i in (inst if isinstance(inst, list) else [inst])
    ]


@pytest.mark.parametrize("ours,file,src,builtin,rows", CASES, ids=[c[0] for c in CASES])
def test_prompts_reproduce_lm_eval_builtin(ours, file, src, builtin, rows, data_dir: Path, tmp_path: Path) -> None:
    all_rows = [json.loads(line) for line in (data_dir / f"{file}.jsonl").read_text().splitlines()]
    mirror = [all_rows[i] for i in rows]
    hf = HELLASWAG_HF if ours == "hellaswag" else [to_hf(ours, r) for r in mirror]
    mini = tmp_path / "data"  # a data dir holding exactly these rows (few-shot splits too)
    task = TaskRegistry([]).task(ours)
    for ref in task.data:
        path = mini / ref["dataset"] / f"{ref['split']}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in mirror))
    our_task = prepare(task, mini, None).resolved.task
    ref_task = build_builtin(src, builtin, hf, tmp_path)
    our_docs, ref_docs = list(our_task.eval_docs), list(ref_task.eval_docs)
    assert len(our_docs) == len(ref_docs) == len(rows)
    for a, b in zip(our_docs, ref_docs):
        assert requests(our_task, a) == requests(ref_task, b)  # (context, continuation) of every request
        if our_task.config.output_type == "multiple_choice":
            choices = our_task.doc_to_choice(a)
            assert choices == ref_task.doc_to_choice(b)
            assert _gold(our_task, a, choices) == _gold(ref_task, b, choices)
        else:
            assert our_task.doc_to_target(a) == ref_task.doc_to_target(b)


def read_samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_real_lm_eval_and_rescore(tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    from collapse_bench.evaluate import EvaluateRequest, evaluate
    from collapse_bench.io import sha256_file

    out = tmp_path / "res.json"
    _, res = evaluate(
        EvaluateRequest(
            model=str(tiny_model_dir),
            suite="standard",
            tasks=["arc_easy", "world_mc"],
            data_dir=str(data_dir),
            limit=5,
            device="cpu",
            output=str(out),
            progress=False,
        )
    )
    samples = tmp_path / "res.samples.jsonl"
    recs = read_samples(samples)
    for name in ("arc_easy", "world_mc"):
        block = res["tasks"][name]
        mine = [r for r in recs if r["task"] == name]
        assert len(mine) == 5 and block["samples"] == {"path": samples.name, "sha256": sha256_file(samples), "records": 5}
        assert block["metrics"]["acc"] == pytest.approx(np.mean([r["correct"] for r in mine]))  # lm-eval's acc
        norm = [int(np.argmax(np.array(r["loglik"]) / np.array(r["choice_chars"])) == r["gold"]) for r in mine]
        assert block["metrics"]["acc_norm"] == pytest.approx(np.mean(norm))  # lm-eval's acc_norm divisor
        for key in (
            "ece",
            "ece_width",
            "brier",
            "nll",
            "auroc",
            "selective_acc_top10",
            "temperature_opt",
            "sce",
            "aurc",
            "eaurc",
        ):
            assert block["metrics"][key] == block["calibration"]["primary"][key]
        assert block["calibration"]["primary"]["accuracy"] == pytest.approx(block["metrics"]["acc"])
        assert len(block["calibration"]["primary"]["reliability"]) == 15
    assert set(res["tasks"]["arc_easy"]["data"]) == {"arc_easy/test.jsonl", "lm_eval:arc_easy.yaml"}
    assert res["config"]["backend"] == "hf" if "backend" in res["config"] else True

    assert main(["rescore", str(out)]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    stored = json.loads(out.read_text())
    stored["tasks"]["arc_easy"]["calibration"]["primary"]["ece"] += 1e-12  # any change is caught
    (tmp_path / "edited.json").write_text(json.dumps(stored))
    shutil.copy(samples, tmp_path / samples.name.replace("res", "edited"))
    assert main(["rescore", str(tmp_path / "edited.json")]) == 1
    capsys.readouterr()
    recs[0]["loglik"][0] += 1.0  # a tampered samples file is refused before anything is recomputed
    samples.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["rescore", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sha256" in err


LETTER_CASES = [
    ("arc_easy_letter", "arc_easy/test"),
    ("arc_challenge_letter", "arc_challenge/test"),
    ("openbookqa_letter", "openbookqa/test"),
]


def prepared_on_rows(name: str, rows: list[dict[str, Any]], tmp: Path) -> Any:
    """Task ``name`` built over a data dir holding exactly ``rows`` (for each of its data references)."""
    task = TaskRegistry([]).task(name)
    for ref in task.data:
        path = tmp / "data" / ref["dataset"] / f"{ref['split']}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return prepare(task, tmp / "data", None).resolved.task


@pytest.mark.parametrize("name,file", LETTER_CASES, ids=[c[0] for c in LETTER_CASES])
def test_letter_prompt_lists_the_choices_and_scores_the_letters(name: str, file: str, data_dir: Path, tmp_path: Path) -> None:
    row = json.loads((data_dir / f"{file}.jsonl").read_text().splitlines()[0])
    task = prepared_on_rows(name, [row], tmp_path)
    (doc,) = list(task.eval_docs)
    prompt = (
        f"Question: {row['question'].strip()}\n" + "".join(f"{l}. {c}\n" for l, c in zip(LETTERS, row["choices"])) + "Answer:"
    )
    assert requests(task, doc) == [(prompt, f" {l}") for l in LETTERS[: len(row["choices"])]]
    assert _gold(task, doc, task.doc_to_choice(doc)) == row["label"]
    cloze = prepared_on_rows(name.removesuffix("_letter"), [row], tmp_path / "cloze")  # same item, same gold
    (cdoc,) = list(cloze.eval_docs)
    assert _gold(cloze, cdoc, cloze.doc_to_choice(cdoc)) == row["label"]
    if name == "arc_easy_letter":  # the first mirror item, written out
        assert prompt == (
            "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\n"
            "A. Sunlight is the source of energy for nearly all ecosystems.\n"
            "B. Most ecosystems are found on land instead of in water.\n"
            "C. Carbon dioxide is more available than other gases.\n"
            "D. The producers in all ecosystems are plants.\n"
            "Answer:"
        )


def test_letter_layout_is_lm_eval_mmlu_layout_with_a_question_prefix(data_dir: Path, tmp_path: Path) -> None:
    """On MMLU rows the letter template renders lm-eval's own mmlu doc_to_text, prefixed with "Question: "."""
    rows = [json.loads(line) for line in (data_dir / "mmlu/test.jsonl").read_text().splitlines()[:3]]
    ours = prepared_on_rows(
        "arc_easy_letter", [{k: r[k] for k in ("id", "question", "choices", "label")} for r in rows], tmp_path
    )
    ref = build_builtin("mmlu/default", "mmlu_abstract_algebra", [to_hf("mmlu", r) for r in rows], tmp_path)
    for a, b in zip(ours.eval_docs, ref.eval_docs):
        assert ours.doc_to_text(a) == "Question: " + ref.doc_to_text(b)
        assert ours.doc_to_choice(a) == ref.doc_to_choice(b) == ["A", "B", "C", "D"]


def test_letter_and_cloze_variants_end_to_end(tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    """Real lm-eval runs (tiny model): the samples of a letter task score one-letter choices, and accuracy, ECE,
    SCE, AURC and E-AURC recomputed from them by the reference loops of test_calibration equal the result."""
    from scipy.special import log_softmax
    from test_calibration import naive_aurc, naive_ece_mass, naive_sce

    from collapse_bench.evaluate import EvaluateRequest, evaluate

    out = tmp_path / "res.json"
    names = ["arc_easy_letter", "mmlu_cloze"]
    req = EvaluateRequest(
        model=str(tiny_model_dir), tasks=names, data_dir=str(data_dir), limit=6, device="cpu", output=str(out), progress=False
    )
    _, res = evaluate(req)
    recs = read_samples(tmp_path / "res.samples.jsonl")
    for name in names:
        block, mine = res["tasks"][name], [r for r in recs if r["task"] == name]
        assert len(mine) == 6 and block["samples"]["records"] == 6
        if name == "arc_easy_letter":
            assert all(r["choice_chars"] == [1, 1, 1, 1] for r in mine)  # " A".." D": len(choice) = 1
        probs = [np.exp(log_softmax(np.array(r["loglik"]))) for r in mine]
        gold = [r["gold"] for r in mine]
        conf = np.array([p.max() for p in probs])
        correct = np.array([float(np.argmax(p) == g) for p, g in zip(probs, gold)])
        m = block["metrics"]
        assert np.mean([r["correct"] for r in mine]) == correct.mean()  # the records' argmax = the softmax's
        assert m["acc"] == pytest.approx(correct.mean(), abs=1e-12)  # lm-eval's acc
        assert m["ece"] == pytest.approx(naive_ece_mass(conf, correct), abs=1e-12)
        assert m["sce"] == pytest.approx(naive_sce(probs, gold), abs=1e-12)
        assert m["aurc"] == pytest.approx(naive_aurc(conf, correct), abs=1e-12)
        r = 1 - correct.mean()
        assert m["eaurc"] == pytest.approx(m["aurc"] - (r + (1 - r) * np.log(1 - r) if r < 1 else 1.0), abs=1e-12)
        assert set(block["calibration"]) == {"definition", "primary", "length_normalised"}
    assert main(["rescore", str(out)]) == 0
    assert "reproduced exactly" in capsys.readouterr().out


def test_user_lm_eval_yaml_gets_calibration(tiny_model_dir: Path, tmp_path: Path) -> None:
    from collapse_bench.evaluate import EvaluateRequest, evaluate

    lm_dir = tmp_path / "mytasks" / "lm_eval"
    (lm_dir / "data").mkdir(parents=True)
    rows = [{"q": f"What is {i} plus one?", "opts": [str(i + 1), str(i + 7), str(i + 3)], "gold": 0} for i in range(6)]
    (lm_dir / "data" / "my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (lm_dir / "my_mc.yaml").write_text(
        "task: my_mc\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: data/my.jsonl}\n"
        'output_type: multiple_choice\ntest_split: test\ndoc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: gold\n'
        "doc_to_choice: opts\nmetric_list:\n  - metric: acc\n"
    )
    _, res = evaluate(
        EvaluateRequest(
            model=str(tiny_model_dir),
            tasks=["my_mc"],
            tasks_dirs=[str(tmp_path / "mytasks")],
            limit=4,
            device="cpu",
            output=str(tmp_path / "r.json"),
            progress=False,
        )
    )
    block = res["tasks"]["my_mc"]
    assert block["kind"] == "lm_eval" and block["counts"]["docs"] == 4  # --limit passed to lm-eval
    assert set(block["data"]) == {"task:data/my.jsonl", "lm_eval:my_mc.yaml"}
    assert block["calibration"]["primary"]["n"] == 4 and "ece" in block["metrics"]


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("collapse-bench: error:") and "\n" not in err, err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "never.json"
    # missing data (no mirror in the data dir), before any model is loaded
    err = one_line_error(
        capsys, ["evaluate", "/no/such/model", "--tasks", "arc_easy", "--data-dir", str(tmp_path), "--output", str(out)]
    )
    assert "missing data file" in err
    err = one_line_error(capsys, ["evaluate", "--tasks", "no_such_task", "--output", str(out)])
    assert "unknown task 'no_such_task'" in err
    # a user lm-eval YAML that does not parse
    bad = tmp_path / "bad" / "lm_eval"
    bad.mkdir(parents=True)
    (bad / "broken.yaml").write_text("task: broken\ndoc_to_text: [unclosed\n")
    assert "invalid lm-eval YAML" in one_line_error(capsys, ["tasks", "list", "--tasks-dir", str(tmp_path / "bad")])
    # a user lm-eval YAML that parses but lm-eval cannot build (bad Jinja): before the (bogus) model loads
    (bad / "broken.yaml").write_text(
        "task: broken\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: d.jsonl}\n"
        'output_type: multiple_choice\ntest_split: test\ndoc_to_text: "{{ q "\n'
        "doc_to_target: 0\ndoc_to_choice: [a, b]\n"
    )
    (bad / "d.jsonl").write_text(json.dumps({"q": "x"}) + "\n")
    err = one_line_error(
        capsys, ["evaluate", "/no/such/model", "--tasks-dir", str(tmp_path / "bad"), "--tasks", "broken", "--output", str(out)]
    )
    assert "lm-eval cannot build task 'broken'" in err
    err = one_line_error(capsys, ["evaluate", "--backend", "vllm", "--output", str(out)])
    assert "--backend vllm needs a CUDA GPU" in err
    assert "--backend vllm needs a CUDA GPU" in one_line_error(capsys, ["parity", "--n", "4"])
    assert not out.exists() and not (tmp_path / "never.samples.jsonl").exists()


def test_user_task_missing_data_and_unknown_lm_eval_task_are_one_line_errors(tmp_path: Path, capsys) -> None:
    """Offline, before any model loads: a user lm-eval YAML whose local data file is missing, one whose data is a
    hub dataset (not cached, offline), and a wrapper naming an lm-eval task its include dir does not define."""
    out = tmp_path / "never.json"
    lm_dir = tmp_path / "user" / "lm_eval"
    lm_dir.mkdir(parents=True)
    body = "output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"
    (lm_dir / "local.yaml").write_text(
        "task: local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: gone.jsonl}\n" + body
    )
    (lm_dir / "hub.yaml").write_text("task: hub_mc\ndataset_path: no-such-org/no-such-dataset\n" + body)
    argv = ["evaluate", "/no/such/model", "--tasks-dir", str(tmp_path / "user"), "--output", str(out), "--tasks"]
    err = one_line_error(capsys, [*argv, "local_mc"])
    assert "local.yaml: data file" in err and "gone.jsonl not found" in err
    err = one_line_error(capsys, [*argv, "hub_mc"])
    assert "lm-eval cannot build task 'hub_mc'" in err and "hub.yaml" in err
    (tmp_path / "user" / "wrap.yaml").write_text(
        "name: wrap\nversion: 1\nkind: lm_eval\nparams: {lm_eval_task: nope, include: lm_eval}\n"
    )
    err = one_line_error(capsys, [*argv, "wrap"])
    assert "no lm-eval task 'nope'" in err and "known: hub_mc, local_mc" in err
    assert not out.exists()


@pytest.mark.parametrize("flag", [True, False])
def test_no_progress_silences_lm_eval_bars(flag: bool, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["evaluate", str(tiny_model_dir), "--tasks", "world_mc", "--limit", "4", "--output", str(tmp_path / "r.json")]
    assert main(args + ["--no-progress"] * flag) == 0
    err = capsys.readouterr().err
    assert ("Running loglikelihood requests" in err) == (not flag)
