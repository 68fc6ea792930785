"""``startsim sweep`` and ``startsim recommend``: the edges that run the library, append rows, draw
the figures and write the report folder. ``register(app)`` adds both commands to the typer app."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sim import scenario as scenarios
from sim.engine import run_replication
from sim.errors import UsageError
from sim.output import atomic_write, dumps, scenario_toml, write_json
from sim.recommend import Settings, figure_grid, figure_replications, recommend
from sim.runner import default_jobs, replication_seed
from sim.search import Lab
from sim.sweep import Grid, Pooled, Serial, parse_vary, row_columns, run_grid

RESULTS = Path("results")
DASK_CONNECT_TIMEOUT_S = 10.0


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("recommend")(recommend_cmd)


# -- shared options -------------------------------------------------------------------------------

ScenarioArg = Annotated[
    str | None,
    typer.Argument(
        help="A built-in scenario's name (see `startsim scenarios`) or a TOML file. "
        "Default: the built-in staging-incident."
    ),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Master seed; same seed, same output.")]
Jobs = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Processes to use (default: every core).")
]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run on an existing Dask cluster (e.g. tcp://10.0.0.5:8786) instead of local cores.",
    ),
]
Confidence = Annotated[
    float, typer.Option("--confidence", help="Confidence level of the intervals (0–1).")
]
Svg = Annotated[bool, typer.Option("--svg", help="Write each figure as SVG too.")]


def _progress(desc: str, total: int | None = None):
    from sim.cli import progress_bar

    return progress_bar(total, desc)


class DaskExecutor:
    """A Dask client as an executor: tasks are not pure (no key sharing), results come back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, sum(client.nthreads().values()))

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)


@contextmanager
def executor(jobs: int | None, dask: str | None) -> Iterator[Any]:
    """Local processes (default), this process (``--jobs 1``) or a Dask cluster (``--dask``)."""
    if dask:
        yield from _dask(dask)
        return
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1:
        yield Serial()
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield Pooled(pool, jobs)


def _dask(address: str) -> Iterator[DaskExecutor]:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--dask needs dask.distributed: pip install 'startsim[dask]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(
            f"--dask {address!r}: cannot reach a Dask scheduler there ({exc})"
        ) from None
    try:
        yield DaskExecutor(client)
    finally:
        client.close()


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise UsageError(f"--confidence {confidence}: must be between 0 and 1 exclusive")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _command_line() -> str:
    return "startsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# -- sweep ----------------------------------------------------------------------------------------


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
) -> None:
    """Simulate every point of a grid over scenario fields, with common random numbers."""
    sc = scenarios.resolve(scenario)
    grid = parse_vary(vary or [], sc)
    _check_confidence(confidence)
    if resume and out is None:
        raise UsageError("--resume needs --out DIR: the folder of the sweep to continue")
    out = out or RESULTS / f"{_stamp()}-{sc.name}-sweep"
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
        _progress(f"sweep {sc.name}", (len(grid) - done) * replications) as bar,
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
        )
        with open(out / "sweep.csv", "a", encoding="utf-8", newline="") as f:
            for row in rows:
                _append(f, [row[c] for c in columns])
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
    atomic_write(out / "sweep.csv", _csv_line(columns))
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
    atomic_write(path, _csv_line(columns) + "".join(_csv_line(r) for r in kept))
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


def _cell(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _csv_line(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(v) for v in values])
    return buf.getvalue()


def _append(f, values: list) -> None:
    f.write(_csv_line(values))
    f.flush()
    os.fsync(f.fileno())  # a finished point survives a crash of the machine, not just of startsim


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


def sweep_table(sc, grid: Grid, rows: list[dict]) -> Table:
    table = Table(title=f"sweep of {sc.name}: {len(rows)} points", header_style="bold")
    for f in grid.fields:
        table.add_column(f, justify="right")
    for col in ("P(start fails)", "interval", "fleet ready p95", "restarts/inst", "peak conns"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            *(f"{r[f]}" for f in grid.fields),
            _pct(r["p_start_failure"]),
            f"{_pct(r['p_start_failure_low'])} – {_pct(r['p_start_failure_high'])}",
            "never" if r["fleet_ready_p95_s"] is None else f"{r['fleet_ready_p95_s']:.1f} s",
            f"{r['restarts_per_instance']:.3f}",
            f"{r['peak_db_connections_max']} / {r['free_slots']}",
        )
    return table


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


# -- recommend ------------------------------------------------------------------------------------


