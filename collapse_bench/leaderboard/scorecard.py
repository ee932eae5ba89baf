"""The score card ``evaluate`` ends with: the headline score of the result it just wrote, with its 95% CI and
components (the leaderboard's own formulas, :mod:`.aggregate`), and the difference from its base row when one
is among the submissions (same suite, matched as the leaderboard matches a row's base)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CollapseBenchError
from .aggregate import components, composite, root_floor
from .entry import Entry, base_ref, entries_from, is_base_row
from .noisefloor import NoiseFloor, load_noise_floors
from .stats import percentile_ci
from .submission import Submission, submission_files


def _entry(path: Path, submissions: Path) -> Entry:
    """The row as the leaderboard reads it; its id (which seeds the bootstrap) is the leaderboard's when the file
    lies under ``submissions``, else its file name (the CI of a row not yet submitted may then differ in the
    last digit from the one its submitted copy gets)."""
    inside = submissions.is_dir() and submissions.resolve() in path.resolve().parents
    sub = Submission(path, json.loads(path.read_text(encoding="utf-8")))
    return entries_from([sub], submissions if inside else path.parent)[0]


def _floors(submissions: Path) -> dict[str, NoiseFloor]:
    """The committed noise floors (the geometry / diversity noise of the CI), none when unreadable: the card
    only informs, ``validate`` names a broken floor."""
    try:
        return load_noise_floors(submissions) if submissions.is_dir() else {}
    except CollapseBenchError:
        return {}


def _score(entry: Entry, floors: dict[str, NoiseFloor]) -> tuple[float | None, tuple[float, float] | None, dict[str, float]]:
    comps = components(entry, None, floor=root_floor(entry, floors))
    point, reps, _ = composite(comps)
    parts = {k: v[0] for k, v in comps.items() if v is not None and k != "geometry"}
    return point, (percentile_ci(reps) if reps is not None else None), parts


def _base_path(entry: Entry, submissions: Path) -> Path | None:
    """The submission of this row's base model on the same suite (same version preferred), if any."""
    ref = base_ref(entry.result.model)
    if ref is None or ref == (None, None) or not submissions.is_dir():
        return None
    suite = entry.result.suite
    found = []
    for path in submission_files([submissions]):  # read as JSON only: validating every row would cost seconds
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            model, s = doc["model"], doc["suite"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # validate names broken files; the score card only skips them
        if is_base_row(ref, suite.name, s.get("name"), model.get("sha256"), model.get("name")):
            found.append((s.get("version") != suite.version, path.as_posix(), path))
    return min(found)[2] if found else None


def score_card(path: Path, submissions: Path = Path("submissions")) -> list[str]:
    """Lines to print after ``evaluate`` (empty when the result has no scored component)."""
    entry = _entry(path, submissions)
    floors = _floors(submissions)
    point, ci, parts = _score(entry, floors)
    if point is None or ci is None:
        return []
    shown = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
    lines = [f"score {point:.3f} (95% CI [{ci[0]:.3f}, {ci[1]:.3f}]; {shown})"]
    base = _base_path(entry, submissions)
    if base is not None:
        b_point, b_ci, _ = _score(_entry(base, submissions), floors)
        if b_point is not None and b_ci is not None:
            overlap = ci[0] <= b_ci[1] and b_ci[0] <= ci[1]
            lines.append(
                f"vs base {base.as_posix()}: {b_point:.3f}, Δ {point - b_point:+.3f} "
                f"({'CIs overlap: within noise' if overlap else 'CIs do not overlap'})"
            )
    return lines
