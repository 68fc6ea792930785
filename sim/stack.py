"""The stack and the platform in their own words: ``[stack]`` names the pool library a service
runs and its settings, ``[platform]`` where it runs (Cloud Run and its connector, Kubernetes),
each with the library's or the vendor's own names and published defaults.

Each maps onto the model's fields in one place, :func:`derive` (docs/scenario.md, "Stack" and
"Platform", gives the same table). A scenario that sets a setting and the model field it maps to
with different values is refused (sim/scenario.py). :func:`express` goes the other way: a change
to model fields as the settings that give it, and :func:`how_to_apply` writes those settings as
the code line, configuration or command a team applies. Nothing here touches files or terminals.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from sim.costs import MACHINE_CAPACITY, cheapest_tier, parse_tier
from sim.distributions import MAX_DURATION_S, PositiveSeconds
from sim.errors import FieldProblem
from sim.phases import Phase
from sim.provenance import Source
from sim.rollout import DEFAULT_SURGE, DEFAULT_UNAVAILABLE, Amount, amount, given_zero


class _Settings(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )


# -- [stack] -------------------------------------------------------------------------------------


class CustomStack(_Settings):
    """No library named: the model's own fields, as ``[pool]`` gives them."""

    kind: Literal["custom"] = "custom"


class SqlAlchemy(_Settings):
    """``create_engine`` / ``create_async_engine`` with its ``QueuePool``, and the start-up's own
    warm-up (SQLAlchemy opens nothing before a checkout)."""

    kind: Literal["sqlalchemy"]
    pool_size: PositiveInt = 5
    max_overflow: NonNegativeInt = 10
    pool_timeout: PositiveSeconds = 30.0
    pool_pre_ping: bool = False  # one round trip per checkout: not modelled
    warmup_checkouts: NonNegativeInt = 0  # connections the start-up checks out before serving
    warmup: Literal["concurrent", "one_then_rest", "sequential"] = "concurrent"


class Asyncpg(_Settings):
    """``asyncpg.create_pool`` and ``pool.acquire(timeout=…)``."""

    kind: Literal["asyncpg"]
    min_size: NonNegativeInt = 10
    max_size: PositiveInt = 10
    acquire_timeout: PositiveSeconds | None = None  # None: acquire() waits for ever


class PsycopgPool(_Settings):
    """psycopg's ``AsyncConnectionPool`` opened with ``wait=True``."""

    kind: Literal["psycopg_pool"]
    min_size: NonNegativeInt = 4
    max_size: PositiveInt | None = None  # None: min_size
    num_workers: PositiveInt = 3
    timeout: PositiveSeconds = 30.0


class Hikari(_Settings):
    """HikariCP, in its own (camelCase) property names."""

    kind: Literal["hikari"]
    minimum_idle: Annotated[NonNegativeInt | None, Field(alias="minimumIdle")] = None
    maximum_pool_size: Annotated[PositiveInt, Field(alias="maximumPoolSize")] = 10
    # HikariCP resets a connectionTimeout under 250 ms to 30 s: refused here instead.
    connection_timeout_ms: Annotated[int, Field(alias="connectionTimeout", ge=250)] = 30_000
    initialization_fail_timeout_ms: Annotated[int, Field(alias="initializationFailTimeout")] = 1

    @property
    def idle(self) -> int:
        """minimumIdle as HikariCP takes it: maximumPoolSize when unset."""
        return self.maximum_pool_size if self.minimum_idle is None else self.minimum_idle


Stack = Annotated[
    CustomStack | SqlAlchemy | Asyncpg | PsycopgPool | Hikari, Field(discriminator="kind")
]
STACK_KINDS = ("custom", "sqlalchemy", "asyncpg", "psycopg_pool", "hikari")


# -- [platform] ----------------------------------------------------------------------------------


class VpcConnector(_Settings):
    """A Serverless VPC Access connector: 2–9 instances at its minimum, 3–10 at its maximum (a
    maximum of 2, equal to the minimum, is let through: see ``_range``)."""

    min_instances: Annotated[int, Field(ge=2, le=9)] = 2
    max_instances: Annotated[int, Field(ge=2, le=10)] = 10
    # The set-up capacity per machine type is not published: the scenario's
    # connector.setups_per_instance is its machine type's, and a change of machine type scales it
    # by an assumed factor (sim.costs.MACHINE_CAPACITY, labelled assumed, with its range).
    machine_type: Literal["f1-micro", "e2-micro", "e2-standard-4"] = "e2-micro"

    @model_validator(mode="after")
    def _range(self) -> VpcConnector:
        # Serverless VPC Access wants max above min; equal is let through so that a what-if can
        # pin the connector with no scale-out (sim.sizing.connector_floor).
        if self.min_instances > self.max_instances:
            raise FieldProblem(
                "platform.connector.min_instances",
                self.min_instances,
                f"must not exceed platform.connector.max_instances ({self.max_instances})",
            )
        return self


class CustomPlatform(_Settings):
    kind: Literal["custom"] = "custom"


