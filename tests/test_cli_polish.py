"""CLI polish (issue 17): ``--version``; "did you mean" for commands, tasks, suites and models; lm-eval's option
spellings; ``--batch-size auto``; ``--device``/``--dtype``/``--output`` refused before any model work; no stray
``fatal: not a git repository`` on stderr; ``evaluate`` ends with the next command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from collapse_bench.cli import build_parser, next_step

REPO = Path(__file__).resolve().parents[1]
LM_YAML = (
    "task: my_mc\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: data/my.jsonl}\n"
    'output_type: multiple_choice\ntest_split: test\ndoc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: gold\n'
    "doc_to_choice: opts\nmetric_list:\n  - metric: acc\n"
)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def outside_git_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user whose cwd is no git repository and whose package is outside git (GIT_DIR points
    nowhere, so every git command fails with ``fatal: not a git repository``)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GIT_DIR": str(tmp_path / "no-such-git-dir"),
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
    }


# --- 1. --version -----------------------------------------------------------------------------------------------


def test_version_prints_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--version"], capsys)
    assert (code, out, err) == (0, f"collapse-bench {metadata.version('collapse-bench')}\n", "")


# --- 2. did you mean ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["evalute"],
            "collapse-bench: error: unknown command 'evalute'; did you mean 'evaluate'? "
            "(run `collapse-bench --help` for the list)",
        ),
        (
            ["tasks", "lst"],
            "collapse-bench: error: unknown command 'tasks lst'; did you mean 'tasks list'? "
            "(run `collapse-bench tasks --help` for the list)",
        ),
        (
            ["leaderboard", "buidl"],
            "collapse-bench: error: unknown command 'leaderboard buidl'; did you mean 'leaderboard build'? "
            "(run `collapse-bench leaderboard --help` for the list)",
        ),
        (["xyzzy"], "collapse-bench: error: unknown command 'xyzzy' (run `collapse-bench --help` for the list)"),
    ],
)
def test_unknown_command_is_one_line_with_the_closest(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, capsys)
    assert (code, out, err) == (2, "", line + "\n")


@pytest.mark.parametrize(
    "flags, line",
    [
        (
            ["--tasks", "probe_quik"],
            "unknown task 'probe_quik'; did you mean 'probe_quick'? (run `collapse-bench tasks list`)",
        ),
        (
            ["--tasks", "probe_quick,arc_esay"],
            "unknown task 'arc_esay'; did you mean 'arc_easy'? (run `collapse-bench tasks list`)",
        ),
        (
            ["--tasks", "probe"],
            "unknown task 'probe'; did you mean 'probe_full' or 'probe_quick'? (run `collapse-bench tasks list`)",
        ),
        (["--tasks", "zzz"], "unknown task 'zzz' (run `collapse-bench tasks list`)"),
        (["--suite", "standrd"], "unknown suite 'standrd'; did you mean 'standard'? (known: full, quick, standard)"),
    ],
)
def test_unknown_task_or_suite_names_the_closest(
    flags: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(["evaluate", "tiny-random-llama", *flags, "--output", str(out)], capsys)
    assert (code, stdout, err) == (1, "", f"collapse-bench: error: {line}\n")
    assert files_under(tmp_path) == []


def test_unknown_model_alias_names_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collapse_bench.models import ALIASES

    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", "smollm2-135m-instrct", "--tasks", "probe_quick", "--output", str(out)], capsys)
    known = ", ".join(sorted(ALIASES))
    assert err == (
        "collapse-bench: error: unknown model 'smollm2-135m-instrct': "
        f"not a registry alias ({known}), a local path, a .gguf file or an org/model hub id; "
        "did you mean 'smollm2-135m-instruct'?\n"
    )
    assert code == 1 and files_under(tmp_path) == []


def test_did_you_mean_helper() -> None:
    from collapse_bench.errors import close_matches, did_you_mean

    assert did_you_mean("quik", ["quick", "standard", "full"]) == "; did you mean 'quick'?"
    assert did_you_mean("arc", ["arc_easy", "arc_challenge", "mmlu"]) == "; did you mean 'arc_challenge' or 'arc_easy'?"
    assert did_you_mean("nothing-like-it", ["quick", "standard"]) == ""
    assert did_you_mean("lst", ["list"], prefix="tasks ") == "; did you mean 'tasks list'?"
    assert close_matches("smollm2", ["smollm2-135m-instruct", "gemma3-270m"]) == ["smollm2-135m-instruct"]  # a prefix


# --- 3. lm-eval's spellings, --batch-size auto ---------------------------------------------------------------------


def test_lm_eval_spellings_parse_as_the_canonical_options() -> None:
    parser = build_parser()
    ours = parser.parse_args(["evaluate", "m", "--output", "r.json", "--batch-size", "4", "--tasks-dir", "t"])
    theirs = parser.parse_args(["evaluate", "m", "--output_path", "r.json", "--batch_size", "4", "--tasks-dir", "t"])
    assert vars(ours) == vars(theirs)
    assert (ours.output, ours.batch_size, ours.include_path) == ("r.json", 4, None)
    assert parser.parse_args(["evaluate", "m", "--include_path", "a", "--include-path", "b"]).include_path == ["a", "b"]
    for spelling in (["--batch-size", "auto"], ["--batch_size", "AUTO"]):
        assert parser.parse_args(["evaluate", "m", *spelling]).batch_size == "auto"


@pytest.mark.parametrize("value", ["0", "-1", "big", "2.5"])
def test_batch_size_must_be_positive_or_auto(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["evaluate", "m", "--batch-size", value], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last == (
        "collapse-bench evaluate: error: argument --batch-size/--batch_size: "
        f"expected a positive integer or 'auto', got {value!r}"
    )


def test_batch_size_auto_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "--batch-size N|auto, --batch_size N|auto" in text and "--output PATH, --output_path PATH" in text
    assert "auto: lm-eval finds the largest batch that fits for lm_eval/diversity tasks" in text
    assert "the other tasks keep their own" in text


def test_include_path_is_an_lm_eval_include_dir(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--include_path DIR`` reads DIR as lm-eval does: its tasks are the ones ``<tasks-dir>/lm_eval/`` would give
    (same config, same task hash), listed by ``tasks list``, evaluated by name, and unknown without the flag."""
    from collapse_bench.tasks import TaskRegistry

    lm_dir = tmp_path / "mytasks" / "lm_eval"
    (lm_dir / "data").mkdir(parents=True)
    (lm_dir / "data" / "my.jsonl").write_text('{"q": "1 plus 1?", "opts": ["2", "3"], "gold": 0}\n')
    (lm_dir / "my_mc.yaml").write_text(LM_YAML)
    via_include = TaskRegistry([], [lm_dir]).task("my_mc")
    via_tasks_dir = TaskRegistry([tmp_path / "mytasks"]).task("my_mc")
    assert via_include.kind == "lm_eval" and via_include.config == via_tasks_dir.config
    assert via_include.task_hash({}) == via_tasks_dir.task_hash({})
    code, out, _ = run_cli(["tasks", "list", "--include_path", str(lm_dir)], capsys)
    assert code == 0 and any(line.split()[:2] == ["my_mc", "lm_eval"] for line in out.splitlines())
    code, _, err = run_cli(["tasks", "list", "--include_path", str(tmp_path / "nope")], capsys)
    assert_one_line_error(code, err, f"--include-path {tmp_path / 'nope'} is not a directory")
    code, _, err = run_cli(["evaluate", "m", "--tasks", "my_mc", "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "unknown task 'my_mc'")
    out = tmp_path / "r.json"
    argv = ["evaluate", str(tiny_model_dir), "--include_path", str(lm_dir), "--tasks", "my_mc", "--device", "cpu"]
    code, _, err = run_cli([*argv, "--no-progress", "--output", str(out)], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    block = doc["tasks"]["my_mc"]
    assert block["kind"] == "lm_eval" and block["hash"] == via_tasks_dir.task_hash(block_hashes(block))
    assert doc["config"]["tasks_dirs"] == ["lm_eval"] and set(block["data"]) == {"task:data/my.jsonl", "lm_eval:my_mc.yaml"}


def block_hashes(block: dict[str, object]) -> dict[str, str]:
    data = block["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def test_auto_batch_size_reaches_lm_eval_only() -> None:
    from collapse_bench.context import RunContext
    from collapse_bench.ood.backends import lm_batch_size

    assert lm_batch_size(RunContext(None, auto_batch_size=True), 8) == "auto"  # type: ignore[arg-type]
    assert lm_batch_size(RunContext(None, batch_size=4), 8) == 4  # type: ignore[arg-type]
    assert lm_batch_size(RunContext(None), 8) == 8  # type: ignore[arg-type]


# --- 4. --device, --dtype, --output before any model work -----------------------------------------------------------


@pytest.fixture
def no_model_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving (hashing, converting) or loading a checkpoint fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("model work started before the flags were checked")

    monkeypatch.setattr("collapse_bench.evaluate.resolve_lineage", forbidden)
    monkeypatch.setattr("collapse_bench.evaluate.load_model", forbidden)
    monkeypatch.setattr("collapse_bench.models.resolve.find_source", forbidden)


@pytest.mark.parametrize(
    "flags, cuda, line",
    [
        (["--device", "tpu"], None, "unknown device 'tpu' (use auto, cpu, cuda or cuda:N)"),
        (["--device", "cuda:x"], None, "unknown device 'cuda:x' (use auto, cpu, cuda or cuda:N)"),
        (["--device", "cuda"], 0, "--device cuda requested but no CUDA device is available (use --device cpu or auto)"),
        (["--device", "cuda:1"], 0, "--device cuda:1 requested but no CUDA device is available (use --device cpu or auto)"),
        (["--device", "cuda:3"], 1, "--device cuda:3 requested but only 1 CUDA device is visible (cuda:0)"),
        (["--device", "cuda:2"], 2, "--device cuda:2 requested but only 2 CUDA devices are visible (cuda:0 to cuda:1)"),
        (["--dtype", "float8"], None, "unknown dtype 'float8' (use auto, float32, bfloat16 or float16)"),
        (["--device", "cpu", "--dtype", "int4"], None, "unknown dtype 'int4' (use auto, float32, bfloat16 or float16)"),
    ],
)
def test_device_and_dtype_refused_before_the_model(
    flags: list[str],
    cuda: int | None,
    line: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    no_model_work: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    if cuda is not None:  # what this machine has does not matter
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    out = tmp_path / "out" / "r.json"
    code, stdout, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks", "probe_quick", *flags, "--output", str(out)], capsys)
    assert (code, stdout, err) == (1, "", f"collapse-bench: error: {line}\n")
    assert files_under(tmp_path) == []


def test_output_refused_before_the_model(
    tmp_path: Path, tiny_model_dir: Path, no_model_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    (ws / "adir").mkdir(parents=True)
    (ws / "afile").write_text("x")
    before = files_under(ws)
    cases = [
        (ws / "adir", f"--output {ws / 'adir'} is a directory; give a file path"),
        (ws / "afile" / "r.json", f"cannot write {ws / 'afile' / 'r.json'}: {ws / 'afile'} is a file where a directory"),
        (ws / "afile" / "new" / "r.json", f"{ws / 'afile'} is a file where a directory should be"),
    ]
    for output, needle in cases:
        for flag in ("--output", "--output_path"):
            code, stdout, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks", "probe_quick", flag, str(output)], capsys)
            assert_one_line_error(code, err, needle)
            assert stdout == ""
    assert files_under(ws) == before


def test_output_in_an_unwritable_directory_refused(
    tmp_path: Path,
    tiny_model_dir: Path,
    no_model_work: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anywhere: the OS's answer for anyone else
        real = tempfile.mkstemp

        def denied(*args: object, dir: str | Path | None = None, **kwargs: object) -> tuple[int, str]:
            if dir is not None and Path(dir) == locked:
                raise PermissionError(13, "Permission denied", str(locked))
            return real(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr("collapse_bench.io.tempfile.mkstemp", denied)
    try:
        code, stdout, err = run_cli(
            ["evaluate", str(tiny_model_dir), "--tasks", "probe_quick", "--output", str(locked / "sub" / "r.json")], capsys
        )
    finally:
        locked.chmod(0o700)
    assert (code, stdout, err) == (1, "", f"collapse-bench: error: cannot write in {locked}: Permission denied\n")
    assert files_under(tmp_path) == ["locked"]


# --- 5. no stray git output; 6. the next command ---------------------------------------------------------------------


def test_no_git_fatal_outside_a_repository(tmp_path: Path) -> None:
    """``--version`` and ``tasks list`` from a directory that is no git repository, with the package outside git:
    nothing on stderr (and git itself does fail there, so the check means something)."""
    env, cwd = outside_git_env(tmp_path), tmp_path / "work"
    cwd.mkdir()
    if shutil.which("git"):
        probe = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], cwd=cwd, env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "fatal" in probe.stderr
    for argv in (["--version"], ["tasks", "list"]):
        proc = subprocess.run(
            [sys.executable, "-m", "collapse_bench", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr
    assert files_under(cwd) == []


def test_lm_eval_git_describe_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """lm-eval's ``get_git_commit_hash`` runs ``git describe`` in the cwd with stderr uncaptured; during a run it is
    replaced (and restored afterwards)."""
    import lm_eval.evaluator as evaluator

    from collapse_bench.ood.lmeval import env_info_once, no_git_hash

    monkeypatch.chdir(tmp_path)
    for key, value in outside_git_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    original = evaluator.get_git_commit_hash
    with env_info_once():
        assert evaluator.get_git_commit_hash is no_git_hash
        assert evaluator.get_git_commit_hash() is None
    assert evaluator.get_git_commit_hash is original
    assert "fatal" not in capfd.readouterr().err
    if shutil.which("git"):  # what the replaced function would have printed here
        original()
        assert "fatal: not a git repository" in capfd.readouterr().err


def test_evaluate_outside_git_auto_batch_and_next_command(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real run (tiny model, one lm-eval task) from a non-git directory: no "fatal" on stderr, ``--batch-size auto``
    reaches lm-eval and is recorded, lm-eval's spellings work, and the last line says what to run next."""
    env, cwd = outside_git_env(tmp_path), tmp_path / "work"
    cwd.mkdir()
    argv = ["evaluate", str(tiny_model_dir), "--tasks", "world_mc", "--limit", "4", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-m", "collapse_bench", *argv, "--batch_size", "auto", "--output_path", "r.json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fatal" not in proc.stderr and "not a git repository" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-3] == "result written to r.json" and lines[-2].startswith("score ")  # the score card
    assert lines[-1] == (
        "next: collapse-bench submit r.json  (not the whole suite: it is listed on the leaderboard but not ranked)"
    )
    doc = json.loads((cwd / "r.json").read_text())
    assert doc["config"]["batch_size"] == "auto"


def test_next_step_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def result(complete: bool, parent: str | None = None) -> dict[str, object]:
        return {"model": {"name": "m", "parent": parent}, "suite": {"name": "standard", "complete": complete}}

    out = Path("results/m/standard-1.json")
    assert next_step(out, result(True)) == (
        "next: collapse-bench submit results/m/standard-1.json  "
        "(validates it and files it under submissions/ for the leaderboard)"
    )
    assert next_step(Path("my run.json"), result(False)) == (
        "next: collapse-bench submit 'my run.json'  (not the whole suite: it is listed on the leaderboard but not ranked)"
    )
    assert next_step(out, result(True, "base-model")) == (
        "next: collapse-bench compare <result of base-model> results/m/standard-1.json  (this checkpoint vs. its parent); "
        "then collapse-bench submit results/m/standard-1.json"
    )
    for stamp in ("20250101-000000", "20250102-000000"):
        (tmp_path / "results" / "base-model").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "base-model" / f"standard-{stamp}.json").write_text("{}")
    assert next_step(out, result(True, "base-model")).startswith(
        "next: collapse-bench compare results/base-model/standard-20250102-000000.json results/m/standard-1.json "
    )
