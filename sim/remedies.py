"""What a team changes when the path, not a number, is at fault: the egress route, a retry inside
the phase that fails, and an HTTP startup probe. Each is simulated like any other change; each
says how it is applied in the team's own platform and code, and what it costs.

Why here and not in :mod:`sim.sizing`: these are not values found by a search but the remedies a
path fault calls for (docs/model.md, "Path faults"; docs/recommend.md, "When the path fails
connections"). Nothing here touches files or terminals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim import probes
from sim.decision import Change
from sim.records import Outcome
from sim.runner import Results
from sim.scenario import Scenario
from sim.stack import DIRECT_HOW, express
from sim.stats import Proportion

EGRESS, RETRY = "egress", "retry"
# The retry offered: a pause of 1 s, jittered ±50 % (uniform on 0.5–1.5 s), within the phase's
# own bound. An assumption: long enough for a path that drops a burst of connections to recover,
# short against a 10 s bound; the decision simulates it like any other value.
RETRY_S, RETRY_JITTER = 1.0, 0.5


def path_changes(sc: Scenario) -> list[Change]:
    """The changes a faulted path calls for: the route back (which ends the fault), and a retry
    inside the phase that fails (which helps only when some connections get through)."""
    if sc.path.fault == "none":
        return []
    name = "VPC egress private-ranges-only + Cloud NAT"
    out = [Change(EGRESS, name, {"path.fault": "none"}, EGRESS_HOW)]
    retry = retry_change(sc)
    if retry is not None:
        out.append(retry)
    return out


DIRECT_EGRESS = "direct_egress"


def direct_egress_change(sc: Scenario) -> Change | None:
    """Direct VPC egress in place of the connector (docs/model.md, "Direct VPC egress"), the ADR's
    alternative to a connector floor: offered when the connector is what a start-up burst waits
    for, i.e. the fleet opens more connections at once than its minimum instances set up."""
    cx, fleet = sc.connector, sc.fleet
    if sc.egress.direct or fleet.instances * max(sc.pool.min_size, 1) <= (
        cx.setups_per_instance * cx.min_instances
    ):
        return None
    over = express(sc.stack, sc.platform, {"egress.kind": "direct"})
    return Change(DIRECT_EGRESS, "move to Direct VPC egress", over, DIRECT_HOW)


def retry_change(sc: Scenario) -> Change | None:
    """A retry with a jittered backoff for the connections of every database-init phase that
    fails the start without one (the pool's retry when there are no phases); None when they all
    retry already."""
    phases = sc.startup.phases
    pool = {"pool.retry_backoff_s": RETRY_S, "pool.retry_jitter": RETRY_JITTER}
    if not phases:
        if sc.pool.retry_backoff_s > 0:
            return None
        return Change(RETRY, f"retry the pool start ({RETRY_S:g} s ± 50 %)", pool, _retry_how())
    rows = [p.model_dump(mode="json", exclude_defaults=True) for p in phases]
    over: dict[str, Any] = {}
    names, bounds = [], []
    for row, phase in zip(rows, phases, strict=True):
        if not phase.db_init or phase.on_failure != "exit":
            continue  # before database init, or its failure is ignored: nothing to cure
        if phase.pool and sc.pool.retry_backoff_s == 0:
            over |= pool
        elif not phase.pool and phase.connections and phase.retry_backoff_s == 0:
            row |= {"retry_backoff_s": RETRY_S, "retry_jitter": RETRY_JITTER}
            over[PHASES] = rows
        else:
            continue
        names.append(phase.name)
        bounds.append(phase.deadline_s)
    if not names:
        return None
    name = f"retry {', '.join(names)} ({RETRY_S:g} s ± 50 %)"
    return Change(RETRY, name, over, _retry_how(next((b for b in bounds if b), None)))


PHASES = "startup.phases"


def _retry_how(bound_s: float | None = None) -> str:
    stop = f"{bound_s:g}" if bound_s else "DB_INIT_TIMEOUT_S"
    return RETRY_HOW.format(
        stop=stop, low=RETRY_S * (1 - RETRY_JITTER), high=RETRY_S * (1 + RETRY_JITTER)
    )


EGRESS_HOW = """\
Route only private ranges through the connector, and give the rest of the egress a NAT:

```sh
gcloud run services update SERVICE --region REGION --vpc-egress=private-ranges-only
gcloud compute routers create nat-router --network NETWORK --region REGION
gcloud compute routers nats create nat-config --router nat-router --region REGION \\
    --auto-allocate-nat-external-ips --nat-all-subnet-ip-ranges
```

Cost: Cloud NAT is billed per hour for each VM that uses it and per GiB it processes (Google's
Cloud NAT pricing); Cloud Run's built-in Cloud SQL connection (`host=/cloudsql/…`) does not go
through the connector with `private-ranges-only`."""

RETRY_HOW = """\
Retry each of these connections with a jittered pause, within its phase's own bound (here with
tenacity, around the code that opens it; `stop_after_delay` is the phase's bound, or what is left
of the database-init deadline):

