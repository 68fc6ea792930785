"""What a start-up success rate counts, and what an observed count of failures implies.

"Start-up success above 95 %" means different things on different dashboards. Four are computed
from the replication rows (one replication = one deploy of the fleet), each with its interval:

- ``starts``: start attempts that reach ready, per container start (what a count of exit-code-3
  lines measures: each failed start logs one);
- ``first_starts``: instances whose first start reaches ready;
- ``instances_ready``: instances ready by the horizon, whatever it took;
- ``clean_deploys``: deploys in which no start failed.

An observed count of failed starts (the incident's "at least 649") is set against the model's
failed starts per deploy: how many deploys the count corresponds to and, when the window's deploys
are known, whether the model could have produced it (an exact test on the simulated distribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sim.sequential import Settled, at_least
from sim.stats import Proportion, cluster_proportion, wilson

DEFINITIONS: dict[str, str] = {
    "starts": "start attempts that reach ready, per container start (as exit-code-3 logs count)",
    "first_starts": "instances whose first start reaches ready",
    "instances_ready": "instances ready by the horizon",
    "clean_deploys": "deploys in which no start failed",
}


def success_rates(fleet: dict[str, np.ndarray], instances: int, confidence: float) -> dict:
    """Each definition's share with its interval (clustered by deploy where attempts cluster)."""
    attempts, failed = fleet["attempts"], fleet["failed_attempts"]
    some = attempts > 0
    per_deploy = np.full(len(attempts), instances)
    deploys, clean = len(attempts), int(np.sum(failed == 0))
    return {
        "starts": cluster_proportion((attempts - failed)[some], attempts[some], confidence),
        "first_starts": cluster_proportion(fleet["first_ready"], per_deploy, confidence),
        "instances_ready": cluster_proportion(fleet["instances_ready"], per_deploy, confidence),
        "clean_deploys": Proportion(
            clean / deploys if deploys else math.nan,
            *wilson(clean, deploys, confidence),
            clean,
            deploys,
            float(deploys),
        ),
    }


def judge(p: Proportion, criterion: float | None) -> str | None:
    """``met`` when the whole interval clears the criterion, ``not met`` when none of it does,
    ``too close to call`` when it straddles (``sim.sequential``); None without a criterion."""
    if criterion is None:
        return None
    return at_least(p.ci_low, p.ci_high, criterion)


def rates_dict(
    rates: dict[str, Proportion],
    definition: str,
    criterion: float | None,
    settled: Settled | None = None,
) -> dict:
    """summary.json's ``success``: every definition, the team's first, each judged; ``sequential``
    says where the sequential rule stopped on the team's definition (None: one look)."""
    return {
        "definition": definition,
        "criterion": criterion,
        "by_definition": {
            name: {**rates[name].as_dict(), "criterion": judge(rates[name], criterion)}
            for name in sorted(rates, key=lambda n: n != definition)
        },
        "sequential": None if settled is None else settled.as_dict(),
    }


HOURS_A_YEAR = 24 * 365

# Past this many points the N-fold convolution is replaced by its normal approximation.
MAX_CONVOLUTION = 1 << 22


@dataclass(frozen=True)
class Observation:
    """An observed count of failed starts against the model's failed starts per deploy."""

    observed: int
    at_least: bool
    per_deploy: float  # mean failed starts per simulated deploy
    per_deploy_low: float
    per_deploy_high: float
    deploys: int  # simulated deploys
    deploys_per_hour: float | None
    window_deploys: int | None
    p_at_least: float | None  # P(window's failures ≥ observed) under the model
    p_at_most: float | None
    window_p025: float | None  # the window's failures: 2.5 % and 97.5 % quantiles
    window_p975: float | None
    verdict: str | None  # consistent / too few failures / too many failures
    confidence: float

    def deploys_implied(self) -> tuple[float, float, float]:
        """Deploys the observed count corresponds to: at the mean, and its interval."""
        return (
            _over(self.observed, self.per_deploy),
            _over(self.observed, self.per_deploy_high),
            _over(self.observed, self.per_deploy_low),
        )

    def as_dict(self) -> dict:
        mid, low, high = self.deploys_implied()
        rate = self.deploys_per_hour
        return {
            "observed": self.observed,
            "at_least": self.at_least,
            "failed_starts_per_deploy": {
                "mean": self.per_deploy,
                "ci_low": self.per_deploy_low,
                "ci_high": self.per_deploy_high,
                "deploys_simulated": self.deploys,
            },
            "deploys_implied": {
                "estimate": _finite(mid),
                "low": _finite(low),
                "high": _finite(high),
            },
            "hours_implied": None
            if rate is None
            else {
                "estimate": _finite(mid / rate),
                "low": _finite(low / rate),
                "high": _finite(high / rate),
            },
            "years_implied": None
            if rate is None
            else {
                "estimate": _finite(mid / rate / HOURS_A_YEAR),
                "low": _finite(low / rate / HOURS_A_YEAR),
                "high": _finite(high / rate / HOURS_A_YEAR),
            },
            "window_deploys": self.window_deploys,
            "window_failures": None
            if self.window_deploys is None
            else {
                "mean": self.per_deploy * self.window_deploys,
                "p2.5": self.window_p025,
                "p97.5": self.window_p975,
            },
            "p_at_least_observed": self.p_at_least,
            "p_at_most_observed": self.p_at_most,
            "verdict": self.verdict,
            "confidence": self.confidence,
        }


