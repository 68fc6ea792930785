"""The figures of traffic after ready (docs/model.md, "Traffic after ready"): pure functions over
the request records (``Results.requests``: ``replication`` and REQUEST_COLUMNS) and the
replication rows (``Results.fleet``).

Per deploy (one replication is one deploy): the requests, the failed ones (mean and its interval
over replications) and the unrouted ones; the checkout wait's p50 and p99 over the requests served
that arrived within ``traffic.window_s`` of their instance's ready time, pooled over replications,
each with a distribution-free interval from the order statistics; the time from an instance's
ready to its first served request; the connections held at the end; the failed requests by reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np
from scipy.stats import binom

from sim.records import RequestOutcome
from sim.sequential import NOT_MET, at_most
from sim.stats import Proportion, clustered_proportion


@dataclass(frozen=True)
class MeanInterval:
    """A mean over replications with its interval (normal, ``confidence``); None when unknown."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class QuantileInterval:
    """A pooled quantile and its distribution-free interval; None when too few values."""

    value: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class FirstServed:
    """Time from an instance's ready to its first served request, over the instances served."""

    median: float | None
    mean: float | None


@dataclass(frozen=True)
class HeldEnd:
    mean: float | None


@dataclass(frozen=True)
class TrafficFigures:
    """``startsim simulate --json``'s ``traffic`` block, key for key (:meth:`as_dict`)."""

    requests_per_deploy: float
    requests_failed_per_deploy: MeanInterval
    requests_unrouted_per_deploy: float
    requests_unfinished_per_deploy: float
    checkout_wait_p50_s: QuantileInterval
    checkout_wait_p99_s: QuantileInterval
    first_served_s: FirstServed
    connections_held_end: HeldEnd
    failed_by_reason: dict[str, float] = field(default_factory=dict)  # mean per deploy
    window_s: float = 60.0

    def as_dict(self) -> dict:
        return asdict(self)


def per_replication(requests: dict[str, np.ndarray], replications: np.ndarray, outcome=None):
    """Requests per replication (of ``outcome`` only, if given), in the order of
    ``replications`` (a replication without requests counts 0)."""
    reps = np.asarray(requests["replication"])
    if outcome is not None:
        reps = reps[np.asarray(requests["outcome"]) == outcome]
    index = {int(r): i for i, r in enumerate(replications)}
    counts = np.zeros(len(replications))
    for r in reps.tolist():
        counts[index[int(r)]] += 1
    return counts


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> MeanInterval:
    """The mean and its normal interval; no interval from fewer than two values."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return MeanInterval(None, None, None)
    mean = float(values.mean())
    if values.size < 2:
        return MeanInterval(mean, None, None)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * float(values.std(ddof=1)) / math.sqrt(values.size)
    return MeanInterval(mean, mean - half, mean + half)


def quantile_interval(values: np.ndarray, q: float, confidence: float = 0.95) -> QuantileInterval:
    """The ``q`` quantile of ``values`` and a distribution-free interval: the order statistics
    ``x(l) ≤ x(u)`` whose ranks the binomial (n, q) puts outside with at most 1 − confidence.
    A bound that needs a rank beyond the sample is None (too few values for it)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return QuantileInterval(None, None, None)
    tail = (1 - confidence) / 2
    low_rank = int(binom.ppf(tail, n, q))  # x(low_rank) with 1-based ranks
    high_rank = int(binom.ppf(1 - tail, n, q)) + 1
    return QuantileInterval(
        float(np.quantile(x, q)),
        float(x[low_rank - 1]) if low_rank >= 1 else None,
        float(x[high_rank - 1]) if high_rank <= n else None,
    )


def window_waits(requests: dict[str, np.ndarray], window_s: float) -> np.ndarray:
    """Checkout waits of the served requests that arrived within ``window_s`` of their
    instance's ready time."""
    served = np.asarray(requests["outcome"]) == RequestOutcome.SERVED
    since = np.asarray(requests["arrive_s"], float) - np.asarray(requests["ready_s"], float)
    return np.asarray(requests["wait_s"], float)[served & (since <= window_s)]


