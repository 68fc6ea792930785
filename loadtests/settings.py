"""The locustfile's settings: Locust command-line options, each with its environment variable.

``locust -f loadtests/locustfile.py --dsn postgresql://app@127.0.0.1:5432/app`` runs a campaign
without ``startsim``; ``startsim loadtest`` starts the same Locust with the same options. The DSN
may hold the password, so ``startsim`` passes it in ``STARTSIM_DSN`` only (Locust reads an option's
``env_var`` like the option itself), never on a command line, which ``ps`` shows; Locust's web UI
masks it (``is_secret``). Every process reads its settings once, when Locust starts: the dialled
addresses come from :mod:`loadtests.safety` whichever way the run was started.

Nothing here imports Locust: importing it monkey-patches the process for gevent.
"""

from __future__ import annotations

import os
import secrets as _secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadtests import safety
from sim import scenario as scenarios
from sim.errors import MISSING, StartsimError, UsageError
from sim.output import atomic_write, safe_folder_name, scenario_toml
from sim.scenario import Scenario

DEFAULT_MAX_INSTANCES = 500  # as `startsim loadtest --max-instances`
DEFAULT_MAX_DURATION_S = 900.0  # as `startsim loadtest --max-duration`

# (option, environment variable, help); the flag is the option with dashes: --allow-target.
OPTIONS = (
    (
        "dsn",
        "STARTSIM_DSN",
        "PostgreSQL URL to load, e.g. postgresql://app@127.0.0.1:5432/app; "
        "required. Keep the password in PGPASSWORD or ~/.pgpass (a command line shows in ps)",
    ),
    ("scenario", "STARTSIM_SCENARIO", "shipped scenario name or TOML path (staging-incident)"),
    ("allow_target", "STARTSIM_ALLOW_TARGET", "a non-loopback host the run may reach (repeat)"),
    ("seed", "STARTSIM_SEED", "seed of every random draw (default: a fresh one, logged)"),
    ("out", "STARTSIM_OUT", "folder for a fresh <time>-<scenario>/ results folder (results)"),
    ("max_instances", "STARTSIM_MAX_INSTANCES", "refuse a larger fleet.instances (500)"),
    ("max_duration", "STARTSIM_MAX_DURATION", "stop after this many seconds (900)"),
    (
        "addresses",
        "STARTSIM_ADDRESSES",
        "dial these HOST:PORT,... instead of the DSN's hosts, "
        "each checked like them (startsim loadtest passes the ones it checked)",
    ),
    ("run_dir", "STARTSIM_RUN_DIR", "write into exactly this folder (startsim loadtest)"),
    (
        "instance_command",
        "STARTSIM_INSTANCE_COMMAND",
        "run this start-up command as each instance instead of the built-in asyncpg life",
    ),
)
ENV_VARS = {name: env for name, env, _ in OPTIONS}


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def add_arguments(parser) -> None:
    """Declare the options on Locust's parser (the ``init_command_line_parser`` event)."""
    kinds = {
        "dsn": {"is_secret": True},
        "allow_target": {"action": "append", "default": None},
        "seed": {"type": int},
        "max_instances": {"type": int, "default": DEFAULT_MAX_INSTANCES},
        "max_duration": {"type": float, "default": DEFAULT_MAX_DURATION_S},
        "out": {"default": "results"},
        "addresses": {"include_in_web_ui": False},
        "run_dir": {"include_in_web_ui": False},
    }
    for name, env_var, text in OPTIONS:
        parser.add_argument(flag(name), env_var=env_var, help=text, **kinds.get(name, {}))


@dataclass(frozen=True)
class HarnessSettings:
    """One process's campaign settings, checked."""

    sc: Scenario
    dsn: str
    connect: dict  # asyncpg's keyword arguments: host and port (the checked addresses), password
    seed: int
    seed_given: bool
    limit_s: float
    run_dir: Path | None  # only where records are written: the master, or a local run
    fresh_run_dir: bool  # made here (a plain `locust -f` run), not by `startsim loadtest`
    secrets: tuple[str, ...]
    command: tuple[str, ...] = ()  # --instance-command's argv; empty: the built-in asyncpg life


def from_options(options, writer: bool) -> HarnessSettings:
    """Settings from Locust's parsed options; :class:`~sim.errors.StartsimError` if unusable.

    ``writer``: this process writes records (a local run, or the master), so it gets a folder.
    """
    dsn = getattr(options, "dsn", None)
    if not dsn:
        raise UsageError(
            "the database to load, e.g. postgresql://app@127.0.0.1:5432/app, with the password "
            "in PGPASSWORD or ~/.pgpass",
            "dsn",
            MISSING,
        )
    sc = scenarios.resolve(options.scenario)
    if sc.fleet.instances > options.max_instances:
        raise UsageError(
            f"fleet.instances = {sc.fleet.instances} exceeds it; raise it to run this scenario",
            "max_instances",
            options.max_instances,
        )
    allowed = list(options.allow_target or [])
    resolved = safety.resolve_dsn(dsn, allowed)
    targets = resolved.targets
    if options.addresses:
        targets = tuple(t for item in options.addresses.split(",") for t in _checked(item, allowed))
    connect = {"host": [t.host for t in targets], "port": [t.port for t in targets]}
    if resolved.password is not None:
        # Found for the DSN as written (~/.pgpass matches the host name): given explicitly,
        # since the addresses dialled may not match a ~/.pgpass line for the name.
        connect["password"] = resolved.password
    passwords = (safety.dsn_password(dsn), resolved.password, os.environ.get("PGPASSWORD"))
    seed = options.seed if options.seed is not None else _secrets.randbits(32)
    command = getattr(options, "instance_command", None)
    if command is not None:
        from loadtests.command import parse_command  # imports asyncpg: only when asked

        command = tuple(parse_command(command))
    run_dir, fresh = _run_dir(options, sc) if writer else (None, False)
    return HarnessSettings(
        sc=sc,
        dsn=dsn,
        connect=connect,
        seed=seed,
        seed_given=options.seed is not None,
        limit_s=min(sc.horizon_s, options.max_duration),
        run_dir=run_dir,
        fresh_run_dir=fresh,
        secrets=tuple(s for s in passwords if s),
        command=command or (),
    )


