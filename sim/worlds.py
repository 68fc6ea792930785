"""Worlds: a space-filling design over a scenario's uncertain values, each world simulated.

A *world* is the scenario with every uncertain value (sim/uncertainty.py) fixed at one point of a
design: scrambled Sobol' points (a power-of-two count, so that each one-dimensional projection
puts exactly one world in each of ``n`` equal slices of [0, 1)) or a Latin hypercube (the same
stratification at any count), both from ``scipy.stats.qmc``. A point's coordinate ``u`` becomes a
value by :meth:`Spread.at`: linearly, in log space on a log scale, by equal-probability bins for
choices, rounded for whole numbers.

Every world runs with the same seed, so replication ``i`` of every world draws the same random
numbers (common random numbers across worlds) on one engine: worlds differ by their values, not
by noise. Each world comes back as its summary and its replication rows (no attempt record), so
memory grows with worlds × replications at about 0.1 kB each. The design's scramble draws from
its own stream of the seed (``DESIGN_KEY``), apart from every replication's.

Nothing here prints or writes: ``startsim simulate`` (sim/cli/simulate.py) is the edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import qmc

from sim.engines import AUTO_MIN_STARTS, choose, expected_starts, unsupported
from sim.errors import ScenarioError, UsageError
from sim.runner import Executor, connections_per_start, run_points, summarize_counts
from sim.scenario import Scenario
from sim.stats import Summary
from sim.success import success_rates
from sim.sweep import flat_row
from sim.uncertainty import Spread

DESIGNS = ("sobol", "lhs")
# The design's scramble: SeedSequence(seed, spawn_key=DESIGN_KEY). Replications use one-element
# keys (sim.runner.replication_seed), so a two-element key never meets one of theirs.
DESIGN_KEY = (22, 0)

# Figures reported across worlds: median and 10–90 % band of the worlds' own values, and pooled.
FIGURES = (
    "p_db_init_timeout",
    "p_start_failure",
    "p_first_start_success",
    "never_ready_fraction",
    "fleet_ready_p50_s",
    "fleet_ready_p95_s",
    "restarts_per_instance",
    "peak_db_connections_p50",
    "peak_db_connections_max",
    "work_amplification",
)
BAND = (10, 90)  # percent of worlds


@dataclass(frozen=True)
class Design:
    """Points in the unit cube, one row per world, one column per uncertain field."""

    fields: tuple[str, ...]
    spreads: tuple[Spread, ...]
    units: np.ndarray  # shape (worlds, fields), each in [0, 1)
    method: str
    seed: int

    def __len__(self) -> int:
        return len(self.units)

    def values(self, world: int) -> dict[str, int | float]:
        """World ``world``'s value of each uncertain field."""
        u = self.units[world]
        return {f: s.at(float(x)) for f, s, x in zip(self.fields, self.spreads, u, strict=True)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "worlds": len(self),
            "seed": self.seed,
            "fields": [
                {"field": f, **s.as_dict(), "nominal": s.nominal()}
                for f, s in zip(self.fields, self.spreads, strict=True)
            ],
        }


def check_design(worlds: int, method: str) -> None:
    """The design's size and kind, refused before any work."""
    if method not in DESIGNS:
        raise UsageError(f"must be one of {', '.join(DESIGNS)}", "design", method)
    if worlds < 1:
        raise UsageError("must be at least 1", "worlds", worlds)
    if method == "sobol" and worlds & (worlds - 1):
        below = 1 << (worlds.bit_length() - 1)
        raise UsageError(
            f"Sobol' points keep their balance only in powers of two: use {below} or "
            f"{2 * below}, or --design lhs",
            "worlds",
            worlds,
        )


def design(sc: Scenario, worlds: int, seed: int, method: str = "sobol") -> Design:
    """``worlds`` points over ``sc``'s uncertain values (in the order the file gives them)."""
    check_design(worlds, method)
    fields = tuple(sc.uncertain)
    if not fields:
        raise UsageError("the scenario has no uncertain value: nothing to design", "worlds", worlds)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=DESIGN_KEY))
    if method == "sobol":
        sobol = qmc.Sobol(d=len(fields), scramble=True, rng=rng)
        units = sobol.random_base2(int(math.log2(worlds)))
    else:
        units = qmc.LatinHypercube(d=len(fields), rng=rng).random(worlds)
    return Design(fields, tuple(sc.uncertain[f] for f in fields), units, method, seed)