def first_served_s(requests: dict[str, np.ndarray]) -> np.ndarray:
    """Per (replication, instance) with a served request: its first checkout minus its ready."""
    served = np.asarray(requests["outcome"]) == RequestOutcome.SERVED
    first: dict[tuple[int, int], float] = {}
    for rep, inst, checkout, ready in zip(
        np.asarray(requests["replication"])[served].tolist(),
        np.asarray(requests["instance"])[served].tolist(),
        np.asarray(requests["checkout_s"], float)[served].tolist(),
        np.asarray(requests["ready_s"], float)[served].tolist(),
        strict=True,
    ):
        key = (int(rep), int(inst))
        if key not in first or checkout - ready < first[key]:
            first[key] = checkout - ready
    return np.asarray(list(first.values()), dtype=float)


def failed_by_reason(requests: dict[str, np.ndarray], deploys: int) -> dict[str, float]:
    """Failed requests per deploy, by reason."""
    failed = np.asarray(requests["outcome"]) == RequestOutcome.FAILED
    reasons, counts = np.unique(np.asarray(requests["reason"])[failed], return_counts=True)
    return {str(r): float(c) / deploys for r, c in zip(reasons, counts, strict=True)}


def traffic_figures(
    requests: dict[str, np.ndarray],
    fleet: dict[str, np.ndarray],
    window_s: float,
    confidence: float = 0.95,
) -> TrafficFigures:
    """Every figure of traffic after ready over one run's records and replication rows."""
    replications = np.asarray(fleet["replication"])
    deploys = max(len(replications), 1)
    waits = window_waits(requests, window_s)
    first = first_served_s(requests)
    held = np.asarray(fleet["connections_held_end"], dtype=float)
    return TrafficFigures(
        requests_per_deploy=len(requests["outcome"]) / deploys,
        requests_failed_per_deploy=mean_interval(
            per_replication(requests, replications, RequestOutcome.FAILED), confidence
        ),
        requests_unrouted_per_deploy=float(
            per_replication(requests, replications, RequestOutcome.UNROUTED).sum() / deploys
        ),
        requests_unfinished_per_deploy=float(
            per_replication(requests, replications, RequestOutcome.UNFINISHED).sum() / deploys
        ),
        checkout_wait_p50_s=quantile_interval(waits, 0.50, confidence),
        checkout_wait_p99_s=quantile_interval(waits, 0.99, confidence),
        first_served_s=FirstServed(
            float(np.median(first)) if first.size else None,
            float(first.mean()) if first.size else None,
        ),
        connections_held_end=HeldEnd(float(held.mean()) if held.size else None),
        failed_by_reason=failed_by_reason(requests, deploys),
        window_s=window_s,
    )


def traffic_lines(fig: TrafficFigures) -> list[str]:
    """The figures as a few plain lines for the terminal."""

    def num(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.4g}{unit}"

    def ci(low: float | None, high: float | None, unit: str = "") -> str:
        if low is None and high is None:
            return ""
        return f" [{num(low, unit)}, {num(high, unit)}]"

    f, p50, p99 = fig.requests_failed_per_deploy, fig.checkout_wait_p50_s, fig.checkout_wait_p99_s
    reasons = ", ".join(f"{r} {n:.4g}" for r, n in fig.failed_by_reason.items()) or "none"
    return [
        f"Traffic after ready, per deploy: {fig.requests_per_deploy:.4g} requests, "
        f"{num(f.mean)}{ci(f.ci_low, f.ci_high)} failed (95 %), "
        f"{fig.requests_unrouted_per_deploy:.4g} unrouted, "
        f"{fig.requests_unfinished_per_deploy:.4g} unfinished; failed by reason: {reasons}",
        f"Checkout wait within {fig.window_s:g} s of ready: p50 {num(p50.value, ' s')}"
        f"{ci(p50.ci_low, p50.ci_high, ' s')}, p99 {num(p99.value, ' s')}"
        f"{ci(p99.ci_low, p99.ci_high, ' s')}; first served request "
        f"{num(fig.first_served_s.median, ' s')} after ready (median), "
        f"{num(fig.first_served_s.mean, ' s')} (mean); connections held at the end "
        f"{num(fig.connections_held_end.mean)} (mean)",
    ]


