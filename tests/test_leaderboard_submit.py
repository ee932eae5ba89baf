"""`collapse-bench submit`: canonical path, slugging, traversal attempts, samples copy, PR instructions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from leaderboard_helpers import GOOD, good_doc, snapshot

from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.evaluate import slug
from collapse_bench.io import sha256_file, sha256_json
from collapse_bench.leaderboard.submission import identity
from collapse_bench.leaderboard.submit import canonical_path, org_and_model, submit
from collapse_bench.results.model import ModelInfo


def test_canonical_path_and_pr_instructions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["submit", str(GOOD)]) == 0
    doc = good_doc()
    expected_hash = sha256_json(
        {"model": doc["model"]["sha256"], "suite": ["quick", 1], "tasks": {"probe_quick": doc["tasks"]["probe_quick"]["hash"]}}
    )[:12]
    rel = f"submissions/local/tiny-random-llama/quick-{expected_hash}.json"
    assert (tmp_path / rel).is_file()
    written = json.loads((tmp_path / rel).read_text())
    assert written == doc  # content unchanged (no samples to rewrite)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"wrote {rel}" in out and "  git add submissions/local/tiny-random-llama" in lines  # the row's folder only
    assert not any(line.strip().startswith("git add") and "leaderboard" in line for line in lines)
    assert f"collapse-bench reproduce {rel}" in out and "changes only files under submissions/" in out
    # the same row again: refused, nothing new
    before = snapshot(tmp_path / "submissions")
    assert main(["submit", str(GOOD)]) == 1
    assert "duplicate of" in capsys.readouterr().err
    assert snapshot(tmp_path / "submissions") == before
    assert "collapse-bench leaderboard build --submissions submissions/ --out /tmp/collapse-bench-preview" in out
    assert "--out leaderboard/" not in out and "fork" in out and "pull request template" in out


def test_pr_instructions_follow_the_submissions_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["submit", str(GOOD), "--submissions-dir", "subs/mine"]) == 0
    out = capsys.readouterr().out
    folder = "subs/mine/local/tiny-random-llama"
    assert f"wrote {folder}/quick-" in out and (tmp_path / folder).is_dir()
    assert "collapse-bench validate subs/mine/" in out and "--submissions subs/mine/ --out /tmp/" in out
    assert f"  git add {folder}" in out.splitlines() and "submissions/" not in out.replace("--submissions", "")
    assert "changes only files under subs/mine/" in out


@pytest.mark.parametrize(
    "model,expected",
    [
        ({"name": "HuggingFaceTB/SmolLM2-135M-Instruct@main", "source": "hub"}, ("HuggingFaceTB", "SmolLM2-135M-Instruct")),
        ({"name": "smollm2-135m-instruct", "source": "alias"}, ("HuggingFaceTB", "smollm2-135m-instruct")),
        ({"name": "/ckpt/run 7/stage2/", "source": "local"}, ("local", "stage2")),
        (
            {
                "name": "/runs/c/01-sft/model",
                "source": "local",
                "lineage": [{"name": "base"}, {"name": "base/rec/none/s0/01-sft"}],
            },
            ("local", "base--rec--none--s0--01-sft"),
        ),
        ({"name": "./m/model.Q4_K_M.gguf", "source": "gguf"}, ("local", "model.Q4_K_M")),
        (
            {"name": "/tmp/x/sft-lora", "source": "peft", "base": {"name": "smollm2-135m-instruct", "source": "alias"}},
            ("HuggingFaceTB", "sft-lora"),
        ),
    ],
)
def test_org_and_model(model: dict, expected: tuple[str, str]) -> None:
    assert org_and_model(ModelInfo.from_doc(model)) == expected


@pytest.mark.parametrize(
    "name,org",
    [
        ("../../../../etc/passwd", None),
        ("evil/../../x", None),
        ("a/b", "../../.."),
        ("x", "/etc"),
        ("x", "..\\..\\win"),
        (".hidden/.model", "."),
        ("ÄÖÜ 模型/名字", None),
    ],
)
def test_traversal_attempts_stay_inside(tmp_path: Path, name: str, org: str | None) -> None:
    doc = good_doc()
    doc["model"].update(name=name, source="hub")
    root = tmp_path / "submissions"
    target = canonical_path(doc, root, org)
    assert target.resolve().is_relative_to(root.resolve())
    parts = target.relative_to(root.resolve()).parts
    assert len(parts) == 3 and all(p == slug(p) or p.endswith(".json") for p in parts)
    assert all(not p.startswith(".") and p not in ("", "..") for p in parts)


def test_symlinked_org_dir_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "submissions", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "local")
    with pytest.raises(CollapseBenchError, match="is a symbolic link"):  # refused before any path is built
        submit(GOOD, root)
    assert list(outside.iterdir()) == []


def test_samples_file_copied_and_reference_rewritten(tmp_path: Path) -> None:
    """A real result with a samples file (the committed SmolLM2 quick row): the copy keeps bytes and hash."""
    real = sorted((Path(__file__).resolve().parents[1] / "submissions" / "huggingfacetb").rglob("quick-*.json"))[0]
    src = tmp_path / "in"
    src.mkdir()
    samples = src / "run.samples.jsonl"
    samples.write_bytes(real.with_name(real.stem + ".samples.jsonl").read_bytes())
    doc = json.loads(real.read_text())
    for block in doc["tasks"].values():
        if "samples" in block:
            block["samples"]["path"] = "run.samples.jsonl"
    result = src / "run.json"
    result.write_text(json.dumps(doc))
    target = submit(result, tmp_path / "submissions")
    written = json.loads(target.read_text())
    ref = written["tasks"]["world_mc"]["samples"]
    assert ref["path"] == f"{target.stem}.samples.jsonl"
    copy = target.parent / ref["path"]
    assert copy.read_bytes() == samples.read_bytes() and sha256_file(copy) == ref["sha256"]
    assert target.name == f"quick-{identity(written)[:12]}.json"
    assert main(["validate", str(target)]) == 0


def test_score_card_matches_the_leaderboard_row() -> None:
    """``evaluate``'s score card on committed rows = the score, CI and Δ vs base of the committed leaderboard."""
    from collapse_bench.leaderboard.scorecard import score_card

    root = Path(__file__).resolve().parents[1]
    rows = {m["id"]: m for m in json.loads((root / "leaderboard" / "data.json").read_text())["models"]}
    rid = "submissions/local/smollm2-135m-instruct--sft_safety_math--none--s0--01-sft/standard-9fe52ea1f392.json"
    child = rows[rid]
    base = rows[child["base_id"]]
    card = score_card(root / rid, root / "submissions")
    names = ("plasticity", "ood_accuracy", "ood_accuracy_chance", "calibration", "diversity")
    comps = ", ".join(f"{k} {child['c.' + k]:.3f}" for k in names)
    assert card[0] == f"score {child['score']:.3f} (95% CI [{child['score_lo']:.3f}, {child['score_hi']:.3f}]; {comps})"
    assert card[1] == (
        f"vs base {(root / base['id']).as_posix()}: {base['score']:.3f}, Δ {child['score'] - base['score']:+.3f} "
        "(CIs overlap: within noise)"
    )
    assert len(score_card(root / base["id"], root / "submissions")) == 1  # a base row: no "vs base" line
