"""``startsim calibrate``: campaigns and production logs in, a commented scenario TOML out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim import scenario as scenarios
from sim.cli.options import Confidence, Seed, command_line
from sim.output import atomic_write

if TYPE_CHECKING:  # sim.calibrate loads scipy.stats (0.6 s): only the commands that use it do
    from sim.calibrate import Calibration
    from sim.calibrate.inputs import Run

Inputs = Annotated[
    list[Path],
    typer.Argument(help="Campaign folders (startsim loadtest) and/or start-up logs (CSV, JSONL)."),
]


def read_inputs(paths: list[Path], phases: str | None = None) -> list[Run]:
    """Folders are campaigns, files are production logs."""
    from sim.calibrate.inputs import read_campaign, read_log

    runs: list[Run] = []
    for path in paths:
        runs += [read_campaign(path, phases)] if path.is_dir() else read_log(path, phases)
    return runs


def calibrate_cmd(
    inputs: Inputs,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Scenario for what the inputs cannot tell (default: the "
            "first campaign's own scenario, else staging-incident).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The calibrated scenario to write.")] = Path(
        "calibrated.toml"
    ),
    phases: Annotated[
        str | None,
        typer.Option(
            "--phases",
            help="Which named phases of a log form each part, e.g. "
            "'before=config,secrets;database=db;after=warm' or just 'database=db'; "
            "'queries=NAME' marks database phases that are the init queries "
            "(startup.init_queries_s).",
        ),
    ] = None,
    confidence: Confidence = 0.95,
    replications: Annotated[
        int,
        typer.Option(
            "--replications", "-n", min=1, help="Replications per candidate in the connector fit."
        ),
    ] = 20,
    seed: Seed = 0,
) -> None:
    """Fit the scenario's durations, connector and server from measurements; write a TOML."""
    from sim.calibrate import calibrate
    from sim.calibrate.toml import render

    runs = read_inputs(inputs, phases)
    base_sc = scenarios.resolve(base) if base is not None else None
    cal = calibrate(runs, base_sc, confidence=confidence, replications=replications, seed=seed)
    text = render(cal, command_line())
    if out.exists() and out.is_dir():
        from sim.errors import UsageError

        raise UsageError("is a folder; give a file name", "out", str(out))
    console = Console()
    console.print(table(cal))
    for note in cal.notes:
        Console(stderr=True).print(f"note: {note}", highlight=False)
    atomic_write(out, text)
    Console(stderr=True).print(f"wrote {out}", highlight=False)


def table(cal: Calibration) -> Table:
    t = Table(title=f"calibrated from {', '.join(cal.runs)}", title_justify="left")
    for col in ("field", "value", "interval", "n", "source; fit"):
        t.add_column(col, overflow="fold")
    for e in cal.estimates:
        value = "not identifiable" if e.value is None else _short(e.value)
        t.add_row(e.field, value, e.interval(), str(e.n), f"{e.source}; {e.quality}")
    if cal.db_init is not None:
        t.add_row(
            "(database init)",
            _short(cal.db_init.chosen),
            "",
            str(cal.db_init.n),
            cal.db_init.quality(),
        )
    return t


def _short(value) -> str:
    if isinstance(value, dict):
        if value.get("dist") == "empirical":
            return f"empirical ({len(value['values'])} values)"
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "dist").join(
            (f"{value['dist']}(", ")")
        )
    return f"{value:.4g}" if isinstance(value, float) else str(value)
