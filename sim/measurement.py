"""What measures each uncertain value, and how much of it pins the value tightly enough that the
decision no longer flips (docs/uncertainty.md#what-to-measure-first).

Each scenario field maps to a measurement: a startsim command (a load campaign, a calibration from
a Cloud Logging export) or a query, and what one run of it observes. How many runs: the value must
be pinned to a 95 % interval that stays on one side of the **threshold** ``t`` the sensitivity
analysis found (sim/sensitivity.py: where the share of worlds meeting the target crosses one half)
when the value lies where it is assumed now (the nominal ``x0``): a half-width ``h = |x0 − t|``, or
a factor ``f = max(t / x0, x0 / t)`` on a log scale, never finer than half a bin of the analysis.
Then, with ``z`` the normal quantile of the confidence:

- a mean (a count per deploy, a pause, a constant duration): ``n = ⌈(z·sd / h)²⌉`` observations,
  ``sd = (high − low) / √12``, the spread of a value uniform over the assumed range (assumed: an
  upper bound while the range is honest);
- a lognormal median: ``n = ⌈(z·σ / ln f)²⌉`` observations, ``σ`` the distribution's sigma (its
  range's upper end when uncertain);
- a lognormal sigma: ``n = ⌈(z·σ / h)² / 2⌉`` (the standard error of σ̂ is about σ/√(2n));
- the connector's set-up capacity (fitted by simulation, not averaged): two campaigns with more
  connections at once than the connector carries at the range's top (measured: two such runs
  pinned it to one value, docs/calibration.md#measured-here);
- a setting read off the system (``SHOW max_connections``): one reading.

Pure data and arithmetic; nothing here runs or prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from sim.plain import record_dict
from sim.scenario import Scenario
from sim.uncertainty import Spread

# A Cloud Logging export of the Cloud Run service (docs/formats.md, Cloud Logging exports).
EXPORT = "gcloud logging read 'resource.type=\"cloud_run_revision\"' --format=json > export.json"
CALIBRATE_EXPORT = "startsim calibrate export.json --format cloud-logging"
# A campaign from inside the VPC crosses the real connector (docs/loadtests.md).
CAMPAIGN = (
    "startsim loadtest SCENARIO.toml --dsn postgresql://APP@HOST:5432/DB --allow-target HOST "
    "--out results; startsim calibrate results/RUN"
)
IN_THE_VPC = "run from inside the VPC, so that the campaign crosses the real connector"
OTHER_CONNECTIONS_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND usename <> 'APP';"
)


@dataclass(frozen=True)
class Measurement:
    """How to measure one uncertain value, and how many runs pin it (None: no need, or no
    startsim command measures it yet)."""

    what: str
    command: str | None
    unit: str
    runs: int | None
    how: str

    def as_dict(self) -> dict:
        return record_dict(self)


# field prefix → (what is observed, the command, the unit one observation is, how it is counted)
SOURCES = {
    "fleet.instances": (
        "instances started per deploy (Cloud Run's DEPLOYMENT_ROLLOUT starts per revision)",
        f"{EXPORT}; {CALIBRATE_EXPORT}",
        "deploys",
        "mean",
    ),
    "restart.initial_backoff_s": (
        "restart delays, from each failed exit to the revision's next start",
        f"{EXPORT}; {CALIBRATE_EXPORT}",
        "restarts",
        "mean",
    ),
    "startup.": (
        "start-up phase durations from the service's own phase log lines",
        f"{EXPORT}; {CALIBRATE_EXPORT} --phases 'before=…;database=…;queries=…;after=…' "
        "--phase-pattern 'phase (?P<phase>\\w+) took (?P<seconds>[0-9.]+) s'",
        "starts",
        "duration",
    ),
    "connector.setups_per_instance": (
        f"the connector's set-up capacity, fitted to a campaign's database-init durations "
        f"({IN_THE_VPC})",
        CAMPAIGN,
        "campaigns",
        "capacity",
    ),
    "connector.setup_s": (
        f"the connector's set-up time, fitted to a campaign's database-init durations "
        f"({IN_THE_VPC})",
        CAMPAIGN,
        "connections",
        "duration",
    ),
    "database.other_connections": (
        "connections other services hold, read at deploy times",
        f'psql "$DSN" -Atc "{OTHER_CONNECTIONS_SQL}"',
        "readings",
        "mean",
    ),
    "database.max_connections": (
        "the server's limit",
        'psql "$DSN" -Atc "SHOW max_connections;"',
        "reading",
        "exact",
    ),
    "database.reserved_connections": (
        "the superuser reserve",
        'psql "$DSN" -Atc "SHOW superuser_reserved_connections;"',
        "reading",
        "exact",
    ),
    "database.accept_s": (
        "the server's connection set-up time (PostgreSQL 18 log_connections)",
        "startsim calibrate postgresql.log --format postgres-log",
        "connections",
        "duration",
    ),
    "pool.": (
        "the service's own pool settings",
        "read the service's configuration",
        "reading",
        "exact",
    ),
}


def source_of(field: str) -> tuple[str, str | None, str, str]:
    """The longest prefix of ``field`` that ``SOURCES`` knows, or no command."""
    for prefix in sorted(SOURCES, key=len, reverse=True):
        if field == prefix or field.startswith(prefix if prefix.endswith(".") else prefix + "."):
            return SOURCES[prefix]
    return ("not measured by any startsim command yet", None, "observations", "none")


def measurement(
    sc: Scenario,
    field: str,
    spread: Spread,
    threshold: float | None,
    bins: int,
    confidence: float = 0.95,
    flips: float = 1.0,
) -> Measurement:
    """The measurement of ``field`` and the runs that pin it to the side of ``threshold`` its
    nominal lies on (``bins``: the analysis's resolution over the range; ``flips``: how often
    the value alone flipped the verdict in the design)."""
    what, command, unit, kind = source_of(field)
    if flips == 0:
        return Measurement(what, command, unit, None, "alone it never changed the verdict")
    if threshold is None:
        why = (
            "it changes the verdict only together with other values: the share of worlds "
            "meeting the target stays on one side of one half across its range"
        )
        return Measurement(what, command, unit, None, why)
    if kind == "none":
        return Measurement(what, None, unit, None, "no startsim command measures it")
    if kind == "exact":
        return Measurement(what, command, unit, 1, "a setting: one reading gives it exactly")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if kind == "capacity":
        return _capacity(sc, spread, what, command)
    x0 = float(spread.nominal())
    low, high = spread.range if spread.range else (min(spread.choices), max(spread.choices))
    param = field.rsplit(".", 1)[-1]
    if kind == "duration" and param == "median" and low > 0 and threshold > 0:
        sigma = _sigma(sc, field.rsplit(".", 1)[0])
        floor = math.log(high / low) / (2 * bins) if high > low else 0.0
        log_f = max(abs(math.log(threshold / x0)), floor)
        n = math.ceil((z * sigma / log_f) ** 2) if log_f > 0 else None
        how = (
            f"to place the median on one side of {threshold:.3g} from {x0:.3g} (a factor "
            f"{math.exp(log_f):.3g}), n = ⌈(z·σ / ln f)²⌉ with σ {sigma:g}"
        )
        return Measurement(what, command, unit, n, how)
    h = max(abs(x0 - threshold), (high - low) / (2 * bins))
    if kind == "duration" and param == "sigma":
        n = math.ceil((z * high / h) ** 2 / 2) if h > 0 else None
        return Measurement(
            what,
            command,
            unit,
            n,
            f"to pin sigma within ±{h:.3g}, n = ⌈(z·σ / h)² / 2⌉ with σ {high:g}",
        )
    sd = (high - low) / math.sqrt(12)
    n = math.ceil((z * sd / h) ** 2) if h > 0 else None
    how = (
        f"to place the mean on one side of {threshold:.3g} from {x0:.3g} (±{h:.3g}), "
        f"n = ⌈(z·sd / h)²⌉ with sd = (high − low)/√12 = {sd:.3g}"
    )
    return Measurement(what, command, unit, n, how)


def _sigma(sc: Scenario, dist: str) -> float:
    """The lognormal sigma beside a median: its range's top when uncertain, else its value; 1.0
    (assumed: a wide spread) for a distribution without one."""
    spread = sc.uncertain.get(f"{dist}.sigma")
    if spread is not None:
        return float(max(spread.ends()))
    value = sc.get(dist)  # a distribution as its parameters
    sigma = value.get("sigma") if isinstance(value, dict) else None
    return float(sigma) if sigma else 1.0


def _capacity(sc: Scenario, spread: Spread, what: str, command: str) -> Measurement:
    top = max(spread.ends())
    instances = math.floor(top * sc.connector.min_instances / max(sc.pool.min_size, 1)) + 1
    how = (
        f"2 campaigns of at least {instances} instances × pool.min_size {sc.pool.min_size}: "
        f"more connections at once than {sc.connector.min_instances} connector instances × "
        f"{top:g} set-ups carry, so the connector queues and the fit can see its capacity"
    )
    return Measurement(what, command, "campaigns", 2, how)
