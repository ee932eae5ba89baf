"""Committed noise floors (``*.noise.json`` under submissions/): read and checked, kept out of the result files,
and attached to a comparison metric only for the lineage root's checkpoint and the same task config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_leaderboard_comparisons import rows

from collapse_bench.errors import CollapseBenchError
from collapse_bench.leaderboard.aggregate import build_tables
from collapse_bench.leaderboard.comparisons import comparisons
from collapse_bench.leaderboard.noisefloor import load_noise_floors, read_floor
from collapse_bench.leaderboard.submission import submission_files

HASHES = {"arc": "h-arc", "plast": "h-plast", "probe": "h-probe"}


def floor_doc(sha: str = "a" * 64, **tasks: str) -> dict:
    return {
        "model": "org/base",
        "sha256": sha,
        "suite": {"name": "standard", "version": 1},
        "tasks": {**HASHES, **tasks},
        "metrics": {
            "probe.kl_to_base": {"sd": 0.05, "mde_paired_80": 0.2, "source": "reseeded_runs", "values": [0.0, 0.1]},
            "arc.acc": {"sd": 0.01, "mde_paired_80": 0.04, "source": "item_bootstrap", "values": [0.5]},
        },
    }


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_floors_are_found_apart_from_results(tmp_path: Path) -> None:
    write(tmp_path / "org" / "base" / "standard-x.json", {"a": 1})
    write(tmp_path / "org" / "base" / "standard-v1.noise.json", floor_doc())
    assert [p.name for p in submission_files([tmp_path])] == ["standard-x.json"]  # validate never sees a floor
    floors = load_noise_floors(tmp_path)
    assert list(floors) == ["a" * 64] and floors["a" * 64].path == "org/base/standard-v1.noise.json"
    assert floors["a" * 64].of("probe", "kl_to_base", "h-probe") == (0.05, 0.2)
    assert floors["a" * 64].of("probe", "kl_to_base", "other-config") is None  # another task config: no floor
    write(tmp_path / "org" / "again.noise.json", floor_doc())
    with pytest.raises(CollapseBenchError, match="a second noise floor of aaaaaaaaaaaa"):
        load_noise_floors(tmp_path)


@pytest.mark.parametrize(
    "broken,needle",
    [
        ({"sha256": "xyz"}, "64-hex `sha256`"),
        ({"tasks": ["probe"]}, "`tasks` must map"),
        ({"metrics": {"probe.kl_to_base": {"sd": float("nan"), "mde_paired_80": 1.0}}}, "finite, non-negative"),
        ({"metrics": {"probe.kl_to_base": {"sd": -1.0, "mde_paired_80": 1.0}}}, "finite, non-negative"),
    ],
)
def test_a_bad_floor_is_one_line(tmp_path: Path, broken: dict, needle: str) -> None:
    path = write(tmp_path / "f.noise.json", {**floor_doc(), **broken})
    with pytest.raises(CollapseBenchError, match=needle):
        read_floor(path, tmp_path)
    (tmp_path / "g.noise.json").write_text("{not json")
    with pytest.raises(CollapseBenchError, match=r"g\.noise\.json: not a readable noise floor"):
        read_floor(tmp_path / "g.noise.json", tmp_path)


def test_comparison_metrics_carry_the_root_floor(tmp_path: Path) -> None:
    base, stage = rows()
    for e in (base, stage):
        for t, h in HASHES.items():
            e.doc["tasks"][t]["hash"] = h
    floors = {"a" * 64: read_floor(write(tmp_path / "f.noise.json", floor_doc(probe="h-probe")), tmp_path)}
    found = comparisons(build_tables([base, stage], n_boot=200), n_boot=200, floors=floors)
    by = {(m["task"], m["metric"]): m for m in found[0]["metrics"]}
    kl = by[("probe", "kl_to_base")]  # Δ 0.3 against the base's MDE 0.2
    assert (kl["noise_sd"], kl["mde_80"], kl["beyond_mde"]) == (0.05, 0.2, True)
    acc = by[("arc", "acc")]
    assert acc["mde_80"] == 0.04 and acc["beyond_mde"] is (abs(acc["delta"]) > 0.04)
    assert by[("plast", "gain")]["mde_80"] is None and by[("plast", "gain")]["beyond_mde"] is None  # not in the floor
    # the floor of another checkpoint, or of another probe config, attaches nothing
    other = {"c" * 64: floors["a" * 64]}
    assert all(m["mde_80"] is None for m in comparisons(build_tables([base, stage], 200), 200, other)[0]["metrics"])
    moved = {"a" * 64: read_floor(write(tmp_path / "g.noise.json", floor_doc(probe="h-other")), tmp_path)}
    got = {(m["task"], m["metric"]): m for m in comparisons(build_tables([base, stage], 200), 200, moved)[0]["metrics"]}
    assert got[("probe", "kl_to_base")]["mde_80"] is None and got[("arc", "acc")]["mde_80"] == 0.04


def test_the_index_names_each_tables_noise_floor() -> None:
    """The committed index: under the standard v2 table, the SmolLM2 floor with its size, the share of the row's
    tasks it applies to (same task hashes) and its MDE of MMLU accuracy, as in the floor file."""
    import re

    from collapse_bench.leaderboard import site

    root = Path(__file__).resolve().parents[1]
    rel = "huggingfacetb/smollm2-135m-instruct/noise-floor.standard-v2.noise.json"
    floor = json.loads((root / "submissions" / rel).read_text())
    page = (root / "leaderboard" / "index.html").read_text()
    v2 = page[page.index("<h3>standard v2") : page.index("<h3>standard v1")]
    note = re.search(r'<p class="muted floor">(.*?)</p>', v2, re.S).group(1)
    assert f'href="../submissions/{rel}"' in note and (root / "submissions" / rel).is_file()
    assert f"{len(floor['metrics'])} metrics" in note and "16 of this row's 16 tasks" in note
    assert f"mmlu.acc {site.fmt_num(floor['metrics']['mmlu.acc']['mde_paired_80'])}" in note
