"""The scenario: one validated, immutable description of a cold-start situation, loaded from TOML.

Section and field names are a contract with users' files and scripts: add fields, never rename.
Every duration is in seconds. ``docs/scenario.md`` documents each field and its default, and the
limits below: each keeps one replication within memory and time on one machine.
"""

from __future__ import annotations

import math
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from sim.breaker import Breaker
from sim.distributions import (
    MAX_DURATION_S,
    Constant,
    Distribution,
    LogNormal,
    PositiveSeconds,
    Seconds,
    Uniform,
)
from sim.egress import Egress
from sim.errors import MISSING, FieldProblem, ScenarioError
from sim.phases import Jitter, Phase, check_bounds, check_order, connections_of
from sim.pooler import Pooler
from sim.probes import Probe
from sim.provenance import DEFAULT_SOURCES, UNLABELLED, Entry, Source, flatten
from sim.rollout import Rollout
from sim.stack import (
    PLATFORM_KINDS,
    STACK_KINDS,
    CustomPlatform,
    CustomStack,
    Platform,
    Stack,
    check_fleet,
    default_label,
    derive,
    express,
    kind_given,
)
from sim.traffic import MAX_REQUESTS, Traffic
from sim.uncertainty import Spread, lift

# Limits on one replication; docs/scenario.md gives each with its reason. The engine keeps an
# object of a few hundred bytes per instance, per attempt record and per connection in flight.
MAX_INSTANCES = 100_000
MAX_ATTEMPTS = 1_000_000  # instances × (restarts + 1): attempt records, ~0.3 kB each
MAX_OPENING = 2_000_000  # instances × connections each opens at once: ~0.3 kB each in flight
MAX_CONNECTIONS = 262_143  # PostgreSQL's own ceiling on max_connections (MAX_BACKENDS, 2^18 − 1)
MAX_POOL_STARTS = 10_000  # pool starts per attempt: db_init_timeout_s ÷ retry_backoff_s
MAX_NAME_LENGTH = 100


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )


def _at_most(limit: int, why: str):
    def check(value: int) -> int:
        if value > limit:
            raise ValueError(f"must be at most {limit:,}: {why}")
        return value

    return check


def jittered_s(pause_s: float, jitter: float | str, u: float) -> float:
    """``pause_s`` jittered by one uniform draw ``u`` in [0, 1) (docs/model.md, "Jitter")."""
    if jitter == "full":
        return pause_s * u
    return pause_s * (1.0 - jitter + 2.0 * jitter * u)


class Wave(_Section):
    at_s: Seconds
    count: PositiveInt


class Fleet(_Section):
    instances: PositiveInt = 20
    arrival: Literal["burst", "uniform", "poisson", "waves"] = "burst"
    window_s: Seconds = 0.0
    rate_per_s: Annotated[float, Field(gt=0)] = 1.0
    waves: list[Wave] = Field(default_factory=list)
    # Instances already running and ready at t = 0 (Cloud Run's --min-instances, the old
    # revision's during a deploy): each holds pool.held_when_ready slots for the whole run and
    # makes no start attempt (docs/model.md, "Entities"). Checked against the free slots below.
    warm_instances: NonNegativeInt = 0

    _instances = field_validator("instances")(
        _at_most(MAX_INSTANCES, "one replication keeps every instance in memory")
    )

    @field_validator("rate_per_s")
    @classmethod
    def _rate(cls, rate: float) -> float:
        if 1 / rate > MAX_DURATION_S:
            raise ValueError(f"must be at least {1 / MAX_DURATION_S:g}: one arrival per 1e+12 s")
        return rate

    @model_validator(mode="after")
    def _waves_match(self) -> Fleet:
        if self.waves and self.arrival != "waves":
            raise FieldProblem(
                "fleet.waves",
                [w.model_dump() for w in self.waves],
                f"only used with arrival 'waves' (arrival is {self.arrival!r}); "
                'set arrival = "waves" or remove waves',
            )
        if self.arrival == "waves":
            total = sum(w.count for w in self.waves)
            if total != self.instances:
                raise FieldProblem(
                    "fleet.instances",
                    self.instances,
                    f"arrival 'waves' needs it to equal the sum of the waves' counts ({total})",
                )
        return self

    def arrival_times(self, rng: np.random.Generator) -> list[float]:
        """When each instance starts: all at once, spread uniformly, Poisson, or in waves. The
        engine and a load campaign both start instances on this plan."""
        n = self.instances
        if self.arrival == "burst":
            return [0.0] * n
        if self.arrival == "uniform":
            return np.sort(rng.uniform(0.0, self.window_s, n)).tolist()
        if self.arrival == "poisson":
            return np.cumsum(rng.exponential(1.0 / self.rate_per_s, n)).tolist()
        return [w.at_s for w in self.waves for _ in range(w.count)]