class CloudRun(_Settings):
    """A Cloud Run service: ``--min-instances``, ``--max-instances``, its startup probe, and its
    egress: through a connector (``--vpc-connector``) or Direct VPC egress (``--network``,
    ``--subnet``, ``--vpc-egress``)."""

    kind: Literal["cloud_run"]
    min_instances: NonNegativeInt = 0
    max_instances: PositiveInt = 100
    # True: the run is a deploy of a new revision, whose minimum instances cold-start with the
    # others (none is warm); false: a scale-out, with min_instances warm from t = 0.
    deploy: bool = False
    startup_probe: Literal["tcp", "http"] = "tcp"  # none configured: the default TCP probe
    connector: VpcConnector | None = None
    # Direct VPC egress: the network and subnet the instances take addresses from (either names
    # both when the subnet is named after the network), the subnet's range (its size bounds the
    # fleet), and which traffic goes into the VPC (the database's private address either way).
    network: str | None = None
    subnet: str | None = None
    subnet_range: str | None = None  # e.g. "10.8.0.0/24", as `gcloud compute networks subnets`
    vpc_egress: Literal["private-ranges-only", "all-traffic"] = "private-ranges-only"

    @property
    def direct(self) -> bool:
        return self.network is not None or self.subnet is not None

    @model_validator(mode="after")
    def _one_egress(self) -> CloudRun:
        if self.direct and self.connector is not None:
            field = "platform.network" if self.network is not None else "platform.subnet"
            raise FieldProblem(
                field,
                self.network if self.network is not None else self.subnet,
                "conflicts with [platform.connector]: Cloud Run sends egress through a connector "
                "(--vpc-connector) or by Direct VPC egress (--network, --subnet), not both",
            )
        if self.subnet_range is not None:
            if not self.direct:
                raise FieldProblem(
                    "platform.subnet_range",
                    self.subnet_range,
                    "is the Direct VPC egress subnet's: give platform.network or platform.subnet",
                )
            subnet_addresses(self.subnet_range)
        return self

    # The Cloud SQL instance's tier (gcloud's --tier): gives database.max_connections, its
    # published default for the tier's memory (sim.costs); None: [database] as given.
    database_tier: str | None = None

    @model_validator(mode="after")
    def _tier(self) -> CloudRun:
        if self.database_tier is not None:
            try:
                parse_tier(self.database_tier)
            except ValueError as e:
                raise FieldProblem("platform.database_tier", self.database_tier, str(e)) from None
        return self