```python
from tenacity import AsyncRetrying, stop_after_delay, wait_random

async for attempt in AsyncRetrying(
    wait=wait_random({low:g}, {high:g}), stop=stop_after_delay({stop}), reraise=True
):
    with attempt:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
```

Cost: a code change; each retry is one more connection through the path and the database."""

PROBE_HOW = """\
Make the startup probe wait for the application, not the port (the service's YAML, applied with
`gcloud run services replace service.yaml`):

```yaml
startupProbe:
  httpGet:
    path: /health/ready   # 200 only once the start-up sequence is done
  periodSeconds: 2
  failureThreshold: {threshold}
```

Cost: a readiness endpoint in the application; `periodSeconds × failureThreshold` ({window:g} s)
must cover the slowest start (Cloud Run allows at most 600 s)."""


@dataclass(frozen=True)
class ProbeAdvice:
    """Requests failed per deploy with today's probe (TCP: routable once the port is bound) and
    with an HTTP probe on a readiness path, from the same simulated attempts (sim.probes)."""

    rate_per_s: float
    today: dict[str, Any]  # sim.probes.summary with kind = "tcp"
    http: dict[str, Any]  # the same records with kind = "http"
    how: str


def probe_advice(sc: Scenario, today: Results, confidence: float) -> ProbeAdvice | None:
    """What an HTTP startup probe changes, when today's is TCP and requests are modelled."""
    if sc.probe.kind != "tcp" or sc.probe.request_rate_per_s <= 0 or today.attempts is None:
        return None
    reps = today.fleet["replication"]

    def figures(probe) -> dict[str, Any]:
        per = probes.per_deploy(
            today.attempts, reps, probe, sc.horizon_s, warm=sc.fleet.warm_instances
        )
        return probes.summary(per, confidence)

    slowest = _slowest_ready_s(today)
    window = min(600.0, max(60.0, 2 * slowest))
    how = PROBE_HOW.format(threshold=int(window // 2), window=window)
    http = sc.probe.model_copy(update={"kind": "http"})
    return ProbeAdvice(sc.probe.request_rate_per_s, figures(sc.probe), figures(http), how)


def _slowest_ready_s(res: Results) -> float:
    """The longest time from an attempt's start to its ready, over the ready attempts (0 when
    none was ready)."""
    a = res.attempts
    ready = np.asarray(a["outcome"]) == Outcome.READY
    if not ready.any():
        return 0.0
    took = np.asarray(a["ready_s"], float)[ready] - np.asarray(a["start_s"], float)[ready]
    return float(took.max())


@dataclass(frozen=True)
class PathEvidence:
    """What a faulted path does today and what the route back leaves (recommend's "What the
    evidence supports"): today's failures by reason, and the scenario with the path restored,
    its failures and database init's p50 and p99 against today's bounds."""

    fault: str
    p_fault: float
    from_s: float
    until_s: float | None
    failures_by_reason: dict[str, int]  # today's failed attempts, by reason
    restored_p_start_failure: Proportion
    restored_replications: int
    restored_db_init_p50_s: float | None
    restored_db_init_p99_s: float | None
    bounds_s: dict[str, float]  # today's bounds: each phase's own, then database init's


def path_evidence(lab, sc: Scenario, n: int, today: Results, confidence: float) -> PathEvidence:
    """Today's failures by reason, and ``sc`` with the path restored, simulated ``n`` times."""
    a = today.attempts
    reasons = np.asarray(a["reason"])[np.asarray(a["outcome"]) != Outcome.READY]
    names, counts = np.unique(reasons, return_counts=True)
    restored = lab.run(sc.with_overrides({"path.fault": "none"}), n)
    r = restored.attempts
    ready = np.asarray(r["outcome"]) == Outcome.READY
    took = np.asarray(r["db_init_s"], float)[ready]
    p50, p99 = (float(q) for q in np.quantile(took, [0.5, 0.99])) if took.size else (None, None)
    bounds = {p.name: p.deadline_s for p in sc.startup.phases if p.deadline_s}
    bounds["database init"] = sc.startup.db_init_timeout_s
    return PathEvidence(
        sc.path.fault,
        sc.path.p_fault,
        sc.path.from_s,
        sc.path.until_s,
        {str(k): int(v) for k, v in zip(names, counts, strict=True)},
        restored.summary(confidence).p_start_failure,
        restored.replications,
        p50,
        p99,
        bounds,
    )
