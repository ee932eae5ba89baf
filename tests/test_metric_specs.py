"""Metric specs (collapse_bench/metrics/spec.py): one per metric, and everything generated from them.

The former ``leaderboard/ranges.yaml`` and ``leaderboard/tolerance.yaml`` are kept, as they were in git, in
``tests/fixtures/legacy_rules.yaml``: every committed metric must get the same range and tolerance from the
specs as it got from those rules.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from collapse_bench.leaderboard import reproduce as R
from collapse_bench.leaderboard import site
from collapse_bench.leaderboard import validate as V
from collapse_bench.leaderboard.entry import composite_config
from collapse_bench.leaderboard.submission import submission_files
from collapse_bench.metrics import spec as metric_spec

ROOT = Path(__file__).resolve().parents[1]
LEGACY = yaml.safe_load((ROOT / "tests" / "fixtures" / "legacy_rules.yaml").read_text(encoding="utf-8"))
NOT_METRICS = ("layers", "post_final_norm")  # per_layer entries that are not metric series (validate skips them)


def committed(legacy_only: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(task, block) of every committed result; ``legacy_only``: results of v1 suites, the rows that existed when
    the legacy rules were retired (v2 suites add metrics — AURC, SCE, letter-scored tasks — that those rules never
    covered and whose specs were written for them, so the migration equality is checked on v1 rows only)."""
    out = []
    for path in submission_files([ROOT / "submissions"]):  # the result files (noise floors are not results)
        doc = json.loads(path.read_text(encoding="utf-8"))
        if legacy_only and doc["suite"]["version"] != 1:
            continue
        for task, block in (doc.get("tasks") or {}).items():
            out.append((task, block))
    assert out, "no committed results"
    return out


def metric_ids(legacy_only: bool = False) -> set[str]:
    """tasks.*.metrics and tasks.*.per_layer keys of every committed result (``legacy_only``: v1 suites)."""
    ids: set[str] = set()
    for _, block in committed(legacy_only):
        ids |= set(block.get("metrics") or {})
        ids |= {k for k in block.get("per_layer") or {} if k not in NOT_METRICS}
    return ids


def range_checked_ids() -> set[str]:
    """Every id validate range-checks: metrics, per_layer, per_seed and curves."""
    ids = metric_ids(legacy_only=True)
    for _, block in committed(legacy_only=True):
        for row in (block.get("per_seed") or {}).values():
            ids |= set(row)
        for curve in (block.get("curves") or {}).values():
            ids |= set(curve)
    return ids


def legacy_range(metric: str) -> tuple[Any, Any, bool, bool]:
    for rule in LEGACY["ranges"]:
        if fnmatch.fnmatchcase(metric, rule["metric"]):
            return rule.get("min"), rule.get("max"), rule.get("min_exclusive", False), rule.get("max_exclusive", False)
    return None, None, False, False


def spec_range(metric: str) -> tuple[Any, Any, bool, bool]:
    for rule in V.ranges():
        if fnmatch.fnmatchcase(metric, rule["metric"]):
            return rule["min"], rule["max"], rule["min_exclusive"], rule["max_exclusive"]
    return None, None, False, False


def legacy_tolerance(task: str, metric: str) -> tuple[float, float]:
    rules = [{"metric": r["metric"], "abs": float(r["abs"]), "rel": float(r["rel"])} for r in LEGACY["tolerances"]]
    return R.tolerance_for(task, metric, rules)


def test_every_committed_metric_has_a_spec() -> None:
    missing = sorted(m for m in metric_ids() if metric_spec.spec_for(m) is None)
    assert not missing, f"metric ids without a MetricSpec: {missing}"


def test_spec_ranges_equal_the_former_ranges_yaml() -> None:
    ids = range_checked_ids()
    assert len(ids) > 100
    diff = {m: (legacy_range(m), spec_range(m)) for m in sorted(ids) if legacy_range(m) != spec_range(m)}
    assert not diff, diff


def test_spec_tolerances_equal_the_former_tolerance_yaml() -> None:
    rules = R.load_tolerances(None)
    pairs = {(task, m) for task, block in committed(legacy_only=True) for m in block.get("metrics") or {}}
    assert len(pairs) > 100
    diff = {
        p: (legacy_tolerance(*p), R.tolerance_for(*p, rules))
        for p in sorted(pairs)
        if legacy_tolerance(*p) != R.tolerance_for(*p, rules)
    }
    assert not diff, diff


def test_composite_better_agrees_with_spec_directions() -> None:
    cfg = composite_config()
    checked = 0
    for name, component in cfg["components"].items():
        for rule in component["metrics"]:
            s = metric_spec.spec_for(rule["metric"])
            assert s is not None, f"composite {name}: {rule['metric']} has no spec"
            assert s.kind == component["kind"], (name, rule["metric"], s.kind)
            assert s.direction == rule["better"], (
                f"composite {name}: {rule['metric']} better: {rule['better']}, spec says {s.direction}"
            )
            checked += 1
    assert checked >= 10


