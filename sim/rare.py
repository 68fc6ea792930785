"""Rare start failures by importance sampling over the connector's first scale-out delays.

A failure near 1 in 10,000 attempts comes from a run whose first scale-out came late. Plain Monte
Carlo waits for such runs; importance sampling draws them more often and weighs each replication
by its likelihood ratio. The proposal is a defensive mixture (Hesterberg 1995): a share ``mix``
of replications draws the first ``draws`` scale-up delays from uniforms tilted towards the
distribution's upper end (density θ e^(θv) / (e^θ − 1) on (0, 1), :func:`sim.streams.tilted`),
the rest draw as usual. A replication's weight is then

    w = 1 / ((1 − mix) + mix · e^L),   L = K log(θ / (e^θ − 1)) + θ S,

with ``K`` the tilted draws it made and ``S`` the sum of their uniforms, whichever component drew
them; so no weight exceeds 1 / (1 − mix), and the estimator cannot degenerate the way tilting every
scale-up draw did (effective size 94 of 10,000 near 1e-4: later scale-outs, which rarely matter,
multiplied the ratio's spread). Tilting only the first delays keeps the ratio's spread small.

With ``F_r`` failed attempts, ``A_r`` attempts and weight ``w_r`` in replication ``r``, the share of
attempts that fail is ``Σ w F / Σ w A`` (the ratio of expectations the plain share estimates), its
variance by the delta method over replications, and the effective sample size Kish's
``(Σ w)² / Σ w²``. θ = 0 is plain Monte Carlo with the same formulas. The proposal (θ, draws) is
chosen by a pilot run of each candidate, keeping the smallest relative variance per replication.
The interval is normal, so it is only offered when enough replications saw a failure
(``MIN_EVENT_REPLICATIONS``); below that, ``reliable`` is False and callers must not use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sim.engines import choose
from sim.errors import UsageError
from sim.runner import Executor, Serial, chunks, run_chunk
from sim.scenario import Scenario
from sim.streams import Tilt, invertible

# Candidate proposals (θ, delays tilted); θ = 0 is plain Monte Carlo.
PROPOSALS = ((0.0, 0), (6.0, 1), (10.0, 1), (15.0, 1))
MIX = 0.5  # share of replications drawn tilted: weights never exceed 2
PILOT_REPLICATIONS = 500
MIN_EVENT_REPLICATIONS = 30  # failing replications needed before the normal interval is offered
ROLE = "scale_up"
EVENTS = {"failed": "failed_attempts", "timeout": "timed_out_attempts"}


@dataclass(frozen=True)
class RareEstimate:
    """A share of failed (or timed-out) attempts, its interval, and how it was estimated."""

    estimator: str  # "importance sampling (…)" or "plain Monte Carlo"
    tilt: float
    tilted_draws: int
    estimate: float
    ci_low: float
    ci_high: float
    replications: int
    effective_replications: float  # Kish's effective sample size of the weights
    event_replications: int  # replications with at least one such attempt
    confidence: float
    event: str = "failed"

    @property
    def relative_half_width(self) -> float:
        return math.inf if self.estimate == 0 else (self.ci_high - self.ci_low) / 2 / self.estimate

    @property
    def reliable(self) -> bool:
        """Enough failing replications for the normal interval to mean what it says."""
        return self.event_replications >= MIN_EVENT_REPLICATIONS

    def as_dict(self) -> dict:
        return {
            "estimator": self.estimator,
            "event": self.event,
            "tilt": self.tilt,
            "tilted_draws": self.tilted_draws,
            "mixture": MIX if self.tilt else 0.0,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "replications": self.replications,
            "effective_replications": round(self.effective_replications, 1),
            "event_replications": self.event_replications,
            "reliable": self.reliable,
            "relative_half_width": self.relative_half_width,
            "confidence": self.confidence,
        }


def weights(tilted_draws: np.ndarray, tilt_sum: np.ndarray, theta: float, mix: float) -> np.ndarray:
    """Each replication's likelihood ratio under the defensive mixture (1 when θ = 0)."""
    if theta == 0:
        return np.ones(len(tilted_draws))
    log_q = tilted_draws * math.log(theta / math.expm1(theta)) + theta * tilt_sum
    return 1.0 / ((1.0 - mix) + mix * np.exp(log_q))


