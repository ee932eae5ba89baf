"""The validator and the bad-submission catalogue: each fixture is rejected with its message through the
CLI (one line naming file and field, exit 1) and `submit` writes nothing for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from leaderboard_helpers import BAD, GOOD, good_doc, snapshot, write_submission

from collapse_bench.cli import main
from collapse_bench.io import sha256_json
from collapse_bench.leaderboard import validate as V
from collapse_bench.leaderboard.submission import MAX_RESULT_BYTES, name_problem
from collapse_bench.tasks import TaskRegistry

EXPECTED = {
    "malformed_json.json": "(file): malformed JSON at line 61 column 23",
    "truncated.json": "(file): truncated JSON: the document ends",
    "wrong_types.json": "tasks/probe_quick/metrics/effective_rank: 'high' is not of type 'number', 'null'",
    "nan.json": "tasks/probe_quick/metrics/anisotropy: non-finite number nan",
    "tampered_hash.json": "tasks/probe_quick/hash: does not match task 'probe_quick' v1 recomputed from the recorded data hashes",
    "duplicate.json": "model/sha256: duplicate of",
    "path_traversal.json": "model/name: path traversal ('..' component) is not allowed in names",
    "html_name.json": "model/name: '<' and '>' are not allowed in names (HTML/script)",
    "control_chars.json": "model/stage: control character U+001B is not allowed in names",
    "absurd_ece.json": "tasks/probe_quick/metrics/ece: 3.7 is outside the documented range [0, 1]",
    "absurd_effective_rank.json": "tasks/probe_quick/metrics/effective_rank: -2 is outside the "
    "documented range [1, hidden_size=64]",
    "unknown_task.json": "tasks/probe_imaginary: unknown task 'probe_imaginary'",
    "null_model_hash.json": "model/sha256: a submission needs the weights' content hash",
    "samples_hash.json": "tasks/probe_quick/samples/sha256: samples file samples_hash.samples.jsonl does "
    "not have the sha256 the result records",
    "samples_traversal.json": "tasks/probe_quick/samples/path: must be a plain file name next to the result",
}


def test_catalogue_is_complete() -> None:
    assert sorted(p.name for p in BAD.glob("*.json")) == sorted(EXPECTED)


def test_good_submission_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GOOD)]) == 0
    out = capsys.readouterr().out
    assert "OK " in out and "probe_quick: current v1" in out and "suite quick: current v1" in out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_submission_rejected(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = BAD / name
    paths = [str(GOOD), str(bad)] if name == "duplicate.json" else [str(bad)]
    before = snapshot(BAD)
    assert main(["validate", *paths]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line per failing file
    assert err[0].startswith(f"collapse-bench: error: {bad}: ") and EXPECTED[name] in err[0], err[0]
    assert snapshot(BAD) == before

    # submit: same refusal (one line, exit 1) and nothing written into the submissions dir
    subs = tmp_path / "submissions"
    if name == "duplicate.json":
        assert main(["submit", str(GOOD), "--submissions-dir", str(subs)]) == 0
        capsys.readouterr()
    before = snapshot(subs)
    assert main(["submit", str(bad), "--submissions-dir", str(subs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and EXPECTED[name] in err[0], err
    assert snapshot(subs) == before


def test_size_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.json"
    text = GOOD.read_text()
    big.write_text(text[:-2] + " " * (MAX_RESULT_BYTES + 1 - len(text)) + "}\n")
    assert main(["validate", str(big)]) == 1
    assert "(file): 10.0 MB exceeds the 10 MB cap" in capsys.readouterr().err


def test_directory_and_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_submission(tmp_path / "subs", good_doc(), "a/b/quick-1.json")
    assert main(["validate", str(tmp_path / "subs")]) == 0
    assert "1 valid, 0 rejected" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "nope")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_released_version_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose YAML moved on (v2 here) still validates against its released v1 config, and says so."""
    reg = TaskRegistry()
    current = reg.tasks["probe_quick"]
    bumped = type(current)(
        current.name,
        2,
        current.kind,
        current.description,
        current.data,
        {**current.params, "max_tokens": 99},
        current.path,
        {**current.config, "version": 2},
    )
    monkeypatch.setitem(reg.tasks, "probe_quick", bumped)
    monkeypatch.setattr(V, "_registry", lambda: reg)
    sub = V.validate_file(GOOD)
    assert "probe_quick: released v1 (0.1.0)" in sub.notes


def test_released_json_matches_current_yaml() -> None:
    """A released (name, version) must never change config: bump the version instead."""
    rel, reg = V.released(), TaskRegistry()
    for name, entries in rel["tasks"].items():
        for e in entries:
            assert e["config_sha256"] == sha256_json({**e["config"], "params": e["params"]})
            task = reg.tasks.get(name)
            if task is not None and task.version == e["version"]:
                assert V.task_config(task)["config_sha256"] == e["config_sha256"], (
                    f"{name} v{e['version']} changed without a version bump"
                )


