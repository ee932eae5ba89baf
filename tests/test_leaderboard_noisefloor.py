"""Committed noise floors (``*.noise.json`` under submissions/): read and checked, kept out of the result files,
and attached to a comparison metric only for the lineage root's checkpoint and the same task config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from test_leaderboard_comparisons import rows

from collapse_bench.errors import CollapseBenchError
from collapse_bench.leaderboard import stats
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
            "probe.kl_to_base": {"sd": 0.05, "mde_paired_80": 0.2, "source": "reseeded_runs", "values": [0.0, 0.05 * 2**0.5]},
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
        (  # an SD that is not its runs' SD (both are used: the MDE, and the replicates' covariance)
            {
                "metrics": {
                    "probe.kl_to_base": {"sd": 0.01, "mde_paired_80": 1.0, "source": "reseeded_runs", "values": [0.0, 0.1]}
                }
            },
            r"`sd` 0.01 is not the SD of its `values` \(0.0707",
        ),
        (
            {"metrics": {"probe.a": {"sd": 0.0, "mde_paired_80": 0.0, "source": "reseeded_runs", "values": [1.0]}}},
            "≥ 2 finite numbers",
        ),
        (
            {
                "metrics": {
                    "probe.a": {"sd": 0.0, "mde_paired_80": 0.0, "source": "reseeded_runs", "values": [1.0, 1.0]},
                    "probe.b": {"sd": 0.0, "mde_paired_80": 0.0, "source": "reseeded_runs", "values": [1.0, 1.0, 1.0]},
                }
            },
            "metrics.probe.b has 3 runs, other metrics of probe 2",
        ),
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
    # no per-item evidence: a normal CI of two independent measurements with the floor's SD (scipy.stats.norm)
    scale = 2**0.5 * 0.05
    assert kl["test"] == "noise_floor_normal" and kl["n"] == 2
    assert (kl["ci_lo"], kl["ci_hi"]) == pytest.approx(scipy.stats.norm.interval(0.95, loc=0.3, scale=scale), rel=1e-12)
    assert kl["p"] == pytest.approx(2 * scipy.stats.norm.cdf(-0.3 / scale), rel=1e-9) and kl["within_noise"] is False
    acc = by[("arc", "acc")]
    assert acc["mde_80"] == 0.04 and acc["beyond_mde"] is (abs(acc["delta"]) > 0.04)
    assert by[("plast", "gain")]["mde_80"] is None and by[("plast", "gain")]["beyond_mde"] is None  # not in the floor
    # the floor of another checkpoint, or of another probe config, attaches nothing
    other = {"c" * 64: floors["a" * 64]}
    assert all(m["mde_80"] is None for m in comparisons(build_tables([base, stage], 200), 200, other)[0]["metrics"])
    moved = {"a" * 64: read_floor(write(tmp_path / "g.noise.json", floor_doc(probe="h-other")), tmp_path)}
    got = {(m["task"], m["metric"]): m for m in comparisons(build_tables([base, stage], 200), 200, moved)[0]["metrics"]}
    assert got[("probe", "kl_to_base")]["mde_80"] is None and got[("arc", "acc")]["mde_80"] == 0.04
    assert got[("probe", "kl_to_base")]["test"] == "none" and got[("probe", "kl_to_base")]["ci_lo"] is None


def test_floor_replicates_have_the_floors_run_covariance(tmp_path: Path) -> None:
    """Gaussian replicates: exactly value + Z Cᵀ/√(R−1) with Z drawn here from the same seed, so their covariance
    over many draws is the floor's sample covariance (numpy.cov of the runs), both metrics jointly."""
    runs = {"probe.a": [1.0, 1.4, 0.9], "probe.b": [5.0, 4.0, 5.5]}
    metrics = {
        k: {"sd": float(np.std(v, ddof=1)), "mde_paired_80": 1.0, "source": "reseeded_runs", "values": v} for k, v in runs.items()
    }
    floor = read_floor(write(tmp_path / "f.noise.json", {**floor_doc(), "metrics": metrics}), tmp_path)
    got = floor.replicates("probe", {"a": 2.0, "b": 3.0, "c": 7.0}, "h-probe", 200_000, seed=11)
    assert sorted(got) == ["a", "b"]  # c was not re-run: no replicates
    c = np.array([runs["probe.a"], runs["probe.b"]]).T
    z = np.random.default_rng(11).standard_normal((200_000, 3))
    want = np.array([2.0, 3.0]) + z @ (c - c.mean(0)) / np.sqrt(2)
    assert np.array_equal(got["a"], want[:, 0]) and np.array_equal(got["b"], want[:, 1])
    emp = np.cov(np.stack([got["a"], got["b"]]))
    assert emp == pytest.approx(np.cov(c.T), rel=0.02)  # sampling error of 2e5 draws ≈ 0.3 %
    assert floor.replicates("probe", {"a": 2.0}, "other-config", 10, 0) == {}


