"""Covariance-spectrum metrics of hidden states (probe protocol v1, ``sample`` tokens).

For one layer, H (N, d) has token vectors as rows, H~ = H - 1 mean(H)^T, Sigma = H~^T H~ / N and
lambda_1 >= ... >= lambda_d are its eigenvalues (float64 ``eigvalsh``, negatives clamped to 0):

  effective_rank      = exp(-sum_k p_k log p_k), p_k = sigma_k / sum_j sigma_j, sigma_k = sqrt(lambda_k)
                        (singular values of H~ up to the common factor sqrt(N));
  rankme              = the same entropy formula on the singular values of the *uncentred* H, i.e. on the
                        eigenvalues of H^T H / N (RankMe variant (a), no epsilon, 0 log 0 = 0);
  stable_rank         = sum_k lambda_k / lambda_1;
  participation_ratio = (sum_k lambda_k)^2 / sum_k lambda_k^2;
  alpha_req           = -slope of the weighted least-squares fit of log lambda_k on log k, weights 1/k,
                        k = 12..100 (1-based), restricted to lambda_k > 1e-12 lambda_1; None with < 5 ranks;
  alpha_req_r2        = weighted R^2 of that fit;
  epsilon_rank        = min{k : sigma_1 + ... + sigma_k >= EPSILON_MASS * sum_j sigma_j} (the 99 % mass rank of the
                        singular values, not of their squares), None if all sigma are 0.
Eigenvalues below n * eps(float64) * lambda_1 count as 0 (eigvalsh round-off).

``*_robust`` variants use the covariance / second-moment submatrix without *massive* channels: channel c is
massive iff max_t |h_tc| (over ``keep`` tokens) > MASSIVE_RATIO * median_c max_t |h_tc|.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MetricValues, Number, ProbeBatch, to_number
from .batchview import batch_view, scratch
from .spec import MetricSpec, Range, Tolerance

MASSIVE_RATIO = 50.0  # massive channel: max |h| > MASSIVE_RATIO * median over channels of max |h|
ALPHA_RANKS = (12, 100)  # 1-based rank window of the alpha-ReQ fit (Stringer & Pachitariu index 11..99)
ALPHA_MIN_RANKS = 5
ALPHA_REL_FLOOR = 1e-12
EPSILON_MASS = 0.99  # epsilon_rank: share of sum sigma held by the top singular values
METRICS = ("effective_rank", "rankme", "stable_rank", "participation_ratio", "alpha_req", "alpha_req_r2", "epsilon_rank")

# ----------------------------------------------------------------------------- pure functions


def as_f64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 torch tensor (same device for torch input)."""
    return x.double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))


