"""Which engine runs a scenario: the readable one (``sim.engine``, the truth) or the fast one
(``sim.fast``, the same model compiled), chosen by the caller or, with ``"auto"``, by size.

Kept free of numba so that choosing costs nothing when the readable engine runs.
"""

from __future__ import annotations

from sim.breaker import BREAKER_SETTINGS
from sim.engine import Replication, run_replication
from sim.errors import UsageError
from sim.pooler import PGBOUNCER_SETTINGS, refuse_unmodelled
from sim.records import ATTEMPT_COLUMNS, REQUEST_COLUMNS
from sim.scenario import Scenario
from sim.streams import Tilt

ENGINES = ("auto", "fast", "reference")
# "auto" takes the fast engine from this many simulated instance starts (instances × replications,
# each instance counted RESTART_WEIGHT times over when it may restart): below it the readable
# engine's answer comes back before the fast one has loaded its kernel.
AUTO_MIN_STARTS = 4_000
# A restart loop multiplies the starts a run makes before anyone can count them: a scenario that
# may restart counts its instances as this many starts each (the incident's three instances made
# about ten starts each in ten minutes), so a crash loop of a small fleet goes to the fast engine.
RESTART_WEIGHT = 10


def expected_starts(sc: Scenario, replications: int) -> int:
    """The instance starts ``auto`` weighs: instances × replications, times RESTART_WEIGHT (at
    most the restarts allowed plus one) when instances may restart or stay up to try again."""
    tries = RESTART_WEIGHT if sc.breaker.stays_up else sc.restart.restarts_allowed + 1
    weight = min(tries, RESTART_WEIGHT)
    return sc.fleet.instances * replications * weight


# Every scenario field the fast engine implements; a field added to the model later sends
# scenarios that set it away from its default to the readable engine until the kernel has it.
FAST_FIELDS = {
    "fleet": {"instances", "arrival", "window_s", "rate_per_s", "waves", "warm_instances"},
    "startup": {"before_db_s", "db_init_timeout_s", "init_queries_s", "after_db_s", "phases"},
    "pool": {
        "min_size",
        "max_size",
        "held_when_ready",
        "connect_timeout_s",
        "on_failure",
        "retry_backoff_s",
        "retry_jitter",
        "start",
        "workers",
        "timeout_s",
        "growth",
    },
    "connector": {
        "min_instances",
        "max_instances",
        "setups_per_instance",
        "setup_s",
        "scale_up_delay_s",
    },
    "database": {"max_connections", "reserved_connections", "other_connections", "accept_s"},
    "restart": {
        "preset",
        "policy",
        "initial_backoff_s",
        "max_backoff_s",
        "multiplier",
        "jitter",
        "max_restarts",
        "exit_release_s",
    },
    "cloudsql": {
        "enabled",
        "calls_per_refresh",
        "quota_per_minute",
        "call_s",
        "refresh_burst",
        "refresh_interval_s",
    },
    "path": {"fault", "p_fault", "from_s", "until_s", "fail_after_s"},
    "traffic": {"rate_per_s", "rate_per_instance_per_s", "trace_s", "query_s", "window_s"},
    "egress": {"kind", "ready_s", "subnet_addresses", "addresses_per_instance"},
    "breaker": {"form", *BREAKER_SETTINGS},
    "rollout": {"kind", "old_instances", "max_surge", "max_unavailable", "steps", "old_linger_s"},
    "pooler": {"kind", *PGBOUNCER_SETTINGS},
}


# Sections the engines never read (what the team tried and where each value comes from, for the
# reports; the probe, computed from the records afterwards by sim/probes.py; the stack and the
# platform, which reach the model through the fields they give, sim/stack.py): no engine needs them.
NOT_MODEL = {"team", "sources", "probe", "stack", "platform"}


def unsupported(sc: Scenario) -> str | None:
    """Why the fast engine cannot run ``sc``, or None when it can."""
    defaults = Scenario().to_dict()
    for section, fields in sc.to_dict().items():
        if not isinstance(fields, dict) or section in NOT_MODEL:
            continue
        for name, value in fields.items():
            known = name in FAST_FIELDS.get(section, ())
            if not known and value != defaults.get(section, {}).get(name):
                return f"{section}.{name} is not in the fast engine yet"
    return None


def choose(engine: str, sc: Scenario, replications: int) -> str:
    """``"fast"`` or ``"reference"`` for this run."""
    if engine not in ENGINES:
        raise UsageError(f"must be one of {', '.join(ENGINES)}", "engine", engine)
    refuse_unmodelled(sc.pooler, sc.fleet.warm_instances, sc.traffic.on, sc.egress.kind == "direct")
    why_not = unsupported(sc)
    if engine == "fast" and why_not:
        raise UsageError(f"cannot run this scenario: {why_not}", "engine", engine)
    if engine == "auto":
        large = expected_starts(sc, replications) >= AUTO_MIN_STARTS
        return "fast" if large and why_not is None else "reference"
    return engine


def run_one(
    sc: Scenario,
    seed: int,
    index: int = 0,
    engine: str = "reference",
    timeline: bool = False,
    tilt: Tilt | None = None,
) -> Replication:
    """Replication ``index`` of ``seed`` on ``engine`` (``"reference"`` or ``"fast"``): the same
    :class:`sim.engine.Replication` from either, so one test suite checks both (PEP 399's rule for
    an accelerator). Only the readable engine keeps a ``timeline``."""
    if engine == "reference":
        return run_replication(sc, seed, timeline, index, tilt)
    if engine != "fast":
        raise UsageError("must be fast or reference", "engine", engine)
    if timeline:
        raise UsageError("only the reference engine keeps a timeline", "engine", engine)
    from sim import fast

    attempts, fleet, requests = fast.replication(sc, seed, index, tilt)
    rep = Replication(
        attempts={key: attempts[key].tolist() for key in ATTEMPT_COLUMNS},
        fleet_ready_s=float(fleet["fleet_ready_s"]),
        peak_db_connections=int(fleet["peak_db_connections"]),
        connector_instances_end=int(fleet["connector_instances_end"]),
        connection_attempts=int(fleet["connection_attempts"]),
        instances_ready=int(fleet["instances_ready"]),
        refused_connections=int(fleet["refused_connections"]),
        requests={key: requests[key].tolist() for key in REQUEST_COLUMNS},
        traffic_connections=int(fleet["traffic_connections"]),
        connections_held_end=int(fleet["connections_held_end"]),
    )
    if tilt is not None:
        rep.tilted = bool(fleet["tilted"])
        rep.tilt_draws = int(fleet["tilt_draws"])
        rep.tilt_sum = float(fleet["tilt_sum"])
    return rep
