"""Duration distributions: small validated objects that draw seconds from a numpy Generator.

A scenario writes one as an inline table:
``{ dist = "lognormal", median = 2.0, sigma = 0.3 }``.
Every distribution here is of durations, so none may produce a negative value.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError

    def quantile(self, q: float) -> float:
        """Inverse CDF, used by analytic checks and by the recommender's sanity bounds."""
        raise NotImplementedError


class Constant(_Dist):
    dist: Literal["constant"]
    value: NonNegativeFloat

    def sample(self, rng, size):
        return np.full(size, self.value)

    def mean(self):
        return self.value

    def quantile(self, q):
        return self.value


class Uniform(_Dist):
    dist: Literal["uniform"]
    low: NonNegativeFloat
    high: NonNegativeFloat

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def sample(self, rng, size):
        return rng.uniform(self.low, self.high, size)

    def mean(self):
        return (self.low + self.high) / 2

    def quantile(self, q):
        return self.low + q * (self.high - self.low)


class Exponential(_Dist):
    dist: Literal["exponential"]
    mean_s: PositiveFloat = Field(alias="mean")

    def sample(self, rng, size):
        return rng.exponential(self.mean_s, size)

    def mean(self):
        return self.mean_s

    def quantile(self, q):
        return -self.mean_s * np.log1p(-q)


class LogNormal(_Dist):
    dist: Literal["lognormal"]
    median: PositiveFloat
    sigma: NonNegativeFloat

    def sample(self, rng, size):
        return rng.lognormal(np.log(self.median), self.sigma, size)

    def mean(self):
        return self.median * float(np.exp(self.sigma**2 / 2))

    def quantile(self, q):
        from scipy.stats import norm

        return self.median * float(np.exp(self.sigma * norm.ppf(q)))


class Gamma(_Dist):
    dist: Literal["gamma"]
    shape: PositiveFloat
    scale: PositiveFloat

    def sample(self, rng, size):
        return rng.gamma(self.shape, self.scale, size)

    def mean(self):
        return self.shape * self.scale

    def quantile(self, q):
        from scipy.stats import gamma

        return float(gamma.ppf(q, self.shape, scale=self.scale))


class Empirical(_Dist):
    """Resamples measured values with replacement (e.g. durations from a load campaign)."""

    dist: Literal["empirical"]
    values: Annotated[list[NonNegativeFloat], Field(min_length=1)]

    def sample(self, rng, size):
        return rng.choice(np.asarray(self.values, dtype=float), size)

    def mean(self):
        return float(np.mean(self.values))

    def quantile(self, q):
        return float(np.quantile(self.values, q, method="inverted_cdf"))


Distribution = Annotated[
    Constant | Uniform | Exponential | LogNormal | Gamma | Empirical,
    Field(discriminator="dist"),
]