class Kubernetes(_Settings):
    """A Deployment's rolling update and its pods' startup probe. With ``replicas`` the run is
    the rolling update itself (``[rollout] kind = "kubernetes"``): ``max_surge`` and
    ``max_unavailable`` are the Deployment's (pods, or a percentage such as "25%"; 25 % each
    when left out, apps/v1's defaults). Without it, ``max_surge`` is the pods one step starts
    together (``fleet.instances``), as before ``replicas`` existed."""

    kind: Literal["kubernetes"]
    replicas: PositiveInt | None = None  # the Deployment's; None: no roll-out
    max_surge: Amount | None = None  # None: 25 % with replicas; without, [fleet] as given
    max_unavailable: Amount | None = None  # None: 25 % (only with replicas)
    startup_probe: Literal["tcp", "http"] | None = None  # None: [probe] as given

    @model_validator(mode="after")
    def _amounts(self) -> Kubernetes:
        for name in ("max_surge", "max_unavailable"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                amount(value)
            except ValueError as e:
                raise FieldProblem(f"platform.{name}", value, str(e)) from None
        both = (self.max_surge, self.max_unavailable)
        if self.replicas is not None and all(v is not None and given_zero(v) for v in both):
            raise FieldProblem(
                "platform.max_surge",
                self.max_surge,
                "max_surge and max_unavailable cannot both be 0 (Kubernetes refuses it: the "
                "roll-out could never make progress)",
            )
        if self.replicas is None:
            if self.max_unavailable is not None:
                raise FieldProblem(
                    "platform.max_unavailable",
                    self.max_unavailable,
                    "needs platform.replicas (the Deployment's roll-out)",
                )
            if self.max_surge is not None and (
                isinstance(self.max_surge, str) or self.max_surge < 1
            ):
                raise FieldProblem(
                    "platform.max_surge",
                    self.max_surge,
                    "without platform.replicas it is the pods one step starts together: a "
                    "number from 1 (a percentage needs platform.replicas)",
                )
        return self

    @property
    def rolls_out(self) -> bool:
        return self.replicas is not None


Platform = Annotated[CustomPlatform | CloudRun | Kubernetes, Field(discriminator="kind")]
PLATFORM_KINDS = ("custom", "cloud_run", "kubernetes")


def kind_given(data: Any, section: str, kinds: tuple[str, ...]) -> Any:
    """A ``[stack]`` or ``[platform]`` table without ``kind`` is custom when empty, and refused
    (naming the field) when it sets anything else."""
    if not isinstance(data, dict) or "kind" in data:
        return data
    if data:
        raise FieldProblem(
            f"{section}.kind",
            None,
            f"missing: name the {section}, one of {', '.join(repr(k) for k in kinds)}",
        )
    return {"kind": "custom"}


# -- the one mapping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Derived:
    """One model field a setting gives: its value, the settings it comes from, and how."""

    field: str  # dotted model field, e.g. "pool.max_size"
    value: Any
    settings: tuple[str, ...]  # dotted settings, e.g. ("stack.pool_size", "stack.max_overflow")
    how: str  # e.g. "pool_size 20 + max_overflow 30"

    def conflict(self, section: str) -> str:
        return (
            f"conflicts with {' and '.join(self.settings)}: [{section}] gives {self.value!r} "
            f"({self.how}); set the {section}'s setting only, or the same value here"
        )


WARMUP_START = {"concurrent": "concurrent", "one_then_rest": "asyncpg", "sequential": "workers"}
NO_ACQUIRE_TIMEOUT_S = MAX_DURATION_S  # asyncpg's acquire() without a timeout: beyond any run


def kept_by_phases(phases: list[Phase]) -> int:
    """Connections the start-up's own phases check out and keep (their pool keeps them)."""
    return sum(p.connections for p in phases if p.keep and not p.pool)


def derive(stack: Any, platform: Any, phases: list[Phase]) -> list[Derived]:
    """Every model field the stack and the platform give (docs/scenario.md, "Stack")."""
    return _derive_stack(stack, phases) + _derive_platform(platform)


def _derive_stack(s: Any, phases: list[Phase]) -> list[Derived]:
    if s.kind == "sqlalchemy":
        top = s.pool_size + s.max_overflow
        if s.warmup_checkouts > top:
            raise FieldProblem(
                "stack.warmup_checkouts",
                s.warmup_checkouts,
                f"must not exceed pool.max_size ({top}: pool_size + max_overflow): a checkout "
                "past it waits for the warm-up's own connections",
            )
        kept = kept_by_phases(phases)
        out = [
            Derived("pool.min_size", s.warmup_checkouts, ("stack.warmup_checkouts",), "warm-up"),
            Derived(
                "pool.max_size",
                top,
                ("stack.pool_size", "stack.max_overflow"),
                f"pool_size {s.pool_size} + max_overflow {s.max_overflow}",
            ),
            Derived(
                "pool.held_when_ready",
                min(s.warmup_checkouts + kept, s.pool_size),
                ("stack.warmup_checkouts", "stack.pool_size"),
                f"QueuePool keeps what the start-up checked out (warm-up {s.warmup_checkouts} + "
                f"{kept} kept by phases), up to pool_size {s.pool_size}",
            ),
            Derived("pool.start", WARMUP_START[s.warmup], ("stack.warmup",), f"warmup {s.warmup}"),
            Derived("pool.timeout_s", s.pool_timeout, ("stack.pool_timeout",), "pool_timeout"),
            Derived("pool.growth", "per_waiter", ("stack.kind",), "QueuePool overflow"),
        ]
        if s.warmup == "sequential":
            out.append(Derived("pool.workers", 1, ("stack.warmup",), "one checkout at a time"))
        return out
    if s.kind == "asyncpg":
        _at_most("stack.min_size", s.min_size, s.max_size, "stack.max_size")
        timeout = NO_ACQUIRE_TIMEOUT_S if s.acquire_timeout is None else s.acquire_timeout
        return [
            Derived("pool.min_size", s.min_size, ("stack.min_size",), "create_pool min_size"),
            Derived("pool.max_size", s.max_size, ("stack.max_size",), "create_pool max_size"),
            Derived("pool.held_when_ready", s.min_size, ("stack.min_size",), "the pool keeps them"),
            Derived("pool.start", "asyncpg", ("stack.kind",), "create_pool"),
            Derived("pool.timeout_s", timeout, ("stack.acquire_timeout",), "acquire timeout"),
            Derived("pool.growth", "per_waiter", ("stack.kind",), "acquire opens one"),
        ]
    if s.kind == "psycopg_pool":
        top = s.min_size if s.max_size is None else s.max_size
        _at_most("stack.min_size", s.min_size, top, "stack.max_size")
        return [
            Derived("pool.min_size", s.min_size, ("stack.min_size",), "min_size"),
            Derived("pool.max_size", top, ("stack.max_size",), "max_size (None: min_size)"),
            Derived("pool.held_when_ready", s.min_size, ("stack.min_size",), "kept open"),
            Derived("pool.start", "workers", ("stack.kind",), "open(wait=True)"),
            Derived("pool.workers", s.num_workers, ("stack.num_workers",), "num_workers"),
            Derived("pool.timeout_s", s.timeout, ("stack.timeout",), "timeout"),
            Derived("pool.growth", "background", ("stack.kind",), "the pool's workers grow it"),
        ]
    if s.kind == "hikari":
        idle, top = s.idle, s.maximum_pool_size
        _at_most("stack.minimumIdle", idle, top, "stack.maximumPoolSize")
        fails = s.initialization_fail_timeout_ms >= 0
        first = max(idle, 1) if fails else 0
        return [
            Derived(
                "pool.min_size",
                first,
                ("stack.minimumIdle", "stack.initializationFailTimeout"),
                "minimumIdle (at least the one connection the start needs)"
                if fails
                else "initializationFailTimeout < 0: the pool starts with none",
            ),
            Derived("pool.max_size", top, ("stack.maximumPoolSize",), "maximumPoolSize"),
            Derived("pool.held_when_ready", idle, ("stack.minimumIdle",), "minimumIdle kept idle"),
            Derived("pool.start", "background", ("stack.kind",), "one connection, then the rest"),
            Derived(
                "pool.timeout_s",
                s.connection_timeout_ms / 1000,
                ("stack.connectionTimeout",),
                f"connectionTimeout {s.connection_timeout_ms} ms",
            ),
            Derived("pool.growth", "background", ("stack.kind",), "HikariCP's filler"),
        ]
    return []


def _at_most(field: str, value: int, top: int, other: str) -> None:
    if value > top:
        raise FieldProblem(field, value, f"must not exceed {other} ({top})")


# Google keeps 4 addresses of every subnet's primary range (docs/sources.md#direct-vpc-egress-
# addresses), and asks Direct VPC egress for a /26 or larger.
SUBNET_RESERVED, SUBNET_SMALLEST_PREFIX = 4, 26


def subnet_addresses(cidr: str) -> int:
    """The addresses Direct VPC egress may take from an IPv4 range such as "10.8.0.0/24"."""
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as exc:
        raise FieldProblem("platform.subnet_range", cidr, f"not an IPv4 range: {exc}") from None
    if net.prefixlen > SUBNET_SMALLEST_PREFIX:
        raise FieldProblem(
            "platform.subnet_range",
            cidr,
            f"smaller than a /{SUBNET_SMALLEST_PREFIX}: Cloud Run's Direct VPC egress asks for a "
            f"/{SUBNET_SMALLEST_PREFIX} or larger",
        )
    return net.num_addresses - SUBNET_RESERVED


def _derive_egress(p: Any) -> list[Derived]:
    """Cloud Run's egress: Direct VPC egress with a network or subnet."""
    if p.direct:
        out = [
            Derived("egress.kind", "direct", ("platform.network", "platform.subnet"), "--network")
        ]
        if p.subnet_range is not None:
            n = subnet_addresses(p.subnet_range)
            how = f"{p.subnet_range} less Google's {SUBNET_RESERVED}"
            out.append(Derived("egress.subnet_addresses", n, ("platform.subnet_range",), how))
        return out
    return []  # a connector, or none named: egress.kind as given (sim.scenario refuses direct)


def _derive_platform(p: Any) -> list[Derived]:
    if p.kind == "cloud_run":
        warm = 0 if p.deploy else p.min_instances
        how = "a deploy: the new revision's minimum instances cold-start" if p.deploy else "warm"
        out = [
            Derived(
                "fleet.warm_instances", warm, ("platform.min_instances", "platform.deploy"), how
            ),
            Derived("probe.kind", p.startup_probe, ("platform.startup_probe",), "startup probe"),
            *_derive_egress(p),
        ]
        if p.connector is not None:
            c = p.connector
            out += [
                Derived(
                    "connector.min_instances",
                    c.min_instances,
                    ("platform.connector.min_instances",),
                    "--min-instances",
                ),
                Derived(
                    "connector.max_instances",
                    c.max_instances,
                    ("platform.connector.max_instances",),
                    "--max-instances",
                ),
            ]
        if p.database_tier is not None:
            tier = parse_tier(p.database_tier)
            out.append(
                Derived(
                    "database.max_connections",
                    tier.max_connections,
                    ("platform.database_tier",),
                    f"{tier.name}'s default for {tier.memory_gb:g} GB",
                )
            )
        return out
    if p.kind == "kubernetes":
        out = []
        if p.rolls_out:
            surge = DEFAULT_SURGE if p.max_surge is None else p.max_surge
            unavailable = DEFAULT_UNAVAILABLE if p.max_unavailable is None else p.max_unavailable
            out += [
                Derived("rollout.kind", "kubernetes", ("platform.replicas",), "a rolling update"),
                Derived("fleet.instances", p.replicas, ("platform.replicas",), "replicas"),
                Derived("rollout.max_surge", surge, ("platform.max_surge",), "maxSurge"),
                Derived(
                    "rollout.max_unavailable",
                    unavailable,
                    ("platform.max_unavailable",),
                    "maxUnavailable",
                ),
            ]
        elif p.max_surge is not None:
            out.append(
                Derived("fleet.instances", p.max_surge, ("platform.max_surge",), "maxSurge pods")
            )
        if p.startup_probe is not None:
            out.append(
                Derived("probe.kind", p.startup_probe, ("platform.startup_probe",), "startupProbe")
            )
        return out
    return []


def check_fleet(platform: Any, instances: int) -> None:
    """Cloud Run starts at most ``--max-instances`` instances of a revision (a deploy starts a
    new revision beside the old one, each with its own maximum: not checked then)."""
    if platform.kind == "cloud_run" and not platform.deploy and instances > platform.max_instances:
        raise FieldProblem(
            "fleet.instances",
            instances,
            f"exceeds platform.max_instances ({platform.max_instances}): Cloud Run starts no "
            "more instances than that",
        )


# -- the other way: a change to model fields as settings -----------------------------------------


def express(stack: Any, platform: Any, model: dict[str, Any]) -> dict[str, Any]:
    """The settings that give the model fields ``model`` (a candidate's overrides), as dotted
    overrides; a field the stack and the platform express is replaced by its settings, a field
    they do not derive is kept as it is, and a derived field no setting sets on its own
    (SQLAlchemy's ``held_when_ready``) is left out. The caller checks what the settings give."""
    out: dict[str, Any] = {}
    derived = {d.field for d in derive(stack, platform, [])} | _DERIVED_ANYWAY.get(
        stack.kind, set()
    )
    for field, value in model.items():
        got = _stack_setting(stack, field, value, out) or _platform_setting(platform, field, value)
        if got:
            out.update(got)
        elif field not in derived:
            out[field] = value
    return out


def unexpressed(stack: Any, platform: Any, overrides: dict[str, Any]) -> list[str]:
    """The model fields ``overrides`` (as :func:`express` gives them) still sets that a named
    stack or platform should have said in its own settings: a ``[pool]`` field under a named
    stack, a ``[fleet]``, ``[connector]`` or ``[probe]`` field under a named platform. A custom
    section keeps its model fields; the start-up's own deadline is the service's code
    (:func:`how_to_apply`), a capped fleet under Cloud Run is its ``--max-instances``, and a
    connector machine type carries its assumed set-up capacity."""
    out = []
    for field in overrides:
        section = field.split(".")[0]
        if field == DEADLINE_FIELD or section in ("stack", "platform"):
            continue
        if field == "fleet.instances" and "platform.max_instances" in overrides:
            continue
        if (
            field == "connector.setups_per_instance"
            and "platform.connector.machine_type" in overrides
        ):
            continue  # the machine type's assumed capacity (sim.costs), which it carries
        named = stack if section == "pool" else platform
        if section in ("pool", "fleet", "connector", "probe") and named.kind != "custom":
            out.append(field)
    return out


# held_when_ready depends on the phases too: derived for SQLAlchemy whatever they are.
_DERIVED_ANYWAY: dict[str, set[str]] = {"sqlalchemy": {"pool.held_when_ready"}}


def _stack_setting(s: Any, field: str, value: Any, so_far: dict) -> dict[str, Any]:
    if s.kind == "sqlalchemy":
        if field == "pool.min_size":
            return {"stack.warmup_checkouts": value}
        if field == "pool.max_size":
            size = min(so_far.get("stack.pool_size", s.pool_size), value)
            return {"stack.pool_size": size, "stack.max_overflow": value - size}
        if field == "pool.timeout_s":
            return {"stack.pool_timeout": value}
        if field == "pool.start":
            back = {v: k for k, v in WARMUP_START.items()}
            return {"stack.warmup": back[value]} if value in back else {}
    if s.kind == "asyncpg":
        if field in ("pool.min_size", "pool.max_size"):
            return {f"stack.{field.split('.')[1]}": value}
        if field == "pool.timeout_s":
            return {"stack.acquire_timeout": value}
    if s.kind == "psycopg_pool":
        if field == "pool.min_size":
            top = s.min_size if s.max_size is None else s.max_size
            return {"stack.min_size": value, "stack.max_size": so_far.get("stack.max_size", top)}
        if field == "pool.max_size":
            return {"stack.max_size": value}
        if field == "pool.workers":
            return {"stack.num_workers": value}
        if field == "pool.timeout_s":
            return {"stack.timeout": value}
    if s.kind == "hikari":
        if field == "pool.min_size":
            return {"stack.minimumIdle": value}
        if field == "pool.max_size":
            return {"stack.maximumPoolSize": value, "stack.minimumIdle": s.idle}
        if field == "pool.timeout_s":
            return {"stack.connectionTimeout": round(value * 1000)}
    return {}


def _platform_setting(p: Any, field: str, value: Any) -> dict[str, Any]:
    if p.kind == "cloud_run":
        if field == "fleet.instances":  # a capped fleet: Cloud Run's --max-instances
            return {"platform.max_instances": value, "fleet.instances": value}
        if field == "fleet.warm_instances" and not p.deploy:
            return {"platform.min_instances": value}
        if field == "probe.kind":
            return {"platform.startup_probe": value}
        if field == "egress.kind" and value == "direct" and not p.direct:
            # as --max-instances: the field too, which a file may have set to "connector"
            return {**DIRECT_SETTINGS, "platform.connector": None, "egress.kind": value}
        if field == "database.max_connections" and p.database_tier is not None:
            tier = cheapest_tier(value)  # the tier whose default it is, if any
            ok = tier is not None and tier.max_connections == value
            return {TIER_SETTING: tier.name} if ok else {}
        if field.startswith("connector.") and p.connector is not None:
            name = field.split(".")[1]
            if name in ("min_instances", "max_instances"):
                return {f"platform.connector.{name}": value}
    if p.kind == "kubernetes":
        if field == "fleet.instances":
            return {"platform.replicas" if p.rolls_out else "platform.max_surge": value}
        if field in ("rollout.max_surge", "rollout.max_unavailable") and p.rolls_out:
            return {"platform." + field.split(".")[1]: value}
        if field == "probe.kind":
            return {"platform.startup_probe": value}
    return {}


def rolling_update_how(platform: Any, overrides: dict[str, Any]) -> str:
    """``kubectl patch`` of the Deployment's rolling update. A roll-out plan (``replicas``
    given) writes maxSurge and maxUnavailable both, so that the one left alone is what the plan
    assumed rather than whatever the Deployment had."""
    rolling = {}
    for name, default in (("max_surge", DEFAULT_SURGE), ("max_unavailable", DEFAULT_UNAVAILABLE)):
        value = overrides.get(f"platform.{name}", getattr(platform, name))
        if value is None and platform.rolls_out:
            value = default
        if value is not None:
            rolling[_CAMEL[name]] = value
    patch = json.dumps({"spec": {"strategy": {"rollingUpdate": rolling}}}, separators=(",", ":"))
    return (
        "The Deployment's rolling update (Kubernetes):\n\n```sh\n"
        f"kubectl patch deployment DEPLOYMENT -p '{patch}'\n```"
    )


# Direct VPC egress in place of the connector, the network and subnet as placeholders to fill in.
DIRECT_SETTINGS = {"platform.network": "NETWORK", "platform.subnet": "SUBNET"}
DIRECT_HOW = (
    "Direct VPC egress in place of the connector (Cloud Run):\n\n```sh\n"
    "gcloud run services update SERVICE --region REGION --network=NETWORK --subnet=SUBNET "
    "--vpc-egress=private-ranges-only --clear-vpc-connector\n```\n\n"
    "Cost: no connector instance is billed any more; each new instance's egress passes traffic "
    "only some 20 s after it starts (field reports: 20–40 s; Google: a minute or more), so the "
    "start-up's database-init deadline must cover it, and the subnet needs about 2 addresses per "
    "instance (a /26 or larger)."
)


# -- how a team applies it -----------------------------------------------------------------------


def describe(stack: Any, platform: Any, overrides: dict[str, Any]) -> str:
    """A change's name in the settings' own words, e.g. ``SQLAlchemy pool_size 20,
    max_overflow 0`` or ``connector --min-instances 3``; model fields keep their dotted names."""
    parts = []
    own = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("stack.")}
    if own:
        parts.append(f"{STACK_NAMES[stack.kind]} " + _pairs(own))
    flags = {
        k.split(".", 1)[1]: v
        for k, v in overrides.items()
        if k.startswith("platform.")
        and not k.startswith("platform.connector")
        and k != TIER_SETTING
    }
    if flags and platform.kind == "kubernetes":
        parts.append("Kubernetes " + _pairs({_CAMEL.get(k, k): v for k, v in flags.items()}))
    elif flags:
        said = _pairs(flags, "--")
        if overrides.get("platform.connector", 0) is None:  # Direct VPC egress in its place
            said = f"Direct VPC egress {said}, --clear-vpc-connector"
        parts.append(f"{PLATFORM_NAMES[platform.kind]} " + said)
    connector = {
        k.rsplit(".", 1)[1]: v
        for k, v in overrides.items()
        if k.startswith("platform.connector.")
        or (platform.kind != "custom" and k.startswith("connector.") and k.endswith("instances"))
    }
    if connector:
        parts.append("connector " + _pairs(connector, "--"))
    if TIER_SETTING in overrides:
        parts.append(f"Cloud SQL tier {overrides[TIER_SETTING]}")
    for k, v in overrides.items():
        if k.startswith(("stack.", "platform.")) or k.rsplit(".", 1)[1] in connector:
            continue
        if k == "connector.setups_per_instance" and "platform.connector.machine_type" in overrides:
            continue  # said by --machine-type (its assumed capacity)
        if k == "database.max_connections" and TIER_SETTING in overrides:
            continue  # said by the tier
        if k == "fleet.instances" and platform.kind == "cloud_run":
            continue  # said by --max-instances
        if k == "egress.kind" and platform.kind == "cloud_run":
            continue  # said by --network, --subnet
        parts.append(f"timeout {_value(v)} s" if k == DEADLINE_FIELD else f"{k} {_value(v)}")
    return " + ".join(parts)