@pytest.mark.parametrize(
    "value,problem",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", None),
        ("./checkpoints/stage2", None),
        ("/abs/path/model", None),
        ("a/../b", "path traversal"),
        ("..", "path traversal"),
        ("a\\b", "backslash"),
        ("x\x00y", "U+0000"),
        ("x\u202ey", "U+202E"),
        ("<b>", "'<' and '>'"),
        ("na\u00efve \u6a21\u578b", None),
    ],
)
def test_name_rules(value: str, problem: str | None) -> None:
    got = name_problem(value)
    assert (got is None) if problem is None else (problem in got)


def test_range_bounds_from_model_fields() -> None:
    model = {"hidden_size": 576, "vocab_size": 49152}
    assert V.range_problem("effective_rank", 576.0, model) is None
    assert "hidden_size=576" in V.range_problem("effective_rank", 577.0, model)
    assert V.range_problem("logit_entropy", 10.8, model) is None  # ln 49152 = 10.80
    assert V.range_problem("logit_entropy", 10.81, model) is not None
    assert "(0, 20]" in V.range_problem("bits_per_byte", 0.0, model)
    assert V.range_problem("some_new_metric", -1e9, model) is None  # unknown ids: finite only
    assert V.range_problem("gain_std", -0.1, model) is not None


def test_validate_leaves_samples_alone(tmp_path: Path) -> None:
    """A valid samples reference passes, and its file is matched by sha256 (a real lm-eval result's samples)."""
    src = sorted((Path(__file__).resolve().parents[1] / "submissions" / "huggingfacetb").rglob("quick-*.json"))[0]
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(src.with_name(src.stem + ".samples.jsonl"), tmp_path / (src.stem + ".samples.jsonl"))
    before = snapshot(tmp_path)
    report = V.validate_paths([tmp_path])
    assert report.failures == [] and len(report.ok) == 1
    assert snapshot(tmp_path) == before


def test_hostile_json_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "deep.json": ("[" * 100000 + "]" * 100000, "(file): JSON nested too deeply"),
        "dupkey.json": ('{"schema_version": 1, "schema_version": 1}', "(file): malformed JSON: duplicate key 'schema_version'"),
        "latin1.json": (None, "(file): not UTF-8 text"),
        "list.json": ("[1, 2]", "(top level): [1, 2] is not of type 'object'"),
        "inf.json": ('{"x": -Infinity}', "x: non-finite number -inf"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b'{"name": "caf\xe9"}')
        else:
            path.write_text(text)
        assert main(["validate", str(path)]) == 1
        assert f"{path}: {expected}" in capsys.readouterr().err, name


def test_guarantees_listed_once_in_both_readmes() -> None:
    """README.md and submissions/README.md state the same list of what `validate` guarantees."""
    root = Path(__file__).resolve().parents[1]

    def section(text: str) -> str:
        start = text.index("What `validate` guarantees")
        body = text[start:].split("\n", 1)[1]
        end = body.find("\n#")
        end = body.find("At a release, a maintainer") if "At a release, a maintainer" in body else end
        return body[: end if end >= 0 else len(body)].strip()

    main_list = section((root / "README.md").read_text(encoding="utf-8"))
    assert "11. **One row per (model sha256, suite, suite version)**" in main_list
    assert section((root / "submissions" / "README.md").read_text(encoding="utf-8")) == main_list


def test_many_files_are_checked_in_worker_processes_with_the_sequential_verdicts() -> None:
    """Six or more files go to forked workers (one per core); each verdict — the submission or its one-line error —
    equals checking that file alone, in the given order (the bad fixtures and the good one, interleaved)."""
    files = [GOOD, *sorted(p for p in BAD.glob("*.json") if p.name != "duplicate.json"), GOOD]
    assert len(files) >= 6
    parallel = V._checked(files)
    alone = [V._check_one(f) for f in files]
    assert (
        [isinstance(x, str) for x in parallel]
        == [isinstance(x, str) for x in alone]
        == [False, *[True] * (len(files) - 2), False]
    )
    assert [x if isinstance(x, str) else (x.path, x.doc, x.notes, x.complete) for x in parallel] == [
        x if isinstance(x, str) else (x.path, x.doc, x.notes, x.complete) for x in alone
    ]
    report = V.validate_paths(files)  # the same file given twice is checked once
    assert len(report.ok) == 1 and report.failures == [x for x in alone[1:-1] if isinstance(x, str)]