def world_scenarios(sc: Scenario, d: Design) -> list[Scenario]:
    """Every world as a scenario, each checked before any is run: a world that is no valid
    scenario (two ranges whose corners clash) is refused naming the world and its values."""
    out = []
    for i in range(len(d)):
        values = d.values(i)
        where = f"world {i} of the design ({', '.join(f'{k}={v:g}' for k, v in values.items())})"
        try:
            out.append(sc.with_overrides(values, source=where))
        except ScenarioError as exc:
            raise ScenarioError(where, exc.field, exc.value, exc.problem) from None
    return out


def one_engine(engine: str, worlds: Sequence[Scenario], replications: int) -> str:
    """One engine for every world, so that worlds share their random numbers: ``auto`` takes the
    fast one when every world can run on it and the mean world is large enough."""
    for w in worlds:
        choose(engine, w, replications)  # a wrong or impossible engine is refused up front
    if engine != "auto":
        return engine
    mean_starts = sum(expected_starts(w, replications) for w in worlds) / len(worlds)
    fits = all(unsupported(w) is None for w in worlds)
    return "fast" if fits and mean_starts >= AUTO_MIN_STARTS else "reference"


@dataclass(frozen=True)
class World:
    """One world's values, summary and replication rows (for the pooled figure)."""

    index: int
    values: dict[str, int | float]
    summary: Summary
    fleet: dict[str, np.ndarray]
    instances: int
    min_size: int
    free_slots: int
    engine: str

    def row(self) -> dict[str, Any]:
        """worlds.csv's row: the world, its values, its figures (sweep.csv's figure columns)."""
        return {"world": self.index, **self.values, **flat_row(self.summary, self.free_slots)}


def run(
    d: Design,
    scenarios: Sequence[Scenario],
    replications: int,
    seed: int,
    *,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    engine: str = "auto",
    confidence: float = 0.95,
) -> Iterator[World]:
    """Each world of the design (``scenarios``: :func:`world_scenarios`) in order, as it
    finishes, every one with the same seed."""
    chosen = one_engine(engine, scenarios, replications)
    results = run_points(
        scenarios, replications, seed, executor, progress, engine=chosen, records=False
    )
    for i, (w, res) in enumerate(zip(scenarios, results, strict=True)):
        yield World(
            i,
            d.values(i),
            res.summary(confidence),
            res.fleet,
            w.fleet.instances,
            connections_per_start(w),
            w.database.free_slots,
            res.engine,
        )


def pooled(worlds: Sequence[World], seed: int, confidence: float = 0.95) -> tuple[Summary, dict]:
    """Every world's replications together (each world equally often): the summary and the
    success rates, as one simulation of a world drawn at random from the design."""
    fleet = {k: np.concatenate([w.fleet[k] for w in worlds]) for k in worlds[0].fleet}
    reps = [len(w.fleet["replication"]) for w in worlds]
    instances = np.repeat([w.instances for w in worlds], reps)
    min_size = np.repeat([w.min_size for w in worlds], reps)
    summary = summarize_counts(
        fleet, instances=instances, min_size=min_size, seed=seed, confidence=confidence
    )
    return summary, success_rates(fleet, instances, confidence)


def band(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median and 10–90 % band over worlds, each a world's own value (no interpolation); None
    (never, e.g. a fleet that is never ready) counts as the largest value."""
    x = np.array([math.inf if v is None else v for v in values], dtype=float)
    qs = {"median": 50, "p10": BAND[0], "p90": BAND[1]}
    out = {}
    for key, q in qs.items():
        v = float(np.percentile(x, q, method="inverted_cdf"))
        out[key] = None if math.isinf(v) else v
    return out


def across(rows: Sequence[dict], pooled_summary: Summary) -> dict[str, dict]:
    """Per figure: the band over worlds' rows and the pooled figure (with its interval for the
    two probabilities)."""
    whole = flat_row(pooled_summary, 0)
    out = {}
    for fig in FIGURES:
        out[fig] = {**band([r[fig] for r in rows]), "pooled": whole[fig]}
    for fig in ("p_db_init_timeout", "p_start_failure"):
        out[fig] |= {"pooled_low": whole[f"{fig}_low"], "pooled_high": whole[f"{fig}_high"]}
    return out
