"""``evaluate --lineage DIR`` on a real tiny chain run (3 LoRA stages, merged): one process, the model built once and
each stage's weights swapped in, writes for every stage the result a separate ``evaluate`` of its dir writes (every
block but durations, the model block with sha256 and lineage, the samples file bytes); a stage whose config differs
is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import blocks

from collapse_bench.chain.runner import ChainRequest, run_chain
from collapse_bench.cli import main
from collapse_bench.ood.samples import samples_path

pytestmark = pytest.mark.train  # trains a tiny chain first

STAGES = ("01-sft", "02-safety", "03-math")


@pytest.fixture(scope="module")
def chain(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chain") / "c"
    return run_chain(ChainRequest(recipe="sft_safety_math", profile="tiny", out=str(out), data_dir=str(data_dir), progress=False))


def test_one_load_equals_separate_evaluates(chain: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["--tasks", "probe_quick,world_mc", "--limit", "4", "--device", "cpu", "--no-progress", "--data-dir", str(data_dir)]
    assert main(["evaluate", "--lineage", str(chain), *common, "--output", str(tmp_path / "one")]) == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("*.json")) == [f"{s}.json" for s in STAGES]
    for stage in STAGES:
        sep = tmp_path / "sep" / f"{stage}.json"
        assert main(["evaluate", str(chain / stage / "model"), *common, "--output", str(sep)]) == 0
        one = json.loads((tmp_path / "one" / f"{stage}.json").read_text())
        alone = json.loads(sep.read_text())
        assert one["model"] == alone["model"], stage  # sha256 of the stage's dir, its lineage and parent
        assert blocks(one) == blocks(alone), stage
        assert one["config"] == alone["config"] and one["suite"] == alone["suite"]
        assert samples_path(tmp_path / "one" / f"{stage}.json").read_bytes() == samples_path(sep).read_bytes()
    last = json.loads((tmp_path / "one" / "03-math.json").read_text())
    assert [e["stage"] for e in last["model"]["lineage"]] == ["base", "sft", "safety", "math"]
    assert last["tasks"]["probe_quick"]["metrics"]["kl_to_parent"] > 0
    capsys.readouterr()


def test_a_stage_with_another_config_is_refused(chain: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(chain, copy)
    cfg = copy / "02-safety" / "model" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "rms_norm_eps": 0.5}))
    code = main(["evaluate", "--lineage", str(copy), "--tasks", "probe_quick", "--limit", "2", "--device", "cpu",
                 "--no-progress", "--data-dir", str(data_dir), "--output", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "config.json differs" in err
    for extra in (["m"], ["--parent", "p"], ["--stage", "sft"], ["--device-map", "auto"]):
        assert main(["evaluate", *extra, "--lineage", str(copy)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"not with {extra[0] if extra[0] != 'm' else 'MODEL'}" in err