DEADLINE_FIELD = "startup.db_init_timeout_s"
TIER_SETTING = "platform.database_tier"
_CAMEL = {
    "max_surge": "maxSurge",
    "max_unavailable": "maxUnavailable",
    "startup_probe": "startupProbe",
}
STACK_NAMES = {
    "custom": "pool",
    "sqlalchemy": "SQLAlchemy",
    "asyncpg": "asyncpg",
    "psycopg_pool": "psycopg_pool",
    "hikari": "HikariCP",
}
PLATFORM_NAMES = {"custom": "platform", "cloud_run": "Cloud Run", "kubernetes": "Kubernetes"}


def _pairs(settings: dict[str, Any], prefix: str = "") -> str:
    if prefix:
        return ", ".join(f"{prefix}{k.replace('_', '-')} {_value(v)}" for k, v in settings.items())
    return ", ".join(f"{k} {_value(v)}" for k, v in settings.items())


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def how_to_apply(stack: Any, platform: Any, overrides: dict[str, Any]) -> str:
    """The code line, configuration or command that applies ``overrides`` (dotted settings and
    model fields, as :func:`express` gives them), ``stack`` and ``platform`` being the settings
    after the change; "" when every field is a model field no stack or platform names."""
    blocks = []
    if any(k.startswith("stack.") for k in overrides):
        blocks.append(_stack_how(stack, overrides))
    cloud = ("platform.min_instances", "platform.max_instances")
    run = {k: v for k, v in overrides.items() if k in cloud}
    if run and platform.kind == "cloud_run":
        flags = " ".join(f"--{k.split('.')[1].replace('_', '-')}={v}" for k, v in run.items())
        blocks.append(
            "The service's instances (Cloud Run):\n\n```sh\n"
            f"gcloud run services update SERVICE --region REGION {flags}\n```"
        )
    if "platform.network" in overrides or "platform.subnet" in overrides:
        blocks.append(DIRECT_HOW)
    if "platform.max_surge" in overrides or "platform.max_unavailable" in overrides:
        blocks.append(rolling_update_how(platform, overrides))
    connector = {
        k.rsplit(".", 1)[1]: v
        for k, v in overrides.items()
        if k.startswith("platform.connector.")
        or (
            platform.kind == "cloud_run"
            and k in ("connector.min_instances", "connector.max_instances")
        )
    }
    if "machine_type" in connector:
        c = platform.connector
        now = {"min_instances": c.min_instances, "max_instances": c.max_instances}
        blocks.append(machine_how(now | connector))
    elif connector:
        flags = " ".join(f"--{k.replace('_', '-')}={v}" for k, v in connector.items())
        blocks.append(
            "The Serverless VPC Access connector:\n\n```sh\n"
            f"gcloud compute networks vpc-access connectors update CONNECTOR --region REGION "
            f"{flags}\n```\n\nCost: connector instances are billed around the clock, and a "
            "connector never scales in."
        )
    if TIER_SETTING in overrides:
        blocks.append(tier_how(overrides[TIER_SETTING]))
    if DEADLINE_FIELD in overrides:
        t = overrides[DEADLINE_FIELD]
        blocks.append(
            "The start-up's own database-init deadline (the service's setting, around the code "
            "that initialises the database):\n\n```python\n"
            f"await asyncio.wait_for(init_database(), timeout={_value(t)})\n```"
        )
    return "\n\n".join(blocks)