# -- the after-ready cost of a configuration (recommend, docs/recommend.md) ----------------------


NONE_SERVED = "none served"  # no request reached a ready instance: nothing to judge


@dataclass(frozen=True)
class AfterReady:
    """What a configuration costs the first ``window_s`` after each instance is ready, under the
    scenario's traffic: the share of those requests that fail (clustered by deploy), judged
    against ``1 − target`` like a start-up (``verdict``: met, not met, too close to call), and
    the figures the ADR puts beside today's."""

    window_s: float
    rate: str  # the traffic, in words: "0.2 requests/s to the fleet"
    requests_per_deploy: float  # arriving within the window of a ready instance, served or failed
    failed_share: Proportion
    verdict: str
    failed_per_deploy: MeanInterval
    checkout_wait_p50_s: QuantileInterval
    checkout_wait_p99_s: QuantileInterval
    first_served_median_s: float | None
    connections_held_end: float | None
    unrouted_per_deploy: float

    @property
    def breaks(self) -> bool:
        """More of the first minute's requests fail than the target allows, beyond doubt."""
        return self.verdict == NOT_MET

    def as_dict(self) -> dict:
        out = asdict(self)
        out["failed_share"] = self.failed_share.as_dict()
        return out


def traffic_words(traffic) -> str:
    """The scenario's traffic in a few words, for the ADR."""
    if traffic.rate_per_s > 0:
        return f"{traffic.rate_per_s:g} requests/s to the fleet"
    if traffic.rate_per_instance_per_s > 0:
        return f"{traffic.rate_per_instance_per_s:g} requests/s to each ready instance"
    return f"a recorded trace of {len(traffic.trace_s):,} requests"


def after_ready(
    requests: dict[str, np.ndarray],
    fleet: dict[str, np.ndarray],
    traffic,
    alpha: float,
    confidence: float = 0.95,
) -> AfterReady:
    """The after-ready cost of one run: its request records and replication rows, the scenario's
    ``[traffic]``, and the share of failed requests allowed (``1 − target``)."""
    fig = traffic_figures(requests, fleet, traffic.window_s, confidence)
    outcome = np.asarray(requests["outcome"])
    since = np.asarray(requests["arrive_s"], float) - np.asarray(requests["ready_s"], float)
    decided = (outcome == RequestOutcome.SERVED) | (outcome == RequestOutcome.FAILED)
    first = decided & (since <= traffic.window_s)
    failed = outcome[first] == RequestOutcome.FAILED
    share = clustered_proportion(failed, np.asarray(requests["replication"])[first], confidence)
    verdict = at_most(share.ci_low, share.ci_high, alpha) if share.trials else NONE_SERVED
    deploys = max(len(np.asarray(fleet["replication"])), 1)
    return AfterReady(
        window_s=traffic.window_s,
        rate=traffic_words(traffic),
        requests_per_deploy=float(first.sum()) / deploys,
        failed_share=share,
        verdict=verdict,
        failed_per_deploy=fig.requests_failed_per_deploy,
        checkout_wait_p50_s=fig.checkout_wait_p50_s,
        checkout_wait_p99_s=fig.checkout_wait_p99_s,
        first_served_median_s=fig.first_served_s.median,
        connections_held_end=fig.connections_held_end.mean,
        unrouted_per_deploy=fig.requests_unrouted_per_deploy,
    )
