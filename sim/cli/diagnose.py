"""``startsim diagnose``: which hypothesis can produce what the logs show (sim.diagnose)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim.cli.calibrate import (
    Format,
    Inputs,
    LogLinePrefixOption,
    PhasePatternOption,
    PhasesOption,
    StartupSpanOption,
    read_inputs,
)
from sim.cli.options import RESULTS, EngineOption, Json, Seed, command_line, prepare_out, stamp
from sim.output import atomic_write, dumps, write_json

HypothesisOption = Annotated[
    list[str] | None,
    typer.Option(
        "--hypothesis",
        metavar="NAME|TOML",
        help="A hypothesis to test: a shipped one (capacity, path-fault, slow-dependency), a "
        "shipped scenario's name or a TOML file; repeat for several. Default: the shipped ones.",
    ),
]


def diagnose_cmd(
    logs: Inputs,
    hypothesis: HypothesisOption = None,
    phases: PhasesOption = None,
    fmt: Format = "auto",
    phase_pattern: PhasePatternOption = None,
    startup_span: StartupSpanOption = None,
    log_line_prefix: LogLinePrefixOption = None,
    replications: Annotated[
        int,
        typer.Option("--replications", "-n", min=1, help="Replications (deploys) per hypothesis."),
    ] = 200,
    seed: Seed = 0,
    engine: EngineOption = "auto",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for diagnose.md, diagnose.json and diagnose.png."),
    ] = None,
    json_: Json = False,
) -> None:
    """Which story the logs support: each hypothesis simulated, its signals tested against them."""
    # Here, not at the top: scipy.stats and the engines load only when this command runs.
    from sim.diagnose import diagnose, load_hypothesis, observed, shipped_hypotheses
    from sim.diagnose import simulated_records as records_of
    from sim.report.diagnose import as_json, figure, markdown
    from sim.runner import simulate
    from sim.verdicts import verdict

    runs = read_inputs(logs, phases, fmt, phase_pattern, startup_span, log_line_prefix)
    loaded = [load_hypothesis(h) for h in hypothesis or shipped_hypotheses()]
    obs = observed(runs)
    folder = prepare_out(out or RESULTS / f"{stamp()}-diagnose")
    simulated = []
    for sc, where in loaded:
        res = simulate(sc, replications, seed, engine=engine)
        simulated.append((sc.name, where, sc, records_of(res), replications))
    d = diagnose(obs, simulated, seed=seed)
    doc = as_json(d, command_line())
    figure(d, folder)
    atomic_write(folder / "diagnose.md", markdown(d, doc))
    write_json(folder / "diagnose.json", doc)
    if json_:
        typer.echo(dumps(doc))
    else:
        Console().print(table(d))
    Console(stderr=True).print(f"{verdict(d)}\nwrote {folder}/diagnose.md", highlight=False)


def table(d) -> Table:
    t = Table(title="each hypothesis against the logs", title_justify="left")
    for col in ("hypothesis", "signal", "observed", "hypothesis gives", "p (Holm)", "verdict"):
        t.add_column(col, overflow="fold")
    from sim.verdicts import observed_phrase, predicted_phrase

    for h in d.hypotheses:
        for t_ in h.tests:
            p = "—" if t_.adjusted_p is None else f"{t_.adjusted_p:.2g}"
            mark = "rejects" if t_.rejected else ""
            t.add_row(h.name, t_.signal, observed_phrase(t_), predicted_phrase(t_), p, mark)
        t.add_row(h.name, "", "", "", "", h.verdict, end_section=True)
    return t