def _over(a: float, b: float) -> float:
    return math.inf if b <= 0 else a / b


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def observe(
    failed_per_deploy: np.ndarray,
    observed: int,
    *,
    at_least: bool = True,
    window_deploys: float | None = None,
    deploys_per_hour: float | None = None,
    confidence: float = 0.95,
) -> Observation:
    """Set ``observed`` failed starts against the simulated failed starts per deploy."""
    x = np.asarray(failed_per_deploy, dtype=np.int64)
    n = x.size
    if n == 0:
        raise ValueError("no simulated deploy to compare with")
    mean, low, high = _mean_interval(x, confidence)
    window = None if window_deploys is None else max(1, round(window_deploys))
    p_ge = p_le = q_low = q_high = verdict = None
    if window is not None:
        cdf_below, cdf_at, q_low, q_high = _sum_distribution(x, window, observed)
        p_ge, p_le = 1.0 - cdf_below, cdf_at
        alpha = 1.0 - confidence
        if p_ge < (alpha if at_least else alpha / 2):
            verdict = "too few failures"  # the model rarely fails as often as observed
        elif not at_least and p_le < alpha / 2:
            verdict = "too many failures"
        else:
            verdict = "consistent"
    return Observation(
        observed, at_least, mean, low, high, n, deploys_per_hour, window,
        p_ge, p_le, q_low, q_high, verdict, confidence,
    )  # fmt: skip


def _mean_interval(x: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean failed starts per deploy with a normal interval; with no failure at all, the upper
    bound of a Poisson mean with none seen (−ln(1 − confidence) ÷ deploys, the "rule of three")."""
    n, mean = x.size, float(np.mean(x))
    if not np.any(x):
        return 0.0, 0.0, -math.log(1 - confidence) / n
    z = _z(confidence)
    half = z * float(np.std(x, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return mean, max(0.0, mean - half), mean + half


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _sum_distribution(x: np.ndarray, k: int, observed: int) -> tuple[float, float, float, float]:
    """The total over ``k`` deploys drawn from the simulated ones: P(total < observed),
    P(total ≤ observed) and its 2.5 / 97.5 % quantiles. Exact (the k-fold convolution of the
    simulated counts' distribution, by FFT) unless that is too long; then normal."""
    pmf = np.bincount(x) / x.size
    length = k * (pmf.size - 1) + 1
    if length > MAX_CONVOLUTION:
        d = NormalDist(k * float(np.mean(x)), math.sqrt(k) * float(np.std(x)) or 1e-12)
        return d.cdf(observed - 0.5), d.cdf(observed + 0.5), d.inv_cdf(0.025), d.inv_cdf(0.975)
    size = 1 << (length - 1).bit_length()
    total = np.fft.irfft(np.fft.rfft(pmf, size) ** k, size)[:length]
    total = np.clip(total, 0.0, None)
    total /= total.sum()
    cdf = np.cumsum(total)
    below = float(cdf[observed - 1]) if 0 < observed <= length else float(observed > length)
    at = float(cdf[observed]) if observed < length else 1.0
    return (
        below,
        at,
        float(np.searchsorted(cdf, 0.025)),
        float(np.searchsorted(cdf, 0.975)),
    )
