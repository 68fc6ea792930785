"""``startsim simulate`` across worlds: a scenario with uncertain values (sim/uncertainty.py) run
over a design of worlds (sim/worlds.py), each figure shown as its median and 10–90 % band over
worlds beside every world's replications pooled. ``--out`` appends one row per world to
``worlds.csv`` as each finishes, so an interrupted run keeps every world it finished."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from sim import worlds as w
from sim.cli.options import prepare_out, progress
from sim.output import (
    append_row,
    atomic_write,
    csv_line,
    dumps,
    scenario_toml,
    write_csv,
    write_json,
)
from sim.records import FLEET_COLUMNS
from sim.report.tables import worlds_table
from sim.runner import executor
from sim.scenario import Scenario
from sim.success import rates_dict
from sim.sweep import ROW_FIGURES

WORLDS = 16  # default design size: a power of two, so Sobol' points keep their balance
CONFIDENCE = 0.95


@dataclass(frozen=True)
class WorldsRun:
    replications: int
    seed: int
    jobs: int | None
    dask: str | None
    engine: str
    worlds: int
    design: str


def across_worlds(sc: Scenario, s: WorldsRun, json_out: bool, out: Path | None) -> None:
    d = w.design(sc, s.worlds, s.seed, s.design)
    scenarios = w.world_scenarios(sc, d)  # every world checked before any work or file
    columns = ["world", *d.fields, *ROW_FIGURES]
    if out is not None:
        prepare_out(out)
        atomic_write(out / "scenario.toml", scenario_toml(sc))
        atomic_write(out / "worlds.csv", csv_line(columns))
    done = []
    with (
        executor(s.jobs, s.dask) as ex,
        progress(f"simulate {sc.name}", len(d) * s.replications) as bar,
        open(out / "worlds.csv", "a", encoding="utf-8", newline="") if out else nullcontext() as f,
    ):
        runs = w.run(
            d, scenarios, s.replications, s.seed, executor=ex, progress=bar.update, engine=s.engine
        )
        for world in runs:
            done.append(world)
            if f is not None:
                row = world.row()
                append_row(f, [row[c] for c in columns])
    data = _summary(sc, s, d, done)
    if out is not None:  # summary.json last: its presence means the run is complete
        write_csv(out / "replications.csv", _replications(done))
        write_json(out / "summary.json", data)
    if json_out:
        typer.echo(dumps(data))
    else:
        table = worlds_table(sc, data["worlds"], data["worlds"]["figures"])
        table.title = f"{table.title}, {data['engine']} engine"
        Console().print(table)
        if out is not None:
            Console(stderr=True).print(
                f"wrote {out}/summary.json, worlds.csv, replications.csv, scenario.toml"
            )


def _summary(sc: Scenario, s: WorldsRun, d: w.Design, done: list[w.World]) -> dict:
    summary, rates = w.pooled(done, s.seed, CONFIDENCE)
    rows = [world.row() for world in done]
    return {
        "scenario": sc.name,
        "engine": done[0].engine,
        **summary.as_dict(),
        "success": rates_dict(rates, sc.team.success_definition, sc.team.success_criterion),
        "sources": [e.as_dict() for e in sc.provenance()],
        "worlds": {
            **d.as_dict(),
            "replications_per_world": s.replications,
            "figures": w.across(rows, summary),
            "per_world": rows,
        },
    }


def _replications(done: list[w.World]) -> dict[str, np.ndarray]:
    """replications.csv: one row per replication of every world, with its world."""
    rows = {
        "world": np.repeat([x.index for x in done], [len(x.fleet["replication"]) for x in done])
    }
    return rows | {k: np.concatenate([x.fleet[k] for x in done]) for k in FLEET_COLUMNS}