def weighted_runs(
    sc: Scenario,
    replications: int,
    seed: int,
    theta: float,
    draws: int,
    event: str = "failed",
    executor: Executor | None = None,
    engine: str = "reference",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replication: attempts with the event, attempts, and weight, from ``engine`` (split
    across the executor's workers; the same numbers however split, and on either engine)."""
    ex = executor or Serial()
    tilt = Tilt(ROLE, theta, draws, MIX) if theta else None
    pieces = chunks(replications, ex.workers)
    futures = [ex.submit(run_chunk, sc, seed, p, engine, False, tilt) for p in pieces]
    parts = [f.result()[1] for f in futures]
    fleet = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    hits = fleet[EVENTS[event]].astype(float)
    total = fleet["attempts"].astype(float)
    if tilt is None:
        return hits, total, np.ones(replications)
    return hits, total, weights(fleet["tilt_draws"], fleet["tilt_sum"], theta, MIX)


def ratio_estimate(failed, total, weight, confidence: float) -> tuple[float, float, float]:
    """``Σ w F / Σ w A``, its delta-method standard error, and Kish's effective size."""
    n = len(failed)
    den = float(np.sum(weight * total))
    p = float(np.sum(weight * failed)) / den if den else 0.0
    resid = weight * (failed - p * total)
    se = math.sqrt(n / max(n - 1, 1) * float(np.sum(resid**2))) / den if den else math.inf
    ess = float(np.sum(weight)) ** 2 / float(np.sum(weight**2))
    return p, se, ess


def best_proposal(
    sc: Scenario,
    seed: int,
    pilot: int = PILOT_REPLICATIONS,
    event: str = "failed",
    executor: Executor | None = None,
    engine: str = "reference",
) -> tuple[float, int]:
    """The (θ, draws) of ``PROPOSALS`` whose pilot has the smallest relative variance per
    replication (plain Monte Carlo when no pilot sees the event)."""
    best, best_cost = (0.0, 0), math.inf
    for theta, draws in PROPOSALS:
        hits, total, weight = weighted_runs(
            sc, pilot, seed + 1, theta, draws, event, executor, engine
        )
        p, se, _ = ratio_estimate(hits, total, weight, 0.95)
        if p > 0 and (se / p) ** 2 < best_cost:
            best, best_cost = (theta, draws), (se / p) ** 2
    return best


def estimate_failure(
    sc: Scenario,
    replications: int,
    seed: int = 0,
    confidence: float = 0.95,
    tilt: float | None = None,
    draws: int = 1,
    event: str = "failed",
    executor: Executor | None = None,
    engine: str = "reference",
) -> RareEstimate:
    """P(a start attempt fails) (``event="timeout"``: reaches its deadline), by importance
    sampling over the first ``draws`` scale-up delays (``tilt`` None: proposal chosen by a
    pilot; 0: plain Monte Carlo). ``engine``: the readable one by default, like the rest of the
    library; callers that want speed say ``"fast"`` (or ``"auto"``, which takes it from 4,000
    instance starts), and get the same numbers (tests/test_rare.py)."""
    engine = choose(engine, sc, replications)
    if replications < 2:
        raise UsageError("must be at least 2", "replications", replications)
    if not 0 < confidence < 1:
        raise UsageError("must be between 0 and 1 exclusive (e.g. 0.95)", "confidence", confidence)
    if event not in EVENTS:
        raise UsageError(f"must be one of {', '.join(EVENTS)}", "event", event)
    if not invertible(sc.connector.scale_up_delay_s):
        theta = 0.0  # a constant (or gamma) delay is not drawn by an inverse CDF: nothing to tilt
    elif tilt is None:
        theta, draws = best_proposal(sc, seed, event=event, executor=executor, engine=engine)
    else:
        theta = float(tilt)
    draws = draws if theta else 0
    hits, total, weight = weighted_runs(
        sc, replications, seed, theta, draws, event, executor, engine
    )
    p, se, ess = ratio_estimate(hits, total, weight, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    name = (
        f"importance sampling (defensive mixture {MIX:g}, first {draws} {ROLE} θ={theta:g})"
        if theta
        else "plain Monte Carlo"
    )
    return RareEstimate(
        estimator=name,
        tilt=theta,
        tilted_draws=draws,
        estimate=p,
        ci_low=max(0.0, p - z * se),
        ci_high=min(1.0, p + z * se),
        replications=replications,
        effective_replications=ess,
        event_replications=int(np.sum(hits > 0)),
        confidence=confidence,
        event=event,
    )
