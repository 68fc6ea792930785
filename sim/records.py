"""The records' vocabulary, in one place: outcome and reason names, and the columns of the attempt
and fleet records. The engine, the statistics, the recommender and the load-test harness all speak
it, so a simulated and a measured record line up field by field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum


class Outcome(StrEnum):
    """How one start attempt (a container's life from start to ready or exit) ended."""

    READY = "ready"  # database init finished within its deadline
    TIMEOUT = "timeout"  # the deadline passed first: exit code 3
    REJECTED = "rejected"  # the server refused a connection (53300) and no retry was allowed
    ERROR = "error"  # a connection failed otherwise (connect timeout, or the target's fault)


class Reason(StrEnum):
    """Why an attempt failed (``ready`` attempts have an empty reason)."""

    DEADLINE = "deadline"
    TOO_MANY_CLIENTS = "53300"  # SQLSTATE 53300: max_connections reached
    CONNECT_TIMEOUT = "connect_timeout"
    # The path failed the connection (docs/model.md, "Path faults"): no capacity or slot involved.
    CLOSED = "closed"  # "server closed the connection unexpectedly"
    RESET = "reset"  # "connection reset by peer"
    HUNG = "hung"  # nothing came back: the client's connect timeout gave it up
    # A start-up phase's own bound, nested inside the database-init deadline, ran out.
    PHASE_DEADLINE = "phase_deadline"
    # Traffic after ready (docs/model.md): a checkout waited pool.timeout_s for a connection.
    POOL_TIMEOUT = "pool_timeout"
    # Measured only: the target's fault, not the start-up path's congestion.
    AUTH = "auth"  # 28000, 28P01, 42501
    DATABASE = "database"  # 3D000: no such database
    REFUSED = "refused"  # nothing listening
    OTHER = "error"
    # Measured only, through PgBouncer (startsim loadtest --via-pgbouncer): a client waited
    # query_wait_timeout for a server connection and PgBouncer disconnected it.
    QUERY_WAIT_TIMEOUT = "query_wait_timeout"
    # The model's PgBouncer (docs/model.md, "A pooler in front of the database"), as PgBouncer
    # names them: a client over max_client_conn, and one refused while server logins fail.
    MAX_CLIENT_CONN = "max_client_conn"
    SERVER_LOGIN_RETRY = "server_login_retry"


OUTCOMES = tuple(Outcome)


class RequestOutcome(StrEnum):
    """How one request after ready ended (docs/model.md, "Traffic after ready")."""

    SERVED = "served"  # it checked a connection out (its wait is the checkout wait)
    FAILED = "failed"  # its checkout failed: pool_timeout, or its own connection failed
    UNROUTED = "unrouted"  # no instance was ready when it arrived
    WARM = "warm"  # a warm instance served it: not simulated, no wait
    UNFINISHED = "unfinished"  # still waiting when the run ended


# One row per request after ready (requests.csv): the instance (-1 unrouted or warm), when it
# arrived, when its instance became ready, when it got its connection (NaN unless served), its
# checkout wait (NaN unless served), how it ended and why (a Reason for a failure, else "").
REQUEST_COLUMNS = (
    "instance",
    "arrive_s",
    "ready_s",
    "checkout_s",
    "wait_s",
    "outcome",
    "reason",
)

# One row per start attempt (attempts.csv; records.jsonl carries the same and more).
ATTEMPT_COLUMNS = (
    "instance",
    "attempt",
    "start_s",
    "db_init_start_s",
    "db_init_s",
    "outcome",
    "reason",
    "connections_held",
    "connection_attempts",
    "pool_starts",
    # When the instance became ready (start of the attempt's routable time under an HTTP probe,
    # sim/probes.py): end of database init plus the after-db draw; NaN for a failed attempt.
    "ready_s",
    # Start-up phases (docs/model.md): the phase a failed attempt ended in and when it began;
    # "" and db_init_start_s for a ready attempt, or without phases.
    "phase",
    "phase_start_s",
)

# One row per replication (replications.csv).
FLEET_COLUMNS = (
    "replication",
    "fleet_ready_s",
    "peak_db_connections",
    "connector_instances_end",
    "connection_attempts",
    "instances_ready",
    "rejected_attempts",
    "timed_out_attempts",
    "attempts",
)

# With traffic after ready (docs/model.md), a replication row also carries the connections traffic
# opened and the starting instances' connections held when the run ended. Not in FLEET_COLUMNS:
# a run without traffic writes the rows it always wrote.
TRAFFIC_FLEET_COLUMNS = ("traffic_connections", "connections_held_end")

# Importance sampling's columns of a replication row (sim.rare): whether it ran the tilted
# component, how many draws the tilt applied to, and the sum of their uniforms.
TILT_COLUMNS = ("tilted", "tilt_draws", "tilt_sum")

# The keys of a summary (``startsim simulate --json``, a campaign's summary.json).
SUMMARY_KEYS = (
    "p_db_init_timeout",
    "p_start_failure",
    "p_first_start_success",
    "never_ready_fraction",
    "fleet_ready_s",
    "restarts_per_instance",
    "peak_db_connections",
    "work_amplification",
    "attempts",
    "outcomes",
    "confidence",
    "replications",
    "seed",
)


def reported_total(counts: Iterable[float | None]) -> float:
    """A counter summed over attempts, or NaN ("not measured") if any attempt did not report it.

    A measured record marks a counter it does not have (a start-up command that never printed
    it) as ``None`` (JSON ``null``, a missing key, an empty CSV cell) and its sums as NaN: a sum
    over the attempts that did report would pass for a small count (work amplification 0)."""
    total = 0.0
    for c in counts:
        if c is None or math.isnan(c):
            return math.nan
        total += c
    return total
