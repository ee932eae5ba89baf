"""Bootstrap ECE: one argsort per replicate (``ece_mass_rows`` on the resampled items) vs items sorted once and
replicate ranks radix-sorted (``ece_mass_boot``, what the leaderboard and ``noise`` use), side by side in one run.

Usage: python benchmarks/ece_bootstrap.py [--items 150] [--boot 1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from collapse_bench.metrics.calibration_rows import ece_mass_boot, ece_mass_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=150)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.25, 1.0, size=a.items)  # continuous: no ties, so both give the same numbers
    correct = (rng.uniform(size=a.items) < conf).astype(np.float64)
    idx = rng.integers(0, a.items, size=(a.boot, a.items))
    clock = {}
    for name, fn in (
        ("argsort per replicate", lambda: ece_mass_rows(conf[idx], correct[idx])),
        ("sorted once", lambda: ece_mass_boot(conf, correct, idx)),
    ):
        fn()
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            out = fn()
        clock[name] = (time.perf_counter() - t0) / a.repeat
        print(f"{name}: {clock[name] * 1e3:.2f} ms per {a.boot} replicates of {a.items} items")
    assert np.allclose(ece_mass_rows(conf[idx], correct[idx]), out, rtol=1e-12, atol=1e-15)
    print(f"ratio {clock['argsort per replicate'] / clock['sorted once']:.2f}x (same numbers: yes)")


if __name__ == "__main__":
    main()
