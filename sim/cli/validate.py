"""``startsim validate``: simulate each campaign's scenario and compare, figure by figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim import scenario as scenarios
from sim.cli.calibrate import (
    Format,
    LogLinePrefixOption,
    PhasePatternOption,
    PhasesOption,
    StartupSpanOption,
    monitoring_table,
    read_inputs,
)
from sim.cli.options import RESULTS, Confidence, Seed, command_line, prepare_out, stamp
from sim.output import atomic_write


def validate_cmd(
    campaigns: Annotated[
        list[Path],
        typer.Argument(
            help="Campaign folders (startsim loadtest) and/or start-up logs (docs/formats.md)."
        ),
    ],
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            help="Calibrated scenario (startsim calibrate); default: each campaign's own scenario.",
        ),
    ] = None,
    replications: Annotated[
        int, typer.Option("--replications", "-n", min=1, help="Replications per campaign.")
    ] = 200,
    confidence: Confidence = 0.95,
    seed: Seed = 0,
    phases: PhasesOption = None,
    fmt: Format = "auto",
    phase_pattern: PhasePatternOption = None,
    startup_span: StartupSpanOption = None,
    log_line_prefix: LogLinePrefixOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for validation.md and the figure.")
    ] = None,
) -> None:
    """Measured vs predicted for each campaign, with a verdict per figure."""
    # Here, not at the top: sim.validate loads scipy.stats (0.5 s) that other commands never use.
    from sim.calibrate import monitoring_windows
    from sim.report.validation import figure, markdown
    from sim.validate import check_replications, validate, verdict_line

    check_replications(replications)
    runs = read_inputs(campaigns, phases, fmt, phase_pattern, startup_span, log_line_prefix)
    runs = _with_attempts(runs)
    calibrated = scenarios.resolve(scenario) if scenario is not None else None
    folder = prepare_out(out or RESULTS / f"{stamp()}-validation")
    v = validate(runs, calibrated, replications=replications, seed=seed, confidence=confidence)
    Console().print(table(v))
    windows = monitoring_windows(runs)
    if windows:
        Console().print(monitoring_table(windows))
    label = f"`{scenario}`" if scenario else "each campaign's own scenario"
    figure(v, folder)
    atomic_write(folder / "validation.md", markdown(v, label, command_line()))
    Console(stderr=True).print(f"{verdict_line(v)}; wrote {folder}/validation.md", highlight=False)


def _with_attempts(runs):
    """A server log (PostgreSQL's) holds no start attempt to compare: it calibrates, and is left
    out here; alone it is a usage error, not a traceback."""
    kept = [r for r in runs if r.attempts]
    if not kept:
        from sim.errors import UsageError

        raise UsageError(
            f"{', '.join(r.source for r in runs)}: no start attempts in them (a PostgreSQL "
            "server log has none): validate compares attempts, so give a campaign, a start-up "
            "log, a Cloud Logging export or an OTLP trace; a server log calibrates"
        )
    for r in runs:
        if not r.attempts:
            Console(stderr=True).print(f"note: {r.source}: no start attempts, not validated")
    return kept


def table(v) -> Table:
    t = Table(title="measured vs predicted", title_justify="left")
    for col in ("figure", "measured", "predicted", "verdict"):
        t.add_column(col, overflow="fold")
    for f in v.figures + v.conditional:
        t.add_row(
            f.name,
            _fmt(f.measured, f.measured_interval),
            _fmt(f.predicted, f.predicted_interval),
            f.verdict,
        )
    return t


def _fmt(x, iv) -> str:
    if math.isnan(x):
        return "not measured"
    s = "never" if x == float("inf") else f"{x:.4g}"
    return s if iv is None else f"{s} [{iv[0]:.3g}, {iv[1]:.3g}]"
