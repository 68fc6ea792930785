"""Summary statistics over flat records, with intervals that respect how the data were drawn.

Attempts in one replication share a connector, a database and each other's load, so they are not
independent: a replication where the connector scales late fails many attempts at once. Pooling
them as if independent gives intervals far too narrow. ``clustered_proportion`` therefore gives a
Wilson interval at an effective sample size: trials over a cautious design effect, measured as the
cluster-robust (sandwich) variance over the binomial one, which stays right when failing
replications are the larger ones (failures bring restarts), and shrunk towards the worst case
(each replication counts once) when few replications saw the rarer outcome. Its upper bound is the
largest such bound over the data and every configuration with fewer events, so more failures never
lower it; with no failure each replication counts once; with one attempt per replication it is the
Wilson interval.
See ``docs/model.md`` (statistics) and ``benchmarks/coverage_study.py``.

The same functions summarise measured load campaigns (one "replication" per run), so simulated and
measured summaries line up key by key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sim.errors import UsageError
from sim.records import OUTCOMES, Outcome


@dataclass(frozen=True)
class Proportion:
    estimate: float
    ci_low: float
    ci_high: float
    events: int
    trials: int
    effective_trials: float

    def as_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "events": self.events,
            "trials": self.trials,
            "effective_trials": round(self.effective_trials, 1),
        }


def wilson(events: float, trials: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``trials`` may be fractional)."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    low = 1.0 - float(_wilson_high(1.0 - events / trials, trials, z))
    return max(0.0, low), float(_wilson_high(events / trials, trials, z))


def _wilson_high(p, trials, z):
    """Upper Wilson bound at share ``p`` (arrays allowed); exactly 1 when ``p`` is 1."""
    centre = p + z * z / (2 * trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return np.where(p >= 1, 1.0, np.minimum(1.0, (centre + half) / (1 + z * z / trials)))


def clustered_proportion(
    hits: np.ndarray, cluster: np.ndarray, confidence: float = 0.95
) -> Proportion:
    """Share of ``hits`` (booleans), with an interval for attempts clustered by ``cluster``."""
    hits = np.asarray(hits, dtype=bool)
    if hits.size == 0:
        return Proportion(math.nan, 0.0, 1.0, 0, 0, 0.0)
    cluster = np.asarray(cluster)
    if cluster.dtype.kind in "iu" and cluster.min() >= 0 and cluster.max() < 4 * cluster.size:
        # Replication numbers: counting by label skips np.unique's sort (most of the time).
        trials = np.bincount(cluster)
        events = np.bincount(cluster, weights=hits)[trials > 0]
        return cluster_proportion(events, trials[trials > 0], confidence)
    _, idx = np.unique(cluster, return_inverse=True)
    return cluster_proportion(np.bincount(idx, weights=hits), np.bincount(idx), confidence)


def cluster_proportion(
    events: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> Proportion:
    """The same from counts per cluster: ``events[c]`` of ``trials[c]`` attempts in cluster c.

    The lower bound is the mirror of the upper bound of the other outcome, so the interval of
    1 − p is the mirror of the interval of p. A single cluster gets the plain Wilson interval.
    """
    events = np.asarray(events, dtype=np.int64)
    trials = np.asarray(trials, dtype=np.int64)
    if np.any(events < 0) or np.any(events > trials):
        raise ValueError(f"events per cluster must lie in [0, trials]: {events} of {trials}")
    n, k = int(trials.sum()), int(events.sum())
    if n == 0:
        return Proportion(math.nan, 0.0, 1.0, 0, 0, 0.0)
    if trials.size < 2:
        # One replication (a load campaign): no spread between replications to measure.
        return Proportion(k / n, *wilson(k, n, confidence), k, n, float(n))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    high, n_eff = _upper_bound(events, trials, z)
    low = 1.0 - _upper_bound(trials - events, trials, z)[0]
    return Proportion(k / n, max(0.0, low), high, k, n, n_eff)


def _upper_bound(events: np.ndarray, trials: np.ndarray, z: float) -> tuple[float, float]:
    """Largest Wilson bound over the data and every sub-configuration with fewer events.

    Taking the largest is what makes the bound monotone: adding an event only adds
    sub-configurations. The design effect grows with Σ e_c² and falls with Σ e_c m_c
    (:func:`design_effect_bound`), so for each count ``j`` one candidate built from the largest
    Σ e_c² (events from the fullest clusters first) and the smallest Σ e_c m_c (events in the
    smallest clusters first) bounds every sub-configuration with ``j`` events; for equal clusters
    it is the most clustered one itself. Only the ``j`` whose bound at the largest possible design
    effect could beat the data's own are tried. Returns the bound and the data's effective trials.
    """
    sizes = trials.astype(float)
    n, squares, largest = float(sizes.sum()), float(sizes @ sizes), float(sizes.max())
    hit = events > 0
    e, m = events[hit].astype(float), sizes[hit]
    deff = design_effect_bound(e.sum(), e @ e, e @ m, n, squares, largest)
    own = float(_wilson_high(e.sum() / n, n / deff, z))
    # Shares whose Wilson bound at the largest design effect is below ``own``: ``own`` inverted.
    below = own - z * math.sqrt(own * (1.0 - own) * largest / n)
    j = np.arange(max(0.0, math.floor(n * below) - 1.0), e.sum())
    fullest = np.sort(e)[::-1]
    whole, rest, _ = _fill(fullest, fullest, j)
    event_squares = whole + rest * rest
    by_size = np.argsort(m, kind="stable")
    whole, rest, c = _fill(e[by_size], m[by_size], j)
    least_cross = whole + rest * m[by_size][c]
    deffs = design_effect_bound(j, event_squares, least_cross, n, squares, largest)
    bounds = _wilson_high(j / n, n / deffs, z)
    return max(own, float(bounds.max(initial=0.0))), n / float(deff)


def _fill(counts: np.ndarray, weights: np.ndarray, j: np.ndarray):
    """``j`` events (fewer than ``counts`` hold in all) filling clusters in the given order, each
    up to its ``counts``: Σ e_c w_c over the clusters filled whole, the events left over and the
    index of the cluster that takes them."""
    filled = np.concatenate(([0.0], np.cumsum(counts)))
    total = np.concatenate(([0.0], np.cumsum(counts * weights)))
    c = np.searchsorted(filled, j, side="right") - 1
    return total[c], j - filled[c], c


def design_effect_bound(events, event_squares, cross, trials, squares, largest):
    """A cautious design effect from the events per cluster ``e_c`` of clusters of ``m_c``.

    ``event_squares`` is Σ e_c², ``cross`` Σ e_c m_c, ``squares`` Σ m_c², ``largest`` max m_c.
    The measured effect is the ratio estimator's cluster-robust (sandwich) variance over the
    binomial one, Σ (e_c − p m_c)² / (n p (1 − p)), which holds whatever the cluster sizes, also
    when failing clusters are the larger ones (restarts); it never exceeds ``largest``. It is
    shrunk towards the worst case of size-blind correlation (ρ = 1, each cluster counts once,
    Σ m_c² / n) or the measured one if larger, the worst case weighted as one cluster and the
    estimate as the effective number of clusters holding the rarer outcome (k² / Σ e_c², or the
    same for the other outcome); with no event it is the worst case. The result grows with
    ``event_squares`` and falls with ``cross``, which the monotone bound relies on.
    """
    events = np.asarray(events, dtype=float)
    worst = squares / trials
    p = events / trials
    spread = np.maximum(trials * p * (1 - p), 1e-300)
    robust = event_squares - 2 * p * cross + p * p * squares  # Σ (e_c − p m_c)²
    measured = np.clip(robust / spread, 1.0, largest)
    other_squares = squares - 2 * cross + event_squares  # Σ (m_c − e_c)²
    informative = np.minimum(
        events**2 / np.maximum(event_squares, 1.0),
        (trials - events) ** 2 / np.maximum(other_squares, 1.0),
    )
    prior = np.maximum(worst, measured)
    return np.clip((prior + informative * measured) / (1.0 + informative), 1.0, largest)


def percentiles(values: np.ndarray, qs=(50, 95, 99)) -> dict[str, float | None]:
    """Percentiles where ``inf`` (never happened) is a legal value; JSON gets ``None`` for it."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {f"p{q}": None for q in qs}
    out = {}
    for q in qs:
        v = float(np.percentile(values, q, method="inverted_cdf"))
        out[f"p{q}"] = None if math.isinf(v) else v
    return out


