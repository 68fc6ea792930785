"""Startup probes and the requests they let in: expected failed requests per deploy, exactly.

A computation over the attempt records (docs/model.md, "Startup probes and the requests they let
in"), so both engines, whose records are identical, agree by construction. Each attempt is
**routable** over an interval: with an HTTP probe on a readiness path from its ready time on;
with a TCP probe from the moment its port is bound (``port_bound_s`` after its start, or its ready
time if that comes first) until it exits, or for ever once ready. Requests arrive as a Poisson
stream of ``request_rate_per_s`` over ``[0, horizon_s]`` and each goes to one of the routable
attempts at random (none routable: it waits at the platform for the first one); each warm
instance (``fleet.warm_instances``) is one more, routable and ready from t = 0 to the end. A
request at an attempt not yet ready waits for it, and fails if the attempt exits first (503) or
its wait reaches ``request_timeout_s``.

Between consecutive breakpoints (each interval's ends, ready times, and those less the request
timeout) the routable set and every request's fate are fixed and its wait is linear in its
arrival time, so the midpoint rule integrates each piece exactly: no random draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.distributions import PositiveSeconds, Seconds
from sim.records import Outcome

# Cells of the segment × attempt matrices evaluated at once: bounds the memory (~16 MB of floats).
CHUNK_CELLS = 2_000_000


class Probe(BaseModel):
    """``[probe]``: how the platform decides an instance may take requests, and the requests."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    kind: Literal["http", "tcp"] = "http"  # http: routable once ready (the model's "ready")
    port_bound_s: Seconds = 0.0  # tcp: from an attempt's start until its port is bound
    request_rate_per_s: Annotated[float, Field(ge=0, le=1e6)] = 0.0  # 0: no requests modelled
    request_timeout_s: PositiveSeconds = 300.0  # Cloud Run's default request timeout


@dataclass(frozen=True)
class Requests:
    """Expected requests of one deploy (replication): arrived, failed, served, summed wait (s)."""

    arrived: float
    failed: float
    served: float
    wait_s: float


def routable(
    start_s: np.ndarray, ready_s: np.ndarray, exit_s: np.ndarray, probe: Probe
) -> tuple[np.ndarray, np.ndarray]:
    """Each attempt's routable interval ``[from, until)``: ``ready_s`` is inf for an attempt that
    never becomes ready, ``exit_s`` inf for one that does. Empty intervals have from ≥ until."""
    if probe.kind == "http":
        return ready_s.copy(), np.full_like(ready_s, math.inf)
    return np.minimum(start_s + probe.port_bound_s, ready_s), exit_s.copy()