def _sorted_eigvals(S: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(S).clamp_min(0.0).flip(-1)


def eigvals_centered(H: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Eigenvalues of Sigma = H~^T H~ / N (float64, clamped at 0, descending)."""
    H = as_f64(H)
    Hc = H - H.mean(dim=0, keepdim=True)
    return _sorted_eigvals(Hc.T @ Hc / H.shape[0])


def eigvals_second_moment(H: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Eigenvalues of H^T H / N (uncentred; RankMe), float64, clamped, descending."""
    H = as_f64(H)
    return _sorted_eigvals(H.T @ H / H.shape[0])


def _lam(lam: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Descending float64 eigenvalues; those below n * eps * lambda_1 (n = their number) are eigvalsh round-off
    and set to 0 (the sqrt in the effective rank would turn 1e-16 noise into 1e-8 weights)."""
    lam = as_f64(lam).reshape(-1).clamp_min(0.0).sort(descending=True).values
    if lam.numel():
        lam = torch.where(lam > lam.numel() * torch.finfo(torch.float64).eps * lam[0], lam, 0.0)
    return lam


def effective_rank_from_eigvals(lam: torch.Tensor | np.ndarray) -> Number:
    """exp(Shannon entropy of p = sqrt(lam) / sum sqrt(lam)); None if all lam are 0."""
    s = _lam(lam).sqrt()
    total = s.sum()
    if total <= 0:
        return None
    p = s[s > 0] / total
    return to_number(torch.exp(-(p * p.log()).sum()))


def epsilon_rank_from_eigvals(lam: torch.Tensor | np.ndarray, mass: float = EPSILON_MASS) -> Number:
    """Smallest k with sum_{j<=k} sqrt(lam_j) >= mass * sum_j sqrt(lam_j); None if all lam are 0."""
    s = _lam(lam).sqrt()
    total = s.sum()
    if total <= 0:
        return None
    return float(min(int((s.cumsum(0) < mass * total).sum()) + 1, s.numel()))


def stable_rank_from_eigvals(lam: torch.Tensor | np.ndarray) -> Number:
    """sum lam / max lam."""
    lam = _lam(lam)
    return to_number(lam.sum() / lam[0]) if lam.numel() and lam[0] > 0 else None


def participation_ratio_from_eigvals(lam: torch.Tensor | np.ndarray) -> Number:
    """(sum lam)^2 / sum lam^2."""
    lam = _lam(lam)
    q = (lam * lam).sum()
    return to_number(lam.sum() ** 2 / q) if q > 0 else None


def alpha_req_fit(lam: torch.Tensor | np.ndarray) -> tuple[Number, Number]:
    """(alpha, weighted R^2) of log lam_k ~ c - alpha log k, weights 1/k, ranks 12..100 with lam_k > 1e-12 lam_1."""
    lam = _lam(lam)
    if not lam.numel() or lam[0] <= 0:
        return None, None
    lo, hi = ALPHA_RANKS
    if lam.numel() < lo:
        return None, None
    k = torch.arange(lo, min(hi, lam.numel()) + 1, dtype=torch.float64, device=lam.device)
    y = lam[lo - 1 : lo - 1 + k.numel()]
    ok = y > ALPHA_REL_FLOOR * lam[0]
    k, y = k[ok], y[ok]
    if k.numel() < ALPHA_MIN_RANKS:
        return None, None
    x, y, w = k.log(), y.log(), 1.0 / k
    xm, ym = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    slope = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    resid = y - ym - slope * (x - xm)
    ss_tot = (w * (y - ym) ** 2).sum()
    r2 = 1.0 - (w * resid**2).sum() / ss_tot if ss_tot > 0 else float("nan")
    return to_number(-slope), to_number(r2)


def effective_rank(H: torch.Tensor | np.ndarray) -> Number:
    """Effective rank of the centred H (entropy of its singular values)."""
    return effective_rank_from_eigvals(eigvals_centered(H))


def rankme(H: torch.Tensor | np.ndarray) -> Number:
    """Effective rank of the singular values of the uncentred H."""
    return effective_rank_from_eigvals(eigvals_second_moment(H))


def epsilon_rank(H: torch.Tensor | np.ndarray) -> Number:
    """99 % mass rank of the singular values of the centred H."""
    return epsilon_rank_from_eigvals(eigvals_centered(H))


def stable_rank(H: torch.Tensor | np.ndarray) -> Number:
    return stable_rank_from_eigvals(eigvals_centered(H))


def participation_ratio(H: torch.Tensor | np.ndarray) -> Number:
    return participation_ratio_from_eigvals(eigvals_centered(H))


def alpha_req(H: torch.Tensor | np.ndarray) -> Number:
    return alpha_req_fit(eigvals_centered(H))[0]


def alpha_req_r2(H: torch.Tensor | np.ndarray) -> Number:
    return alpha_req_fit(eigvals_centered(H))[1]


def massive_channels(maxabs: torch.Tensor | np.ndarray, ratio: float = MASSIVE_RATIO) -> torch.Tensor:
    """Bool mask of channels with maxabs > ratio * median(maxabs) (np.median convention)."""
    m = as_f64(maxabs)
    return m > ratio * torch.quantile(m, 0.5)


def spectrum_metrics(lam: torch.Tensor, lam_second: torch.Tensor | None = None) -> dict[str, Number]:
    """All METRICS from centred eigenvalues ``lam`` and second-moment eigenvalues ``lam_second``."""
    alpha, r2 = alpha_req_fit(lam)
    return {
        "effective_rank": effective_rank_from_eigvals(lam),
        "rankme": effective_rank_from_eigvals(lam_second) if lam_second is not None else None,
        "stable_rank": stable_rank_from_eigvals(lam),
        "participation_ratio": participation_ratio_from_eigvals(lam),
        "alpha_req": alpha,
        "alpha_req_r2": r2,
        "epsilon_rank": epsilon_rank_from_eigvals(lam),
    }


# ----------------------------------------------------------------------------- accumulator


class CovarianceAccumulator:
    """Per layer: count n, mean (d), centred scatter M2 (d x d) of ``sample`` tokens, max |h| per channel of
    ``keep`` tokens; all float64. Batches are folded in with Chan et al.'s update written as
    M_AB = M_A + sum_B (x - mu_AB)(x - mu_AB)^T + n_A (mu_A - mu_AB)(mu_A - mu_AB)^T: one float64 batched
    matmul per batch (a float32 Gram would put a noise floor of ~1e-7 lambda_1 under the spectrum, which
    massive-activation channels lift above the real tail eigenvalues)."""

    def __init__(self, n_layers: int, dim: int) -> None:
        self.n_layers, self.dim = n_layers, dim
        self.n: torch.Tensor | None = None  # (L,)
        self.mean: torch.Tensor | None = None  # (L, d)
        self.M2: torch.Tensor | None = None  # (L, d, d)
        self.maxabs: torch.Tensor | None = None  # (L, d)

    def _init(self, device: torch.device) -> None:
        L, d, f = self.n_layers, self.dim, torch.float64
        self.n = torch.zeros(L, dtype=f, device=device)
        self.mean = torch.zeros(L, d, dtype=f, device=device)
        self.M2 = torch.zeros(L, d, d, dtype=f, device=device)
        self.maxabs = torch.zeros(L, d, dtype=f, device=device)

    @torch.inference_mode()
    def update(self, batch: ProbeBatch) -> None:
        view = batch_view(batch)
        if self.n is None:
            self._init(view.device)
        assert self.n is not None and self.mean is not None and self.M2 is not None and self.maxabs is not None
        if view.keep.any():  # rows outside keep are zero, so they cannot raise max |h|
            torch.maximum(self.maxabs, view.maxabs.to(self.maxabs), out=self.maxabs)
        m = view.sample_index.numel()
        if m == 0:
            return
        rows = view.sample_rows  # (L, m, d)
        n_a = self.n
        n_ab = n_a + m
        mu_b = rows.sum(dim=1, dtype=torch.float64) / m
        mu_ab = self.mean + (m / n_ab)[:, None] * (mu_b - self.mean)
        Z = scratch("cov.Z", (view.L, m + 1, view.d), torch.float64, view.device)
        torch.sub(rows, mu_ab[:, None, :], out=Z[:, :m])
        Z[:, m] = n_a.sqrt()[:, None] * (self.mean - mu_ab)
        self.M2.baddbmm_(Z.transpose(1, 2), Z)
        self.mean, self.n = mu_ab, n_ab

    @torch.inference_mode()
    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        if other.n is None:
            return self
        if self.n is None:
            self._init(other.n.device)
        assert (
            self.n is not None
            and self.mean is not None
            and self.M2 is not None
            and self.maxabs is not None
            and other.n is not None
            and other.mean is not None
            and other.M2 is not None
            and other.maxabs is not None
        )
        n_b, mean_b, M2_b = (t.to(self.n.device) for t in (other.n, other.mean, other.M2))
        n = self.n + n_b
        coef = torch.where(n > 0, self.n * n_b / n.clamp_min(1), torch.zeros_like(n))
        delta = mean_b - self.mean
        self.M2 += M2_b + coef[:, None, None] * delta[:, :, None] * delta[:, None, :]
        self.mean = self.mean + torch.where(n > 0, n_b / n.clamp_min(1), torch.zeros_like(n))[:, None] * delta
        self.n = n
        torch.maximum(self.maxabs, other.maxabs.to(self.maxabs), out=self.maxabs)
        return self

    @torch.inference_mode()
    def covariance(self, layer: int) -> torch.Tensor:
        """Sigma = M2 / n of ``layer`` (float64)."""
        assert self.n is not None and self.M2 is not None
        return self.M2[layer] / self.n[layer]

    def second_moment(self, layer: int) -> torch.Tensor:
        """H^T H / n = Sigma + mu mu^T of ``layer``."""
        assert self.mean is not None
        mu = self.mean[layer]
        return self.covariance(layer) + torch.outer(mu, mu)

    def massive(self, layer: int) -> torch.Tensor:
        """Bool mask of massive channels of ``layer`` (see MASSIVE_RATIO)."""
        assert self.maxabs is not None
        return massive_channels(self.maxabs[layer])

    def eigvals(self, layer: int, robust: bool = False, second_moment: bool = False) -> torch.Tensor:
        """Descending clamped eigenvalues of Sigma (or of H^T H / n), optionally without massive channels."""
        S = self.second_moment(layer) if second_moment else self.covariance(layer)
        if robust:
            keep = (~self.massive(layer)).nonzero().squeeze(1)
            S = S.index_select(0, keep).index_select(1, keep)
        return _sorted_eigvals(S)

    @torch.inference_mode()
    def compute(self) -> MetricValues:
        L = self.n_layers
        names = [*METRICS, *(f"{k}_robust" for k in METRICS), "massive_channels"]
        out: dict[str, list[Number]] = {k: [None] * L for k in names}
        if self.n is None:
            return MetricValues(per_layer=out, counts={"spectral_tokens": 0})
        valid = [l for l in range(L) if self.n[l] >= 2]
        if valid:
            idx = torch.tensor(valid, device=self.n.device)
            n = self.n[idx][:, None, None]
            assert self.n is not None and self.mean is not None and self.M2 is not None
            mu = self.mean[idx]
            cov = self.M2[idx] / n
            lam_c = _sorted_eigvals(cov)
            lam_s = _sorted_eigvals(cov + mu[:, :, None] * mu[:, None, :])
        for i, l in enumerate(valid):
            mask = self.massive(l)
            out["massive_channels"][l] = float(mask.sum())
            plain = spectrum_metrics(lam_c[i], lam_s[i])
            robust = plain if not mask.any() else spectrum_metrics(self.eigvals(l, True), self.eigvals(l, True, True))
            for k in METRICS:
                out[k][l] = plain[k]
                out[f"{k}_robust"][l] = robust[k]
        return MetricValues(per_layer=out, counts={"spectral_tokens": int(self.n[0])})


SPECS = (
    MetricSpec(
        id="effective_rank*",
        kind="probe",
        streams=True,
        definition="exp of the Shannon entropy of the normalised singular values of the centred token states",
        direction="higher",
        range=Range(1, "hidden_size"),
        tolerance=Tolerance(0.0, 0.05),
        label="effective rank (centred)",
    ),
    MetricSpec(
        id="rankme*",
        kind="probe",
        streams=True,
        definition="RankMe: exp entropy of the normalised singular values of the uncentred token states",
        direction="higher",
        range=Range(1, "hidden_size"),
        tolerance=Tolerance(0.0, 0.05),
        label="RankMe",
    ),
    MetricSpec(
        id="stable_rank*",
        kind="probe",
        streams=True,
        definition="stable rank: trace of the covariance over its largest eigenvalue",
        direction="higher",
        range=Range(1, "hidden_size"),
        tolerance=Tolerance(0.0, 0.05),
        label="stable rank",
    ),
    MetricSpec(
        id="participation_ratio*",
        kind="probe",
        streams=True,
        definition="participation ratio (sum of eigenvalues)^2 / sum of squared eigenvalues",
        direction="higher",
        range=Range(1, "hidden_size"),
        tolerance=Tolerance(0.0, 0.05),
        label="participation ratio",
    ),
    MetricSpec(
        id="alpha_req_r2*",
        kind="probe",
        streams=True,
        definition="R^2 of the power-law fit behind alpha_req",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.05),
        label="alpha-ReQ fit R²",
    ),
    MetricSpec(
        id="alpha_req*",
        kind="probe",
        streams=True,
        definition="alpha-ReQ: decay exponent of a power law fitted to the eigenvalue spectrum",
        tolerance=Tolerance(0.02, 0.05),
        label="alpha-ReQ",
    ),
    MetricSpec(
        id="epsilon_rank*",
        kind="probe",
        streams=True,
        definition="ε-rank: fewest singular values of the centred token states holding 99 % of Σσ (srank, Kumar et al. 2021)",
        range=Range(1, "hidden_size"),
        tolerance=Tolerance(0.0, 0.05),
        label="ε-rank (99 % of Σσ)",
        reference="srank, Kumar et al., ICLR 2021; the 99%-mass rank of Dohare et al., Nature 2024",
    ),
    MetricSpec(
        id="massive_channels",
        kind="probe",
        streams=True,
        definition="massive-activation channels: channel max |h| > 50 × the median channel's (removed for *_robust)",
        range=Range(0, "hidden_size"),
        tolerance=Tolerance(1.0, 0.0),
        label="massive channels",
    ),
)
