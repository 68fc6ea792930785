"""The scenario: one validated, immutable description of a cold-start situation, loaded from TOML.

Section and field names are a contract with users' files and scripts: add fields, never rename.
Every duration is in seconds. ``docs/scenario.md`` documents each field and its default.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from sim.distributions import Constant, Distribution, LogNormal, Uniform
from sim.errors import MISSING, ScenarioError


class FieldProblem(Exception):
    """A cross-field rule broken; not a ValueError, so pydantic lets it through with its field."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(problem)
        self.field, self.value, self.problem = field, value, problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class Wave(_Section):
    at_s: NonNegativeFloat
    count: PositiveInt


class Fleet(_Section):
    instances: PositiveInt = 20
    arrival: Literal["burst", "uniform", "poisson", "waves"] = "burst"
    window_s: NonNegativeFloat = 0.0
    rate_per_s: PositiveFloat = 1.0
    waves: list[Wave] = Field(default_factory=list)

    @model_validator(mode="after")
    def _waves_match(self) -> Fleet:
        if self.arrival == "waves":
            total = sum(w.count for w in self.waves)
            if total != self.instances:
                raise FieldProblem(
                    "fleet.instances",
                    self.instances,
                    f"arrival 'waves' needs it to equal the sum of the waves' counts ({total})",
                )
        return self


class Startup(_Section):
    before_db_s: Distribution = LogNormal(dist="lognormal", median=2.0, sigma=0.3)
    db_init_timeout_s: PositiveFloat = 20.0
    init_queries_s: Distribution = LogNormal(dist="lognormal", median=0.05, sigma=0.5)
    after_db_s: Distribution = Constant(dist="constant", value=3.0)


class Pool(_Section):
    min_size: NonNegativeInt = 20
    max_size: PositiveInt = 50
    held_when_ready: NonNegativeInt = 20
    connect_timeout_s: PositiveFloat = 10.0
    on_failure: Literal["close", "hold"] = "close"
    retry_backoff_s: NonNegativeFloat = 1.0

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


class Restart(_Section):
    policy: Literal["none", "fixed", "exponential"] = "exponential"
    initial_backoff_s: NonNegativeFloat = 10.0
    max_backoff_s: NonNegativeFloat = 300.0
    max_restarts: NonNegativeInt = 20
    exit_release_s: NonNegativeFloat = 0.0

    def backoff_s(self, restart: int) -> float:
        """Pause before restart ``restart`` (1-based): Kubernetes-style 10, 20, 40 … 300 s."""
        if self.policy == "fixed":
            return self.initial_backoff_s
        return min(self.initial_backoff_s * 2 ** (restart - 1), self.max_backoff_s)

    @property
    def restarts_allowed(self) -> int:
        return 0 if self.policy == "none" else self.max_restarts


class Scenario(_Section):
    name: Annotated[str, Field(min_length=1)] = "scenario"
    description: str = ""
    horizon_s: PositiveFloat = 600.0
    fleet: Fleet = Fleet()
    startup: Startup = Startup()
    pool: Pool = Pool()
    connector: Connector = Connector()
    database: Database = Database()
    restart: Restart = Restart()

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the TOML layout (field names as users write them)."""
        return self.model_dump(by_alias=True, exclude_defaults=False)

    def get(self, dotted: str) -> Any:
        """A field's value by its dotted name, e.g. ``sc.get("pool.min_size")``."""
        node: Any = self.to_dict()
        for part in dotted.split("."):
            node = node[part]
        return node

    def with_overrides(self, overrides: dict[str, Any], source: str = "override") -> Scenario:
        """A copy with dotted fields replaced, e.g. ``{"startup.db_init_timeout_s": 30.0}``."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value, source)
        return from_dict(data, source)


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ScenarioError(source, dotted, value, "no such scenario field")
        node = node[part]
    if leaf not in node:
        raise ScenarioError(source, dotted, value, "no such scenario field")
    node[leaf] = value


def field_names(scenario: Scenario | None = None) -> list[str]:
    """Every dotted scalar field a sweep may vary, e.g. ``pool.min_size``."""
    data = (scenario or Scenario()).to_dict()
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += [f"{key}.{sub}" for sub in value]
        else:
            out.append(key)
    return out


def from_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _scenario_error(exc, data, source) from None
    except FieldProblem as exc:
        raise ScenarioError(source, exc.field, exc.value, exc.problem) from None


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
        "empirical",
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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", MISSING, f"not valid TOML ({exc})") from None
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