def test_hypothesis_predictors_have_specs_of_their_kind() -> None:
    families = composite_config()["hypothesis"]["predictors"]
    for family in families.values():
        for m in family["metrics"]:
            s = metric_spec.spec_for(m)
            assert s is not None and s.kind == family["kind"], (m, family["kind"])
    listed = {m for f in families.values() for m in f["metrics"]}
    # issue 14: the literature's predictors sit next to the spectral ones
    assert {"kl_to_base", "mutual_knn_base", "cknna_base", "id_peak_value", "epsilon_rank", "grad_snr"} <= listed


def test_runtime_specs_equal_the_statically_read_ones() -> None:
    """The registry reads SPECS from source (no torch import); importing each module gives the same tuple."""
    for name in metric_spec.expand(metric_spec.SPEC_MODULES):
        module = importlib.import_module(name)
        assert metric_spec.read_specs(name) == module.SPECS, name
        assert all(isinstance(s, metric_spec.MetricSpec) for s in module.SPECS)


def test_spec_fields_are_well_formed() -> None:
    specs = metric_spec.all_specs()
    assert len({s.id for s in specs}) == len(specs), "duplicate spec ids"
    for s in specs:
        assert s.kind in metric_spec.KINDS and s.definition and "\n" not in s.definition
        assert s.tolerance.abs >= 0 and s.tolerance.rel >= 0
        for b in (s.range.lo, s.range.hi) if s.range else ():
            assert b is None or isinstance(b, (int, float)) or b in metric_spec.MODEL_FIELDS
    with pytest.raises(ValueError, match="unknown range bound"):
        metric_spec.Range(0, "hidden_sise")
    with pytest.raises(ValueError, match="kind"):
        metric_spec.MetricSpec(id="x", kind="probes", definition="d")  # type: ignore[arg-type]


def test_plot_labels_come_from_the_specs() -> None:
    from collapse_bench.leaderboard import plots

    for metric, label in plots.LAYER_METRICS:
        s = metric_spec.spec_for(metric)
        assert s is not None and label == s.display_label


def test_glossary_and_metric_card_list_every_spec(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_metric_card
    finally:
        sys.path.remove(str(ROOT / "docs"))
    card = gen_metric_card.render()
    rows = site.glossary()
    assert [r["id"] for r in rows] == [s.id for s in metric_spec.all_specs()]
    for s in metric_spec.all_specs():
        assert f"`{s.id}`" in card
    assert gen_metric_card.on_page_markdown("a\n<!-- metric-card -->\nb", None, None, None) == f"a\n{card}\nb"


# --- demonstration: a new metric = its module (with SPECS), its test and one registration line ---------

DEMO = """
from collapse_bench.metrics.spec import MetricSpec, Range, Tolerance

SPECS = (
    MetricSpec(
        id="demo_spread*",
        kind="probe",
        definition="a demonstration metric added at test time",
        direction="higher",
        range=Range(0, "hidden_size", hi_open=True),
        tolerance=Tolerance(0.125, 0.25),
        label="demo spread",
    ),
)
"""


@pytest.fixture
def demo_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "demo_metric_module.py").write_text(DEMO, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the one registration line
    monkeypatch.setattr(metric_spec, "SPEC_MODULES", (*metric_spec.SPEC_MODULES, "demo_metric_module"))
    return "demo_spread"


def test_a_new_spec_reaches_validate_reproduce_glossary_and_card(demo_spec: str, tmp_path: Path) -> None:
    assert metric_spec.spec_for(demo_spec) is not None
    model = {"hidden_size": 8}
    assert V.range_problem(demo_spec, 7.5, model) is None
    problem = V.range_problem(demo_spec, 8.0, model)
    assert problem is not None and "demo_spread*" in problem and "hidden_size=8" in problem
    assert V.range_problem("demo_spread_robust", -1.0, model) is not None
    assert R.tolerance_for("probe_standard", demo_spec, R.load_tolerances(None)) == (0.125, 0.25)
    (tmp_path / "subs").mkdir()
    site.build(tmp_path / "subs", tmp_path / "lb")
    html = (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")
    assert 'id="glossary"' in html
    assert "<code>demo_spread*</code>" in html and "demo spread" in html and "a demonstration metric added at test time" in html
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_metric_card
    finally:
        sys.path.remove(str(ROOT / "docs"))
    assert "`demo_spread*`" in gen_metric_card.render()


def test_without_the_demo_the_registry_is_unchanged() -> None:
    assert metric_spec.spec_for("demo_spread") is None
    assert R.tolerance_for("t", "demo_spread", R.load_tolerances(None)) == (1e-6, 0.01)