def machine_how(connector: dict[str, Any]) -> str:
    """A connector's machine type cannot be changed in place: a new connector, and the service
    moved onto it."""
    flags = " ".join(
        f"--{k.replace('_', '-')}={v}" for k, v in connector.items() if k != "machine_type"
    )
    t = connector["machine_type"]
    f = MACHINE_CAPACITY[t]
    return (
        "A connector of another machine type (the machine type of an existing connector cannot "
        "be updated in place: create a new one, move the service to it, then delete the old "
        "one):\n\n```sh\n"
        f"gcloud compute networks vpc-access connectors create CONNECTOR-{t} --region REGION "
        f"--network NETWORK --range RANGE --machine-type {t} {flags}\n"
        f"gcloud run services update SERVICE --region REGION --vpc-connector CONNECTOR-{t}\n"
        "```\n\n"
        f"Capacity: {t}'s set-ups per instance are assumed to be {f.factor:g} × e2-micro's "
        f"(range {f.low:g}-{f.high:g}): not published. Cost: each instance is billed around the "
        "clock, and a connector never scales in."
    )


def tier_how(tier: str) -> str:
    """The command that moves the Cloud SQL instance to ``tier`` (a restart)."""
    return (
        "The Cloud SQL instance's tier (the instance restarts; its default max_connections "
        "follows the new memory unless the `max_connections` flag is set):\n\n```sh\n"
        f"gcloud sql instances patch INSTANCE --tier={tier}\n```"
    )


