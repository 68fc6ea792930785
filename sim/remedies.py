"""What a team changes when the path, not a number, is at fault: the egress route, a retry inside
the phase that fails, and an HTTP startup probe. Each is simulated like any other change; each
says how it is applied in the team's own platform and code, and what it costs.

Why here and not in :mod:`sim.sizing`: these are not values found by a search but the remedies a
path fault calls for (docs/model.md, "Path faults"; docs/recommend.md, "When the path fails
connections"). Nothing here touches files or terminals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim import probes
from sim.costs import (
    DEFAULT_MACHINE_TYPE,
    MACHINE_CAPACITY,
    Tier,
    cheapest_tier,
    connector_monthly,
    machine_setups,
    parse_tier,
)
from sim.decision import Change
from sim.engine import Engine
from sim.records import Outcome
from sim.runner import Results
from sim.scenario import Scenario
from sim.stack import DIRECT_HOW, TIER_SETTING, express, how_to_apply, machine_how, tier_how
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
    alternative to a connector floor: offered on Cloud Run (where the team can make the move), and
    wherever the connector is what a start-up burst waits for, i.e. the fleet opens more
    connections at once than its minimum instances set up."""
    cx, fleet = sc.connector, sc.fleet
    burst = fleet.instances * max(sc.pool.min_size, 1) > cx.setups_per_instance * cx.min_instances
    if sc.egress.direct or sc.pooler.on or not (burst or sc.platform.kind == "cloud_run"):
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
            today.attempts,
            reps,
            probe,
            sc.horizon_s,
            warm=sc.fleet.warm_instances,
            stays_up=sc.breaker.stays_up,
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


# -- paid options: a bigger Cloud SQL tier, a connector of another machine type ------------------


def on_google_cloud(sc: Scenario) -> bool:
    """The scenario runs on Cloud Run or connects through the Cloud SQL path: its connector is a
    Serverless VPC Access connector with a machine type, its database a Cloud SQL tier."""
    return sc.platform.kind == "cloud_run" or sc.cloudsql.enabled


def today_tier(sc: Scenario) -> Tier | None:
    """The tier today's database is on: the platform's setting, else the cheapest tier whose
    default is today's max_connections (an assumption the ADR states); None when none is."""
    named = sc.platform.database_tier if sc.platform.kind == "cloud_run" else None
    if named is not None:
        return parse_tier(named)
    tier = cheapest_tier(sc.database.max_connections)
    same = tier is not None and tier.max_connections == sc.database.max_connections
    return tier if same else None


def tier_change(sc: Scenario) -> Change | None:
    """The cheapest tier with more connections than today (and enough for the ready fleet's when
    today's are too few), priced by what it adds to today's tier; None above 1,000."""
    db = sc.database
    need = sc.fleet.instances * sc.pool.held_when_ready + db.reserved_connections
    tier = cheapest_tier(max(db.max_connections + 1, need + db.other_connections))
    if tier is None:
        return None
    now = today_tier(sc)
    added = None
    if tier.monthly_usd is not None and now is not None and now.monthly_usd is not None:
        added = tier.monthly_usd - now.monthly_usd
    over: dict[str, Any] = {"database.max_connections": tier.max_connections}
    if sc.platform.kind == "cloud_run":
        over = {TIER_SETTING: tier.name, **over}
    name = f"Cloud SQL tier {tier.name} (max_connections {tier.max_connections})"
    return Change("tier", name, over, tier_how(tier.name), added)


def today_machine_type(sc: Scenario) -> str:
    c = sc.platform.connector if sc.platform.kind == "cloud_run" else None
    return DEFAULT_MACHINE_TYPE if c is None else c.machine_type


def connector_cost(sc: Scenario, machine_type: str, floor: int) -> float | None:
    """What a connector of ``machine_type`` kept at ``floor`` instances adds to today's: both
    billed around the clock at their minimum; None when a price is unknown."""
    new = connector_monthly(machine_type, floor)
    old = connector_monthly(today_machine_type(sc), sc.connector.min_instances)
    return None if new is None or old is None else new - old