def expected_requests(
    start_s: np.ndarray,
    ready_s: np.ndarray,
    exit_s: np.ndarray,
    probe: Probe,
    horizon_s: float,
    warm: int = 0,
) -> Requests:
    """The expected requests of one deploy whose attempts started at ``start_s`` and became ready
    at ``ready_s`` (inf: never) or exited at ``exit_s`` (inf: never), beside ``warm`` instances
    routable and ready from t = 0 to the end (docs/model.md, "Entities")."""
    rate, timeout = probe.request_rate_per_s, probe.request_timeout_s
    zeros, never = np.zeros(warm), np.full(warm, math.inf)
    start_s, ready_s, exit_s = (
        np.concatenate([zeros, np.asarray(start_s, dtype=float)]),
        np.concatenate([zeros, np.asarray(ready_s, dtype=float)]),
        np.concatenate([never, np.asarray(exit_s, dtype=float)]),
    )
    u, v = routable(start_s, ready_s, exit_s, probe)
    keep = u < v
    u, v, r = u[keep], v[keep], np.asarray(ready_s, dtype=float)[keep]
    cuts = np.concatenate([[0.0, horizon_s], u, v, r, r - timeout, u - timeout])
    cuts = np.unique(cuts[np.isfinite(cuts) & (cuts >= 0) & (cuts <= horizon_s)])
    a, b = cuts[:-1], cuts[1:]
    failed = served = wait = 0.0
    step = max(1, CHUNK_CELLS // max(u.size, 1))
    for k in range(0, a.size, step):
        m = (a[k : k + step] + b[k : k + step]) / 2
        f, s, w = _fates(m, u, v, r, timeout)
        width = b[k : k + step] - a[k : k + step]
        failed, served, wait = failed + width @ f, served + width @ s, wait + width @ w
    return Requests(
        rate * horizon_s, float(rate * failed), float(rate * served), float(rate * wait)
    )


def _fates(m, u, v, r, timeout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a request arriving at each time ``m``: P(fails), P(served), E[wait · served]."""
    mm = m[:, None]
    on = (u <= mm) & (mm < v)
    n = on.sum(axis=1)
    # Routed at once, uniformly over the routable attempts: served at once if ready, at its
    # ready time if that comes within the timeout, failed otherwise (exit or timeout).
    waits = on & (r > mm) & (r - mm <= timeout)
    now = on & (r <= mm)
    share = 1 / np.maximum(n, 1)
    served_routed = (now.sum(axis=1) + waits.sum(axis=1)) * share
    wait_routed = np.where(waits, r - mm, 0.0).sum(axis=1) * share
    # None routable: it waits at the platform for the first interval to open (at t*), then goes
    # to one of the attempts whose interval opens then.
    ordered = np.append(np.sort(u), math.inf)  # inf: no interval opens any more
    t = ordered[np.searchsorted(ordered, m, side="right")][:, None]
    first = u == t
    ready_then = first & (r <= t) & (t - mm <= timeout)
    later = first & (r > t) & (r - mm <= timeout)
    n0 = np.maximum(first.sum(axis=1), 1)
    served_wait = (ready_then.sum(axis=1) + later.sum(axis=1)) / n0
    wait_wait = (
        np.where(ready_then, t - mm, 0.0).sum(axis=1) + np.where(later, r - mm, 0.0).sum(axis=1)
    ) / n0
    served = np.where(n > 0, served_routed, served_wait)
    return 1 - served, served, np.where(n > 0, wait_routed, wait_wait)


def per_deploy(
    attempts: dict[str, np.ndarray],
    replications: np.ndarray,
    probe: Probe,
    horizon_s: float,
    *,
    warm: int,
    stays_up: bool = False,
) -> list[Requests]:
    """:func:`expected_requests` of each replication in ``replications``, from the attempt
    records (columns of sim.records.ATTEMPT_COLUMNS plus ``replication``), with ``warm``
    instances ready from t = 0 (``fleet.warm_instances``). With ``stays_up`` (a breaker that
    keeps the process up, docs/model.md "Circuit breakers") an instance's tries are one process:
    routable from its first try's start on, never exiting, ready when a try is."""
    rep = np.asarray(attempts["replication"])
    ready = np.asarray(attempts["outcome"]) == Outcome.READY
    start = np.asarray(attempts["start_s"], dtype=float)
    ready_s = np.where(ready, np.asarray(attempts["ready_s"], dtype=float), math.inf)
    ended = np.asarray(attempts["db_init_start_s"], float) + np.asarray(attempts["db_init_s"])
    exit_s = np.where(ready, math.inf, ended)
    if stays_up:
        rep, start, ready_s, exit_s = _processes(rep, attempts["instance"], start, ready_s)
    order = np.argsort(rep, kind="stable")
    bounds = np.searchsorted(rep[order], np.asarray(replications), side="left")
    ends = np.searchsorted(rep[order], np.asarray(replications), side="right")
    out = []
    for lo, hi in zip(bounds, ends, strict=True):
        idx = order[lo:hi]
        out.append(expected_requests(start[idx], ready_s[idx], exit_s[idx], probe, horizon_s, warm))
    return out


def _processes(rep, instance, start, ready_s) -> tuple[np.ndarray, ...]:
    """One row per (replication, instance): its first try's start, its ready time (inf: never),
    and no exit."""
    if not rep.size:
        return rep, start, ready_s, ready_s.copy()
    instance = np.asarray(instance)
    order = np.lexsort((instance, rep))
    rep, instance = rep[order], instance[order]
    new = np.concatenate([[True], (rep[1:] != rep[:-1]) | (instance[1:] != instance[:-1])])
    first = np.flatnonzero(new)
    ready_s = np.minimum.reduceat(ready_s[order], first)
    start = np.minimum.reduceat(start[order], first)
    return rep[first], start, ready_s, np.full_like(ready_s, math.inf)


def summary(requests: list[Requests], confidence: float = 0.95) -> dict[str, object]:
    """The JSON keys of ``startsim simulate``: failed requests per deploy (the mean, its
    interval, and the central ``confidence`` share of deploys) and the served requests' mean
    wait."""
    failed = np.asarray([q.failed for q in requests], dtype=float)
    served = sum(q.served for q in requests)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * failed.std(ddof=1) / math.sqrt(failed.size) if failed.size > 1 else math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(failed, [tail, 1 - tail]) if failed.size else (math.nan, math.nan)
    return {
        "requests_per_deploy": requests[0].arrived if requests else 0.0,
        "requests_failed_per_deploy": {
            "mean": float(failed.mean()) if failed.size else None,
            "ci_low": float(failed.mean() - half) if failed.size > 1 else None,
            "ci_high": float(failed.mean() + half) if failed.size > 1 else None,
            "deploys_low": float(low),
            "deploys_high": float(high),
            "confidence": confidence,
        },
        "request_wait_mean_s": sum(q.wait_s for q in requests) / served if served > 0 else None,
    }
