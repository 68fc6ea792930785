"""Fitting duration distributions to measurements, censored ones included.

A measured duration is exact, **right-censored** (the attempt was cut off by its deadline: the
duration was at least this long) or **left-censored** (at most this long: a value recorded as 0 at
millisecond resolution, or a scale-out whose start is only bounded). Dropping censored values
biases every fit towards short durations; ``scipy.stats``' ``CensoredData`` keeps them in the
likelihood, and so does everything here.

Each candidate family is fitted by maximum likelihood with the location fixed at 0 (durations
start at 0); families are ranked by AIC; each fit reports its Kolmogorov–Smirnov distance to the
data and a p-value. Parameters carry Wald intervals from the observed information (a numerical
Hessian of the log-likelihood in log-parameters, so the bounds stay positive).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> fit = fit_duration(Sample.exact(rng.lognormal(np.log(2.0), 0.3, 400)))
    >>> fit.chosen_family, round(fit.best.params["median"], 1)
    ('lognormal', 2.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from scipy import stats

EXACT, RIGHT, LEFT = 0, 1, -1  # kinds of observation: value, at least value, at most value
RECORD_RESOLUTION_S = 0.001  # records and logs round durations to the millisecond
FAMILIES = ("lognormal", "gamma", "weibull", "exponential")
MIN_EXACT_FOR_FIT = 3  # fewer exact values than this: too few to fit two parameters


@dataclass(frozen=True)
class Sample:
    """Durations in seconds, each with its kind (``EXACT``, ``RIGHT`` or ``LEFT``)."""

    values: np.ndarray
    kinds: np.ndarray

    @classmethod
    def exact(cls, values) -> Sample:
        values = np.asarray(values, dtype=float)
        return cls(values, np.zeros(values.size, dtype=int))

    @classmethod
    def of(cls, values, right=None, left=None) -> Sample:
        """``values`` with boolean masks of right- and left-censored ones."""
        values = np.asarray(values, dtype=float)
        kinds = np.zeros(values.size, dtype=int)
        if right is not None:
            kinds[np.asarray(right, dtype=bool)] = RIGHT
        if left is not None:
            kinds[np.asarray(left, dtype=bool)] = LEFT
        return cls(values, kinds)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def censored(self) -> int:
        return int(np.sum(self.kinds == RIGHT))

    def resolved(self) -> Sample:
        """Zeros (below the millisecond) become "at most half a millisecond": a density of
        positive durations cannot hold an exact 0."""
        kinds = self.kinds.copy()
        values = self.values.copy()
        zero = (values < RECORD_RESOLUTION_S / 2) & (kinds != RIGHT)
        values[zero], kinds[zero] = RECORD_RESOLUTION_S / 2, LEFT
        return Sample(values, kinds)

    def censored_data(self) -> stats.CensoredData:
        v, k = self.values, self.kinds
        return stats.CensoredData(uncensored=v[k == EXACT], right=v[k == RIGHT], left=v[k == LEFT])


@dataclass(frozen=True)
class FamilyFit:
    """One family's maximum-likelihood fit, in the scenario's parameters (``median``/``sigma``,
    ``shape``/``scale``, ``mean``), with ``intervals`` per parameter."""

    family: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    loglik: float
    aic: float
    ks_stat: float
    ks_p: float

    def distribution(self) -> dict:
        return {"dist": self.family, **{k: _round(v) for k, v in self.params.items()}}


@dataclass(frozen=True)
class DurationFit:
    """Every candidate (best AIC first) and the distribution chosen for the scenario."""

    n: int
    censored: int
    candidates: tuple[FamilyFit, ...]
    chosen: dict
    chosen_family: str
    note: str = ""
    values: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def best(self) -> FamilyFit | None:
        return self.candidates[0] if self.candidates else None

    def quality(self) -> str:
        """One line: what was chosen, on how much data, and how well it fits."""
        cens = f", {self.censored} censored" if self.censored else ""
        if self.best is None:
            return f"{self.chosen_family}; n = {self.n}{cens}; {self.note}".rstrip("; ")
        b = self.best
        others = ", ".join(f"{c.family} {c.aic - b.aic:+.1f}" for c in self.candidates[1:])
        head = f"{self.chosen_family}; n = {self.n}{cens}; KS D = {b.ks_stat:.3f}, p = {b.ks_p:.2g}"
        tail = f"; AIC vs {b.family}: {others}" if others else ""
        return head + tail + (f"; {self.note}" if self.note else "")


def fit_duration(sample: Sample, alpha: float = 0.05) -> DurationFit:
    """Fit every family, rank by AIC, choose the best unless the KS test rejects it at ``alpha``
    (then resample the measurements: ``empirical``). Constant data give ``constant``."""
    n, cens = len(sample), sample.censored
    exact = sample.values[sample.kinds == EXACT]
    if n == 0:
        raise ValueError("no measurement to fit")
    if exact.size and np.ptp(sample.values) <= 2 * RECORD_RESOLUTION_S and cens == 0:
        value = _round(float(np.mean(sample.values)))
        return DurationFit(
            n, 0, (), {"dist": "constant", "value": value}, "constant", "every value equal"
        )
    if exact.size < MIN_EXACT_FOR_FIT:
        return _too_few(sample)
    resolved = sample.resolved()
    fits = [f for f in (_fit_family(name, resolved) for name in FAMILIES) if f is not None]
    fits.sort(key=lambda f: f.aic)
    if not fits:
        return _too_few(sample)
    best = fits[0]
    if best.ks_p < alpha and exact.size >= 20:
        note = f"every family rejected by KS at {alpha:g}: measurements resampled"
        values = [_round(v) for v in sample.values]
        return DurationFit(
            n, cens, tuple(fits), {"dist": "empirical", "values": values}, "empirical", note
        )
    return DurationFit(n, cens, tuple(fits), best.distribution(), best.family, "", sample.values)


def _too_few(sample: Sample) -> DurationFit:
    values = [_round(v) for v in sample.values]
    note = "too few exact values to fit a family: measurements resampled"
    return DurationFit(
        len(sample), sample.censored, (), {"dist": "empirical", "values": values}, "empirical", note
    )


# -- one family ---------------------------------------------------------------------------------

# Scenario parameter names ↔ scipy: lognorm(s=sigma, scale=median), gamma(a=shape, scale),
# weibull_min(c=shape, scale), expon(scale=mean); loc is 0 throughout.
_SCIPY = {
    "lognormal": (stats.lognorm, ("sigma", "median")),
    "gamma": (stats.gamma, ("shape", "scale")),
    "weibull": (stats.weibull_min, ("shape", "scale")),
    "exponential": (stats.expon, ("mean",)),
}


def _frozen(family: str, theta: np.ndarray):
    dist, _ = _SCIPY[family]
    p = np.exp(theta)
    return dist(p[0], scale=p[1]) if p.size == 2 else dist(scale=p[0])


def loglik(family: str, theta: np.ndarray, sample: Sample) -> float:
    """Log-likelihood of log-parameters ``theta``: density of exact values, survival of
    right-censored ones, CDF of left-censored ones."""
    d = _frozen(family, theta)
    v, k = sample.values, sample.kinds
    with np.errstate(all="ignore"):
        total = (
            np.sum(d.logpdf(v[k == EXACT]))
            + np.sum(d.logsf(v[k == RIGHT]))
            + np.sum(d.logcdf(v[k == LEFT]))
        )
    return float(total) if np.isfinite(total) else -math.inf


def _fit_family(family: str, sample: Sample) -> FamilyFit | None:
    dist, names = _SCIPY[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = dist.fit(sample.censored_data(), floc=0)
        except (ValueError, RuntimeError, FloatingPointError):
            return None
    shape_scale = [fitted[0], fitted[2]] if len(names) == 2 else [fitted[1]]
    if not all(np.isfinite(shape_scale)) or min(shape_scale) <= 0:
        return None
    theta = np.log(shape_scale)
    ll = loglik(family, theta, sample)
    if not math.isfinite(ll):
        return None
    params = dict(zip(names, np.exp(theta).tolist(), strict=True))
    intervals = _wald(family, theta, sample, names)
    ks_stat, ks_p = ks_censored(sample, _frozen(family, theta).cdf)
    return FamilyFit(family, params, intervals, ll, 2 * len(names) - 2 * ll, ks_stat, ks_p)


def _wald(family, theta, sample, names, confidence=0.95) -> dict[str, tuple[float, float]]:
    """Intervals from the inverse of the observed information in log-parameters: one per
    parameter, and the median's for every family (delta method on its logarithm)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    h = _hessian(lambda t: -loglik(family, t, sample), theta)
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return {k: (0.0, math.inf) for k in (*names, "median")}
    out = {}
    for i, name in enumerate(names):
        out[name] = _log_interval(theta[i], cov[i, i], z)
    if "median" not in out:
        log_median = lambda t: math.log(_frozen(family, t).median())  # noqa: E731
        grad = _gradient(log_median, theta)
        out["median"] = _log_interval(log_median(theta), float(grad @ cov @ grad), z)
    return out


