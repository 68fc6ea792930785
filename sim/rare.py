"""Rare start failures by importance sampling over the connector's scale-up delay.

A failure near 1 in 10,000 attempts comes from a run whose scale-outs all came late. Plain Monte
Carlo waits for such runs; importance sampling draws them more often and weighs each replication
by its likelihood ratio. The fast engine tilts every ``scale_up_delay_s`` draw's uniform towards
the distribution's upper end (proposal density θ e^(θu) / (e^θ − 1) on (0, 1), see
:mod:`sim.fast.draws`) and returns each replication's log weight. With ``F_r`` failed attempts,
``A_r`` attempts and weight ``w_r`` in replication ``r``, the share of attempts that fail is
estimated by ``Σ w F / Σ w A`` (unbiased numerator and denominator: the ratio of expectations the
plain share estimates), its variance by the delta method over replications, and the effective
sample size by Kish's ``(Σ w)² / Σ w²``. θ = 0 is plain Monte Carlo, with the same formulas.

The tilt is chosen by a pilot: a few θ on a few hundred replications each, keeping the one with
the smallest variance per replication (the one that needs fewest replications for a given width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sim.errors import UsageError
from sim.scenario import Scenario

TILTS = (0.0, 2.0, 4.0, 6.0, 8.0)
PILOT_REPLICATIONS = 400
ROLE = "scale_up"


@dataclass(frozen=True)
class RareEstimate:
    """A share of failed attempts, its interval, and how it was estimated."""

    estimator: str  # "importance sampling (scale_up θ=…)" or "plain Monte Carlo"
    tilt: float
    estimate: float
    ci_low: float
    ci_high: float
    replications: int
    effective_replications: float  # Kish's effective sample size of the weights
    confidence: float

    @property
    def relative_half_width(self) -> float:
        return math.inf if self.estimate == 0 else (self.ci_high - self.ci_low) / 2 / self.estimate

    def as_dict(self) -> dict:
        return {
            "estimator": self.estimator,
            "tilt": self.tilt,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "replications": self.replications,
            "effective_replications": self.effective_replications,
            "relative_half_width": self.relative_half_width,
            "confidence": self.confidence,
        }


def weighted_runs(sc: Scenario, replications: int, seed: int, tilt: float):
    """Per replication: failed attempts, attempts and weight, from the fast engine."""
    from sim import fast

    attempts, fleet = fast.run_chunk(sc, seed, range(replications), {ROLE: tilt} if tilt else None)
    index = np.searchsorted(fleet["replication"], attempts["replication"])
    failed = np.bincount(index, attempts["outcome"] != "ready", replications)
    total = fleet["attempts"].astype(float)
    log_w = fleet.get("log_weight", np.zeros(replications))
    return failed, total, np.exp(log_w)


def ratio_estimate(failed, total, weight, confidence: float) -> tuple[float, float, float]:
    """``Σ w F / Σ w A``, its delta-method standard error, and Kish's effective size."""
    n = len(failed)
    den = float(np.sum(weight * total))
    p = float(np.sum(weight * failed)) / den if den else 0.0
    resid = weight * (failed - p * total)
    se = math.sqrt(n / max(n - 1, 1) * float(np.sum(resid**2))) / den if den else math.inf
    ess = float(np.sum(weight)) ** 2 / float(np.sum(weight**2))
    return p, se, ess


def best_tilt(sc: Scenario, seed: int, pilot: int = PILOT_REPLICATIONS) -> float:
    """The θ of ``TILTS`` whose pilot run has the smallest relative variance per replication."""
    best, best_cost = 0.0, math.inf
    for theta in TILTS:
        failed, total, weight = weighted_runs(sc, pilot, seed + 1, theta)
        p, se, _ = ratio_estimate(failed, total, weight, 0.95)
        if p > 0 and (se / p) ** 2 < best_cost:
            best, best_cost = theta, (se / p) ** 2
    return best


def estimate_failure(
    sc: Scenario,
    replications: int,
    seed: int = 0,
    confidence: float = 0.95,
    tilt: float | None = None,
) -> RareEstimate:
    """P(a start attempt fails), by importance sampling over the scale-up delay (``tilt`` None:
    chosen by a pilot; 0: plain Monte Carlo)."""
    if replications < 2:
        raise UsageError("must be at least 2", "replications", replications)
    if not 0 < confidence < 1:
        raise UsageError("must be between 0 and 1 exclusive (e.g. 0.95)", "confidence", confidence)
    from sim.fast.draws import invertible

    if not invertible(sc.connector.scale_up_delay_s):
        theta = 0.0  # a constant (or gamma) delay is not drawn by an inverse CDF: nothing to tilt
    else:
        theta = best_tilt(sc, seed) if tilt is None else float(tilt)
    failed, total, weight = weighted_runs(sc, replications, seed, theta)
    p, se, ess = ratio_estimate(failed, total, weight, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    name = f"importance sampling ({ROLE} θ={theta:g})" if theta else "plain Monte Carlo"
    return RareEstimate(
        estimator=name,
        tilt=theta,
        estimate=p,
        ci_low=max(0.0, p - z * se),
        ci_high=min(1.0, p + z * se),
        replications=replications,
        effective_replications=ess,
        confidence=confidence,
    )