class Startup(_Section):
    before_db_s: Distribution = LogNormal(dist="lognormal", median=2.0, sigma=0.3)
    db_init_timeout_s: PositiveSeconds = 20.0
    init_queries_s: Distribution = LogNormal(dist="lognormal", median=0.05, sigma=0.5)
    after_db_s: Distribution = Constant(dist="constant", value=3.0)
    # Start-up phases (docs/model.md, "Start-up phases"); empty: one database init as above.
    phases: list[Phase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _phases_ordered(self) -> Startup:
        check_order(self.phases)
        return self


class Pool(_Section):
    min_size: NonNegativeInt = 20
    max_size: PositiveInt = 50
    held_when_ready: NonNegativeInt = 20
    connect_timeout_s: PositiveSeconds = 10.0
    on_failure: Literal["close", "hold"] = "close"
    retry_backoff_s: Seconds = 1.0
    retry_jitter: Jitter = 0.0
    # How database init opens min_size connections (docs/model.md, "Pool-start strategies").
    start: Literal["asyncpg", "concurrent", "background", "workers"] = "asyncpg"
    workers: PositiveInt = 3  # "workers": connections opened at once (psycopg_pool num_workers)
    # After ready, with [traffic] (docs/model.md, "Traffic after ready"): how long a checkout
    # waits for a connection (SQLAlchemy's pool_timeout and HikariCP's connectionTimeout, 30 s by
    # default), and how the pool grows on demand: one connection opened by each checkout that
    # finds none idle (SQLAlchemy's QueuePool overflow, asyncpg's pool), or one at a time in the
    # background, freed connections handed to the waiters first (HikariCP, psycopg_pool).
    timeout_s: PositiveSeconds = 30.0
    growth: Literal["per_waiter", "background"] = "per_waiter"

    _max_size = field_validator("max_size")(
        _at_most(MAX_CONNECTIONS, "no PostgreSQL server accepts more connections")
    )

    @model_validator(mode="after")
    def _sizes(self) -> Pool:
        if self.min_size > self.max_size:
            raise FieldProblem(
                "pool.min_size", self.min_size, f"must not exceed pool.max_size ({self.max_size})"
            )
        if self.held_when_ready > self.max_size:
            raise FieldProblem(
                "pool.held_when_ready",
                self.held_when_ready,
                f"must not exceed pool.max_size ({self.max_size})",
            )
        return self


class Connector(_Section):
    min_instances: PositiveInt = 2
    max_instances: PositiveInt = 10
    setups_per_instance: PositiveInt = 10
    setup_s: Distribution = LogNormal(dist="lognormal", median=0.03, sigma=0.5)
    scale_up_delay_s: Distribution = Uniform(dist="uniform", low=10.0, high=30.0)

    @model_validator(mode="after")
    def _range(self) -> Connector:
        if self.min_instances > self.max_instances:
            raise FieldProblem(
                "connector.min_instances",
                self.min_instances,
                f"must not exceed connector.max_instances ({self.max_instances})",
            )
        return self


class Database(_Section):
    max_connections: PositiveInt = 100
    reserved_connections: NonNegativeInt = 3
    other_connections: NonNegativeInt = 0
    accept_s: Distribution = LogNormal(dist="lognormal", median=0.005, sigma=0.5)

    _max_connections = field_validator("max_connections")(
        _at_most(MAX_CONNECTIONS, "PostgreSQL's own limit (MAX_BACKENDS)")
    )

    @model_validator(mode="after")
    def _room(self) -> Database:
        if self.free_slots < 1:
            raise FieldProblem(
                "database.max_connections",
                self.max_connections,
                f"leaves no slot for the application after reserved_connections "
                f"({self.reserved_connections}) and other_connections ({self.other_connections})",
            )
        return self

    @property
    def free_slots(self) -> int:
        """Slots the application may use: the limit less reserved and foreign connections."""
        return self.max_connections - self.reserved_connections - self.other_connections


# Published restart schedules (docs/sources.md): a preset fills the restart fields left out.
# Cloud Run sets no limit on replacements; the preset takes the most that keeps a fleet of up to
# 1,000 instances within MAX_ATTEMPTS (instances × (max_restarts + 1) attempt records).
CLOUDRUN_MAX_RESTARTS = MAX_ATTEMPTS // 1000 - 1
RESTART_PRESETS: dict[str, dict[str, Any]] = {
    "custom": {},
    # Kubernetes CrashLoopBackOff: 10 s doubling to 300 s, no jitter.
    "kubernetes": {
        "policy": "exponential",
        "initial_backoff_s": 10.0,
        "max_backoff_s": 300.0,
        "multiplier": 2.0,
        "jitter": 0.0,
    },
    # KEP-4603's faster option: 1 s doubling to 60 s.
    "kubernetes-fast": {
        "policy": "exponential",
        "initial_backoff_s": 1.0,
        "max_backoff_s": 60.0,
        "multiplier": 2.0,
        "jitter": 0.0,
    },
    # gRPC connection backoff: 1 s × 1.6 up to 120 s, each pause ±20 %.
    "grpc": {
        "policy": "exponential",
        "initial_backoff_s": 1.0,
        "max_backoff_s": 120.0,
        "multiplier": 1.6,
        "jitter": 0.2,
    },
    # Cloud Run: a new instance for each failed start, after a pause that does not grow (R3).
    # Fitted: exit(3) to the replacement's start, median of 7 in the incident's raw logs
    # (docs/sources.md#cloud-run-replacement-pause); no limit seen over 15 failures in a row.
    "cloudrun": {
        "policy": "fixed",
        "initial_backoff_s": 0.27,
        "jitter": 0.0,
        "max_restarts": CLOUDRUN_MAX_RESTARTS,
    },
}


class Restart(_Section):
    preset: Literal["custom", "kubernetes", "kubernetes-fast", "grpc", "cloudrun"] = "custom"
    policy: Literal["none", "fixed", "exponential"] = "exponential"
    initial_backoff_s: Seconds = 10.0
    max_backoff_s: Seconds = 300.0
    multiplier: Annotated[float, Field(ge=1, le=100)] = 2.0
    jitter: Jitter = 0.0
    max_restarts: NonNegativeInt = 20
    exit_release_s: Seconds = 0.0

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        # Fields written in the file win over the preset's, so a preset can be adjusted.
        if isinstance(data, dict) and data.get("preset") in RESTART_PRESETS:
            return {**RESTART_PRESETS[data["preset"]], **data}
        return data

    def backoff_s(self, restart: int) -> float:
        """Pause before restart ``restart`` (1-based), before jitter: 10, 20, 40 … 300 s."""
        if self.policy == "fixed":
            return self.initial_backoff_s
        # An exponent of at most 1000 and OverflowError → inf keep it a float, then capped.
        try:
            growth = self.multiplier ** min(restart - 1, 1000)
        except OverflowError:
            growth = math.inf
        return min(self.initial_backoff_s * growth, self.max_backoff_s)

    @property
    def restarts_allowed(self) -> int:
        return 0 if self.policy == "none" else self.max_restarts


class CloudSql(_Section):
    """Cloud Run's built-in Cloud SQL connection: Admin API calls before the first connection."""

    enabled: bool = False
    calls_per_refresh: PositiveInt = 2  # ephemeral certificate + connection settings
    quota_per_minute: PositiveInt = 180  # Admin API requests per minute, the project's default
    call_s: Distribution = LogNormal(dist="lognormal", median=0.25, sigma=0.5)  # assumption
    refresh_burst: PositiveInt = 2  # the connectors' per-process refresh limiter: a bucket of 2 …
    refresh_interval_s: PositiveSeconds = 30.0  # … refilled one per 30 s


class PathFaults(_Section):
    """A network path that fails connections on their way to the database (docs/model.md, "Path
    faults"): off by default, and then nothing is drawn."""

    fault: Literal["none", "closed", "reset", "hung"] = "none"
    p_fault: Annotated[float, Field(gt=0, le=1)] = 1.0  # share of connections opened in the window
    from_s: Seconds = 0.0  # the window of the run in which opened connections can be faulted …
    until_s: PositiveSeconds | None = None  # … until this time; None: to the end of the run
    # closed / reset: from the connection's opening until the path fails it. An assumption.
    fail_after_s: Distribution = Constant(dist="constant", value=0.05)

    @model_validator(mode="after")
    def _window(self) -> PathFaults:
        if self.until_s is not None and self.until_s <= self.from_s:
            raise FieldProblem(
                "path.until_s",
                self.until_s,
                f"must be greater than path.from_s ({self.from_s:g}); leave it out for no end",
            )
        return self

    def window_end_s(self) -> float:
        """When the window ends: ``until_s``, or never."""
        return math.inf if self.until_s is None else self.until_s


# How a start-up success rate is computed (docs/recommend.md#what-a-success-rate-counts): starts
# that reach ready per container start (what exit-code-3 logs count), first starts that reach
# ready, instances ready by the horizon, deploys in which no start failed.
SuccessDefinition = Literal["starts", "first_starts", "instances_ready", "clean_deploys"]
SUCCESS_DEFINITIONS: tuple[str, ...] = SuccessDefinition.__args__


class Team(_Section):
    """What the team has tried, how it judges a start-up and what it has seen: the ADR weighs the
    recommendation against them. The model itself never reads this section."""

    timeout_history_s: list[PositiveSeconds] = Field(default_factory=list, max_length=20)
    success_criterion: Annotated[float, Field(gt=0, lt=1)] | None = None  # start-up success share
    success_definition: SuccessDefinition = "starts"
    observed_failures: NonNegativeInt | None = None  # failed starts counted in a window
    observed_failures_at_least: bool = True  # the count is a lower bound ("at least 649")
    window_deploys: PositiveInt | None = None  # deploys within that window, when known
    window_hours: PositiveSeconds | None = None  # … or the window's length
    deploys_per_hour: Annotated[float, Field(gt=0, le=3600)] | None = None  # … and deploy rate

    def deploys_in_window(self) -> float | None:
        """Deploys the observation window held: given, or its length × the deploy rate."""
        if self.window_deploys is not None:
            return float(self.window_deploys)
        if self.window_hours is not None and self.deploys_per_hour is not None:
            return self.window_hours * self.deploys_per_hour
        return None


class Scenario(_Section):
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)] = "scenario"
    description: str = ""
    horizon_s: PositiveSeconds = 600.0
    # sim/stack.py: where the service runs and the pool library it runs, in their own words;
    # each maps onto the model's fields below (docs/scenario.md, "Stack" and "Platform").
    platform: Platform = CustomPlatform()
    fleet: Fleet = Fleet()
    startup: Startup = Startup()
    stack: Stack = CustomStack()
    pool: Pool = Pool()
    connector: Connector = Connector()
    egress: Egress = Egress()  # sim/egress.py: the connector, or Direct VPC egress
    database: Database = Database()
    restart: Restart = Restart()
    cloudsql: CloudSql = CloudSql()
    probe: Probe = Probe()  # sim/probes.py: which attempts may take requests, and the requests
    path: PathFaults = PathFaults()
    traffic: Traffic = Traffic()  # sim/traffic.py: requests after ready, through the pools
    pooler: Pooler = Pooler()  # sim/pooler.py: PgBouncer between instances and the database
    breaker: Breaker = Breaker()  # sim/breaker.py: a circuit breaker around each try
    rollout: Rollout = Rollout()  # sim/rollout.py: old instances replaced while new ones start
    team: Team = Team()
    sources: dict[str, Source] = Field(default_factory=dict)  # sim/provenance.py
    # Values a file gives as a range (sim/uncertainty.py), by dotted field; each field holds its
    # nominal value. Not a section of a file: ``to_dict`` leaves it out, ``file_dict`` puts each
    # range back in its field.
    uncertain: dict[str, Spread] = Field(default_factory=dict)

    @field_validator("sources", mode="before")
    @classmethod
    def _dotted(cls, table: Any) -> Any:
        return flatten(table)

    @field_validator("stack", mode="before")
    @classmethod
    def _stack_kind(cls, table: Any) -> Any:
        return kind_given(table, "stack", STACK_KINDS)

    @field_validator("platform", mode="before")
    @classmethod
    def _platform_kind(cls, table: Any) -> Any:
        return kind_given(table, "platform", PLATFORM_KINDS)

    @model_validator(mode="after")
    def _settings(self) -> Scenario:
        # Before the bounds below (pydantic runs "after" validators in the order written): they
        # check the model's fields as the stack and the platform give them.
        _apply_settings(self)
        return self

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, name: str) -> str:
        # The name ends results folders' names (results/<time>-<name>): it must not leave them.
        if "/" in name or "\\" in name or ".." in name:
            raise ValueError("must not contain '/', '\\' or '..': it names results folders")
        if any(not ch.isprintable() for ch in name):
            raise ValueError("must not contain control characters: it names results folders")
        return name

    @model_validator(mode="after")
    def _bounded(self) -> Scenario:
        for check in (
            _deadline_within_horizon,
            _warm_fits,
            _subnet_fits,
            _rollout_fits,
            _breaker_fits,
            _attempts_bounded,
            _opening_bounded,
            _retries,
            _phase_retries,
            _requests_bounded,
            _sources_valid,
        ):
            check(self)
        return self

    @property
    def warm_held(self) -> int:
        """Database slots the warm instances hold for the whole run, from t = 0."""
        return self.fleet.warm_instances * self.pool.held_when_ready

    @property
    def rollout_held(self) -> int:
        """Database slots a roll-out's old instances hold from t = 0 (0 without a roll-out)."""
        if not self.rollout.on:
            return 0
        return self.rollout.old(self.fleet.instances) * self.pool.held_when_ready

    def label(self, dotted: str) -> Source | None:
        """The label of a field or a distribution's parameter: its own, or its field's."""
        while dotted:
            if dotted in self.sources:
                return self.sources[dotted]
            dotted = dotted.rpartition(".")[0]
        return None

    def provenance(self) -> list[Entry]:
        """Every value of the scenario with where it comes from, fields in file order; a
        distribution's parameters labelled on their own follow their field."""
        data, defaults = self.to_dict(), Scenario().to_dict()
        derived = {d.field: d for d in derive(self.stack, self.platform, self.startup.phases)}
        out = []
        for dotted in field_names(self):
            if dotted in ("name", "description"):
                continue
            value, default = _lookup(data, dotted), _lookup(defaults, dotted)
            own = dotted in self.sources or dotted in self.uncertain
            settings = self._settings_entry(dotted, value, derived) if not own else None
            out.append(settings or self._entry(dotted, value, value == default and not own))
            out += [
                self._entry(key, _lookup(data, key), False)
                for key in (*self.sources, *(k for k in self.uncertain if k not in self.sources))
                if key.startswith(dotted + ".")
            ]
        return out

    def _settings_entry(self, dotted: str, value: Any, derived: dict) -> Entry | None:
        """A field the stack or the platform gives, labelled by the settings it comes from; a
        setting left at its default, by the library's or the vendor's published default."""
        d = derived.get(dotted)
        if d is not None:
            data = self.to_dict()
            labels = (
                self.label(s) or self._setting_default(s, _lookup(data, s)) for s in d.settings
            )
            src = next((label for label in labels if label), None)
            detail = f"from {' and '.join(d.settings)}: {d.how}"
            kind, note = (src.kind, src.note) if src else (UNLABELLED, "")
            return Entry(dotted, value, kind, detail, note, False)
        if not dotted.startswith(("stack.", "platform.")):
            return None
        src = self._setting_default(dotted, value)
        return None if src is None else Entry(dotted, value, src.kind, src.detail(), src.note, True)

    def _setting_default(self, dotted: str, value: Any) -> Source | None:
        value = None if value is MISSING else value  # a setting left unset (None) is not written
        return default_label(self.stack, self.platform, dotted, value)

    def _entry(self, dotted: str, value: Any, default: bool) -> Entry:
        src = DEFAULT_SOURCES.get(dotted) if default else self.label(dotted)
        spread = self.uncertain.get(dotted)
        if src is None:
            detail = f"uncertain, {spread.describe()}" if spread else ""
            return Entry(dotted, value, UNLABELLED, detail, "", False)
        if spread is None:
            return Entry(dotted, value, src.kind, src.detail(), src.note, default)
        # The label keeps its kind and note and shows the field's range (sim/uncertainty.py).
        merged = src.model_copy(update=spread.label_update())
        detail = merged.detail()
        if src.kind != "assumed":
            detail = f"{detail}; uncertain, {spread.describe()}".removeprefix("; ")
        return Entry(dotted, value, src.kind, detail, src.note, False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the TOML layout (field names as users write them); labels keep only the
        attributes they set."""
        data = self.model_dump(
            by_alias=True, exclude_defaults=False, exclude_none=True, exclude={"uncertain"}
        )
        data["sources"] = {
            key: src.model_dump(exclude_defaults=True) for key, src in self.sources.items()
        }
        return data

    def file_dict(self) -> dict[str, Any]:
        """``to_dict`` as a file writes it: each uncertain field as its range, so the file reads
        back as this very scenario."""
        data = self.to_dict()
        for dotted, spread in self.uncertain.items():
            _set_dotted(data, dotted, spread.written(), "file")
        return data

    def get(self, dotted: str) -> Any:
        """A field's value by its dotted name, e.g. ``sc.get("pool.min_size")``."""
        node: Any = self.to_dict()
        for part in dotted.split("."):
            node = node[part]
        return node

    def with_overrides(self, overrides: dict[str, Any], source: str = "override") -> Scenario:
        """A copy with dotted fields replaced, e.g. ``{"startup.db_init_timeout_s": 30.0}``.
        A replaced value loses its label, and its range: both spoke of the value it replaces."""
        data, uncertain = self.to_dict(), dict(self.uncertain)

        def forget(table: dict, dotted: str) -> None:
            for key in [k for k in table if k == dotted or k.startswith(dotted + ".")]:
                del table[key]

        # A model field the stack or the platform gives is changed through their settings
        # (sim/stack.py, ``express``), and every field they give is derived again from them.
        derived = derived_fields(self)
        asked = {k: v for k, v in overrides.items() if k in derived}
        overrides = {
            **express(self.stack, self.platform, asked),
            **{k: v for k, v in overrides.items() if k not in derived},
        }
        settings = any(k.startswith(("stack.", "platform.")) for k in overrides)
        for dotted in derived:
            section, name = dotted.split(".")
            data[section].pop(name, None)
            if settings:
                forget(data["sources"], dotted)
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value, source)
            forget(data["sources"], dotted)
            forget(uncertain, dotted)
        preset = overrides.get("restart.preset")
        if preset in RESTART_PRESETS:  # a new preset brings its schedule, bar fields also given
            for key in RESTART_PRESETS[preset]:
                if f"restart.{key}" not in overrides:
                    data["restart"].pop(key, None)
                    forget(uncertain, f"restart.{key}")
        try:
            out = from_dict({**data, "uncertain": uncertain} if uncertain else data, source)
        except ScenarioError as exc:  # named as asked: the model field, through its setting
            asked_as = _asked_through(self, asked, exc.field)
            if asked_as is None:
                raise
            raise ScenarioError(
                source, asked_as, asked[asked_as], f"{exc.problem} (as {exc.field})"
            ) from None
        for dotted, value in asked.items():
            if out.get(dotted) != value:
                raise ScenarioError(
                    source,
                    dotted,
                    value,
                    f"given by [{self.stack.kind} stack / {self.platform.kind} platform] "
                    f"settings, which give {out.get(dotted)!r} instead; change the stack's or "
                    "the platform's settings (docs/scenario.md#stack)",
                )
        return out

    def in_model_terms(self) -> Scenario:
        """The same model with ``[stack]`` and ``[platform]`` custom: every field they give
        written as itself (labelled as the setting it came from, unless it has its own label), so
        that a what-if may change the model's fields on their own, as no setting of the library
        or the vendor does (``pool.held_when_ready`` apart from ``pool.min_size``, a connector of
        one instance). ``recommend`` then words its changes as model fields."""
        data = self.to_dict()
        own = ("stack.", "platform.")
        sources = {k: v for k, v in data["sources"].items() if not k.startswith(own)}
        for d in derive(self.stack, self.platform, self.startup.phases):
            label = next((self.label(s) for s in d.settings if self.label(s)), None)
            if d.field not in sources and label is not None:
                sources[d.field] = label.model_dump(exclude_defaults=True)
        data |= {"stack": {"kind": "custom"}, "platform": {"kind": "custom"}, "sources": sources}
        uncertain = {k: v for k, v in self.uncertain.items() if not k.startswith(own)}
        return from_dict({**data, "uncertain": uncertain} if uncertain else data, self.name)