def recommend_cmd(
    scenario: ScenarioArg = None,
    target_success: Annotated[
        float,
        typer.Option(
            "--target-success",
            help="Share of start attempts whose database init must finish within the timeout.",
        ),
    ] = 0.99,
    confidence: Confidence = 0.95,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: results/<time>-<scenario name>)."),
    ] = None,
    replications: Annotated[
        int | None,
        typer.Option(
            "--replications",
            "-n",
            min=1,
            help="Replications per simulated point (default: enough for the target, at least "
            "1,000).",
        ),
    ] = None,
    seed: Seed = 0,
    max_timeout: Annotated[
        float | None,
        typer.Option(
            "--max-timeout", help="Longest timeout to consider, s (default: max(120, 3 × current))."
        ),
    ] = None,
    tasks: Annotated[
        int | None,
        typer.Option(
            "--tasks",
            min=1,
            help="Tasks per instance using connections at once, for the pool-locking bound "
            "(default: pool.held_when_ready).",
        ),
    ] = None,
    connections_per_task: Annotated[
        int, typer.Option("--connections-per-task", min=1, help="Connections one task holds.")
    ] = 1,
    jobs: Jobs = None,
    dask: Dask = None,
    svg: Svg = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout.")] = False,
) -> None:
    """Recommend the database-init timeout, pool sizes and connector floor; write an ADR."""
    settings = Settings(
        target_success, confidence, replications, seed, max_timeout, tasks, connections_per_task
    )
    settings.check()
    sc = scenarios.resolve(scenario)
    out = out or RESULTS / f"{_stamp()}-{sc.name}"
    with executor(jobs, dask) as ex, _progress(f"recommend {sc.name}") as bar:
        lab = Lab(ex, seed, confidence, progress=bar.update)
        rec = recommend(sc, settings, lab)
        grid = figure_grid(sc, rec)
        grid_reps = figure_replications(sc, settings)
        rows = list(run_grid(sc, grid, grid_reps, seed, confidence=confidence, executor=ex))
    data = rec.as_dict()
    data["figure_grid"] = {"vary": grid.as_dict(), "replications": grid_reps, "rows": rows}
    data["figures"] = write_report(out, sc, rec, data, rows, grid, svg)
    write_json(out / "summary.json", data)
    atomic_write(out / "scenario.toml", scenario_toml(sc))
    from sim.report import adr

    created = datetime.now(UTC).strftime("%Y-%m-%d")
    atomic_write(out / "adr.md", adr.render(data, sc, data["figures"], _command_line(), created))
    if json_out:
        typer.echo(dumps(data))
    else:
        Console().print(recommend_table(sc, data))
        Console(stderr=True).print(f"wrote {out}/adr.md, summary.json and figures")


def write_report(out, sc, rec, data, rows, grid: Grid, svg: bool) -> dict[str, str]:
    """The four figures; returns role → PNG file name (the ADR links these)."""
    from sim.report import figures

    t, d = data["timeout"], data["decision"]
    names: dict[str, str] = {}
    ok = rec.probe.attempts["outcome"] == "ready"
    marks = [("current timeout", t["current_s"])]
    if d["db_init_timeout_s"] is not None and d["db_init_timeout_s"] != t["current_s"]:
        marks.append(("recommended timeout", d["db_init_timeout_s"]))
    if t["aws_timeout_s"] is not None:
        marks.append(("AWS p99.9 rule", t["aws_timeout_s"]))
    fig = figures.db_init_cdf(
        rec.probe.attempts["db_init_s"][ok],
        marks,
        data["target_success"],
        f"{sc.name}, {rec.probe.replications} replications, deadline {t['probe_timeout_s']:g} s",
    )
    names["cdf"] = figures.save(fig, out, "db-init-cdf", svg)[0]
    x, y = grid.fields
    fig = figures.heatmap(
        rows,
        x,
        y,
        subtitle=f"{sc.name}, {data['figure_grid']['replications']} replications per cell",
    )
    names["heatmap"] = figures.save(fig, out, "heatmap-p-start-fails", svg)[0]
    names["timeline"] = figures.save(_timeline(sc, data), out, "timeline", svg)[0]
    if y == "fleet.instances":
        series = [
            (f"timeout {v:g} s", [r for r in rows if r[x] == v])
            for v in sorted({t["current_s"], d["db_init_timeout_s"] or t["current_s"]})
        ]
        fig = figures.restarts_vs_fleet(series)
        names["restarts"] = figures.save(fig, out, "restarts-vs-fleet", svg)[0]
    return names


def _timeline(sc, data):
    from sim.report import figures

    seed = replication_seed(data["seed"], 0)
    panels = [("today: " + _short(sc, {}), run_replication(sc, seed, timeline=True).timeline)]
    over = data["decision"]["overrides"]
    if over:
        chosen = sc.with_overrides(over)
        panels.append(
            (
                f"{data['decision']['configuration']}",
                run_replication(chosen, seed, timeline=True).timeline,
            )
        )
    return figures.timeline(panels, sc.database.free_slots, sc.database.max_connections)


def _short(sc, over: dict) -> str:
    return f"timeout {sc.startup.db_init_timeout_s:g} s, min_size {sc.pool.min_size}"


def recommend_table(sc, data: dict) -> Table:
    d, v = data["decision"], data["verdict"]
    table = Table(
        title=f"{sc.name}: target {data['target_success']:g} at {data['confidence']:.0%} "
        f"confidence, {data['replications']} replications",
        header_style="bold",
    )
    table.add_column("recommendation")
    table.add_column("value", justify="right")
    table.add_column("detail")

    def sec(x):
        return "—" if x is None else f"{x:g} s"

    table.add_row(
        "configuration to adopt",
        d["configuration"] or "none met the target",
        ", ".join(f"{k}={val}" for k, val in (d["overrides"] or {}).items()),
    )
    table.add_row(
        "db init timeout",
        sec(d["db_init_timeout_s"]),
        f"smallest verified {sec(d['smallest_timeout_s'])}; "
        f"today {sec(data['timeout']['current_s'])}",
    )
    for row in data["timeout"]["by_target"]:
        table.add_row(f"  timeout for {row['target_success']:g}", sec(row["timeout_s"]), "")
    table.add_row("  AWS p99.9 rule", sec(data["timeout"]["aws_timeout_s"]), "p99.9 of db init")
    if not v["timeout_helps"]:
        table.add_row("no timeout helps", "", v["reason"])
    table.add_row(
        "pool min_size / max_size",
        f"{d['pool_min_size']} / {d['pool_max_size']}",
        f"largest fleet {d['largest_fleet']}",
    )
    table.add_row("connector min_instances", str(d["connector_min_instances"] or "—"), "")
    return table
