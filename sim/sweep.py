"""Sweeps: a cartesian grid over dotted scenario fields, every point simulated with the same seed.

Replication ``i`` of every grid point draws from the same streams (:mod:`sim.streams`: one per
role, keyed by ``(seed, i)``), so neighbouring points see the same arrivals, set-ups and
scale-up delays: they differ by their parameters, not by noise (common random numbers).

Points run on any executor of :mod:`sim.runner` and come back in grid order, so an edge that
appends each row as it arrives keeps a prefix of the grid and ``--resume`` only has to skip what is
already written. Nothing here touches files or terminals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sim.errors import ScenarioError, UsageError
from sim.runner import Executor, run_points
from sim.scenario import Scenario, field_names
from sim.stats import Summary

# -- the grid ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Fields and their values; points are the cartesian product, last field varying fastest."""

    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def points(self) -> list[dict[str, Any]]:
        return [dict(zip(self.fields, combo, strict=True)) for combo in self.combos()]

    def combos(self) -> list[tuple[Any, ...]]:
        return list(itertools.product(*self.values))

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.values)

    def as_dict(self) -> dict[str, list]:
        return {f: list(v) for f, v in zip(self.fields, self.values, strict=True)}


def parse_vary(specs: Sequence[str], base: Scenario) -> Grid:
    """``["pool.min_size=1,5", …]`` into a validated grid; every point is checked up front."""
    if not specs:
        raise UsageError("give at least one FIELD=V1,V2,… (e.g. pool.min_size=1,5)", "vary")
    fields, values = [], []
    for spec in specs:
        field, parsed = _parse_one(spec, base)
        if field in fields:
            raise UsageError(f"{field} is varied twice", "vary", spec)
        fields.append(field)
        values.append(tuple(parsed))
    grid = Grid(tuple(fields), tuple(values))
    for point in grid.points():
        try:
            base.with_overrides(point, source="vary")
        except ScenarioError as exc:
            where = f"{exc.field} = {exc.value!r}: " if exc.field else ""
            raise UsageError(where + exc.problem, "vary", _point_label(point)) from None
    return grid


def _parse_one(spec: str, base: Scenario) -> tuple[str, list]:
    field, sep, raw = spec.partition("=")
    field = field.strip()
    if not sep or not field:
        raise UsageError("expected FIELD=V1,V2,… (e.g. pool.min_size=1,5)", "vary", spec)
    if field not in field_names(base):
        raise UsageError(
            f"no scenario field {field!r}; fields: {', '.join(field_names(base))}", "vary", spec
        )
    kind = _field_type(base, field)
    items = [v.strip() for v in raw.split(",")]
    if not any(items):
        raise UsageError(f"the list of values for {field} is empty", "vary", spec)
    if "" in items:
        raise UsageError(f"an empty value in the list for {field}", "vary", spec)
    parsed = [_convert(field, kind, v) for v in items]
    seen = set()
    for text, value in zip(items, parsed, strict=True):
        if value in seen:
            raise UsageError(f"{field} lists {text!r} twice", "vary", spec)
        seen.add(value)
    return field, parsed


def _field_type(base: Scenario, field: str) -> type:
    node = base.get(field)
    if isinstance(node, bool) or not isinstance(node, int | float | str):
        raise UsageError(
            f"only number and text fields can be varied; {field} is {type(node).__name__} "
            f"({node!r})",
            "vary",
            field,
        )
    return type(node)


def _convert(field: str, kind: type, text: str) -> Any:
    if kind is str:
        return text
    try:
        value = kind(text)
    except ValueError:
        need = "a whole number" if kind is int else "a number"
        raise UsageError(f"{field} needs {need}", "vary", f"{field}={text}") from None
    if kind is float and not math.isfinite(value):
        raise UsageError(f"{field} needs a finite number", "vary", f"{field}={text}")
    return value


def _point_label(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


# -- rows ----------------------------------------------------------------------------------------

ROW_FIGURES = (
    "replications",
    "attempts",
    "p_start_failure",
    "p_start_failure_low",
    "p_start_failure_high",
    "p_db_init_timeout",
    "p_db_init_timeout_low",
    "p_db_init_timeout_high",
    "p_first_start_success",
    "never_ready_fraction",
    "fleet_ready_p50_s",
    "fleet_ready_p95_s",
    "fleet_ready_p99_s",
    "restarts_per_instance",
    "work_amplification",
    "peak_db_connections_p50",
    "peak_db_connections_max",
    "free_slots",
)


def row_columns(grid: Grid) -> list[str]:
    return ["point", *grid.fields, *ROW_FIGURES]


def flat_row(summary: Summary, free_slots: int) -> dict[str, Any]:
    """One sweep row's figures from a summary (``None`` where a figure does not exist)."""
    f, t, ready = summary.p_start_failure, summary.p_db_init_timeout, summary.fleet_ready_s
    return {
        "replications": summary.replications,
        "attempts": summary.attempts,
        "p_start_failure": f.estimate,
        "p_start_failure_low": f.ci_low,
        "p_start_failure_high": f.ci_high,
        "p_db_init_timeout": t.estimate,
        "p_db_init_timeout_low": t.ci_low,
        "p_db_init_timeout_high": t.ci_high,
        "p_first_start_success": summary.p_first_start_success,
        "never_ready_fraction": summary.never_ready_fraction,
        "fleet_ready_p50_s": ready["p50"],
        "fleet_ready_p95_s": ready["p95"],
        "fleet_ready_p99_s": ready["p99"],
        "restarts_per_instance": summary.restarts_per_instance,
        "work_amplification": summary.work_amplification,
        "peak_db_connections_p50": summary.peak_db_connections_p50,
        "peak_db_connections_max": summary.peak_db_connections_max,
        "free_slots": free_slots,
    }


def run_grid(
    base: Scenario,
    grid: Grid,
    replications: int,
    seed: int,
    *,
    confidence: float = 0.95,
    executor: Executor | None = None,
    skip: int = 0,
    progress: Callable[[int], None] | None = None,
    engine: str = "reference",
) -> Iterator[dict[str, Any]]:
    """Rows of the sweep in grid order, starting after the first ``skip`` points (resume)."""
    points = grid.points()[skip:]
    scenarios = (base.with_overrides(p, source="--vary") for p in points)
    results = run_points(
        scenarios, replications, seed, executor, progress, engine=engine, records=False
    )
    for index, (point, res) in enumerate(zip(points, results, strict=True), start=skip):
        summary = res.summary(confidence)
        yield {"point": index, **point, **flat_row(summary, res.scenario.database.free_slots)}
