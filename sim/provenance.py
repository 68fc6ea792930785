"""Where each scenario value comes from: provenance as data.

A scenario may label any value it sets in a ``[sources]`` table, keyed by the dotted field
(``"fleet.instances"``) or a distribution's parameter (``"connector.setup_s.median"``):

- ``fact``: the incident or the team's own configuration; ``cite`` names the facts (``F2``,
  ``R9``) listed in :data:`INCIDENT_FACTS` and in docs/sources.md, "The incident's own facts";
- ``published``: a vendor's or project's documentation; ``anchor`` is its entry in
  docs/sources.md;
- ``measured``: a campaign or a log; ``source`` says which, ``n`` how many, ``when`` when;
- ``fitted``: chosen so the model reproduces ``to`` (a measured figure), from ``source``;
- ``assumed``: nothing backs it; ``note`` says why this value, ``range`` (or ``choices``) how far
  it may plausibly be off.

A value left at startsim's default takes the default's own label (:data:`DEFAULT_SOURCES`, the
table in docs/sources.md). The model never reads any of this; the reports do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from sim.pooler import PGBOUNCER_SETTINGS

Kind = Literal["fact", "published", "measured", "fitted", "assumed"]
KINDS: tuple[str, ...] = Kind.__args__
UNLABELLED = "unlabelled"

# The incident's facts, in our words (docs/sources.md#the-incidents-own-facts has them in full).
# "claim" marks what the audit asserts without evidence: a `fact` label may not rest on a claim.
INCIDENT_FACTS: dict[str, tuple[str, str]] = {
    "F1": ("fact", "start-up runs 7 deterministic phases; phase 3 is database init"),
    "F2": ("fact", "phase 3 has a 20 s deadline; past it the container exits with code 3"),
    "F3": ("fact", "at least 649 start-up failure errors in one monitoring window"),
    "F4": ("fact", "SQLAlchemy's asyncpg dialect over Cloud Run's /cloudsql unix socket"),
    "F5": ("fact", "psycopg2.OperationalError on socket connection beside asyncpg"),
    "F6": ("fact", "all egress through a Serverless VPC Access connector (all-traffic)"),
    "F7": ("claim", "the audit's connector scaling delays of 10–30 s under load"),
    "F8": ("claim", "the audit's connector throughput limits (2–10 Gbps)"),
    "F9": ("fact", "SQLAlchemy pool_size=20, max_overflow=30 (at most 50 per instance)"),
    "F10": ("claim", "the audit's Cloud SQL connection limits binding (tier not given)"),
    "F11": ("fact", "the database-init timeout was raised 8 s → 20 s → 25 s"),
    "F12": ("claim", "the audit's missing circuit breakers"),
    "F13": ("fact", "success criterion: start-up success rate > 95 % (computation not given)"),
    "F14": ("fact", "an earlier flags-only fix (egress) did not stop the failures"),
    "R1": ("fact", "live Cloud Run settings: all-traffic egress, min 1 / max 20 instances"),
    "R2": ("fact", "3–6 deploys an hour; about three instance starts within 3 s per deploy"),
    "R3": ("fact", "each failed start replaced by a new instance, ~8 s apart, no backoff"),
    "R4": ("fact", "the default TCP startup probe passed ~3.5 s after start, before the app"),
    "R5": ("fact", "start-up opened ~3 connections one after another, no pool warm-up"),
    "R6": ("fact", "the first phase-3 connection bounded by table_setup_timeout (5 s, 10 s)"),
    "R7": ("fact", "every captured failure: server closed the connection; no 53300"),
    "R8": ("fact", "two engines per process: 20/30 (pool_timeout 10 s) and 15/25"),
    "R9": ("fact", "Cloud SQL db-g1-small, PostgreSQL 14, max_connections flag 200 (unconfirmed)"),
    "R10": ("fact", "the connector's real size unknown (Terraform: 2–10 e2-micro)"),
    "R11": ("fact", "failures began with all-traffic egress, ended with private-ranges + NAT"),
    "R12": ("fact", "exit code 3 is also gunicorn's boot failure: exit(3) counts mix causes"),
}

_Text = Annotated[str, Field(max_length=2000)]


class Source(BaseModel):
    """One label of ``[sources]``: its kind and what backs it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    kind: Kind
    note: _Text = ""
    cite: list[str] = Field(default_factory=list)  # incident fact ids: F1…F14, R1…R12
    anchor: _Text = ""  # published: the entry in docs/sources.md
    source: _Text = ""  # measured / fitted: the campaign or log, by name
    when: _Text = ""  # measured: when it was taken
    n: NonNegativeInt | None = None  # measured / fitted: sample size
    to: _Text = ""  # fitted: the measured figure the value reproduces
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    scale: Literal["linear", "log"] = "linear"  # where the range's middle lies
    choices: Annotated[list[float], Field(min_length=1, max_length=100)] | None = None

    def problems(self) -> list[tuple[str, object, str]]:
        """What this label lacks or gets wrong: (attribute, value, problem) each."""
        out = []
        for fact in self.cite:
            if fact not in INCIDENT_FACTS:
                known = f"F1–F14 or R1–R12 ({_facts_anchor()})"
                out.append(("cite", fact, f"not one of the incident's facts: cite {known}"))
        if self.kind == "fact" and not any(
            INCIDENT_FACTS.get(f, ("claim",))[0] == "fact" for f in self.cite
        ):
            out.append(("cite", self.cite, "a fact must cite an incident fact that is not a claim"))
        needs = {
            "published": ("anchor", "its entry in docs/sources.md"),
            "measured": ("source", "the campaign or log it was measured in"),
            "fitted": ("to", "the measured figure it was fitted to"),
            "assumed": ("note", "why this value"),
        }
        if self.kind in needs and not getattr(self, needs[self.kind][0]).strip():
            attr, what = needs[self.kind]
            out.append((attr, getattr(self, attr), f"a {self.kind} value needs {what}"))
        if self.kind == "measured" and self.n is None:
            out.append(("n", None, "a measured value needs its sample size"))
        if self.range is not None:
            low, high = self.range
            if low > high:
                out.append(("range", self.range, "low must not exceed high"))
            elif self.scale == "log" and low <= 0:
                out.append(("range", self.range, 'a "log" range must be above 0'))
        if self.range is not None and self.choices is not None:
            out.append(("choices", self.choices, "give a range or choices, not both"))
        return out

    def admits(self, value: object) -> str | None:
        """Why ``value`` lies outside the range or the choices, or None."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            if self.range or self.choices:
                return "a range or choices fit numbers only"
            return None
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return f"the value {value:g} lies outside its range {_span(self.range)}"
        if self.choices is not None and value not in self.choices:
            return f"the value {value:g} is not one of its choices {self.choices}"
        return None

    def middle(self, integer: bool = False) -> float | None:
        """The nominal value of a range: its middle (geometric on a log scale)."""
        if self.range is None:
            return None
        return range_middle(*self.range, self.scale, integer)

    def detail(self) -> str:
        """What backs the value, in a few words (the ADR's and the table's text)."""
        parts = {
            "fact": lambda: ", ".join(self.cite),
            "published": lambda: f"docs/sources.md#{self.anchor}",
            "measured": lambda: _join(self.source, f"n = {self.n}", self.when),
            "fitted": lambda: _join(f"to {self.to}", self.source and f"from {self.source}"),
            "assumed": lambda: _join(
                self.range and f"range {_span(self.range)}" + (" (log)" * (self.scale == "log")),
                self.choices and f"one of {', '.join(f'{c:g}' for c in self.choices)}",
            ),
        }
        cited = ", ".join(self.cite) if self.cite and self.kind != "fact" else ""
        return _join(parts[self.kind](), cited and f"see {cited}")


def range_middle(low: float, high: float, scale: str, integer: bool = False) -> float:
    """The middle of ``[low, high]``: arithmetic, or geometric on a ``"log"`` scale; rounded half
    up for a whole-number field. The nominal value of a label's range and of an uncertain value."""
    mid = math.sqrt(low * high) if scale == "log" else (low + high) / 2
    return float(math.floor(mid + 0.5)) if integer else mid