def _apply_settings(sc: Scenario) -> None:
    """The model's fields as ``[stack]`` and ``[platform]`` give them (sim/stack.py, ``derive``):
    a field the file also sets must hold the same value, else it is refused naming both."""
    changed: dict[str, dict[str, Any]] = {}
    for d in derive(sc.stack, sc.platform, sc.startup.phases):
        section, name = d.field.split(".")
        current = getattr(sc, section)
        if name in current.model_fields_set and getattr(current, name) != d.value:
            where = d.settings[0].split(".")[0]
            raise FieldProblem(d.field, getattr(current, name), d.conflict(where))
        changed.setdefault(section, {})[name] = d.value
    for section, values in changed.items():
        current = getattr(sc, section)
        given = {k: getattr(current, k) for k in current.model_fields_set}
        try:
            rebuilt = type(current).model_validate({**given, **values})
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join([section, *(str(p) for p in err["loc"])])
            raise FieldProblem(field, err.get("input"), err["msg"]) from None
        object.__setattr__(sc, section, rebuilt)  # frozen: set once, while validating
    check_fleet(sc.platform, sc.fleet.instances)


def derived_fields(sc: Scenario) -> set[str]:
    """The model fields the scenario's stack and platform give."""
    return {d.field for d in derive(sc.stack, sc.platform, sc.startup.phases)}


