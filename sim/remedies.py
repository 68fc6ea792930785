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
    out = [Change(EGRESS, "egress private-ranges-only + Cloud NAT", {"path.fault": "none"})]
    retry = retry_change(sc)
    if retry is not None:
        out.append(retry)
    return out


def retry_change(sc: Scenario) -> Change | None:
    """A retry with a jittered backoff in the first database-init phase that opens connections
    without one (the pool's retry when there are no phases); None when it already retries."""
    phases = sc.startup.phases
    if not phases:
        if sc.pool.retry_backoff_s > 0:
            return None
        over = {"pool.retry_backoff_s": RETRY_S, "pool.retry_jitter": RETRY_JITTER}
        return Change(RETRY, f"retry the pool start ({RETRY_S:g} s ± 50 %)", over)
    for i, phase in enumerate(phases):
        if not phase.db_init or phase.on_failure != "exit":
            continue
        if phase.pool and sc.pool.retry_backoff_s == 0:
            over = {"pool.retry_backoff_s": RETRY_S, "pool.retry_jitter": RETRY_JITTER}
            return Change(RETRY, f"retry {phase.name} ({RETRY_S:g} s ± 50 %)", over)
        if not phase.pool and phase.connections and phase.retry_backoff_s == 0:
            rows = [p.model_dump(mode="json", exclude_defaults=True) for p in phases]
            rows[i] |= {"retry_backoff_s": RETRY_S, "retry_jitter": RETRY_JITTER}
            return Change(RETRY, f"retry {phase.name} ({RETRY_S:g} s ± 50 %)", {PHASES: rows})
        return None  # the first database phase that connects already retries
    return None


PHASES = "startup.phases"


def apply_text(change: Change, sc: Scenario) -> str:
    """How the team applies ``change`` in its own platform and code (Markdown), or "" for the
    changes :mod:`sim.report.adr` words itself."""
    if change.kind == EGRESS:
        return EGRESS_HOW
    if change.kind == RETRY:
        phase = _retried_phase(change, sc)
        bound = phase.deadline_s if phase is not None and phase.deadline_s else None
        stop = "table_setup_timeout" if bound else "db_init_timeout"
        return RETRY_HOW.format(stop=stop, low=RETRY_S * 0.5, high=RETRY_S * 1.5)
    return ""


def _retried_phase(change: Change, sc: Scenario):
    rows = change.overrides.get(PHASES)
    if rows is None:
        return next((p for p in sc.startup.phases if p.pool), None)
    names = [r["name"] for r in rows if r.get("retry_backoff_s")]
    return next((p for p in sc.startup.phases if p.name in names), None)


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
Retry the first connection of the phase with a jittered pause, within the phase's own bound
(here with tenacity):

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
        per = probes.per_deploy(today.attempts, reps, probe, sc.horizon_s)
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
