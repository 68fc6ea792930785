"""``startsim recommend``: run the recommender, draw the figures, write the report folder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim import scenario as scenarios
from sim.engine import run_replication
from sim.output import atomic_write, dumps, safe_folder_name, scenario_toml, write_json
from sim.recommend import Settings, figure_grid, figure_replications, recommend
from sim.report.cli import (
    RESULTS,
    Confidence,
    Dask,
    Jobs,
    ScenarioArg,
    Seed,
    Svg,
    command_line,
    executor,
    pct,
    prepare_out,
    progress,
    stamp,
)
from sim.runner import replication_seed
from sim.search import Lab
from sim.sweep import Grid, run_grid


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
    settings.check_ceiling(sc)
    out = prepare_out(out or RESULTS / f"{stamp()}-{safe_folder_name(sc.name)}")
    with executor(jobs, dask) as ex:
        with progress(f"recommend {sc.name}") as bar:

            def point(k: int, reps: int) -> None:  # each simulation: its own total and ETA
                bar.set_description(f"recommend {sc.name}: simulation {k}")
                bar.reset(total=reps)

            lab = Lab(ex, seed, confidence, progress=bar.update, on_point=point)
            rec = recommend(sc, settings, lab)
        grid = figure_grid(sc, rec)
        grid_reps = figure_replications(sc, settings)
        with progress(f"figures {sc.name}: {len(grid)} cells", len(grid) * grid_reps) as bar:
            rows = list(
                run_grid(
                    sc,
                    grid,
                    grid_reps,
                    seed,
                    confidence=confidence,
                    executor=ex,
                    progress=bar.update,
                )
            )
    data = rec.as_dict()
    data["figure_grid"] = {"vary": grid.as_dict(), "replications": grid_reps, "rows": rows}
    grid_starts = sum(r.get("fleet.instances", sc.fleet.instances) for r in rows) * grid_reps
    data["simulated_instance_starts"] = lab.instance_starts + grid_starts
    data["figures"] = write_report(out, sc, rec, data, rows, grid, svg)
    write_json(out / "summary.json", data)
    atomic_write(out / "scenario.toml", scenario_toml(sc))
    from sim.report import adr

    created = datetime.now(UTC).strftime("%Y-%m-%d")
    text = adr.render(data, sc, data["figures"], command_line(), created, adr.docs_href(out))
    atomic_write(out / "adr.md", text)
    if json_out:
        typer.echo(dumps(data))
    else:
        Console().print(recommend_table(sc, data))
        Console(width=140).print(candidates_table(data))
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
    panels = [("today: " + _short(sc), run_replication(sc, seed, timeline=True).timeline)]
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


def _short(sc) -> str:
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
    table.add_column("detail", overflow="fold")

    def sec(x):
        return "—" if x is None else f"{x:g} s"

    table.add_row(
        "configuration to adopt",
        d["configuration"] or "none met the target",
        "\n".join(f"{k} = {val}" for k, val in (d["overrides"] or {}).items()),
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


def candidates_table(data: dict) -> Table:
    alpha = 1 - data["target_success"]
    table = Table(
        title=f"candidates, ranked (meets: upper bound ≤ {alpha:.2%})", header_style="bold"
    )
    for col in (
        "#",
        "option",
        "P(start fails)",
        "interval",
        "meets",
        "ready p95",
        "peak/free",
        "work ampl.",
        "restarts/inst",
    ):
        table.add_column(col, justify="left" if col == "option" else "right")
    for i, r in enumerate(data["candidates"], 1):
        f = r["p_start_failure"]
        table.add_row(
            str(i),
            r["name"],
            pct(f["estimate"]),
            f"{pct(f['ci_low'])} – {pct(f['ci_high'])}",
            "yes" if r["meets_target"] else "no",
            "never" if r["fleet_ready_p95_s"] is None else f"{r['fleet_ready_p95_s']:.1f} s",
            f"{r['peak_db_connections_max']}/{r['free_slots']}",
            "—" if r["work_amplification"] is None else f"{r['work_amplification']:.2f}",
            f"{r['restarts_per_instance']:.3f}",
        )
    return table