def _asked_through(sc: Scenario, asked: dict[str, Any], setting: str) -> str | None:
    """The model field of ``asked`` whose change went through ``setting``, if any."""
    return next(
        (f for f, v in asked.items() if setting in express(sc.stack, sc.platform, {f: v})), None
    )


def _deadline_within_horizon(sc: Scenario) -> None:
    # The engine simulates up to horizon_s plus one deadline (docs/model.md): a longer deadline
    # would be cut short, and it only ever decides attempts that began before the horizon.
    deadline_s = sc.startup.db_init_timeout_s
    if deadline_s > sc.horizon_s:
        raise FieldProblem(
            "startup.db_init_timeout_s",
            deadline_s,
            f"must not exceed horizon_s ({sc.horizon_s:g}): the simulation ends one deadline "
            f"after the horizon; raise horizon_s to {deadline_s:g} or more, or shorten it",
        )


def _warm_fits(sc: Scenario) -> None:
    # Warm instances hold their connections before anything starts: more than the free slots
    # could never have been running.
    held, free = sc.warm_held, sc.database.free_slots
    if held > free:
        raise FieldProblem(
            "fleet.warm_instances",
            sc.fleet.warm_instances,
            f"× pool.held_when_ready ({sc.pool.held_when_ready}) = {held:,} connections held "
            f"from the start, more than the {free:,} free slots (database.max_connections "
            f"{sc.database.max_connections} − reserved_connections "
            f"{sc.database.reserved_connections} − other_connections "
            f"{sc.database.other_connections})",
        )