def check_traffic(sc: Scenario, command: bool, distributed: bool) -> None:
    """Traffic after ready (loadtests.traffic) goes through the built-in instances' pools, and
    the fleet's stream is routed by one process, which must see every ready instance."""
    traffic = sc.traffic
    given = [
        name
        for name, on in (
            ("rate_per_s", traffic.rate_per_s > 0),
            ("rate_per_instance_per_s", traffic.rate_per_instance_per_s > 0),
            ("trace_s", bool(traffic.trace_s)),
        )
        if on
    ]
    if not given:
        return
    if command:
        raise UsageError(
            f"traffic.{given[0]}: traffic after ready goes through the harness's own pools, and "
            "a start-up command's pool is its own; run without --instance-command, or without "
            "[traffic]"
        )
    if distributed and given[0] != "rate_per_instance_per_s":
        raise UsageError(
            f"traffic.{given[0]}: the fleet's stream is routed by one process over every ready "
            "instance; run without workers, or give traffic.rate_per_instance_per_s"
        )


def check_breaker(sc: Scenario, command: bool, distributed: bool) -> None:
    """A ``shared`` breaker is one object for the whole fleet (loadtests.stayup): the harness
    can share it between the instances of one process only, not with workers' processes, nor
    with start-up commands (each its own process; a team would share it through Redis)."""
    if not sc.breaker.shared:
        return
    if command:
        raise UsageError(
            'breaker.form = "shared": each --instance-command process would have its own '
            "breaker, and the harness cannot share one with them (a team would keep it in "
            'Redis); run without --instance-command, or with breaker.form = "stay_up"'
        )
    if distributed:
        raise UsageError(
            'breaker.form = "shared": one breaker for the whole fleet lives in one process, and '
            "workers run instances in processes of their own; run without workers, or with "
            'breaker.form = "stay_up"'
        )


def _checked(item: str, allowed: list[str]) -> list[safety.Target]:
    """One ``--addresses`` entry, checked as a DSN host is: loopback, a socket, or allowed."""
    item = item.strip()
    if item.startswith("/"):  # a Unix socket path, ending in .s.PGSQL.<port>
        port = item.rpartition(safety.UNIX_SOCKET_MARK)[2]
        return [safety.Target(item, int(port) if port.isdigit() else 5432)]
    where = safety.parse_host_port(item, "--addresses")
    return safety.check_host(where.host, where.port, allowed, "--addresses host")


def _run_dir(options, sc: Scenario) -> tuple[Path, bool]:
    if options.run_dir:
        return Path(options.run_dir), False
    _, run_dir = new_run_dir(Path(options.out), sc.name)
    atomic_write(run_dir / "scenario.toml", scenario_toml(sc))
    return run_dir, True


def new_run_dir(out: Path, name: str) -> tuple[str, Path]:
    """A fresh ``<time>-<name>`` folder under ``out`` for one campaign: its id and path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(100):
        run_id = f"{stamp}-{safe_folder_name(name)}" + (f"-{n}" if n else "")
        run_dir = out / run_id
        try:
            run_dir.mkdir(parents=True)
            return run_id, run_dir
        except FileExistsError:
            continue
    raise UsageError(f"--out = {str(out)!r}: cannot create a fresh run folder")


def describe(exc: StartsimError) -> str:
    """One line for a refused start, naming the option as typed and its environment variable."""
    if not isinstance(exc, UsageError) or exc.option is None:
        return str(exc)
    name = f"{flag(exc.option)} (or {ENV_VARS[exc.option]})"
    if exc.value is MISSING:
        return f"{name} is required: {exc.problem}"
    return f"{name} = {exc.value!r}: {exc.problem}"


def child_args(
    scenario: Path,
    seed: int,
    addresses: tuple[safety.Target, ...],
    allowed: list[str],
    limit_s: float,
    max_instances: int,
    run_dir: Path | None = None,
    instance_command: str | None = None,
) -> list[str]:
    """The options ``startsim`` gives its Locust processes: nothing secret (``ps`` shows them).

    The addresses were checked by ``startsim``; the child checks them again, so those it was
    allowed to reach by name are allowed by address too.
    """
    by_address = [t.host for t in addresses if not (t.is_unix or safety.is_loopback(t.host))]
    args = ["--scenario", str(scenario), "--seed", str(seed)]
    args += ["--addresses", ",".join(str(t) for t in addresses)]
    for host in dict.fromkeys([*allowed, *by_address]):
        args += ["--allow-target", host]
    args += ["--max-duration", repr(limit_s), "--max-instances", str(max_instances)]
    if instance_command is not None:
        args += ["--instance-command", instance_command]
    return args + (["--run-dir", str(run_dir)] if run_dir is not None else [])


def secret_env(dsn: str, password: str | None) -> dict[str, str]:
    """The DSN and the password for a Locust process, in its environment only.

    The password asyncpg found for the DSN as written (``~/.pgpass`` matches the host name) goes
    in ``PGPASSWORD``: children dial addresses, which a ``.pgpass`` line for the name would miss.
    """
    env = {ENV_VARS["dsn"]: dsn}
    if password is not None:
        env["PGPASSWORD"] = password
    return env