def _facts_anchor() -> str:
    return "docs/sources.md#the-incidents-own-facts"


def _span(r: list[float]) -> str:
    return f"{r[0]:g}–{r[1]:g}"


def _join(*parts: Any) -> str:
    return "; ".join(str(p) for p in parts if p)


def flatten(table: Any, prefix: str = "") -> Any:
    """``[sources]`` as written: quoted dotted keys (``"fleet.instances" = {…}``) or TOML's own
    nesting (``fleet.instances = {…}``), both to dotted keys. A table with ``kind`` is a label."""
    if not isinstance(table, dict):
        return table
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "kind" not in value and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Entry:
    """One value of a scenario with its label: what the ADR's lists and summary.json show."""

    field: str
    value: Any
    kind: str  # a Kind, or UNLABELLED
    detail: str
    note: str
    default: bool  # the value is startsim's default, labelled by DEFAULT_SOURCES

    def as_dict(self) -> dict:
        return {
            "field": self.field,
            "value": self.value,
            "kind": self.kind,
            "detail": self.detail,
            "note": self.note,
            "default": self.default,
        }


def _label(kind: str, note: str, **more: Any) -> Source:
    return Source(kind=kind, note=note, **more)


# Labels of the ``Scenario()`` defaults: what a value left out of a file rests on. Each matches
# the table "Where each default comes from" in docs/sources.md.
_ASSUMED_SHORT = "a start-up phase that is short and variable; set what your service logs"
DEFAULT_SOURCES: dict[str, Source] = {
    "horizon_s": _label("assumed", "long enough for a restart loop to settle"),
    "platform.kind": _label("assumed", "no platform named: the model's own fields"),
    "fleet.instances": _label("assumed", "a mid-sized deploy wave"),
    "fleet.arrival": _label("assumed", "a deploy starts its instances together"),
    "fleet.window_s": _label("assumed", "unused with a burst"),
    "fleet.rate_per_s": _label("assumed", "unused unless arrivals are Poisson"),
    "fleet.waves": _label("assumed", "unused unless arrivals come in waves"),
    "fleet.warm_instances": _label(
        "assumed", "no instance kept warm: the fleet is the instances that cold-start"
    ),
    "startup.before_db_s": _label("assumed", _ASSUMED_SHORT),
    "startup.db_init_timeout_s": _label("assumed", "a deadline of the incident's order"),
    "startup.init_queries_s": _label("assumed", _ASSUMED_SHORT),
    "startup.after_db_s": _label("assumed", _ASSUMED_SHORT),
    "startup.phases": _label("assumed", "no phases: one database init, as docs/model.md says"),
    "stack.kind": _label("assumed", "no pool library named: the model's own [pool] fields"),
    "pool.min_size": _label("assumed", "an eager pool of 20, asyncpg-style"),
    "pool.max_size": _label("assumed", "a pool of 50"),
    "pool.held_when_ready": _label("assumed", "a ready instance keeps what it opened"),
    "pool.connect_timeout_s": _label("assumed", "a service that sets asyncpg's timeout to 10 s"),
    "pool.on_failure": _label(
        "published", "asyncpg closes a failed pool", anchor="gang-allocation"
    ),
    "pool.retry_backoff_s": _label("assumed", _ASSUMED_SHORT),
    "pool.retry_jitter": _label("assumed", "no jitter, as in most start-ups"),
    "pool.start": _label("published", "asyncpg create_pool", anchor="asyncpg-pool-start"),
    "pool.workers": _label("published", "psycopg_pool num_workers", anchor="psycopg_pool"),
    "pool.timeout_s": _label(
        "published", "SQLAlchemy's pool_timeout, 30 s", anchor="sqlalchemy-pool-timeout"
    ),
    "pool.growth": _label(
        "published", "SQLAlchemy's QueuePool overflow", anchor="sqlalchemy-pool-timeout"
    ),
    "connector.min_instances": _label("published", "", anchor="connector-instance-range"),
    "connector.max_instances": _label("published", "", anchor="connector-instance-range"),
    "connector.setups_per_instance": _label("assumed", "a connector that is not the bottleneck"),
    "connector.setup_s": _label("assumed", "a connector that is not the bottleneck"),
    "connector.scale_up_delay_s": _label(
        "assumed", "not published; the audit's claim F7", cite=["F7"]
    ),
    "egress.kind": _label("assumed", "the connector, as before; direct is a what-if"),
    "egress.ready_s": _label(
        "fitted",
        "lognormal through a field report's median and p90 (not the incident's)",
        to="median 20.2 s, p90 36.5 s",
        source="direct-vpc-egress-readiness",
        n=19,
    ),
    "egress.subnet_addresses": _label(
        "assumed", "a /24 less the 4 addresses Google keeps; Google asks for /26 or larger"
    ),
    "egress.addresses_per_instance": _label(
        "published", "instances × 2 estimates the addresses", anchor="direct-vpc-egress-addresses"
    ),
    "database.max_connections": _label(
        "published", "a 3.75–6 GB Cloud SQL tier", anchor="cloud-sql-connection-limit-by-tier"
    ),
    "database.reserved_connections": _label("published", "", anchor="reserved-connections"),
    "database.other_connections": _label("assumed", "no other client holds slots"),
    "database.accept_s": _label("assumed", "a server faster than the published 15 ms"),
    "restart.preset": _label("assumed", "no preset: the fields below"),
    "restart.policy": _label("published", "", anchor="kubernetes-crashloopbackoff"),
    "restart.initial_backoff_s": _label("published", "", anchor="kubernetes-crashloopbackoff"),
    "restart.max_backoff_s": _label("published", "", anchor="kubernetes-crashloopbackoff"),
    "restart.multiplier": _label("published", "", anchor="kubernetes-crashloopbackoff"),
    "restart.jitter": _label("published", "", anchor="kubernetes-crashloopbackoff"),
    "restart.max_restarts": _label("assumed", "enough for any loop within the horizon"),
    "restart.exit_release_s": _label("measured", "", source="exit-after-a-timeout", n=18),
    "cloudsql.enabled": _label("assumed", "the Admin API path is off unless a scenario needs it"),
    "cloudsql.calls_per_refresh": _label("published", "", anchor="cloud-sql-admin-api-quota"),
    "cloudsql.quota_per_minute": _label("published", "", anchor="cloud-sql-admin-api-quota"),
    "cloudsql.call_s": _label("assumed", "not published"),
    "cloudsql.refresh_burst": _label("published", "", anchor="cloud-sql-connector-refresh-limits"),
    "cloudsql.refresh_interval_s": _label(
        "published", "", anchor="cloud-sql-connector-refresh-limits"
    ),
    "probe.kind": _label("assumed", "an HTTP readiness probe: routable once ready"),
    "probe.port_bound_s": _label("assumed", "unused with an HTTP probe"),
    "probe.request_rate_per_s": _label("assumed", "no figure: no requests modelled"),
    "probe.request_timeout_s": _label(
        "published", "Cloud Run's default", anchor="cloud-run-request-timeout"
    ),
    "path.fault": _label("assumed", "no path fault unless a scenario needs one"),
    "path.p_fault": _label("assumed", "unused without a fault; every connection when on"),
    "path.from_s": _label("assumed", "from the start of the run"),
    "path.until_s": _label("assumed", "to the end of the run"),
    "path.fail_after_s": _label("assumed", "not measured; a failure soon after the connect"),
    "traffic.rate_per_s": _label("assumed", "no traffic after ready unless a scenario gives it"),
    "traffic.rate_per_instance_per_s": _label("assumed", "no traffic after ready"),
    "traffic.trace_s": _label("assumed", "no recorded trace"),
    "traffic.query_s": _label("assumed", "a few short queries per request"),
    "traffic.window_s": _label("assumed", "the first minute after ready"),
    "pooler.kind": _label("assumed", "no pooler: the instances connect to the database"),
    **{
        f"pooler.{name}": _label("published", "PgBouncer's default", anchor="pgbouncer-settings")
        for name in PGBOUNCER_SETTINGS
    },
    "breaker.form": _label("assumed", "no breaker unless a scenario names one"),
    "breaker.fail_max": _label("published", "pybreaker's default", anchor="circuit-breakers"),
    "breaker.reset_timeout_s": _label(
        "published", "pybreaker's default", anchor="circuit-breakers"
    ),
    "breaker.open_jitter": _label("assumed", "no jitter: pybreaker has none"),
    "breaker.retry_s": _label("assumed", "an application's own pause between tries"),
    "rollout.kind": _label("assumed", "no roll-out unless a scenario names one"),
    "rollout.old_instances": _label("assumed", "a revision replaced by one of the same size"),
    "rollout.max_surge": _label(
        "published", "Kubernetes' default", anchor="kubernetes-rolling-update"
    ),
    "rollout.max_unavailable": _label(
        "published", "Kubernetes' default", anchor="kubernetes-rolling-update"
    ),
    "rollout.steps": _label("assumed", "all traffic at once, Cloud Run's default"),
    "rollout.old_linger_s": _label("assumed", "an old instance's slots free when it is let go"),
    "team.timeout_history_s": _label("assumed", "none given"),
    "team.success_criterion": _label("assumed", "none given"),
    "team.success_definition": _label("assumed", "per container start, as exit-code-3 logs count"),
    "team.observed_failures": _label("assumed", "none given"),
    "team.observed_failures_at_least": _label("assumed", "a count from logs may miss some"),
    "team.window_deploys": _label("assumed", "not given"),
    "team.window_hours": _label("assumed", "not given"),
    "team.deploys_per_hour": _label("assumed", "not given"),
}