def _subnet_fits(sc: Scenario) -> None:
    # Direct VPC egress: no connector (Cloud Run takes one or the other), and warm instances hold
    # their subnet addresses before anything starts.
    egress, warm = sc.egress, sc.fleet.warm_instances
    if egress.direct and sc.platform.kind == "cloud_run" and sc.platform.connector is not None:
        raise FieldProblem(
            "egress.kind",
            egress.kind,
            "conflicts with [platform.connector]: Cloud Run sends egress through a connector "
            "(--vpc-connector) or by Direct VPC egress (--network, --subnet), not both",
        )
    if egress.direct and warm > egress.instance_bound:
        raise FieldProblem(
            "fleet.warm_instances",
            warm,
            f"more than the {egress.instance_bound:,} instances the subnet's addresses hold "
            f"(egress.subnet_addresses {egress.subnet_addresses:,} ÷ addresses_per_instance "
            f"{egress.addresses_per_instance})",
        )


# What the rollout and breaker rules do not cover yet: refused (exit 2) rather than simulated as
# if the other rule were not there.
_NOT_WITH = "not modelled together with {what} yet (docs/model.md, {where})"


def _rollout_fits(sc: Scenario) -> None:
    ro = sc.rollout
    if not ro.on:
        return
    where = '"Rollout"'
    for field, value, given, what in (
        (
            "fleet.warm_instances",
            sc.fleet.warm_instances,
            0,
            "warm instances (the old revision's instances are rollout.old_instances)",
        ),
        ("pooler.kind", sc.pooler.kind, "none", "a pooler"),
        ("traffic.rate_per_s", sc.traffic.on, False, "traffic after ready"),
        ("probe.request_rate_per_s", sc.probe.request_rate_per_s, 0.0, "the probe's requests"),
    ):
        if value != given:
            raise FieldProblem(field, value, _NOT_WITH.format(what=what, where=where))
    if ro.kind == "kubernetes" and sc.fleet.arrival != "burst":
        raise FieldProblem(
            "fleet.arrival",
            sc.fleet.arrival,
            'must be "burst" with rollout.kind = "kubernetes": the rolling update decides when '
            "each new pod starts",
        )
    ro.check(sc.fleet.instances)
    held, free = sc.rollout_held, sc.database.free_slots
    if held > free:
        raise FieldProblem(
            "rollout.old_instances",
            ro.old(sc.fleet.instances),
            f"× pool.held_when_ready ({sc.pool.held_when_ready}) = {held:,} connections held "
            f"from the start, more than the {free:,} free slots",
        )