@dataclass(frozen=True)
class Summary:
    """What ``startsim simulate`` reports of one set of runs (and a load campaign of its own).
    Proportions stay :class:`Proportion` objects; ``as_dict`` is the JSON edge."""

    p_db_init_timeout: Proportion
    p_start_failure: Proportion
    p_first_start_success: float | None
    never_ready_fraction: float | None
    fleet_ready_s: dict[str, float | None]  # p50, p95, p99; None: some run never got ready
    restarts_per_instance: float | None
    peak_db_connections_p50: float | None
    peak_db_connections_max: int | None
    work_amplification: float | None
    attempts: int
    outcomes: dict[str, int]
    confidence: float
    replications: int
    seed: int | None

    def as_dict(self) -> dict:
        return {
            "p_db_init_timeout": self.p_db_init_timeout.as_dict(),
            "p_start_failure": self.p_start_failure.as_dict(),
            "p_first_start_success": self.p_first_start_success,
            "never_ready_fraction": self.never_ready_fraction,
            "fleet_ready_s": dict(self.fleet_ready_s),
            "restarts_per_instance": self.restarts_per_instance,
            "peak_db_connections": {
                "p50": self.peak_db_connections_p50,
                "max": self.peak_db_connections_max,
            },
            "work_amplification": self.work_amplification,
            "attempts": self.attempts,
            "outcomes": dict(self.outcomes),
            "confidence": self.confidence,
            "replications": self.replications,
            "seed": self.seed,
        }