def test_component_ci_carries_the_floor_noise(tmp_path: Path) -> None:
    """A component with no per-item evidence (geometry: probe scalars) has a CI only through the floor: degenerate
    without it, with it the percentile interval of the component score over the floor's replicates."""
    from collapse_bench.leaderboard.aggregate import components, metric_scores
    from collapse_bench.leaderboard.entry import composite_config

    base, stage = rows()
    for e in (base, stage):
        e.doc["tasks"]["probe"]["hash"] = "h-probe"
        e.doc["tasks"]["probe"]["metrics"]["effective_rank"] = 40.0 if e is base else 44.0
    runs = {"probe.effective_rank": [40.0, 41.0, 39.5]}
    metrics = {
        k: {"sd": float(np.std(v, ddof=1)), "mde_paired_80": 1.0, "source": "reseeded_runs", "values": v} for k, v in runs.items()
    }
    floor = read_floor(write(tmp_path / "f.noise.json", {**floor_doc(), "metrics": metrics}), tmp_path)
    without = components(stage, base, 500)["geometry"]
    assert without is not None and np.ptp(without[1]) == 0.0
    value, reps = components(stage, base, 500, floor)["geometry"]
    spec = composite_config()["components"]["geometry"]
    rule = next(r for r in spec["metrics"] if r["metric"] == "effective_rank")
    draws = floor.replicates(
        "probe", {"effective_rank": 44.0, "kl_to_base": 0.3}, "h-probe", 500, stats.seed_of(stage.id, "probe", "floor")
    )
    assert value == without[0] and np.allclose(reps, metric_scores(rule, spec, draws["effective_rank"], 40.0), rtol=0, atol=1e-15)
    assert np.ptp(reps) > 0


def test_the_index_names_each_tables_noise_floor() -> None:
    """The committed index: under the standard v2 table, each family's floor (SmolLM2, Gemma-3-270M) with its size,
    the share of the row's tasks it applies to (same task hashes) and its MDE of MMLU accuracy, as in the floor file."""
    import re

    from collapse_bench.leaderboard import site

    root = Path(__file__).resolve().parents[1]
    page = (root / "leaderboard" / "index.html").read_text()
    v2 = page[page.index("<h3>standard v2") : page.index("<h3>standard v1")]
    notes = re.findall(r'<p class="muted floor">(.*?)</p>', v2, re.S)
    for rel in ("huggingfacetb/smollm2-135m-instruct", "google/gemma3-270m"):
        rel += "/noise-floor.standard-v2.noise.json"
        floor = json.loads((root / "submissions" / rel).read_text())
        (note,) = [n for n in notes if f'href="../submissions/{rel}"' in n]
        assert f"{len(floor['metrics'])} metrics" in note and "16 of this row's 16 tasks" in note
        assert f"mmlu.acc {site.fmt_num(floor['metrics']['mmlu.acc']['mde_paired_80'])}" in note


def test_committed_comparisons_without_item_evidence_use_the_floor() -> None:
    """The committed data.json: every comparison metric with a floor SD > 0 and no per-item / per-seed test has
    the floor's normal CI and p (recomputed here with scipy.stats.norm); the others with a floor have SD 0."""
    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "leaderboard" / "data.json").read_text())
    item_tests = {"mcnemar_exact", "paired_bootstrap", "paired_t_seeds"}
    (floor_path,) = (root / "submissions").glob("huggingfacetb/*/noise-floor.standard-v2.noise.json")
    runs = {k: m.get("values", []) for k, m in json.loads(floor_path.read_text())["metrics"].items()}
    checked = rounding = 0
    for comp in data["comparisons"]:
        for m in comp["metrics"]:
            if m["test"] in item_tests or m["noise_sd"] is None:
                assert m["test"] in item_tests or m["test"] == "none"
                continue
            if m["noise_sd"] <= 1e-12 * max(1.0, *(abs(v) for v in runs[f"{m['task']}.{m['metric']}"])):
                assert m["test"] == "none" and m["ci_lo"] is None  # SD 0 up to float rounding: deterministic
                rounding += 1
                continue
            scale = 2**0.5 * m["noise_sd"]
            assert m["test"] == "noise_floor_normal", m
            assert (m["ci_lo"], m["ci_hi"]) == pytest.approx(
                scipy.stats.norm.interval(0.95, loc=m["delta"], scale=scale), rel=1e-9, abs=1e-12
            )
            assert m["p"] == pytest.approx(2 * scipy.stats.norm.sf(abs(m["delta"]) / scale), rel=1e-9, abs=1e-300)
            checked += 1
    assert checked >= 900 and rounding > 0  # geometry, diversity, …; threshold_bpb & co. are deterministic