def _breaker_fits(sc: Scenario) -> None:
    if sc.breaker.stays_up and sc.pooler.on:
        raise FieldProblem(
            "breaker.form",
            sc.breaker.form,
            _NOT_WITH.format(what="a pooler", where='"Circuit breakers"'),
        )


def _attempts_bounded(sc: Scenario) -> None:
    if sc.breaker.stays_up:  # no restart: tries, bounded by the breaker's pauses
        tries = sc.breaker.tries_bound(sc.horizon_s)
        if sc.fleet.instances * tries > MAX_ATTEMPTS:
            raise FieldProblem(
                "breaker.retry_s",
                sc.breaker.retry_s,
                f"fleet.instances ({sc.fleet.instances:,}) × up to {tries:,} tries each within "
                f"horizon_s = {sc.fleet.instances * tries:,} attempt records per replication; "
                f"at most {MAX_ATTEMPTS:,} fit in memory",
            )
        return
    attempts = sc.fleet.instances * (sc.restart.restarts_allowed + 1)
    if attempts > MAX_ATTEMPTS:
        raise FieldProblem(
            "restart.max_restarts",
            sc.restart.max_restarts,
            f"fleet.instances ({sc.fleet.instances:,}) × (max_restarts + 1) = {attempts:,} "
            f"attempt records per replication; at most {MAX_ATTEMPTS:,} fit in memory",
        )