def _stack_how(s: Any, overrides: dict[str, Any]) -> str:
    if s.kind == "sqlalchemy":
        args = f"pool_size={s.pool_size}, max_overflow={s.max_overflow}, "
        args += f"pool_timeout={_value(s.pool_timeout)}"
        if s.pool_pre_ping:
            args += ", pool_pre_ping=True"
        text = (
            f"The engine (SQLAlchemy):\n\n```python\nengine = create_async_engine(url, {args})\n```"
        )
        if "stack.warmup_checkouts" in overrides or "stack.warmup" in overrides:
            text += "\n\n" + _warmup_how(s)
        return text
    if s.kind == "asyncpg":
        text = (
            "The pool (asyncpg):\n\n```python\n"
            f"pool = await asyncpg.create_pool(dsn, min_size={s.min_size}, max_size={s.max_size})"
        )
        if s.acquire_timeout is not None:
            text += f"\nasync with pool.acquire(timeout={_value(s.acquire_timeout)}) as conn: ..."
        return text + "\n```"
    if s.kind == "psycopg_pool":
        top = s.min_size if s.max_size is None else s.max_size
        return (
            "The pool (psycopg_pool):\n\n```python\n"
            f"pool = AsyncConnectionPool(conninfo, min_size={s.min_size}, max_size={top}, "
            f"num_workers={s.num_workers}, timeout={_value(s.timeout)}, open=False)\n"
            "await pool.open(wait=True)\n```"
        )
    if s.kind == "hikari":
        lines = [
            f"spring.datasource.hikari.minimum-idle={s.idle}",
            f"spring.datasource.hikari.maximum-pool-size={s.maximum_pool_size}",
            f"spring.datasource.hikari.connection-timeout={s.connection_timeout_ms}",
        ]
        return (
            "The pool (HikariCP, `application.properties`):\n\n```properties\n"
            + "\n".join(lines)
            + "\n```"
        )
    return ""