def machine_overrides(sc: Scenario, machine_type: str) -> dict[str, Any]:
    """The connector on ``machine_type``: its set-ups per instance scaled by the assumed factor,
    and the platform's machine type where the scenario names one."""
    setups = machine_setups(sc.connector.setups_per_instance, today_machine_type(sc), machine_type)
    over: dict[str, Any] = {"connector.setups_per_instance": setups}
    c = sc.platform.connector if sc.platform.kind == "cloud_run" else None
    if c is not None:
        over = {"platform.connector.machine_type": machine_type, **over}
    return over


def machine_change(sc: Scenario, machine_type: str, floor: int | None) -> Change:
    """A connector of ``machine_type`` at ``floor`` instances (None: today's floor), in the
    platform's terms where it names its connector, with its command and its added cost."""
    over = machine_overrides(sc, machine_type)
    m = sc.connector.min_instances if floor is None else floor
    if floor is not None and floor != sc.connector.min_instances:
        named = _names_connector(sc)
        over["platform.connector.min_instances" if named else "connector.min_instances"] = floor
    f = MACHINE_CAPACITY[machine_type]
    name = (
        f"connector {machine_type} (assumed {over['connector.setups_per_instance']} set-ups per "
        f"instance, ×{f.factor:g} e2-micro's), --min-instances {m}"
    )
    if _names_connector(sc):
        after = sc.with_overrides(over)
        how = how_to_apply(after.stack, after.platform, over)
    else:
        flags = {"machine_type": machine_type, "min_instances": m}
        how = machine_how(flags)
    return Change("connector", name, over, how, connector_cost(sc, machine_type, m))


def _names_connector(sc: Scenario) -> bool:
    """The scenario's platform names its connector (Cloud Run's [platform.connector])."""
    return sc.platform.kind == "cloud_run" and sc.platform.connector is not None


# -- the Admin API quota storm: a quota increase, restart jitter, a smaller surge, lazy refresh --

QUOTA_NAME = "Cloud SQL Admin API (sqladmin.googleapis.com) requests per minute per user"
JITTER = 0.5  # ±50 % on each restart pause: an assumption, as the retry's


