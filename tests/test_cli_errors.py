"""Bad input: one clear line on stderr, exit code != 0, and no result file written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error

from collapse_bench.cli import build_parser, main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--suite", "standard", "--data-dir", str(empty),
                            "--output", str(out)], capsys)
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


def test_yaml_python_tag_is_refused_not_executed(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "evil.yaml").write_text(
        f"name: evil\nversion: 1\nkind: probe\nparams: !!python/object/apply:os.system ['touch {marker}']\n")
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks-dir", str(tasks), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "evil.yaml")
    assert not marker.exists()
    assert not out.exists()


def test_hostile_template_field_refused(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "texts.jsonl").write_text('{"id": "a", "text": "hello there"}\n')
    (tasks / "t.yaml").write_text("name: hostile\nversion: 1\nkind: probe\n"
                                  "data: [{path: texts.jsonl, template: '{text.__class__}'}]\n")
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks-dir", str(tasks), "--tasks", "hostile",
                            "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "not allowed")


def test_unknown_task_and_suite(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--tasks", "nope", "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "unknown task 'nope'")
    code, _, err = run_cli(["evaluate", str(tiny_model_dir), "--suite", "huge", "--output", str(tmp_path / "r.json")], capsys)
    assert_one_line_error(code, err, "unknown suite 'huge'", "quick")


def test_console_script_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "collapse_bench", "evaluate", "definitely/not@here", "--output", str(out)],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("collapse-bench: error:")
    assert not out.exists()
