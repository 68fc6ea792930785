"""``startsim loadtest``, ``loadtest-worker`` and ``connector-emulator``: edges over the harness
(``loadtests/``), which is imported inside the commands, so ``startsim simulate`` never loads
gevent, Locust or asyncpg."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sim.cli.options import ScenarioArg
from sim.records import OUTCOMES, Outcome

err = Console(stderr=True)

Dsn = Annotated[
    str,
    typer.Option(
        "--dsn",
        help="postgresql://USER[:PASSWORD]@HOST:PORT/DB. Prefer PGPASSWORD or ~/.pgpass for the "
        "password; it is never printed or stored either way.",
    ),
]
InstanceCommand = Annotated[
    str | None,
    typer.Option(
        "--instance-command",
        help='Run this start-up command (e.g. "python app.py") as each instance instead of the '
        "built-in asyncpg life: DATABASE_URL and PGPASSWORD in its environment, phase timings "
        "as JSON lines on its stdout, exit code 3 for a database-init timeout.",
    ),
]
AllowTarget = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-target",
        help="A non-loopback host this run may reach (repeat for several). Loopback is always "
        "allowed; nothing else is without this.",
    ),
]


def loadtest(
    scenario: ScenarioArg = None,
    dsn: Dsn = ...,
    via_emulator: Annotated[
        bool,
        typer.Option("--via-emulator", help="Connect through the connector emulator."),
    ] = False,
    via_pgbouncer: Annotated[
        bool,
        typer.Option(
            "--via-pgbouncer",
            help="Connect through a real PgBouncer that startsim starts on loopback, configured "
            "from the scenario's [pooler] (apt-get install pgbouncer).",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="Local Locust workers (0: one process).")
    ] = 0,
    remote_workers: Annotated[
        int,
        typer.Option(
            "--remote-workers",
            min=0,
            help="Workers on other hosts to wait for (`startsim loadtest-worker` there).",
        ),
    ] = 0,
    master_bind: Annotated[
        str,
        typer.Option(
            "--master-bind",
            help="HOST:PORT the master listens on for workers (port 0: any free port).",
        ),
    ] = "127.0.0.1:0",
    out: Annotated[Path, typer.Option("--out", help="Results folder.")] = Path("results"),
    allow_target: AllowTarget = None,
    max_instances: Annotated[
        int, typer.Option("--max-instances", min=1, help="Hard limit on fleet.instances.")
    ] = 500,
    max_duration: Annotated[
        float,
        typer.Option("--max-duration", min=1.0, help="Hard limit on the run, seconds."),
    ] = 900.0,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            min=0,
            help="Seed of every random draw (default: a fresh one, printed and recorded).",
        ),
    ] = None,
    instance_command: InstanceCommand = None,
) -> None:
    """Cold-start the scenario's fleet for real against PostgreSQL (Locust + asyncpg)."""
    from loadtests import campaign
    from loadtests.records import error_causes
    from sim import scenario as scenarios

    opts = campaign.Options(
        sc=scenarios.resolve(scenario),
        dsn=dsn,
        via_emulator=via_emulator,
        workers=workers,
        remote_workers=remote_workers,
        master_bind=master_bind,
        out=out,
        allow_targets=list(allow_target or []),
        max_instances=max_instances,
        max_duration_s=max_duration,
        seed=seed,
        instance_command=instance_command,
        via_pgbouncer=via_pgbouncer,
    )
    n = opts.sc.fleet.instances

    def show(counts: dict) -> None:
        errors = counts.get("errors", 0)
        line = (
            f"started {counts['started']}/{n} · ready {counts['ready']} · "
            f"failed attempts {counts['failed_attempts']}"
        )
        err.print(line + (f" ({errors} errors)" if errors else ""), highlight=False)

    def started(seed: int, run_dir: Path) -> None:
        err.print(
            f"seed {seed} (--seed {seed} repeats this campaign's draws); writing {run_dir}",
            highlight=False,
            soft_wrap=True,
        )

    result = campaign.run(opts, progress=show, started=started)
    s = result.summary
    outcomes = s["outcomes"]
    ready = outcomes[Outcome.READY]
    failed = ", ".join(f"{outcomes[k]} {k}" for k in OUTCOMES if k != Outcome.READY and outcomes[k])
    err.print(
        f"{ready} ready, {s['attempts'] - ready} failed attempts "
        f"of {s['attempts']}" + (f" ({failed})" if failed else "") + f"; wrote {result.run_dir}",
        highlight=False,
        soft_wrap=True,
    )
    for count, cause in error_causes(result.records):
        # Not the start-up path's congestion: the target refused these (see records.jsonl).
        err.print(f"error × {count}: {cause}", highlight=False, soft_wrap=True)
    if result.locust_exit_code not in (0, None) and not result.interrupted:
        err.print(
            f"Locust exited with code {result.locust_exit_code}: see {result.run_dir}/locust.out",
            highlight=False,
            soft_wrap=True,
        )
    if result.interrupted:
        # sys.exit here, not KeyboardInterrupt: typer turns that into a return value that
        # sim.cli.main drops (exit code 0). 128 + the signal, as a shell reports it.
        name = signal.Signals(result.stop_signal).name
        err.print(f"interrupted ({name}): every record finished so far is kept", highlight=False)
        sys.exit(128 + result.stop_signal)


def loadtest_worker(
    scenario: ScenarioArg = None,
    dsn: Dsn = ...,
    master: Annotated[
        str, typer.Option("--master", help="The master's HOST:PORT (its --master-bind).")
    ] = "127.0.0.1:5557",
    allow_target: AllowTarget = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, help="Seed of this worker's draws (default: a fresh one)."),
    ] = None,
    instance_command: InstanceCommand = None,
) -> None:
    """Run one Locust worker for a campaign whose master runs elsewhere (distributed mode)."""
    from loadtests import campaign
    from sim import scenario as scenarios

    def announce(seed: int) -> None:
        err.print(f"seed {seed}", highlight=False)

    sc = scenarios.resolve(scenario)
    allowed = list(allow_target or [])
    campaign.become_worker(sc, dsn, master, allowed, seed, announce, instance_command)


def connector_emulator(
    scenario: ScenarioArg = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to accept clients on.")] = ...,
    upstream: Annotated[str, typer.Option("--upstream", help="HOST:PORT of PostgreSQL.")] = ...,
    log: Annotated[
        Path | None,
        typer.Option(
            "--log", help="Append the instance-count log here (JSON lines); default: stdout."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    allow_target: AllowTarget = None,
) -> None:
    """A TCP proxy with the scenario's connector semantics (capacity, FIFO queue, scale-outs) and
    the path faults its path section asks for."""
    from loadtests import safety
    from loadtests.emulator import serve
    from sim import scenario as scenarios

    sc = scenarios.resolve(scenario)
    allowed = list(allow_target or [])
    where = safety.check_host_port(listen, "--listen", allowed)
    to = safety.check_host_port(upstream, "--upstream", allowed)

    def ready(host: str, port: int) -> None:
        err.print(f"listening on {host}:{port}", highlight=False)

    serve(
        sc.connector,
        (where.host, where.port),
        (to.host, to.port),
        seed,
        log,
        ready,
        sc.path,
        sc.egress,
    )