def _log_interval(log_value: float, var: float, z: float) -> tuple[float, float]:
    if not (np.isfinite(var) and var > 0):
        return 0.0, math.inf
    half = z * math.sqrt(var)
    return float(np.exp(log_value - half)), float(np.exp(log_value + half))


def _gradient(f, x: np.ndarray, step: float = 1e-5) -> np.ndarray:
    eye = np.eye(x.size) * step
    return np.array([(f(x + e) - f(x - e)) / (2 * step) for e in eye])


def _hessian(f, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    n = x.size
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * step, np.eye(n)[j] * step
            h[i, j] = h[j, i] = (
                f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
            ) / (4 * step * step)
    return h


def ks_censored(sample: Sample, cdf) -> tuple[float, float]:
    """KS distance between the data and a fitted CDF, and its p-value.

    The data's CDF is the Kaplan–Meier estimate, which keeps right-censored attempts in the
    risk set until they were cut off (with none, it is the empirical CDF). The p-value is
    Kolmogorov's for ``n``: with parameters fitted to the same data it is too high (Lilliefors),
    and with censoring it is approximate, so a rejection is firm and an acceptance is lenient."""
    v, k = sample.values, sample.kinds
    order = np.lexsort((k == RIGHT, v))  # at a tie, exact values leave the risk set first
    v, k = v[order], k[order]
    n = v.size
    at_risk = n - np.arange(n)
    survival = np.cumprod(np.where(k != RIGHT, 1.0 - 1.0 / at_risk, 1.0))
    events = k != RIGHT
    if not events.any():
        return 0.0, 1.0
    after = 1.0 - survival[events]
    before = np.concatenate(([0.0], 1.0 - survival[:-1]))[events]
    model = cdf(v[events])
    d = float(max(np.max(after - model), np.max(model - before), 0.0))
    return d, float(stats.kstwo.sf(d, n))


def _round(x: float) -> float:
    """Six significant digits: what a scenario file needs, without float noise."""
    return float(f"{x:.6g}")
