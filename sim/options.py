"""The fixes teams weigh beside the model's own numbers: a circuit breaker of each form, a surge
limit, and PgBouncer in front of the database. Each is a :class:`~sim.decision.Change` that
``recommend`` simulates like any other, worded as the team applies it (the code, the
``kubectl``/``gcloud`` command or the ``pgbouncer.ini``) with what it costs
(docs/recommend.md, "Breakers, surge and a pooler").

Also the breaker figure's data (:func:`breaker_curves`): what each form does to the start-up
tries and to time-to-ready. Nothing here touches files or terminals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.breaker import FAIL_MAX, RESET_TIMEOUT_S
from sim.decision import Change
from sim.phases import connections_of
from sim.records import Outcome
from sim.runner import Results
from sim.scenario import Scenario

BREAKER, SURGE, POOLER = "breaker", "surge", "pooler"
FIX_KINDS = (BREAKER, SURGE, POOLER)  # the kinds of change this module offers
# The open time's jitter offered with a breaker that stays up: up to +20 % of reset_timeout, so
# instances whose breakers opened together do not all try again in the same instant. Assumed.
OPEN_JITTER = 0.2


def breaker_changes(sc: Scenario) -> list[Change]:
    """A breaker of each form the scenario does not already have, with pybreaker's defaults.
    The forms that stay up are not offered with a pooler (the model refuses that pair)."""
    out = []
    for form, name, how in (
        ("in_process", IN_PROCESS_NAME, IN_PROCESS_HOW),
        ("stay_up", STAY_UP_NAME, STAY_UP_HOW),
        ("shared", SHARED_NAME, SHARED_HOW),
    ):
        if form == sc.breaker.form or (form != "in_process" and sc.pooler.on):
            continue
        out.append(Change(BREAKER, name, breaker_overrides(form), how))
    return out


def breaker_overrides(form: str) -> dict:
    """The ``[breaker]`` fields of a form as offered: pybreaker's defaults, and the open time
    jittered for the forms that stay up (none has no field to set)."""
    if form in ("none", "in_process"):
        return {"breaker.form": form}
    return {"breaker.form": form, "breaker.open_jitter": OPEN_JITTER}


_PARAMS = f"fail_max {FAIL_MAX}, reset_timeout {RESET_TIMEOUT_S:g} s"
IN_PROCESS_NAME = f"circuit breaker in the process, exit 3 as today (pybreaker, {_PARAMS})"
STAY_UP_NAME = (
    f"stay up behind a circuit breaker, readiness false (pybreaker, {_PARAMS}, "
    f"open time +0–{OPEN_JITTER:.0%})"
)
SHARED_NAME = f"circuit breaker shared by the fleet in Redis, staying up (pybreaker, {_PARAMS})"

IN_PROCESS_HOW = f"""\
Wrap the database-init phase in a breaker and exit as today:

```python
import sys
import pybreaker

db_breaker = pybreaker.CircuitBreaker(fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT_S:g})
try:
    db_breaker.call(init_database)  # the database-init phase, under its own deadline
except Exception:
    sys.exit(3)
```

