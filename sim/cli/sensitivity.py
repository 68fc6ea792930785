"""``startsim sensitivity``: which uncertain value moves P(start attempt fails), which would change
the verdict, and what to measure first (sim/sensitivity.py). ``--out`` writes sensitivity.json and
the tornado figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sim import scenario as scenarios
from sim.cli.options import (
    Confidence,
    EngineOption,
    Jobs,
    Json,
    ScenarioArg,
    Seed,
    Svg,
    prepare_out,
    progress,
)
from sim.errors import UsageError
from sim.output import dumps, write_json
from sim.runner import executor
from sim.sensitivity import (
    SENSITIVITY_REPLICATIONS,
    TODAY,
    SensitivitySettings,
    analyse,
    base_points,
)
from sim.stats import check_confidence

SENSITIVITY_WORLDS = 512  # a budget: the design takes the largest N (d + 2) within it


def sensitivity(
    scenario: ScenarioArg = None,
    worlds: Annotated[
        int,
        typer.Option(
            "--worlds",
            metavar="N",
            help="Most worlds to run: Saltelli's design takes N × (d + 2) of them for the largest "
            "power of two N ≥ 8 that fits (d: the scenario's uncertain values).",
        ),
    ] = SENSITIVITY_WORLDS,
    replications: Annotated[
        int, typer.Option("--replications", "-n", min=1, help="Replications per world.")
    ] = SENSITIVITY_REPLICATIONS,
    target_success: Annotated[
        float,
        typer.Option(
            "--target-success",
            help="A world meets the target when P(start attempt fails) ≤ 1 − this.",
        ),
    ] = 0.99,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="A configuration to analyse instead of today's, e.g. --set pool.min_size=1 "
            "(repeat for several).",
        ),
    ] = None,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    json_out: Json = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write sensitivity.json and tornado.png to this folder."),
    ] = None,
    jobs: Jobs = None,
    engine: EngineOption = "auto",
    svg: Svg = False,
) -> None:
    """Sobol' indices of P(start attempt fails) and of the verdict over the scenario's uncertain
    values, and what to measure first."""
    if not 0 < target_success < 1:
        raise UsageError("must be between 0 and 1 exclusive", "target_success", target_success)
    check_confidence(confidence)
    sc = scenarios.resolve(scenario)
    overrides = _settings(setting or [])
    chosen = sc.with_overrides(overrides) if overrides else sc
    if not chosen.uncertain:
        raise UsageError(
            f"{sc.name} gives no value as a range: nothing to analyse (docs/uncertainty.md)"
        )
    base = base_points(worlds, len(chosen.uncertain))
    s = SensitivitySettings(base, replications, seed, target_success, confidence, engine)
    name = ", ".join(f"{k} {v}" for k, v in overrides.items()) or TODAY
    if out is not None:
        prepare_out(out)
    total = base * (len(chosen.uncertain) + 2) * replications
    with executor(jobs, None) as ex, progress(f"sensitivity {sc.name}", total) as bar:
        result = analyse(sc, s, overrides, name, ex, bar.update)
    data = {"scenario": sc.name, **result.as_dict()}
    if out is not None:
        _write(out, sc.name, result, data, svg)
    if json_out:
        typer.echo(dumps(data))
        return
    from sim.report.assumptions import sensitivity_table

    Console().print(sensitivity_table(result, sc.name))
    if out is not None:
        Console(stderr=True).print(f"wrote {out}/sensitivity.json, tornado.png")


def _write(out: Path, name: str, result, data: dict, svg: bool) -> None:
    from sim.report import figures
    from sim.report.assumptions import tornado_rows

    subtitle = f"{name}, {result.configuration}: {result.worlds} worlds × {result.replications} "
    subtitle += "replications"
    figures.save(figures.tornado(tornado_rows(result), subtitle), out, "tornado", svg)
    write_json(out / "sensitivity.json", data)  # last: its presence means the run is complete


def _settings(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; a value reads as JSON (numbers, true/false, "text") or as text."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise UsageError("expected FIELD=VALUE, e.g. pool.min_size=1", "set", item)
        try:
            out[field.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[field.strip()] = text
    return out