def _opening_bounded(sc: Scenario) -> None:
    phased = connections_of(sc.startup.phases, sc.pool.min_size)
    each = max(sc.pool.min_size, sc.pool.held_when_ready, phased)
    opening = sc.fleet.instances * each
    if opening > MAX_OPENING:
        raise FieldProblem(
            "pool.min_size",
            sc.pool.min_size,
            f"fleet.instances ({sc.fleet.instances:,}) × max(min_size, held_when_ready, "
            f"phase connections) = {opening:,} connections opened at once; at most "
            f"{MAX_OPENING:,} fit in memory",
        )


def _retries(sc: Scenario) -> None:
    backoff_s, deadline_s = sc.pool.retry_backoff_s, sc.startup.db_init_timeout_s
    # A "full" jitter halves the mean pause, so it needs twice the backoff for the same bound.
    full = 2 if sc.pool.retry_jitter == "full" else 1
    if backoff_s > 0 and full * deadline_s / backoff_s > MAX_POOL_STARTS:
        raise FieldProblem(
            "pool.retry_backoff_s",
            backoff_s,
            f"allows up to {full * deadline_s / backoff_s:,.0f} pool starts per attempt within "
            f"startup.db_init_timeout_s ({deadline_s:g}); at most {MAX_POOL_STARTS:,}: use 0 "
            f"(no retry) or at least {full * deadline_s / MAX_POOL_STARTS:g} s",
        )


def _phase_retries(sc: Scenario) -> None:
    pool = sc.pool
    check_bounds(
        sc.startup.phases, sc.startup.db_init_timeout_s, pool.retry_backoff_s, pool.retry_jitter
    )


def _requests_bounded(sc: Scenario) -> None:
    traffic, horizon_s = sc.traffic, sc.horizon_s
    for field, expected in (
        ("rate_per_s", traffic.rate_per_s * horizon_s),
        (
            "rate_per_instance_per_s",
            traffic.rate_per_instance_per_s * horizon_s * sc.fleet.instances,
        ),
    ):
        if expected > MAX_REQUESTS:
            raise FieldProblem(
                f"traffic.{field}",
                getattr(traffic, field),
                f"gives {expected:,.0f} requests expected over horizon_s ({horizon_s:g}); at most "
                f"{MAX_REQUESTS:,} fit in one replication's records",
            )


def _sources_valid(sc: Scenario) -> None:
    # Scenario.get would dump the whole scenario once per label: look values up in one dump.
    data = sc.to_dict() if sc.sources else {}
    for key, src in sc.sources.items():
        value = _lookup(data, key)
        if not _labellable(key) or (value is MISSING and key.count(".") > 1):
            raise FieldProblem(f"sources.{key}", src.kind, "no such scenario field to label")
        if value is MISSING:
            raise FieldProblem(f"sources.{key}", src.kind, "the scenario does not set it")
        for attr, bad, problem in src.problems():
            raise FieldProblem(f"sources.{key}.{attr}", bad, problem)
        if key in sc.uncertain and (src.range is not None or src.choices is not None):
            attr = "range" if src.range is not None else "choices"
            raise FieldProblem(
                f"sources.{key}.{attr}",
                getattr(src, attr),
                f"{key} gives its range itself: the label of an uncertain value keeps its kind "
                "and note, and takes the field's range (docs/scenario.md#uncertain-values)",
            )
        problem = src.admits(value)
        if problem:
            raise FieldProblem(f"sources.{key}", value, problem)


def _labellable(dotted: str) -> bool:
    """A scenario field (or below one: a distribution's parameter) that may carry a label."""
    section, _, rest = dotted.partition(".")
    if section in ("name", "description", "sources", "uncertain"):
        return False
    if section not in Scenario.model_fields:
        return False
    model = Scenario.model_fields[section].annotation
    # [stack] and [platform] are one of several kinds: a field of any of them may be labelled.
    kinds = [model] if isinstance(model, type) else list(get_args(model))
    sections = [m for m in kinds if isinstance(m, type) and issubclass(m, BaseModel)]
    if not rest:
        return not sections
    name = rest.partition(".")[0]
    return any(
        name == field or name == info.alias
        for m in sections
        for field, info in m.model_fields.items()
    )


