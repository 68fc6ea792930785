"""Which engine runs a scenario: the readable one (``sim.engine``, the truth) or the fast one
(``sim.fast``, the same model compiled), chosen by the caller or, with ``"auto"``, by size.

Kept free of numba so that choosing costs nothing when the readable engine runs.
"""

from __future__ import annotations

from sim.errors import UsageError
from sim.scenario import Scenario

ENGINES = ("auto", "fast", "reference")
# "auto" takes the fast engine from this many simulated instance starts (instances × replications):
# below it the readable engine's answer comes back before the fast one has loaded its kernel.
AUTO_MIN_STARTS = 4_000

# Every scenario field the fast engine implements; a field added to the model later sends
# scenarios that set it away from its default to the readable engine until the kernel has it.
FAST_FIELDS = {
    "fleet": {"instances", "arrival", "window_s", "rate_per_s", "waves"},
    "startup": {"before_db_s", "db_init_timeout_s", "init_queries_s", "after_db_s"},
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
}


# Sections the model never reads (what the team tried and where each value comes from, for the
# reports): no engine needs them.
NOT_MODEL = {"team", "sources"}


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
    why_not = unsupported(sc)
    if engine == "fast" and why_not:
        raise UsageError(f"cannot run this scenario: {why_not}", "engine", engine)
    if engine == "auto":
        large = sc.fleet.instances * replications >= AUTO_MIN_STARTS
        return "fast" if large and why_not is None else "reference"
    return engine