def _warmup_how(s: Any) -> str:
    n = s.warmup_checkouts
    if n == 0:
        return (
            "No warm-up: the start-up checks out no connection before it serves (remove any "
            "loop of `engine.connect()` from the start-up)."
        )
    if s.warmup == "concurrent":
        code = (
            f"conns = await asyncio.gather(*(engine.connect() for _ in range({n})))\n"
            "for conn in conns:\n    await conn.close()  # back to the pool"
        )
    elif s.warmup == "one_then_rest":
        code = (
            "first = await engine.connect()\n"
            f"rest = await asyncio.gather(*(engine.connect() for _ in range({n - 1})))\n"
            "for conn in [first, *rest]:\n    await conn.close()  # back to the pool"
        )
    else:
        code = (
            "conns = []\n"
            f"for _ in range({n}):\n    conns.append(await engine.connect())\n"
            "for conn in conns:\n    await conn.close()  # back to the pool"
        )
    many = "checkout" if n == 1 else "checkouts"
    return f"The start-up's warm-up ({n} {many}, {s.warmup}):\n\n```python\n{code}\n```"


# -- where a setting left out comes from ---------------------------------------------------------

# The docs/sources.md entry of each kind's published defaults.
DEFAULTS_ANCHOR = {
    "sqlalchemy": "sqlalchemy-queuepool",
    "asyncpg": "asyncpg-pool-start",
    "psycopg_pool": "psycopg_pool",
    "hikari": "hikaricp",
    "cloud_run": "cloud-run-instances-and-restarts",
    "kubernetes": "kubernetes-rolling-update",
    "connector": "connector-instance-range",
}
# startsim's own settings, not the library's or the vendor's: a value left out is assumed.
OWN_SETTINGS = {
    "stack.warmup_checkouts": "no warm-up: the start-up checks out nothing before it serves",
    "stack.warmup": "unused without a warm-up; gathered at once when there is one",
    "platform.deploy": "a scale-out, not a deploy: the minimum instances are warm",
    "platform.max_surge": "not given: [fleet] as it is (with platform.replicas: 25 %)",
    "platform.replicas": "not given: no roll-out, [fleet] as it is",
    "platform.database_tier": "not given: [database] as it is",
}