def quota_changes(sc: Scenario) -> list[Change]:
    """The remedies of an Admin API quota storm (only with [cloudsql] on): each a change to the
    model's own [cloudsql], [restart] or [fleet] fields, simulated like any other."""
    cs = sc.cloudsql
    if not cs.enabled:
        return []
    n, calls = sc.fleet.instances, cs.calls_per_refresh
    out = []
    # Enough for every first start and one restart of each within the same minute.
    want = max(cs.quota_per_minute + 1, math.ceil(2 * n * calls / 60) * 60)
    out.append(
        Change(
            "quota",
            f"Admin API quota {want} / min (from {cs.quota_per_minute})",
            {"cloudsql.quota_per_minute": want},
            QUOTA_HOW.format(name=QUOTA_NAME, want=want, now=cs.quota_per_minute),
        )
    )
    if sc.restart.restarts_allowed and sc.restart.jitter != JITTER:
        out.append(
            Change(
                "jitter",
                f"restart jitter ±{JITTER:.0%}",
                {"restart.jitter": JITTER},
                JITTER_HOW.format(low=1 - JITTER, high=1 + JITTER),
            )
        )
    # A deploy in waves a minute apart, each wave's first refreshes within a third of the quota
    # (its restarts in the same minute take the rest).
    per_wave = max(1, cs.quota_per_minute // (3 * calls))
    if n > per_wave and sc.fleet.arrival in ("burst", "uniform"):
        counts = [per_wave] * (n // per_wave) + ([n % per_wave] if n % per_wave else [])
        waves = [{"at_s": 60.0 * i, "count": c} for i, c in enumerate(counts)]
        out.append(
            Change(
                "surge",
                f"deploy in waves of {per_wave} a minute apart ({len(waves)} waves)",
                {"fleet.arrival": "waves", "fleet.waves": waves},
                SURGE_HOW.format(n=per_wave),
            )
        )
    # Lazy refresh: the first connection of a new process still needs a certificate (the same
    # 2 calls); what changes is that no limiter spaces the refreshes after a 429: the failed
    # refresh fails the connection, and the pool's own retry tries again.
    if sc.pool.retry_backoff_s > 0 and cs.refresh_interval_s != sc.pool.retry_backoff_s:
        out.append(
            Change(
                "lazy_refresh",
                "Cloud SQL connector refresh_strategy lazy",
                {
                    "cloudsql.refresh_burst": 1,
                    "cloudsql.refresh_interval_s": sc.pool.retry_backoff_s,
                },
                LAZY_HOW,
            )
        )
    return out


QUOTA_HOW = """\
Ask for a higher {name} (default {now}; here {want}) in the console (IAM & Admin → Quotas &
System Limits, service Cloud SQL Admin API), or with the Cloud Quotas API:

```sh
gcloud beta quotas info list --service=sqladmin.googleapis.com --project=PROJECT
gcloud beta quotas preferences create --service=sqladmin.googleapis.com \\
    --quota-id=QUOTA_ID --preferred-value={want} --project=PROJECT
```

Cost: free, but Google grants it (or not) in its own time; connectors' maintainers saw throttling
near 15 requests a second even with a higher quota."""

JITTER_HOW = """\
Spread the restarts: a random pause at the top of the start-up, before the first connection
(Kubernetes' CrashLoopBackOff and Cloud Run's replacement have no jitter of their own):

```python
await asyncio.sleep(random.uniform({low:g}, {high:g}) * RESTART_PAUSE_S)
```

Cost: a code change; each start is a little later on average."""

SURGE_HOW = """\
Start fewer instances at once: {n} per minute. Kubernetes: `maxSurge: {n}` in the Deployment's
rolling update; Cloud Run: deploy with `gcloud run deploy SERVICE --max-instances={n}` and raise
it a minute later, or move traffic to the new revision gradually
(`gcloud run services update-traffic SERVICE --to-revisions=REVISION=PERCENT`).

Cost: the deploy takes longer to finish."""

LAZY_HOW = """\
The Cloud SQL Python connector's lazy refresh (no background refresh; a certificate is fetched
when a connection needs one):

```python
connector = Connector(refresh_strategy="lazy")
```

What it changes at start-up: nothing in the calls (a new process's first connection still makes
2 Admin API calls), only that no limiter holds the next refresh 30 s after a 429: the pool's own
retry tries again (modelled as a refresh limiter of 1 per retry pause). Cost: one line."""


class _Counting(Engine):
    """The readable engine, counting the Admin API calls it answers 429 (over the quota)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.throttled = 0

    def refresh(self, inst, attempt: int, run: int) -> None:
        before, used = inst.refreshes, sum(self.api_used.values())
        super().refresh(inst, attempt, run)
        if inst.refreshes != before:
            accepted = sum(self.api_used.values()) - used
            self.throttled += self.sc.cloudsql.calls_per_refresh - accepted


@dataclass(frozen=True)
class QuotaEvidence:
    """The quota a storm spends, and the Admin API calls answered 429 per run (a deploy), today
    and with the adopted change, by the readable engine over ``replications`` runs."""

    quota: str
    quota_per_minute: int
    calls_per_refresh: int
    replications: int
    throttled_today: float
    throttled_adopted: float | None
    adopted: str | None
    throttled_by_remedy: dict[str, float]  # each of the quota's own remedies (quota_changes)


QUOTA_REPLICATIONS = 20


def quota_evidence(sc: Scenario, adopted: dict | None, name: str | None, seed: int):
    """Mean 429s per run today and with ``adopted`` (None: no change adopted); None when the
    scenario makes no Admin API call."""
    if not sc.cloudsql.enabled:
        return None

    def throttled(s: Scenario) -> float:
        counts = []
        for i in range(QUOTA_REPLICATIONS):
            engine = _Counting(s, seed, index=i)
            engine.run()
            counts.append(engine.throttled)
        return float(np.mean(counts))

    after = None if not adopted else throttled(sc.with_overrides(adopted))
    remedies = {c.name: throttled(sc.with_overrides(c.overrides)) for c in quota_changes(sc)}
    return QuotaEvidence(
        QUOTA_NAME,
        sc.cloudsql.quota_per_minute,
        sc.cloudsql.calls_per_refresh,
        QUOTA_REPLICATIONS,
        throttled(sc),
        after,
        name,
        remedies,
    )
