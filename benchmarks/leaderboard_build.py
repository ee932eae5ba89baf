"""Leaderboard build time per row: the committed submissions, and N synthetic rows made from them.

(a) ``load_entries`` + ``render`` of ``submissions/`` (what ``leaderboard build`` does), timed by stage: loading
    (validate + samples), the tables (scores with bootstrap CIs), the hypothesis panel, the wait for the paired
    comparisons (a worker computes them beside the panel), and the pages + plots + files (the rest of the render);
(b) the same for ``--rows`` synthetic rows (default 1,000): copies of the committed rows, each with its own id and
    sha256 and every finite scalar metric multiplied by a seeded factor in [0.9, 1.1] (items, samples and
    lineage kept, so the bootstrap, comparison and plot work per row is the real one);
(c) determinism: (b) is rendered twice and the two trees compared byte for byte.
Targets (issue 15): committed set ≤ 10 s, 1,000 rows ≤ 5 min on 2 cores, byte-identical.

Usage: python benchmarks/leaderboard_build.py [--submissions submissions] [--rows 1000 (0: (a) only)] [--skip-repeat]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.entry import Entry

REPO = Path(__file__).resolve().parents[1]
CLOCK: dict[str, float] = {}


@contextmanager
def timed(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        CLOCK[name] = CLOCK.get(name, 0.0) + time.perf_counter() - t0


class TimedBackground(site.Background):
    """The comparisons run in a worker beside the hypothesis panel: what the render waits for them is timed."""

    def result(self):
        with timed("comparisons_wait"):
            return super().result()


def instrument() -> None:
    """Time the heavy stages inside ``site.render`` (the module-level names it calls)."""
    site.Background = TimedBackground
    for name in ("build_tables", "hypothesis_panel"):
        inner = getattr(site, name)

        def wrapper(*a, _inner=inner, _name=name, **k):
            with timed(_name):
                return _inner(*a, **k)

        setattr(site, name, wrapper)


def jitter(value, rng: np.random.Generator):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return value
    return float(value) * float(rng.uniform(0.9, 1.1))


def synthetic(entries: list[Entry], n: int, seed: int = 0) -> list[Entry]:
    """``n`` rows cycling over ``entries``: new id and sha256, scalars jittered (module docstring)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = entries[i % len(entries)]
        doc = copy.deepcopy(src.doc)
        sha = hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()
        doc["model"]["sha256"] = sha
        doc["model"]["name"] = f"{doc['model'].get('name', 'model')}-syn{i}"
        for block in doc.get("tasks", {}).values():
            block["metrics"] = {k: jitter(v, rng) for k, v in block.get("metrics", {}).items()}
        eid = src.id.replace(".json", f"-syn{i:04d}.json")
        out.append(Entry(eid, doc, src.items, src.complete, item_ids=src.item_ids, chance=src.chance))
    return out


def render_timed(entries: list[Entry], out: Path) -> dict[str, float]:
    CLOCK.clear()
    with timed("render"):
        site.render(entries, out)
    pages = CLOCK["render"] - sum(CLOCK.get(k, 0.0) for k in ("build_tables", "comparisons_wait", "hypothesis_panel"))
    return {**CLOCK, "pages_plots_files": pages}


def show(label: str, n: int, load_s: float, parts: dict[str, float]) -> None:
    total = load_s + parts["render"]
    split = ", ".join(
        f"{k} {parts.get(k, 0.0):.1f} s" for k in ("build_tables", "hypothesis_panel", "comparisons_wait", "pages_plots_files")
    )
    print(f"{label}: {n} rows, {total:.1f} s = {total / n:.3f} s/row (load {load_s:.1f} s; {split})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submissions", type=Path, default=REPO / "submissions")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--skip-repeat", action="store_true", help="render the synthetic set once (no byte comparison)")
    args = ap.parse_args()
    instrument()
    t0 = time.perf_counter()
    entries = site.load_entries(args.submissions)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="cb-lb-bench-") as tmp:
        root = Path(tmp)
        show("(a) committed", len(entries), load_s, render_timed(entries, root / "a"))
        if args.rows == 0:  # the committed set only
            return 0
        rows = synthetic(entries, args.rows)
        show("(b) synthetic", len(rows), 0.0, render_timed(rows, root / "b1"))
        if not args.skip_repeat:
            render_timed(rows, root / "b2")
            one, two = site.tree(root / "b1"), site.tree(root / "b2")
            same = one.keys() == two.keys() and all(one[k].read_bytes() == two[k].read_bytes() for k in one)
            print(f"(c) two renders of the synthetic set: {len(one)} files, byte-identical: {same}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