Cost: one dependency and a few lines. The breaker's state dies with the process, and a process
makes one try: its count never reaches `fail_max`, so a restart loop goes on exactly as before."""

STAY_UP_HOW = f"""\
Do not exit: keep the process up with readiness false and retry database init through a breaker
(pybreaker's `CircuitBreakerError` both when a failure opens it and while it is open):

```python
import random, time
import pybreaker

db_breaker = pybreaker.CircuitBreaker(fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT_S:g})
ready = False  # the readiness endpoint answers 503 until this is True
while not ready:
    try:
        db_breaker.call(init_database)  # closes its connections when it fails
        ready = True
    except pybreaker.CircuitBreakerError:  # open: wait out its open time, jittered
        time.sleep({RESET_TIMEOUT_S:g} * (1 + {OPEN_JITTER:g} * random.random()))
    except Exception:
        time.sleep(1)
```

Cost: a readiness endpoint (Kubernetes `readinessProbe`; Cloud Run's startup probe must then be an
HTTP probe on it), and an instance that is up but not serving until its breaker lets a try
through: up to {RESET_TIMEOUT_S:g} s after the database is reachable again. Cloud Run still
replaces an instance whose startup probe keeps failing past its failure threshold (at most 240 s),
which the model does not."""

SHARED_HOW = f"""\
The same loop as staying up, with the breaker's state in a Redis every instance reaches, so the
fleet's failures count together and an open breaker holds every instance back:

```python
import redis
import pybreaker

db_breaker = pybreaker.CircuitBreaker(
    fail_max={FAIL_MAX},
    reset_timeout={RESET_TIMEOUT_S:g},
    state_storage=pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, redis.Redis(host=REDIS_HOST), namespace="db-init"
    ),
)
```

Cost: a Redis on the start-up path (Memorystore or your own; billed by the hour, price not looked
up here) and one more thing that can fail at start-up; the readiness endpoint as above."""


def surge_change(sc: Scenario) -> Change | None:
    """A smaller surge: with a Kubernetes rolling update, ``maxSurge 1, maxUnavailable 0`` (one new
    pod at a time, none of the old let go before it is ready); otherwise the deploy's instances in
    waves of ``k`` a start's length apart, ``k`` a quarter of the fleet or what the free slots
    hold at start, whichever is smaller. None when the fleet is one instance."""
    n = sc.fleet.instances
    if sc.rollout.kind == "kubernetes":
        if sc.rollout.plan(n) == (1, 0):
            return None
        if sc.platform.kind == "kubernetes" and sc.platform.replicas is not None:
            over = {"platform.max_surge": 1, "platform.max_unavailable": 0}
        else:
            over = {"rollout.max_surge": 1, "rollout.max_unavailable": 0}
        return Change(SURGE, "rolling update maxSurge 1, maxUnavailable 0", over, KUBE_SURGE_HOW)
    if n <= 1 or sc.rollout.on:
        return None
    each = max(
        sc.pool.min_size,
        sc.pool.held_when_ready,
        connections_of(sc.startup.phases, sc.pool.min_size),
        1,
    )
    k = max(1, min(math.ceil(n / 4), sc.database.free_slots // each))
    if k >= n:
        return None
    gap_s = round(sc.startup.before_db_s.quantile(0.5) + sc.startup.db_init_timeout_s, 1)
    counts = [k] * (n // k) + ([n % k] if n % k else [])
    waves = [{"at_s": gap_s * i, "count": c} for i, c in enumerate(counts)]
    name = f"deploy in waves of {k}, {gap_s:g} s apart ({len(waves)} waves)"
    over = {"fleet.arrival": "waves", "fleet.waves": waves}
    return Change(SURGE, name, over, WAVES_HOW.format(k=k, gap=f"{gap_s:g}"))


KUBE_SURGE_HOW = """\
One new pod at a time, and no old pod let go before its replacement is ready:

```sh
kubectl patch deployment DEPLOYMENT -p \\
  '{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}'
```

Cost: the roll-out takes about one start per pod instead of one per quarter of them; the old pods
keep their connections until each is replaced."""

WAVES_HOW = """\
Start {k} new instances at a time, the next {k} about {gap} s later (a start's length: its
phases before the database and its database-init deadline). Kubernetes: `maxSurge: {k}` and
`maxUnavailable: 0` in the Deployment's rolling update. Cloud Run, which has no surge setting:
deploy the new revision with `gcloud run deploy SERVICE --min-instances={k} --no-traffic`, raise
`--min-instances` by {k} each step, then `gcloud run services update-traffic SERVICE
--to-latest`.

Cost: the deploy takes longer to finish, by about one start per wave."""


def pooler_change(sc: Scenario) -> Change | None:
    """PgBouncer in transaction mode between the instances and the database, its pool as large
    as PgBouncer's default or the free slots, whichever is smaller, and room for every client.
    Not offered where the model refuses a pooler (warm instances, Direct VPC egress, a breaker
    that stays up) or already has one. Traffic after ready through a pooler is not modelled:
    with ``[traffic]`` on, the option is simulated for its start-ups only, and its name says so."""
    if sc.pooler.on or sc.fleet.warm_instances or sc.egress.direct or sc.breaker.stays_up:
        return None
    if sc.rollout.on:
        return None
    size = max(1, min(20, sc.database.free_slots))
    each = max(sc.pool.max_size, sc.pool.held_when_ready, sc.pool.min_size, 1)
    clients = max(100, sc.fleet.instances * each)
    over: dict = {
        "pooler.kind": "pgbouncer",
        "pooler.pool_mode": "transaction",
        "pooler.default_pool_size": size,
        "pooler.max_client_conn": clients,
    }
    name = f"PgBouncer in transaction mode, default_pool_size {size}"
    if sc.traffic.on:  # weighed on its start-ups, never adopted (sim.recommend.NOT_JUDGED)
        over |= {
            "traffic.rate_per_s": 0.0,
            "traffic.rate_per_instance_per_s": 0.0,
            "traffic.trace_s": [],
        }
        name += " (start-ups only: traffic after ready through a pooler is not modelled)"
    return Change(POOLER, name, over, POOLER_HOW.format(size=size, clients=clients))


POOLER_HOW = """\
Run PgBouncer between the instances and the database (a VM or a sidecar beside the database,
reached through the same network path) and point the application's DSN at it (port 6432):

```ini
[pgbouncer]
pool_mode = transaction
default_pool_size = {size}
max_client_conn = {clients}
query_wait_timeout = 120
```

With transaction mode, turn off the driver's named prepared statements (asyncpg:
`statement_cache_size=0`; SQLAlchemy with asyncpg: `connect_args={{"statement_cache_size": 0}}`),
since a transaction may land on another server connection.

