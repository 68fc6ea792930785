"""``startsim recommend``: run the recommender, then write the report folder (sim.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    command_line,
    prepare_out,
    progress,
    stamp,
)
from sim.output import dumps, safe_folder_name
from sim.pooler import refuse_unmodelled
from sim.recommend import Settings, figure_grid, figure_replications, recommend
from sim.report.folder import write_recommendation
from sim.report.tables import candidates_table, recommend_table
from sim.report.view import RecommendationView
from sim.robust import DEFAULT_WORLDS, ROBUSTNESS, RobustSettings
from sim.runner import Pooled, executor
from sim.search import Lab
from sim.sweep import run_grid


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
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            metavar="T1,T2,…",
            help="Timeouts the team has tried, s, e.g. 8,20,25: each is simulated and judged "
            "against --criterion in the ADR (default: the scenario's team.timeout_history_s).",
        ),
    ] = None,
    criterion: Annotated[
        float | None,
        typer.Option(
            "--criterion",
            help="The team's own start-up success criterion, e.g. 0.95 (default: the "
            "scenario's team.success_criterion).",
        ),
    ] = None,
    jobs: Jobs = None,
    dask: Dask = None,
    engine: EngineOption = "auto",
    svg: Svg = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout.")] = False,
    worlds: Annotated[
        int,
        typer.Option(
            "--worlds",
            min=0,
            metavar="N",
            help="Judge every option in each of N worlds over the scenario's ranges and adopt "
            "the least change that holds (a power of two with Sobol'); 0: at the assumed values "
            "only. Ignored without ranges.",
        ),
    ] = DEFAULT_WORLDS,
    robustness: Annotated[
        float,
        typer.Option(
            "--robustness",
            help="Share of worlds an option must meet the target in to hold (with --worlds).",
        ),
    ] = ROBUSTNESS,
    design: Annotated[
        str, typer.Option("--design", metavar="sobol|lhs", help="Sobol' or Latin hypercube.")
    ] = "sobol",
) -> None:
    """Recommend the database-init timeout, pool sizes and connector floor; write an ADR."""
    settings = Settings(
        target_success,
        confidence,
        replications,
        seed,
        max_timeout,
        tasks,
        connections_per_task,
        _seconds_list(history),
        criterion,
        RobustSettings(worlds, robustness, design),
    )
    settings.check()
    sc = scenarios.resolve(scenario)
    refuse_unmodelled(
        sc.pooler, sc.fleet.warm_instances, sc.traffic.on, sc.egress.kind == "direct"
    )  # exit 2, nothing written
    settings.check_ceiling(sc)
    out = prepare_out(out or RESULTS / f"{stamp()}-{safe_folder_name(sc.name)}")
    with executor(jobs, dask) as ex:
        with progress(f"recommend {sc.name}") as bar:

            def point(k: int, reps: int) -> None:  # each simulation: its own total and ETA
                bar.set_description(f"recommend {sc.name}: simulation {k}")
                bar.reset(total=reps)

            lab = Lab(ex, seed, confidence, progress=bar.update, on_point=point, engine=engine)
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
        # Local worker processes draw the figures too; a Dask cluster's may not share this disk.
        data = write_recommendation(
            out,
            sc,
            rec,
            grid,
            grid_reps,
            rows,
            lab.instance_starts,
            command_line(),
            svg,
            pool=ex if isinstance(ex, Pooled) else None,
        )
    if json_out:
        typer.echo(dumps(data))
    else:
        view = RecommendationView.from_dict(data)
        Console().print(recommend_table(sc, view))
        Console().print(candidates_table(view))
        Console(stderr=True).print(f"wrote {out}/adr.md, summary.json and figures")


def _seconds_list(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected seconds like 8,20,25") from None
