"""Intrinsic dimension per layer: TwoNN (Facco et al. 2017) on the token reservoir's states.

For one layer, X = the reservoir's token states (float64) with exact duplicate rows removed (one copy of each
kept), N = the number of distinct rows. For each point i, r1_i <= r2_i are the Euclidean distances to its first
and second nearest neighbours and mu_i = r2_i / r1_i. With mu_(1) <= ... <= mu_(N) sorted and
k = int(N (1 - DISCARD_FRACTION)) (the 10 % largest ratios discarded):

  intrinsic_dimension = sum_{i<=k} x_i y_i / sum_{i<=k} x_i^2,   x_i = log mu_(i),   y_i = -log(1 - i / N),

the least-squares slope through the origin of -log(1 - F_emp(mu)) on log mu: Facco et al.'s linear fit, as
scikit-dimension 0.5 ``skdim.id.TwoNN(discard_fraction=0.1)`` computes it (its default ``method='linear'``,
F_emp(mu_(i)) = i / N), not the maximum-likelihood form. None with N < 3 or sum x^2 = 0. scikit-dimension drops
every point whose r1 is 0 instead (all copies of a duplicate); on data without duplicates the two agree.

  id_peak_layer = the hidden-state index l in 1..L-1 with the largest intrinsic_dimension (the embedding output 0
                  and the post-final-norm index L excluded; undefined layers skipped; the first one on ties),
  id_peak_value = that largest value (both None without a defined layer).

The reservoir's content does not depend on batching or merge order, so neither do these values. Distances:
the squared-norm expansion (rows centred first) in float64 picks 3 candidate neighbours per point, whose
distances are then recomputed exactly as ||x_i - x_j||.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import MetricValues, Number, to_number
from .reservoir import TokenReservoir
from .spec import MetricSpec, Range, Tolerance
from .spectral import as_f64

DISCARD_FRACTION = 0.1
CHUNK_ELEMENTS = 1 << 24  # rows per distance chunk = CHUNK_ELEMENTS // N (128 MiB of float64)


def two_nearest(X: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(r1, r2): Euclidean distances of every row of X (n >= 3 rows) to its 1st and 2nd nearest other row."""
    X = as_f64(X)
    Xc = X - X.mean(dim=0, keepdim=True)  # smaller norms, smaller expansion round-off
    n = X.shape[0]
    sq = (Xc * Xc).sum(dim=1)
    step = max(1, CHUNK_ELEMENTS // n)
    k = min(3, n - 1)
    out = []
    for start in range(0, n, step):
        block = Xc[start : start + step]
        d2 = sq[start : start + step, None] + sq[None, :] - 2.0 * (block @ Xc.T)
        rows = torch.arange(block.shape[0], device=X.device)
        d2[rows, rows + start] = float("inf")
        cand = d2.topk(k, dim=1, largest=False).indices
        exact = torch.linalg.vector_norm(X[start : start + step, None, :] - X[cand], dim=-1)  # > 0 for distinct rows
        out.append(exact.sort(dim=1).values[:, :2])
    r = torch.cat(out)
    return r[:, 0], r[:, 1]


def twonn_dimension(X: torch.Tensor | np.ndarray, discard_fraction: float = DISCARD_FRACTION) -> Number:
    """TwoNN intrinsic dimension of the rows of X (duplicates removed first); None if undefined."""
    X = torch.unique(as_f64(X), dim=0)
    N = X.shape[0]
    if N < 3:
        return None
    r1, r2 = two_nearest(X)
    keep = int(N * (1 - discard_fraction))
    x = (r2 / r1).sort().values[:keep].log()
    y = -torch.log1p(-torch.arange(1, keep + 1, dtype=torch.float64, device=X.device) / N)
    sxx = (x * x).sum()
    return to_number((x * y).sum() / sxx) if keep >= 2 and sxx > 0 else None


def id_peak(per_layer: Sequence[Number]) -> tuple[int | None, Number]:
    """(index, value) of the largest defined entry among hidden-state indices 1..L-1 (L = len - 1)."""
    best: tuple[int | None, Number] = (None, None)
    for l in range(1, len(per_layer) - 1):
        v = per_layer[l]
        if v is not None and (best[1] is None or v > best[1]):
            best = (l, v)
    return best


def reservoir_intrinsic_dimension(res: TokenReservoir) -> MetricValues:
    """TokenReservoir hook: intrinsic_dimension per layer of the stored states, and its peak."""
    values: list[Number] = [None] * res.n_layers
    if res.count >= 3:
        values = [twonn_dimension(res.layer_rows(l)) for l in range(res.n_layers)]
    layer, value = id_peak(values)
    return MetricValues(
        per_layer={"intrinsic_dimension": values},
        scalars={"id_peak_layer": None if layer is None else float(layer), "id_peak_value": value},
    )


SPECS = (
    MetricSpec(
        id="intrinsic_dimension",
        kind="probe",
        reservoir=True,
        definition="TwoNN intrinsic dimension of the reservoir's token states (Facco et al. 2017, Sci. Rep. 7:12140)",
        range=Range(0, None, lo_open=True),
        tolerance=Tolerance(0.0, 0.05),
        label="intrinsic dimension (TwoNN)",
        reference="TwoNN, Facco et al., Sci. Rep. 2017; checked against scikit-dimension",
    ),
    MetricSpec(
        id="id_peak_layer",
        kind="probe",
        reservoir=True,
        definition="hidden-state index (1..L-1) of the largest TwoNN intrinsic dimension (Cheng et al., ICLR 2025)",
        range=Range(1, "num_layers"),
        tolerance=Tolerance(1.0, 0.0),
        label="ID peak layer",
        reference="the mid-layer ID peak, Cheng et al., ICLR 2025",
    ),
    MetricSpec(
        id="id_peak_value",
        kind="probe",
        reservoir=True,
        definition="the largest TwoNN intrinsic dimension over layers 1..L-1 (Facco et al. 2017)",
        range=Range(0, None, lo_open=True),
        tolerance=Tolerance(0.0, 0.05),
        label="ID peak value",
        reference="the mid-layer ID peak, Cheng et al., ICLR 2025",
    ),
)
