"""``startsim sweep``: a grid over scenario fields, one row appended to sweep.csv per point."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sim import scenario as scenarios
from sim.cli.options import (
    RESULTS,
    Confidence,
    Dask,
    EngineOption,
    Jobs,
    ScenarioArg,
    Seed,
    Svg,
    prepare_out,
    progress,
    stamp,
)
from sim.errors import UsageError
from sim.output import append_row, atomic_write, csv_line, dumps, safe_folder_name, write_json
from sim.report.tables import sweep_table
from sim.runner import executor
from sim.stats import check_confidence
from sim.sweep import Grid, parse_vary, row_columns, run_grid


def sweep(
    scenario: ScenarioArg = None,
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            metavar="FIELD=V1,V2,…",
            help="A dotted scenario field and its values, e.g. startup.db_init_timeout_s=20,30. "
            "Repeat for a cartesian grid.",
        ),
    ] = None,
    replications: Annotated[
        int, typer.Option("--replications", "-n", min=1, help="Replications per grid point.")
    ] = 200,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for sweep.csv (default: results/<time>-<name>-sweep)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted sweep in --out.")
    ] = False,
    jobs: Jobs = None,
    dask: Dask = None,
    svg: Svg = False,
    engine: EngineOption = "auto",
) -> None:
    """Simulate every point of a grid over scenario fields, with common random numbers."""
    sc = scenarios.resolve(scenario)
    grid = parse_vary(vary or [], sc)
    check_confidence(confidence)
    if resume and out is None:
        raise UsageError("needs --out DIR: the folder of the sweep to continue", "resume", True)
    out = prepare_out(out or RESULTS / f"{stamp()}-{safe_folder_name(sc.name)}-sweep")
    meta = {
        "scenario": sc.to_dict(),
        "vary": grid.as_dict(),
        "replications": replications,
        "seed": seed,
        "confidence": confidence,
    }
    columns = row_columns(grid)
    done = _resume(out, meta, columns) if resume else _fresh(out, meta, columns)
    with (
        executor(jobs, dask) as ex,
        progress(f"sweep {sc.name}", (len(grid) - done) * replications) as bar,
    ):
        rows = run_grid(
            sc,
            grid,
            replications,
            seed,
            confidence=confidence,
            executor=ex,
            skip=done,
            progress=bar.update,
            engine=engine,
        )
        with open(out / "sweep.csv", "a", encoding="utf-8", newline="") as f:
            for row in rows:
                append_row(f, [row[c] for c in columns])
    table = read_rows(out / "sweep.csv")
    figures = _sweep_figures(out, grid, table, sc, replications, svg)
    Console().print(sweep_table(sc, grid, table))
    Console(stderr=True).print(f"wrote {out}/sweep.csv" + "".join(f", {f}" for f in figures))


def _fresh(out: Path, meta: dict, columns: list[str]) -> int:
    if (out / "sweep.csv").exists():
        raise UsageError(
            f"--out {out}: already holds a sweep (sweep.csv); add --resume to continue it "
            "or choose another folder"
        )
    write_json(out / "sweep.json", meta)
    atomic_write(out / "sweep.csv", csv_line(columns))
    return 0


def _resume(out: Path, meta: dict, columns: list[str]) -> int:
    """Check the folder holds this very sweep; keep its complete rows; return how many."""
    try:
        old = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"--resume: no sweep to resume in {out} (sweep.json missing)") from None
    differ = [k for k in meta if json.loads(dumps(meta[k])) != old.get(k)]
    if differ:
        raise UsageError(
            f"--resume: {out} holds a different sweep ({', '.join(differ)} differ); "
            "give the same scenario, --vary, --replications, --seed and --confidence"
        )
    path = out / "sweep.csv"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = _complete_rows(text, columns)
    # A line cut short by the interruption is dropped: that point is simulated again.
    atomic_write(path, csv_line(columns) + "".join(csv_line(r) for r in kept))
    return len(kept)


def _complete_rows(text: str, columns: list[str]) -> list[list[str]]:
    lines = text.splitlines(keepends=True)
    rows = []
    for line in lines[1:]:
        if not line.endswith("\n"):
            break
        row = next(csv.reader([line]))
        if len(row) != len(columns) or row[0] != str(len(rows)):
            break
        rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict]:
    """sweep.csv back as dicts of numbers (text where a value is not a number, None if empty)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _sweep_figures(out, grid: Grid, rows, sc, replications: int, svg: bool) -> list[str]:
    if len(grid.fields) != 2 or not all(isinstance(r[grid.fields[0]], int | float) for r in rows):
        return []
    from sim.report import figures

    fig = figures.heatmap(
        rows,
        grid.fields[0],
        grid.fields[1],
        subtitle=f"{sc.name}, {replications} replications per cell",
    )
    return figures.save(fig, out, "heatmap", svg)
