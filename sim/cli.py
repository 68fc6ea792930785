"""The ``startsim`` command line: an edge that parses options, calls the library, prints, and turns
startsim's errors into exit code 2 with one line on stderr (never a traceback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim import scenario as scenarios
from sim.errors import StartsimError
from sim.output import atomic_write, dumps, scenario_toml, write_csv, write_json
from sim.report.cli import Jobs, ScenarioArg, Seed, pct, prepare_out, progress_bar
from sim.runner import simulate as run_simulation
from sim.sweep import summary_of

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags show as flags, not "--json <bool>"
    no_args_is_help=True,
    help="Simulate, load-test and size the database path of a fleet that cold-starts at once.",
)
err = Console(stderr=True)

Replications = Annotated[
    int, typer.Option("--replications", "-n", min=1, help="Independent replications to simulate.")
]


@app.command()
def simulate(
    scenario: ScenarioArg = None,
    replications: Replications = 200,
    seed: Seed = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write scenario, summary and per-attempt records to this folder."
        ),
    ] = None,
    jobs: Jobs = None,
) -> None:
    """Simulate the scenario and summarise start-up outcomes with 95 % intervals."""
    sc = scenarios.resolve(scenario)
    if out is not None:
        prepare_out(out)
    with progress_bar(replications, f"simulate {sc.name}") as bar:
        res = run_simulation(sc, replications, seed, jobs, progress=bar.update)
    summary = {"scenario": sc.name, **summary_of(res, confidence=0.95)}
    if out is not None:  # each file whole; summary.json last, so its presence means complete
        atomic_write(out / "scenario.toml", scenario_toml(sc))
        write_csv(out / "attempts.csv", res.attempts)
        write_csv(out / "replications.csv", res.fleet)
        write_json(out / "summary.json", summary)
    if json_out:
        typer.echo(dumps(summary))
    else:
        Console().print(summary_table(sc, summary))
        if out is not None:
            err.print(f"wrote {out}/summary.json, attempts.csv, replications.csv, scenario.toml")


def summary_table(sc: scenarios.Scenario, s: dict) -> Table:
    def sec(x):
        return "never" if x is None else f"{x:.1f} s"

    table = Table(
        title=f"{sc.name}: {s['replications']} replications, seed {s['seed']}",
        show_header=True,
        header_style="bold",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("95 % interval / detail", justify="right")
    t = s["p_db_init_timeout"]
    table.add_row(
        f"P(db init > {sc.startup.db_init_timeout_s:g} s timeout) per attempt",
        pct(t["estimate"]),
        f"{pct(t['ci_low'])} – {pct(t['ci_high'])}",
    )
    f = s["p_start_failure"]
    table.add_row(
        "P(start attempt fails) per attempt",
        pct(f["estimate"]),
        f"{pct(f['ci_low'])} – {pct(f['ci_high'])}",
    )
    table.add_row("P(first start succeeds) per instance", pct(s["p_first_start_success"]), "")
    table.add_row(
        "never ready within horizon", pct(s["never_ready_fraction"]), f"horizon {sc.horizon_s:g} s"
    )
    r = s["fleet_ready_s"]
    table.add_row(
        "fleet ready (all instances) p50",
        sec(r["p50"]),
        f"p95 {sec(r['p95'])}, p99 {sec(r['p99'])}",
    )
    table.add_row("restarts per instance", f"{s['restarts_per_instance']:.2f}", "")
    pk = s["peak_db_connections"]
    table.add_row(
        "peak database connections p50",
        f"{pk['p50']:.0f}",
        f"max {pk['max']} of {sc.database.free_slots} usable",
    )
    wa = s["work_amplification"]
    table.add_row(
        "work amplification",
        "—" if wa is None else f"{wa:.2f}×",
        "connection attempts ÷ connections needed",
    )
    return table


@app.command("scenarios")
def list_scenarios() -> None:
    """List the scenarios shipped with startsim."""
    table = Table(show_header=True, header_style="bold")
    for col in ("name", "instances", "min/max pool", "timeout", "max_connections", "description"):
        table.add_column(col)
    for name in scenarios.builtin_names():
        sc = scenarios.resolve(name)
        table.add_row(
            name,
            str(sc.fleet.instances),
            f"{sc.pool.min_size}/{sc.pool.max_size}",
            f"{sc.startup.db_init_timeout_s:g} s",
            str(sc.database.max_connections),
            sc.description,
        )
    Console(width=160).print(table)


# sweep and recommend live in sim/report/cli.py; one line here registers them.
from sim.report.cli import register as _register_reports  # noqa: E402

_register_reports(app)


def main() -> None:
    """Console-script entry point: every mistake of the user's (startsim's own errors and the
    command line's usage errors alike) becomes one line on stderr and exit code 2, never a
    traceback; Ctrl-C becomes 130."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    try:
        code = app(standalone_mode=False)
    except StartsimError as exc:
        _fail(str(exc))
    except NoArgsIsHelpError as exc:  # bare `startsim`: its help, as a usage error
        exc.show()
        sys.exit(2)
    except ClickException as exc:  # typer's own click: unknown option, bad value, missing option
        _fail(_usage_message(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    # Without standalone mode click returns, rather than raises, the code of typer.Exit (Ctrl-C
    # inside a command becomes Exit(130)): pass it on.
    if isinstance(code, int) and code:
        if code == 130:
            err.print("interrupted")
        sys.exit(code)


def _fail(message: str, code: int = 2) -> None:
    err.print(
        f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True
    )
    sys.exit(code)


def _usage_message(exc) -> str:
    """Click's message, with the value the user gave for a bad option (click names only the
    option), and where to look: ``--jobs 0: … (see 'startsim simulate --help')``."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    args = sys.argv[1:]
    for opt in getattr(getattr(exc, "param", None), "opts", ()):
        for i, arg in enumerate(args):
            if arg == opt and i + 1 < len(args):
                return f"{opt} {args[i + 1]}: {exc.message}{hint}"
            if arg.startswith(opt + "="):
                return f"{opt} {arg[len(opt) + 1 :]}: {exc.message}{hint}"
    return exc.format_message() + hint


__all__ = ["app", "main"]

# Load-campaign commands live with the harness (loadtests/); they import Locust only when run.
from loadtests.cli import register as _register_loadtests  # noqa: E402

_register_loadtests(app)