def _lookup(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ScenarioError(source, dotted, value, "no such scenario field")
        node = node[part]
    if leaf not in node and not _labellable(dotted):  # a field left unset (None) may be set
        raise ScenarioError(source, dotted, value, "no such scenario field")
    node[leaf] = value


def field_names(scenario: Scenario | None = None) -> list[str]:
    """Every dotted scalar field a sweep may vary, e.g. ``pool.min_size``."""
    data = (scenario or Scenario()).to_dict()
    out = []
    for key, value in data.items():
        if key == "sources":
            continue
        if isinstance(value, dict):
            for sub, inner in value.items():
                # A table inside a section ([platform.connector]) holds fields of its own; a
                # distribution (a table with "dist") is one field.
                if isinstance(inner, dict) and "dist" not in inner:
                    out += [f"{key}.{sub}.{leaf}" for leaf in inner]
                else:
                    out.append(f"{key}.{sub}")
        else:
            out.append(key)
    return out


@cache
def _defaults() -> dict[str, Any]:
    return Scenario().to_dict()


def from_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """A validated scenario from plain data; a field given as a range (sim/uncertainty.py) holds
    its nominal value, and each end of its range must be a valid value of the field."""
    lifted: dict[str, Spread] = {}
    try:
        data, lifted = lift(data, _defaults())
        if lifted:
            data = {**data, "uncertain": {**data.get("uncertain", {}), **lifted}}
        sc = Scenario.model_validate(data)
        _ends_valid(sc, lifted, source)
        return sc
    except ValidationError as exc:
        raise _at_range(_scenario_error(exc, data, source), lifted) from None
    except FieldProblem as exc:
        raise _at_range(ScenarioError(source, exc.field, exc.value, exc.problem), lifted) from None


def _at_range(exc: ScenarioError, lifted: dict[str, Spread]) -> ScenarioError:
    """A nominal value that fails is named as what the file wrote: its choices or its range."""
    spread = lifted.get(exc.field)
    if spread is None:
        return exc
    attr, what = ("choices", "") if spread.choices else ("range", " (the range's middle)")
    return ScenarioError(exc.source, f"{exc.field}.{attr}", exc.value, exc.problem + what)


def _ends_valid(sc: Scenario, spreads: dict[str, Spread], source: str) -> None:
    """Each end of each range (each choice) set in the nominal scenario must validate: a choice
    outside the field's own bounds is refused at the field, before any world is drawn."""
    data = sc.to_dict()
    for dotted, spread in spreads.items():
        attr = "range" if spread.range is not None else "choices"
        for end in spread.ends():
            _set_dotted(data, dotted, end, source)
            try:
                Scenario.model_validate(data)
            except (ValidationError, FieldProblem) as exc:
                err = exc if isinstance(exc, FieldProblem) else _scenario_error(exc, data, source)
                at = "" if err.field == dotted else f"at this end {err.field} = {err.value!r}: "
                raise FieldProblem(f"{dotted}.{attr}", end, at + err.problem) from None
        _set_dotted(data, dotted, spread.nominal(), source)


def _scenario_error(exc: ValidationError, data: dict, source: str) -> ScenarioError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not _is_union_tag(p, err)]
    value = err.get("input", MISSING)
    if err["type"] == "missing":
        value = MISSING
    problem = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        problem = "unknown field"
    return ScenarioError(source, ".".join(loc), value, problem)


def _is_union_tag(part: object, err: dict) -> bool:
    # pydantic puts the discriminator's value in the location ("lognormal"); users never wrote it.
    return isinstance(part, str) and part in {
        "constant",
        "uniform",
        "exponential",
        "lognormal",
        "gamma",
        "weibull",
        "empirical",
        "float",  # the members of a jitter (a fraction or "full")
        "str",
        *STACK_KINDS,  # the kinds of [stack] and [platform]
        *PLATFORM_KINDS,
    }


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), "", MISSING, f"cannot read the file ({exc})") from None
    return loads(text, str(path))


def loads(text: str, source: str = "<scenario>") -> Scenario:
    # A byte-order mark (Windows editors write one) is not TOML but says nothing: skip it.
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", MISSING, f"not valid TOML ({exc})") from None
    if not data:
        raise ScenarioError(
            source,
            "",
            MISSING,
            'sets no field (is it the right file?); a scenario needs at least name = "…", '
            "every other field has a default",
        )
    if "uncertain" in data:
        raise ScenarioError(
            source,
            "uncertain",
            data["uncertain"],
            "unknown field: give a range in the field itself, e.g. instances = { range = [3, 40] }",
        )
    return from_dict(data, source)


def builtin_names() -> list[str]:
    """Names of the scenarios shipped inside the package (``startsim scenarios``)."""
    folder = resources.files("sim") / "scenarios"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


DEFAULT = "staging-incident"


def resolve(name_or_path: str | None) -> Scenario:
    """A shipped scenario by name, a file by path, or the default when None."""
    if name_or_path is None:
        name_or_path = DEFAULT
    if name_or_path in builtin_names():
        res = resources.files("sim") / "scenarios" / f"{name_or_path}.toml"
        return loads(res.read_text(encoding="utf-8"), f"{name_or_path} (built-in)")
    path = Path(name_or_path)
    if not path.exists():
        raise ScenarioError(
            name_or_path,
            "",
            MISSING,
            f"no such file, and no built-in scenario of that name "
            f"(built-ins: {', '.join(builtin_names())})",
        )
    return load(path)
