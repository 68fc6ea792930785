"""``startsim simulate`` and ``startsim scenarios``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sim import probes
from sim import scenario as scenarios
from sim.afterready import traffic_figures, traffic_lines
from sim.cli.options import (
    Dask,
    EngineOption,
    Jobs,
    Json,
    Replications,
    ScenarioArg,
    Seed,
    prepare_out,
    progress,
)
from sim.cli.worlds import WORLDS, WorldsRun, across_worlds
from sim.output import atomic_write, dumps, scenario_toml, write_csv, write_json
from sim.pooler import refuse_unmodelled
from sim.records import FLEET_COLUMNS, TRAFFIC_FLEET_COLUMNS
from sim.report.tables import scenarios_table, summary_table
from sim.runner import simulate as run_simulation
from sim.success import rates_dict, success_rates


def simulate(
    scenario: ScenarioArg = None,
    replications: Replications = 200,
    seed: Seed = 0,
    json_out: Json = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write scenario, summary and per-attempt records to this folder."
        ),
    ] = None,
    jobs: Jobs = None,
    dask: Dask = None,
    engine: EngineOption = "auto",
    worlds: Annotated[
        int,
        typer.Option(
            "--worlds",
            min=1,
            metavar="N",
            help="Worlds in the design over the scenario's uncertain values (a power of two "
            "with Sobol'); each runs --replications.",
        ),
    ] = WORLDS,
    design: Annotated[
        str, typer.Option("--design", metavar="sobol|lhs", help="Sobol' or Latin hypercube.")
    ] = "sobol",
    nominal: Annotated[
        bool,
        typer.Option("--nominal", help="One world at the nominal values, ignoring the ranges."),
    ] = False,
) -> None:
    """Simulate the scenario and summarise start-up outcomes with 95 % intervals; with uncertain
    values, across a design of worlds."""
    sc = scenarios.resolve(scenario)
    refuse_unmodelled(
        sc.pooler, sc.fleet.warm_instances, sc.traffic.on, sc.egress.kind == "direct"
    )  # exit 2, nothing written
    if sc.uncertain and not nominal:
        settings = WorldsRun(replications, seed, jobs, dask, engine, worlds, design)
        across_worlds(sc, settings, json_out, out)
        return
    if out is not None:
        prepare_out(out)
    requests = sc.probe.request_rate_per_s > 0
    traffic = sc.traffic.on  # the requests after ready (docs/model.md): their records are kept
    with progress(f"simulate {sc.name}", replications) as bar:
        # Attempt records for attempts.csv and the probe's requests (computed from them);
        # otherwise a run keeps a row per replication.
        res = run_simulation(
            sc,
            replications,
            seed,
            jobs,
            bar.update,
            dask,
            engine,
            records=out is not None or requests or traffic,
        )
    summary = res.summary(confidence=0.95)
    figures = _traffic(sc, res) if traffic else None
    rates = success_rates(res.fleet, sc.fleet.instances, 0.95)
    data = {
        "scenario": sc.name,
        "engine": res.engine,
        **summary.as_dict(),
        **(_requests(sc, res) if requests else {}),
        **({"traffic": figures.as_dict()} if figures else {}),
        "success": rates_dict(rates, sc.team.success_definition, sc.team.success_criterion),
        "sources": [e.as_dict() for e in sc.provenance()],
    }
    if out is not None:  # each file whole; summary.json last, so its presence means complete
        atomic_write(out / "scenario.toml", scenario_toml(sc))
        write_csv(out / "attempts.csv", res.attempts)
        columns = (*FLEET_COLUMNS, *(TRAFFIC_FLEET_COLUMNS if traffic else ()))
        write_csv(out / "replications.csv", {k: res.fleet[k] for k in columns})
        if traffic:
            write_csv(out / "requests.csv", res.requests)
        write_json(out / "summary.json", data)
    if json_out:
        typer.echo(dumps(data))
    else:
        table = summary_table(sc, summary)
        table.title = f"{table.title}, {res.engine} engine"
        Console().print(table)
        if requests:
            Console().print(_requests_line(sc, data), highlight=False)
        if figures:
            for line in traffic_lines(figures):
                Console().print(line, highlight=False, markup=False)
        if out is not None:
            also = " requests.csv," if traffic else ""
            Console(stderr=True).print(
                f"wrote {out}/summary.json, attempts.csv,{also} replications.csv, scenario.toml"
            )


def _requests(sc, res) -> dict:
    """The probe's figures (sim/probes.py): failed requests per deploy and the mean wait."""
    reps, warm = res.fleet["replication"], sc.fleet.warm_instances
    per = probes.per_deploy(
        res.attempts, reps, sc.probe, sc.horizon_s, warm=warm, stays_up=sc.breaker.stays_up
    )
    return probes.summary(per, 0.95)


def _traffic(sc, res):
    """The figures of traffic after ready (sim/afterready.py)."""
    return traffic_figures(res.requests, res.fleet, sc.traffic.window_s, 0.95)


def _requests_line(sc, data: dict) -> str:
    f, wait = data["requests_failed_per_deploy"], data["request_wait_mean_s"]
    mean = "n/a" if f["mean"] is None else f"{f['mean']:.4g}"
    interval = "" if f["ci_low"] is None else f" [{f['ci_low']:.4g}, {f['ci_high']:.4g}]"
    waited = "no request served" if wait is None else f"{wait:.3g} s mean wait of a served one"
    return (
        f"{sc.probe.kind.upper()} probe, {data['requests_per_deploy']:.4g} requests per deploy: "
        f"{mean}{interval} failed per deploy (95 %; deploys {f['deploys_low']:.4g}–"
        f"{f['deploys_high']:.4g}), {waited}"
    )


def list_scenarios() -> None:
    """List the scenarios shipped with startsim."""
    Console().print(scenarios_table())