Cost: a PgBouncer to run, watch and upgrade, and the machine it runs on; one more hop. A client
over the pool waits at PgBouncer (up to `query_wait_timeout`) instead of being refused."""


# -- the breaker figure ---------------------------------------------------------------------------

FORMS_SHOWN = ("none", "in_process", "stay_up", "shared")
# Replications per form: a picture, not a decision.
BREAKER_FIGURE_REPLICATIONS = 40


@dataclass(frozen=True)
class BreakerCurves:
    """For each form: start-up tries begun per instance, and the share of instances ready, at
    each time of ``times_s`` (means over the replications); and when the path recovers, if the
    scenario's path fails (its fault ends there in these runs)."""

    times_s: list[float]
    tries: dict[str, list[float]]
    ready: dict[str, list[float]]
    recovers_at_s: float | None
    replications: int


def breaker_scenarios(sc: Scenario) -> tuple[dict[str, Scenario], float | None]:
    """The scenario under each form (a faulted path recovering a third into the run, so that
    time-to-ready after it shows), and when it recovers."""
    recover = None
    base = sc
    if sc.path.fault != "none" and (sc.path.until_s or math.inf) > sc.horizon_s / 3:
        recover = round(sc.horizon_s / 3, 1)
        base = sc.with_overrides({"path.until_s": recover})
    out = {}
    for form in FORMS_SHOWN:
        if form in ("stay_up", "shared") and sc.pooler.on:
            continue
        out[form] = base.with_overrides(breaker_overrides(form))
    return out, recover


def breaker_curves(runs: dict[str, Results], horizon_s: float, recover: float | None):
    """The figure's curves from each form's run (with its attempt records)."""
    times = np.linspace(0.0, horizon_s, 241)
    tries, ready = {}, {}
    for form, res in runs.items():
        a = res.attempts
        reps, n = res.replications, res.scenario.fleet.instances
        starts = np.sort(a["start_s"])
        tries[form] = (np.searchsorted(starts, times, side="right") / (reps * n)).tolist()
        ok = a["outcome"] == Outcome.READY
        ready_at = np.sort(a["ready_s"][ok])
        ready[form] = (np.searchsorted(ready_at, times, side="right") / (reps * n)).tolist()
    reps = min(r.replications for r in runs.values())
    return BreakerCurves(times.tolist(), tries, ready, recover, reps)