def summarize(
    attempts: dict[str, np.ndarray],
    fleet: dict[str, np.ndarray],
    *,
    instances: int,
    min_size: int,
    seed: int | None,
    confidence: float = 0.95,
) -> Summary:
    """The summary of attempt and fleet records (simulated or measured)."""
    rep = attempts["replication"]
    outcome = attempts["outcome"]
    first = attempts["attempt"] == 1
    replications = len(fleet["replication"])
    total_instances = instances * replications
    first_ok = int(np.sum(first & (outcome == Outcome.READY)))
    ready = int(np.sum(fleet["instances_ready"]))
    restarts = int(np.sum(attempts["attempt"] > 1))
    peaks = fleet["peak_db_connections"]
    return Summary(
        p_db_init_timeout=clustered_proportion(outcome == Outcome.TIMEOUT, rep, confidence),
        p_start_failure=clustered_proportion(outcome != Outcome.READY, rep, confidence),
        p_first_start_success=_ratio(first_ok, total_instances),
        never_ready_fraction=_ratio(total_instances - ready, total_instances),
        fleet_ready_s=percentiles(fleet["fleet_ready_s"]),
        restarts_per_instance=_ratio(restarts, total_instances),
        peak_db_connections_p50=float(np.percentile(peaks, 50)) if replications else None,
        peak_db_connections_max=int(np.max(peaks)) if replications else None,
        work_amplification=_counted_ratio(fleet["connection_attempts"], total_instances * min_size),
        attempts=int(outcome.size),
        outcomes={k.value: int(np.sum(outcome == k)) for k in OUTCOMES},
        confidence=confidence,
        replications=replications,
        seed=seed,
    )


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _counted_ratio(counts: np.ndarray, b: float) -> float | None:
    """A measured counter's total over ``b``; None when a record did not measure it (NaN)."""
    total = float(np.sum(counts))
    return None if math.isnan(total) else _ratio(int(total), b)


def check_confidence(confidence: float) -> None:
    """The one check of a confidence level, for every command and function that takes one."""
    if not 0 < confidence < 1:
        raise UsageError("must be between 0 and 1 exclusive (e.g. 0.95)", "confidence", confidence)
