"""The statistics llama-perplexity prints, from per-token values (formulas of
tools/perplexity/perplexity.cpp: `perplexity()` and `kl_divergence()`).

- PPL = exp(mean NLL); its error = PPL * sqrt((E[nll^2] - E[nll]^2) / (n - 1)).
- mean_and_uncertainty(x) = (mean, sqrt((E[x^2] - E[x]^2) / (n - 1))), the error 0 when n <= 10.
- percentiles interpolate linearly between sorted values (index fraction * (n - 1));
  the median is the middle value or the mean of the middle two.
- same top: fraction f, error sqrt(f (1 - f) / (n - 1)); RMS dp = sqrt(mean dp^2), its error
  0.5 / RMS * uncertainty(mean dp^2); dp = p_Q(token) - p_base(token).
- ln(PPL(Q)/PPL(base)): error from both uncertainties and their covariance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


def mean_and_uncertainty(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    if n < 1:
        return 0.0, 0.0
    f = float(x.sum() / n)
    df = float((x * x).sum() / n) - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def covariance(a: np.ndarray, b: np.ndarray) -> float:
    n = a.size
    if n < 10:
        return 0.0
    return (float((a * b).sum() / n) - float(a.sum() / n) * float(b.sum() / n)) / (n - 1)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    v = sorted_values
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = fraction * (v.size - 1)
    i = int(p)
    p -= i
    return float((1 - p) * v[i] + p * v[min(i + 1, v.size - 1)])


def median(sorted_values: np.ndarray) -> float:
    v, n = sorted_values, sorted_values.size
    return float(0.5 * (v[n // 2] + v[n // 2 - 1]) if n % 2 == 0 else v[n // 2])


@dataclass
class PPLStats:
    """Perplexity of one model over the scored tokens."""

    count: int
    ppl: float
    ppl_err: float
    nll_mean: float

    @classmethod
    def from_nll(cls, nll: np.ndarray) -> "PPLStats":
        nll = np.asarray(nll, dtype=np.float64)
        n = nll.size
        m = float(nll.mean())
        var = float((nll * nll).mean()) - m * m
        ppl = math.exp(m)
        err = ppl * math.sqrt(var / (n - 1)) if var > 0 and n > 1 else 0.0
        return cls(count=n, ppl=ppl, ppl_err=err, nll_mean=m)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KLDStats:
    """A model's output against a base's on the same tokens (llama-perplexity --kl-divergence)."""

    count: int
    ppl: float
    ppl_err: float
    ppl_base: float
    ppl_base_err: float
    ln_ppl_ratio: float
    ln_ppl_ratio_err: float
    kld_mean: float
    kld_err: float
    kld_median: float
    kld_p90: float
    kld_p95: float
    kld_p99: float
    kld_p999: float
    kld_min: float
    kld_max: float
    same_top_pct: float
    same_top_err_pct: float
    rms_dp_pct: float
    rms_dp_err_pct: float
    mean_dp_pct: float
    max_dp_pct: float
    # per-token values (nll, nll_base, kld, same_top, dp), kept when asked (keep_values=True)
    values: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_values(cls, nll, nll_base, kld, same_top, dp, keep_values: bool = False) -> "KLDStats":
        nll = np.asarray(nll, dtype=np.float64)
        nllb = np.asarray(nll_base, dtype=np.float64)
        kld = np.asarray(kld, dtype=np.float64)
        same = np.asarray(same_top, dtype=bool)
        dp = np.asarray(dp, dtype=np.float64)
        n = nll.size
        if n < 2:
            raise ValueError("KLD statistics need at least 2 scored tokens")
        lp, lp_err = mean_and_uncertainty(nll)
        lb, lb_err = mean_and_uncertainty(nllb)
        cov = covariance(nll, nllb)
        ratio_err = math.sqrt(max(lp_err ** 2 + lb_err ** 2 - 2.0 * cov, 0.0))
        k, k_err = mean_and_uncertainty(kld)
        ks = np.sort(kld)
        mse, mse_err = mean_and_uncertainty(dp * dp)
        rms = math.sqrt(mse)
        top = float(same.sum()) / n
        values = {"nll": nll, "nll_base": nllb, "kld": kld, "same_top": same, "dp": dp} if keep_values else None
        return cls(
            count=n, ppl=math.exp(lp), ppl_err=math.exp(lp) * lp_err,
            ppl_base=math.exp(lb), ppl_base_err=math.exp(lb) * lb_err,
            ln_ppl_ratio=lp - lb, ln_ppl_ratio_err=ratio_err,
            kld_mean=k, kld_err=k_err, kld_median=median(ks),
            kld_p90=percentile(ks, 0.90), kld_p95=percentile(ks, 0.95),
            kld_p99=percentile(ks, 0.99), kld_p999=percentile(ks, 0.999),
            kld_min=float(ks[0]), kld_max=float(ks[-1]),
            same_top_pct=100.0 * top, same_top_err_pct=100.0 * math.sqrt(top * (1 - top) / (n - 1)),
            rms_dp_pct=100.0 * rms, rms_dp_err_pct=(100.0 * 0.5 / rms * mse_err) if rms > 0 else 0.0,
            mean_dp_pct=100.0 * float(dp.mean()), max_dp_pct=100.0 * float(np.abs(dp).max()),
            values=values,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("values")
        return d

    def format(self) -> str:
        """The summary block llama-perplexity prints after a --kl-divergence run."""
        return "\n".join([
            f"Mean PPL(Q)                : {self.ppl:10.6f} ± {self.ppl_err:10.6f}",
            f"Mean PPL(base)             : {self.ppl_base:10.6f} ± {self.ppl_base_err:10.6f}",
            f"Mean ln(PPL(Q)/PPL(base))  : {self.ln_ppl_ratio:10.6f} ± {self.ln_ppl_ratio_err:10.6f}",
            f"Mean    KLD: {self.kld_mean:10.6f} ± {self.kld_err:10.6f}",
            f"Maximum KLD: {self.kld_max:10.6f}",
            f"99.9%   KLD: {self.kld_p999:10.6f}",
            f"99.0%   KLD: {self.kld_p99:10.6f}",
            f"95.0%   KLD: {self.kld_p95:10.6f}",
            f"Median  KLD: {self.kld_median:10.6f}",
            f"Minimum KLD: {self.kld_min:10.6f}",
            f"RMS Δp    : {self.rms_dp_pct:6.3f} ± {self.rms_dp_err_pct:5.3f} %",
            f"Same top p: {self.same_top_pct:6.3f} ± {self.same_top_err_pct:5.3f} %",
        ])
