"""Summary statistics over flat records, with intervals that respect how the data were drawn.

Attempts in one replication share a connector, a database and each other's load, so they are not
independent: a replication where the connector scales late fails many attempts at once. Pooling
them as if independent gives intervals far too narrow. ``clustered_proportion`` therefore widens a
Wilson interval by the design effect measured between replications (the ratio estimator's
cluster-robust variance), and assumes the worst (one observation per replication) when no failure
or no success was seen and the correlation cannot be measured, shrinking towards that worst case
when only a few replications saw an event. See ``docs/model.md``.

The same functions summarise measured load campaigns (one "replication" per run), so simulated and
measured summaries line up key by key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

SUMMARY_KEYS = (
    "p_db_init_timeout",
    "p_start_failure",
    "p_first_start_success",
    "never_ready_fraction",
    "fleet_ready_s",
    "restarts_per_instance",
    "peak_db_connections",
    "work_amplification",
    "replications",
    "seed",
)


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
    p = events / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    low = 0.0 if events <= 0 else max(0.0, centre - half)
    high = 1.0 if events >= trials else min(1.0, centre + half)
    return low, high


def clustered_proportion(
    hits: np.ndarray, cluster: np.ndarray, confidence: float = 0.95
) -> Proportion:
    """Proportion of ``hits`` (booleans) with a Wilson interval at the effective sample size."""
    hits = np.asarray(hits, dtype=bool)
    n = hits.size
    if n == 0:
        return Proportion(math.nan, 0.0, 1.0, 0, 0, 0.0)
    k = int(hits.sum())
    p = k / n
    _, idx = np.unique(np.asarray(cluster), return_inverse=True)
    per_k = np.bincount(idx, weights=hits)
    per_n = np.bincount(idx)
    clusters = per_n.size
    n_eff = _effective_trials(p, per_k, per_n, n, clusters)
    low, high = wilson(p * n_eff, n_eff, confidence)
    return Proportion(p, low, high, k, n, n_eff)


def _effective_trials(p, per_k, per_n, n, clusters) -> float:
    """Trials over the design effect, shrunk towards the worst case when events are few.

    The worst case is perfect correlation within a replication (design effect = mean attempts per
    replication: each fleet start counts once). The measured design effect gets the weight of the
    replications that saw both kinds of outcome, the worst case the weight of one, so that one
    event in a thousand replications does not narrow the bound forty-fold over none.
    """
    if clusters < 2:
        return float(n)
    worst = n / clusters
    informative = min(np.count_nonzero(per_k), np.count_nonzero(per_n - per_k))
    if informative == 0:
        return float(clusters)
    var_cluster = clusters / (clusters - 1) * np.sum((per_k - p * per_n) ** 2) / n**2
    measured = max(var_cluster / (p * (1 - p) / n), 1.0)
    deff = (worst + informative * measured) / (1 + informative)
    return float(n / max(deff, 1.0))


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


def summarize(
    attempts: dict[str, np.ndarray],
    fleet: dict[str, np.ndarray],
    *,
    instances: int,
    min_size: int,
    seed: int | None,
    confidence: float = 0.95,
) -> dict:
    """The summary ``startsim simulate --json`` prints (and a load campaign writes)."""
    rep = attempts["replication"]
    outcome = attempts["outcome"]
    first = attempts["attempt"] == 1
    replications = len(fleet["replication"])
    total_instances = instances * replications
    first_ok = int(np.sum(first & (outcome == "ready")))
    ready = int(np.sum(fleet["instances_ready"]))
    needed = total_instances * min_size
    restarts = int(np.sum(attempts["attempt"] > 1))
    return {
        "p_db_init_timeout": clustered_proportion(outcome == "timeout", rep, confidence).as_dict(),
        "p_start_failure": clustered_proportion(outcome != "ready", rep, confidence).as_dict(),
        "p_first_start_success": _ratio(first_ok, total_instances),
        "never_ready_fraction": _ratio(total_instances - ready, total_instances),
        "fleet_ready_s": percentiles(fleet["fleet_ready_s"]),
        "restarts_per_instance": _ratio(restarts, total_instances),
        "peak_db_connections": {
            "p50": _num(np.percentile(fleet["peak_db_connections"], 50)) if replications else None,
            "max": int(np.max(fleet["peak_db_connections"])) if replications else None,
        },
        "work_amplification": _ratio(int(np.sum(fleet["connection_attempts"])), needed),
        "attempts": int(outcome.size),
        "outcomes": {
            k: int(np.sum(outcome == k)) for k in ("ready", "timeout", "rejected", "error")
        },
        "confidence": confidence,
        "replications": replications,
        "seed": seed,
    }


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def _num(x) -> float:
    return float(x)
