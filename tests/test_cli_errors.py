"""Bad input: one clear line on stderr, exit code != 0, and no result file written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from collapse_bench.cli import build_parser, main


def test_every_command_has_help() -> None:
    parser = build_parser()
    commands = [["evaluate"], ["tasks"], ["tasks", "list"], ["data"], ["data", "pull"]]
    for cmd in commands:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*cmd, "--help"])
        assert exc.value.code == 0


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", "no-such-model", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "unknown model 'no-such-model'", "smollm2-135m-instruct")
    assert not out.exists()


def test_hub_id_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from collapse_bench import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", "some-org/not-cached-model@main", "--output", str(out)], capsys)
    hub.hub_reachable.cache_clear()
    assert_one_line_error(code, err, "some-org/not-cached-model@main", "offline")
    assert not out.exists()


def test_corrupt_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAPSE_BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(bad), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "cannot read GGUF file", "broken.gguf")
    assert not out.exists()
    assert not any((tmp_path / "cache").rglob("*.safetensors"))


def test_missing_data_file(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-data"
    empty.mkdir()
    out = tmp_path / "r.json"
    code, _, err = run_cli(
        ["evaluate", str(tiny_model_dir), "--suite", "standard", "--data-dir", str(empty), "--output", str(out)], capsys
    )
    assert_one_line_error(code, err, "missing data file", "--data-dir")
    assert not out.exists()


def test_malformed_task_yaml(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "bad.yaml").write_text("name: bad_task\nversion: 1\nkind: probe\ndata: [ {builtin: python_docs\n")
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks-dir", str(tasks), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "bad.yaml", "invalid YAML")
    assert not out.exists()


def test_schema_violation_names_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("name: t1\nversion: 1\nkind: probe\nparams: {max_tokens: many}\n")
    code, _, err = run_cli(["tasks", "list", "--tasks-dir", str(tasks)], capsys)
    assert_one_line_error(code, err, "t.yaml", "max_tokens", "'many' is not of type 'integer'")


def test_yaml_python_tag_is_refused_not_executed(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "evil.yaml").write_text(
        f"name: evil\nversion: 1\nkind: probe\nparams: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks-dir", str(tasks), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "evil.yaml")
    assert not marker.exists()
    assert not out.exists()


def test_hostile_template_field_refused(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "texts.jsonl").write_text('{"id": "a", "text": "hello there"}\n')
    (tasks / "t.yaml").write_text(
        "name: hostile\nversion: 1\nkind: probe\ndata: [{path: texts.jsonl, template: '{text.__class__}'}]\n"
    )
    code, _, err = run_cli(
        ["evaluate", str(tiny_model_dir), "--tasks-dir", str(tasks), "--tasks", "hostile", "--output", str(tmp_path / "r.json")],
        capsys,
    )
    assert_one_line_error(code, err, "not allowed")


def test_unknown_task_and_suite(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks", "nope", "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "unknown task 'nope'")
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--suite", "huge", "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "unknown suite 'huge'", "quick")


def test_console_script_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "collapse_bench", "evaluate", "definitely/not@here", "--output", str(out)],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("collapse-bench: error:")
    assert not out.exists()


def strings(obj: object) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [str(k), *strings(v)]]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_result_records_no_path_of_the_users_disk(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Model, parent, reference, lineage and --tasks-dir given as absolute paths: none of them is in the result."""
    import json

    from conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "ckpt" / "my-model")
    parent = build_tiny_model(tmp_path / "ckpt" / "my-parent", seed=1)
    tasks = tmp_path / "usertasks"
    (tasks / "probe").mkdir(parents=True)
    (tasks / "probe" / "texts.jsonl").write_text('{"id": "a", "text": "hello there general"}\n{"id": "b", "text": "x y"}\n')
    (tasks / "probe" / "t.yaml").write_text(
        "name: probe_user\nversion: 1\nkind: probe\ndata: [{path: texts.jsonl}]\n"
        "params: {max_tokens: 48, tokens_per_sequence: 8, reservoir_size: 64}\n"
    )
    out = tmp_path / "out" / "r.json"
    code = main(
        [
            "evaluate",
            str(model.resolve()),
            "--tasks",
            "probe_quick,probe_user",
            "--limit",
            "2",
            "--device",
            "cpu",
            "--parent",
            str(parent.resolve()),
            "--reference",
            str(parent.resolve()),
            "--tasks-dir",
            str(tasks.resolve()),
            "--no-progress",
            "--output",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    needles = {str(tmp_path_factory.getbasetemp().resolve()), str(Path.home()), str(tmp_path.resolve())}
    leaks = [s for s in strings(doc) for n in needles if n in s]
    assert not leaks, leaks
    assert not [s for s in strings(doc) if s.startswith(("/", "~"))]
    m = doc["model"]
    assert (m["name"], m["parent"], doc["config"]["reference"]["name"]) == ("my-model", "my-parent", "my-parent")
    assert [e["name"] for e in m["lineage"]] == ["my-parent", "my-model"] and doc["config"]["tasks_dirs"] == ["usertasks"]
    assert m["sha256_scheme"] == "files-v2"


def test_commit_files_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples file is renamed first, the result last; when the result cannot be written or put in place the
    earlier pair is left or restored, and no temp file or new directory remains."""
    import os

    from collapse_bench.errors import CollapseBenchError
    from collapse_bench.io import commit_files

    samples, result = tmp_path / "r.samples.jsonl", tmp_path / "r.json"
    samples.write_text("old samples\n")
    result.write_text("old result\n")
    (tmp_path / "blocker").write_text("a file\n")
    with pytest.raises(CollapseBenchError, match=r"cannot create directory .*blocker/sub: Not a directory"):
        commit_files(
            [(samples, b"new samples\n"), (tmp_path / "new" / "x.json", b"x"), (tmp_path / "blocker" / "sub" / "r.json", b"{}")]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "r.json", "r.samples.jsonl"]
    assert samples.read_text() == "old samples\n"
    real_replace = os.replace

    def full_disk_on_result(src, dst):  # fault injection: putting the new result in place fails
        if Path(dst) == result and str(src).endswith(".tmp"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr("collapse_bench.io.os.replace", full_disk_on_result)
    with pytest.raises(CollapseBenchError, match=r"cannot write .*r\.json: No space left on device"):
        commit_files([(samples, b"new samples\n"), (result, b"{}\n")])
    monkeypatch.undo()
    assert (samples.read_text(), result.read_text()) == ("old samples\n", "old result\n")  # the earlier pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "r.json", "r.samples.jsonl"]
    commit_files([(samples, None), (result, b"{}\n")])  # data None: the stale samples file goes with the old result
    assert not samples.exists() and result.read_text() == "{}\n"
    with pytest.raises(CollapseBenchError, match="it is a directory"):
        commit_files([(tmp_path, b"x")])


@pytest.mark.parametrize(
    "body, needle",
    [
        ("a: &a [x, x]\nb: [*a, *a]\nname: t\nversion: 1\nkind: probe\n", "anchors and aliases"),
        ("base: &b {kind: probe}\n<<: *b\nname: t\nversion: 1\n", "anchors and aliases"),
        ("name: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML"),
    ],
)
def test_yaml_aliases_and_deep_nesting_refused(
    body: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text(body)
    code, _, err = run_cli(["tasks", "list", "--tasks-dir", str(tmp_path / "tasks")], capsys)
    assert_one_line_error(code, err, "t.yaml", needle)
    assert len(err) < 600


def test_non_utf8_yaml_and_long_quoted_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_bytes(b"name: caf\xe9\nversion: 1\nkind: probe\n")
    code, _, err = run_cli(["tasks", "list", "--tasks-dir", str(tmp_path / "tasks")], capsys)
    assert_one_line_error(code, err, "t.yaml", "not UTF-8 text (byte 0xe9 at offset 9)")
    (tmp_path / "tasks" / "t.yaml").write_text(f"name: t1\nversion: 1\nkind: probe\nparams: {{max_tokens: {'m' * 100000}}}\n")
    code, _, err = run_cli(["tasks", "list", "--tasks-dir", str(tmp_path / "tasks")], capsys)
    assert_one_line_error(code, err, "max_tokens", "is not of type 'integer'", "m" * 200 + "…")
    assert len(err) < 1000


def test_os_error_anywhere_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's safety net: an OSError no command turned into a CollapseBenchError still prints one line."""
    from collapse_bench.cli import os_error_message

    exc = OSError(27, "File too large", str(tmp_path / "r.json"))
    assert os_error_message(exc) == f"{tmp_path / 'r.json'}: File too large (OSError)"
    (tmp_path / "blocker").write_text("x")
    code, _, err = run_cli(["data", "pull", "--data-dir", str(tmp_path / "blocker" / "d"), "--datasets", "nope"], capsys)
    assert code != 0 and "Traceback" not in err
