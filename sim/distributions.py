"""Duration distributions: small validated objects that draw seconds from a numpy Generator.

A scenario writes one as an inline table:
``{ dist = "lognormal", median = 2.0, sigma = 0.3 }``.
Every distribution here is of durations, so none may produce a negative value, and none may
produce one above ``MAX_DURATION_S``: each checks, from its parameters alone, that its draws stay
below it (except with probability under ``TAIL``), so every draw and every sum of draws is finite.
"""

from __future__ import annotations

import math
from functools import cached_property
from statistics import NormalDist
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# About 31,700 years: no start-up phase lasts longer, and sums of such times stay exact to the ms.
MAX_DURATION_S = 1e12
TAIL = 1e-12  # draws may pass a distribution's ``top_s()`` with this probability at most
_Z_TAIL = NormalDist().inv_cdf(1 - TAIL)  # 7.03
MAX_EMPIRICAL_VALUES = 100_000  # more measured values add no precision; each worker gets a copy


def _at_most_max_duration(x: float) -> float:
    if x > MAX_DURATION_S:
        raise ValueError(f"must be at most {MAX_DURATION_S:g} s (about 31,700 years)")
    return x


# Seconds: finite (the models refuse inf and nan), never negative, never absurdly long.
Seconds = Annotated[float, Field(ge=0), AfterValidator(_at_most_max_duration)]
PositiveSeconds = Annotated[float, Field(gt=0), AfterValidator(_at_most_max_duration)]


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _draws_bounded(self) -> _Dist:
        top = self.top_s()
        if not top <= MAX_DURATION_S:
            shown = f"{top:.3g} s" if math.isfinite(top) else "the largest float (inf)"
            raise ValueError(
                f"one draw in {1 / TAIL:.0g} exceeds {shown}; durations must stay below "
                f"{MAX_DURATION_S:g} s (about 31,700 years) so that every draw and sum is finite"
            )
        return self

    def top_s(self) -> float:
        """A value draws pass with probability below ``TAIL`` (inf if that overflows)."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError

    def quantile(self, q: float) -> float:
        """Inverse CDF, used by analytic checks and by the recommender's sanity bounds."""
        raise NotImplementedError


class Constant(_Dist):
    dist: Literal["constant"]
    value: Seconds

    def top_s(self):
        return self.value

    def sample(self, rng, size):
        return np.full(size, self.value)

    def mean(self):
        return self.value

    def quantile(self, q):
        return self.value


class Uniform(_Dist):
    dist: Literal["uniform"]
    low: Seconds
    high: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def top_s(self):
        return self.high

    def sample(self, rng, size):
        return rng.uniform(self.low, self.high, size)

    def mean(self):
        return (self.low + self.high) / 2

    def quantile(self, q):
        return self.low + q * (self.high - self.low)


class Exponential(_Dist):
    dist: Literal["exponential"]
    mean_s: PositiveSeconds = Field(alias="mean")

    def top_s(self):
        return -self.mean_s * math.log(TAIL)

    def sample(self, rng, size):
        return rng.exponential(self.mean_s, size)

    def mean(self):
        return self.mean_s

    def quantile(self, q):
        return -self.mean_s * np.log1p(-q)


class LogNormal(_Dist):
    dist: Literal["lognormal"]
    median: PositiveSeconds
    sigma: Annotated[float, Field(ge=0)]

    def top_s(self):
        log_high = math.log(self.median) + self.sigma * _Z_TAIL
        return math.exp(log_high) if log_high < 709 else math.inf  # 709: exp's float limit

    def sample(self, rng, size):
        return rng.lognormal(np.log(self.median), self.sigma, size)

    def mean(self):
        return self.median * float(np.exp(self.sigma**2 / 2))

    def quantile(self, q):
        return self.median * math.exp(self.sigma * NormalDist().inv_cdf(q))


class Gamma(_Dist):
    dist: Literal["gamma"]
    shape: Annotated[float, Field(gt=0)]
    scale: PositiveSeconds

    def top_s(self):
        # Gamma is sub-gamma with variance k·θ² and scale θ (Boucheron, Lugosi & Massart 2013,
        # §2.4): P(X > kθ + θ·√(2kt) + θt) ≤ e^(−t). Exact to within a factor of about 1.3.
        t = -math.log(TAIL)
        return self.scale * (self.shape + math.sqrt(2 * self.shape * t) + t)

    def sample(self, rng, size):
        return rng.gamma(self.shape, self.scale, size)

    def mean(self):
        return self.shape * self.scale

    def quantile(self, q):
        from scipy.stats import gamma

        return float(gamma.ppf(q, self.shape, scale=self.scale))


class Weibull(_Dist):
    """Weibull(shape k, scale λ): what `startsim calibrate` may fit to measured durations."""

    dist: Literal["weibull"]
    shape: Annotated[float, Field(gt=0)]
    scale: PositiveSeconds

    def top_s(self):
        # P(X > x) = exp(−(x/λ)^k): the tail bound is exact, λ · (−ln TAIL)^(1/k).
        log_top = math.log(self.scale) + math.log(-math.log(TAIL)) / self.shape
        return math.exp(log_top) if log_top < 709 else math.inf

    def sample(self, rng, size):
        return self.scale * rng.weibull(self.shape, size)

    def mean(self):
        return self.scale * math.gamma(1 + 1 / self.shape)

    def quantile(self, q):
        return self.scale * float((-np.log1p(-q)) ** (1 / self.shape))


class Empirical(_Dist):
    """Resamples measured values with replacement (e.g. durations from a load campaign)."""

    dist: Literal["empirical"]
    values: Annotated[list[Seconds], Field(min_length=1, max_length=MAX_EMPIRICAL_VALUES)]

    @cached_property
    def _array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=float)

    def top_s(self):
        return max(self.values)

    def sample(self, rng, size):
        return rng.choice(self._array, size)

    def mean(self):
        return float(np.mean(self.values))

    def quantile(self, q):
        return float(np.quantile(self.values, q, method="inverted_cdf"))


Distribution = Annotated[
    Constant | Uniform | Exponential | LogNormal | Gamma | Weibull | Empirical,
    Field(discriminator="dist"),
]
