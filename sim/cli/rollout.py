"""``startsim rollout``: roll-out plans side by side, their connection budget and P(53300)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sim import scenario as scenarios
from sim.cli.options import (
    Confidence,
    Dask,
    EngineOption,
    Jobs,
    Json,
    ScenarioArg,
    Seed,
    prepare_out,
    progress,
)
from sim.engines import choose
from sim.errors import UsageError
from sim.output import atomic_write, csv_line, dumps, write_json
from sim.report.plans import legend, plans_table
from sim.rolloutplans import (
    CSV_COLUMNS,
    PlanRow,
    RolloutPlan,
    assumed,
    check_target,
    default_plans,
    parse_plan,
    parse_steps,
    plan_budget,
    plan_figures,
    rollout_kind,
    team_target,
    without_unmodelled,
)
from sim.runner import executor, run_points
from sim.search import replications_for
from sim.stats import check_confidence


def rollout(
    scenario: ScenarioArg = None,
    plan: Annotated[
        list[str] | None,
        typer.Option(
            "--plan",
            metavar="SURGE/UNAVAILABLE",
            help="A Kubernetes rolling update's maxSurge/maxUnavailable, each pods or a percentage "
            "of the replicas (e.g. 25%/25%, 1/0, 100%/0). Repeat for more plans. Default: the "
            "scenario's own, 25%/25%, 1/0, 0/1 and 100%/0.",
        ),
    ] = None,
    steps: Annotated[
        list[str] | None,
        typer.Option(
            "--steps",
            metavar="P1,P2,…,100",
            help="A Cloud Run roll-out's traffic steps in percent (e.g. 10,50,100). Repeat for "
            "more plans. Default: the scenario's own, 100 and 10,50,100.",
        ),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(
            "--target",
            help="Largest share of deploys with a refused connection (default: 1 − the team's "
            "success criterion, or 0.01).",
        ),
    ] = None,
    replications: Annotated[
        int | None,
        typer.Option(
            "--replications",
            "-n",
            min=1,
            help="Deploys simulated per plan (default: enough to show the target with none "
            "refused).",
        ),
    ] = None,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    json_out: Json = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write rollout.csv and rollout.json to this folder."),
    ] = None,
    jobs: Jobs = None,
    dask: Dask = None,
    engine: EngineOption = "auto",
) -> None:
    """Compare roll-out plans: each one's connection budget against the free slots, and P(53300),
    the share of deploys with a refused connection, simulated."""
    sc, left_out = without_unmodelled(scenarios.resolve(scenario))
    plans = _plans(sc, plan or [], steps or [])
    target = team_target(sc) if target is None else target
    check_target(target)
    check_confidence(confidence)
    n = replications or replications_for(target, confidence)
    deploys = [p.apply(sc) for p in plans]  # a plan the scenario cannot take: exit 2, here
    budgets = [plan_budget(d) for d in deploys]
    engines = {choose(engine, d, n) for d in deploys}
    if out is not None:
        prepare_out(out)
    with executor(jobs, dask) as ex, progress(f"rollout {sc.name}", n * len(plans)) as bar:
        results = list(run_points(deploys, n, seed, ex, bar.update, engine=engine, records=False))
    rows = [
        PlanRow(
            p, b, plan_figures(r.fleet, b.free_slots, r.summary(confidence), confidence), target
        )
        for p, b, r in zip(plans, budgets, results, strict=True)
    ]
    note = "; ".join(n for n in (assumed(sc), left_out) if n) or None
    data = {
        "scenario": sc.name,
        "assumed": note,
        "left_out": left_out,
        "engine": "/".join(sorted(engines)),
        "replications": n,
        "seed": seed,
        "confidence": confidence,
        "target": target,
        "free_slots": sc.database.free_slots,
        "plans": [r.as_dict() for r in rows],
    }
    if out is not None:  # rollout.json last: its presence means the folder is complete
        atomic_write(out / "rollout.csv", "".join(csv_line(v) for v in _csv(rows)))
        write_json(out / "rollout.json", data)
    if json_out:
        typer.echo(dumps(data))
        return
    title = f"{sc.name}: {len(plans)} roll-out plans, {n} deploys each, seed {seed}"
    console = Console()
    if note:
        console.print(note, highlight=False, markup=False)
    console.print(plans_table(title, rows))
    console.print(legend(target), highlight=False, markup=False)
    if out is not None:
        Console(stderr=True).print(f"wrote {out}/rollout.csv, rollout.json")


def _plans(sc, plan: list[str], steps: list[str]) -> list[RolloutPlan]:
    kind = rollout_kind(sc)
    if kind == "cloud_run" and plan:
        raise UsageError(
            f"{sc.name} is rolled out by Cloud Run, which moves traffic in steps: give --steps",
            "plan",
            plan[0],
        )
    if kind == "kubernetes" and steps:
        raise UsageError(
            f"{sc.name} is rolled out by Kubernetes, whose plans are SURGE/UNAVAILABLE: "
            "give --plan",
            "steps",
            steps[0],
        )
    if plan:
        return [parse_plan(t) for t in plan]
    if steps:
        return [parse_steps(t) for t in steps]
    return default_plans(sc)


def _csv(rows: list[PlanRow]) -> list[list]:
    return [list(CSV_COLUMNS), *(r.csv_row() for r in rows)]