# A Deployment's rolling update: left out, Kubernetes' own 25 % when the run is a roll-out.
ROLLING_UPDATE = ("platform.max_surge", "platform.max_unavailable")


def default_label(stack: Any, platform: Any, dotted: str, value: Any) -> Source | None:
    """The label of a setting the file leaves at its default: the library's or the vendor's
    published default, or startsim's own assumption; None when ``value`` is not the default."""
    section, _, name = dotted.partition(".")
    model = stack if section == "stack" else platform
    if name.startswith("connector.") and platform.kind == "cloud_run":
        model, name, kind = VpcConnector(), name.split(".", 1)[1], "connector"
    else:
        kind = model.kind
    fields = type(model).model_fields
    field = next((f for f, info in fields.items() if name in (f, info.alias)), None)
    if field is None or name == "kind":
        return None
    fresh = model if kind == "connector" else type(model)(kind=kind)
    if getattr(fresh, field) != value:
        return None
    if dotted in ROLLING_UPDATE and platform.kind == "kubernetes" and platform.rolls_out:
        return Source(kind="published", anchor=DEFAULTS_ANCHOR[kind], note="apps/v1's 25 %")
    if dotted in OWN_SETTINGS:
        return Source(kind="assumed", note=OWN_SETTINGS[dotted])
    return Source(kind="published", anchor=DEFAULTS_ANCHOR[kind], note="the published default")
