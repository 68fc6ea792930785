"""Global sensitivity: which uncertain value moves P(start attempt fails), and which would change
the decision (docs/uncertainty.md#sensitivity-what-to-measure-first).

Variance-based (Sobol') indices on Saltelli's design, with SALib (published:
docs/sources.md#sobol-indices-on-saltellis-design). ``N`` base points of a scrambled Sobol'
sequence give two matrices ``A`` and ``B`` of unit coordinates and, for each uncertain value
``i``, the matrix ``AB_i``: ``A`` with column ``i`` taken from ``B``. Their ``N (d + 2)`` rows are
worlds (sim/worlds.py: the same mapping from a coordinate to a value, the same checks, one seed for
every world, so worlds differ by their values and not by noise), each run ``replications`` times.
Each world gives two outputs: **P(start attempt fails)** (failed attempts ÷ attempts over its
replications) and whether the configuration **meets the target** there (that estimate at most
``1 − target``, and the ready fleet's connections fit the free slots: the recommendation's
criterion read at the world's estimate, as a world's truth rather than its evidence).

SALib's ``sobol.analyze`` gives each value's first-order index (S1: the share of the output's
variance it explains alone) and total index (ST: alone and together with the others), with
bootstrap intervals. For the 0/1 verdict, rows ``A`` and ``AB_i`` differ in value ``i`` alone, so
the share of base points where the verdict differs between them is the chance that redrawing that
value alone, the others held, **flips the decision** (it is ``2 ST Var(verdict)``, Jansen's
numerator): *what to measure first* ranks by it.

Nothing here prints or writes: ``startsim sensitivity`` and ``startsim recommend`` are the edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.engines import choose, unsupported
from sim.errors import UsageError
from sim.measurement import Measurement, measurement
from sim.plain import record_dict
from sim.runner import Executor, run_points
from sim.scenario import Scenario
from sim.sizing import Demand
from sim.uncertainty import Spread
from sim.worlds import Design, world_scenarios

# The design's scramble: SeedSequence(seed, spawn_key=SALTELLI_KEY), apart from the worlds'
# design (sim.worlds.DESIGN_KEY) and every replication's one-element key.
SALTELLI_KEY = (23, 0)
BOOTSTRAP_KEY = (23, 1)  # SALib's bootstrap resamples (it ignores a seed of 0: never passed one)
MIN_BASE = 8  # fewer base points leave the bootstrap and the flip shares a handful of pairs
RESAMPLES = 200  # bootstrap resamples of SALib's intervals
BINS = 8  # slices of a value's range for its threshold (where half the worlds meet the target)
SENSITIVITY_REPLICATIONS = 100
TODAY = "today's configuration"


@dataclass(frozen=True)
class SensitivitySettings:
    base: int = 16  # N: the design runs N × (d + 2) worlds
    replications: int = SENSITIVITY_REPLICATIONS
    seed: int = 0
    target_success: float = 0.99
    confidence: float = 0.95
    engine: str = "auto"
    resamples: int = RESAMPLES


@dataclass(frozen=True)
class SobolIndex:
    """First-order and total index, each with its bootstrap interval's half-width."""

    first: float
    first_conf: float
    total: float
    total_conf: float


@dataclass(frozen=True)
class FieldEffect:
    """One uncertain value: its indices on both outputs, how often it flips the verdict alone,
    where (``threshold``: the value where the share of worlds meeting the target crosses one
    half, nearest the nominal; None when it never does), and how to measure it."""

    field: str
    range: str
    nominal: float
    p_start_failure: SobolIndex | None  # None: the output is the same in every world
    meets: SobolIndex | None
    flips: float
    threshold: float | None
    holds_above: bool | None  # the target is met above the threshold (else below)
    measurement: Measurement


@dataclass(frozen=True)
class WorldOutputs:
    """Per world of the design (SALib's row order): each uncertain value (``values[k]`` is
    ``fields[k]``'s, world by world) and both outputs."""

    fields: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    p_start_failure: tuple[float, ...]
    meets: tuple[bool, ...]

    def of(self, field: str) -> tuple[float, ...]:
        """``field``'s value in each world."""
        return self.values[self.fields.index(field)]


@dataclass(frozen=True)
class Sensitivity:
    """One configuration's sensitivity to the scenario's uncertain values, ranked: most flips of
    the verdict first, then the largest total index on P(start attempt fails)."""

    configuration: str
    overrides: dict[str, Any]
    target_success: float
    method: str
    base: int
    worlds: int
    replications: int
    seed: int
    engine: str
    confidence: float
    meets_share: float  # worlds where the configuration meets the target
    effects: tuple[FieldEffect, ...]
    per_world: WorldOutputs

    @property
    def first(self) -> FieldEffect | None:
        """What to measure first: the value that flips the verdict most often (None: none
        does inside its range)."""
        top = self.effects[0] if self.effects else None
        return top if top is not None and top.flips > 0 else None

    @property
    def moves_most(self) -> FieldEffect | None:
        """The value with the largest total index on P(start attempt fails), if it varies."""
        ranked = [e for e in self.effects if e.p_start_failure is not None]
        return max(ranked, key=lambda e: e.p_start_failure.total, default=None)

    def as_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class Assumptions:
    """``recommend``'s: today's configuration and the decision's (None when the decision is
    today's configuration: the same worlds, the same answer)."""

    today: Sensitivity
    decision: Sensitivity | None

    @property
    def chosen(self) -> Sensitivity:
        return self.decision or self.today

    def measure_first(self) -> FieldEffect | None:
        """The value whose range most often flips the decision's verdict, else today's."""
        return self.chosen.first or self.today.first

    def as_dict(self) -> dict:
        return record_dict(self)


def base_points(worlds: int, dimensions: int) -> int:
    """The largest power of two ``N`` with ``N (d + 2)`` worlds within ``worlds``."""
    per = dimensions + 2
    need = MIN_BASE * per
    if worlds < need:
        raise UsageError(
            f"Saltelli's design runs N × (d + 2) worlds for N base points (a power of two, at "
            f"least {MIN_BASE}); with {dimensions} uncertain values that is at least "
            f"{MIN_BASE} × {per} = {need} worlds",
            "worlds",
            worlds,
        )
    return 1 << int(math.log2(worlds // per))


def saltelli_design(sc: Scenario, base: int, seed: int) -> Design:
    """``base × (d + 2)`` points over ``sc``'s uncertain values, in SALib's row order (A, each
    AB_i, B for each base point)."""
    from SALib.sample import sobol as saltelli  # loads pandas (0.7 s): only when analysing

    fields = tuple(sc.uncertain)
    if not fields:
        raise UsageError("the scenario has no uncertain value: nothing to analyse", "worlds")
    if base < MIN_BASE or base & (base - 1):
        raise UsageError(f"must be a power of two, at least {MIN_BASE}", "base", base)
    units = saltelli.sample(
        _problem(fields), base, calc_second_order=False, seed=_stream(seed, SALTELLI_KEY)
    )
    units = np.minimum(units, np.nextafter(1.0, 0.0))  # [0, 1): Spread.at's domain
    return Design(fields, tuple(sc.uncertain[f] for f in fields), units, "saltelli", seed)


def analyse(
    sc: Scenario,
    settings: SensitivitySettings,
    overrides: dict[str, Any] | None = None,
    configuration: str = TODAY,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
) -> Sensitivity:
    """The sensitivity of ``sc`` with ``overrides`` (a configuration) to its uncertain values."""
    s = settings
    chosen = sc.with_overrides(overrides) if overrides else sc
    d = saltelli_design(chosen, s.base, s.seed)
    p, meets, engine = world_outputs(chosen, d, s, executor, progress)
    p_index = sobol_indices(d.fields, p, s)
    meets_index = sobol_indices(d.fields, meets.astype(float), s)
    flips = flip_shares(meets, len(d.fields))
    effects = []
    for i, (f, spread) in enumerate(zip(d.fields, d.spreads, strict=True)):
        at, above = threshold(d.units[:, i], meets, spread) if flips[i] else (None, None)
        effects.append(
            FieldEffect(
                f,
                spread.describe(),
                spread.nominal(),
                None if p_index is None else p_index[i],
                None if meets_index is None else meets_index[i],
                flips[i],
                at,
                above,
                measurement(chosen, f, spread, at, BINS, s.confidence, flips[i]),
            )
        )
    effects.sort(key=lambda e: (-e.flips, -(e.p_start_failure.total if e.p_start_failure else 0)))
    rows = [d.values(j) for j in range(len(d))]
    values = tuple(tuple(r[f] for r in rows) for f in d.fields)
    return Sensitivity(
        configuration,
        dict(overrides or {}),
        s.target_success,
        "sobol (Saltelli's design, SALib)",
        s.base,
        len(d),
        s.replications,
        s.seed,
        engine,
        s.confidence,
        float(meets.mean()),
        tuple(effects),
        WorldOutputs(d.fields, values, tuple(float(x) for x in p), tuple(bool(m) for m in meets)),
    )


def assess(
    sc: Scenario,
    settings: SensitivitySettings,
    decision: dict[str, Any] | None,
    name: str,
    executor: Executor | None = None,
) -> Assumptions | None:
    """Today's configuration and the decision's (``decision``: its overrides; None or ``{}``:
    today's); None when the scenario has no uncertain value."""
    if not sc.uncertain:
        return None
    today = analyse(sc, settings, None, TODAY, executor)
    if not decision:
        return Assumptions(today, None)
    chosen = sc.with_overrides(decision)
    mine = analyse(sc, settings, decision, name, executor) if chosen.uncertain else None
    return Assumptions(today, mine)


def world_outputs(
    sc: Scenario,
    d: Design,
    s: SensitivitySettings,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """P(start attempt fails) and the verdict in each world, and the engine that ran them."""
    scenarios = world_scenarios(sc, d)
    engine = _engine(s.engine, scenarios, s.replications)
    # One piece per world: small worlds, many of them in flight, rather than each split up.
    runs = run_points(
        scenarios, s.replications, s.seed, executor, progress, 1, engine=engine, records=False
    )
    allowed = 1 - s.target_success
    p = np.zeros(len(d))
    meets = np.zeros(len(d), dtype=bool)
    for i, (world, res) in enumerate(zip(scenarios, runs, strict=True)):
        attempts = int(res.fleet["attempts"].sum())
        p[i] = int(res.fleet["failed_attempts"].sum()) / attempts if attempts else 0.0
        meets[i] = Demand.of(world).held_fits and p[i] <= allowed
    return p, meets, engine


def _engine(engine: str, worlds: list[Scenario], replications: int) -> str:
    """One engine for every world (common random numbers). ``auto`` takes the fast one whenever
    every world can run on it: hundreds of small worlds are what it is quick at once compiled."""
    for w in worlds:
        choose(engine, w, replications)  # a wrong or impossible engine is refused up front
    if engine != "auto":
        return engine
    return "fast" if all(unsupported(w) is None for w in worlds) else "reference"


def _stream(seed: int, key: tuple[int, int]) -> int:
    """An integer seed for SALib from its own stream of ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


def _problem(fields: tuple[str, ...]) -> dict:
    return {"num_vars": len(fields), "names": list(fields), "bounds": [[0.0, 1.0]] * len(fields)}


def sobol_indices(
    fields: tuple[str, ...], y: np.ndarray, s: SensitivitySettings
) -> list[SobolIndex] | None:
    """SALib's first-order and total indices with bootstrap intervals; None when ``y`` is the
    same in every world of rows A and B (the estimators' variance: nothing to share out)."""
    rows = y.reshape(-1, len(fields) + 2)
    if np.ptp(rows[:, [0, -1]]) == 0:
        return None
    from SALib.analyze import sobol

    si = sobol.analyze(
        _problem(fields),
        y,
        calc_second_order=False,
        num_resamples=s.resamples,
        conf_level=s.confidence,
        seed=_stream(s.seed, BOOTSTRAP_KEY) | 1,
    )
    return [
        SobolIndex(
            float(si["S1"][i]), float(si["S1_conf"][i]), float(si["ST"][i]), float(si["ST_conf"][i])
        )
        for i in range(len(fields))
    ]


def flip_shares(meets: np.ndarray, dimensions: int) -> list[float]:
    """Per value ``i``: the share of base points whose verdict differs between row A and row
    AB_i (the same world but for value ``i``)."""
    rows = meets.reshape(-1, dimensions + 2)
    return [float(np.mean(rows[:, 0] != rows[:, 1 + i])) for i in range(dimensions)]


def threshold(
    units: np.ndarray, meets: np.ndarray, spread: Spread, bins: int = BINS
) -> tuple[float | None, bool | None]:
    """Where the share of worlds meeting the target crosses one half along one value's range
    (bins of its unit coordinate, linear between their centres), the crossing nearest its
    nominal; and whether the target is met above it. (None, None) when it never crosses."""
    slot = np.minimum((units * bins).astype(int), bins - 1)
    centres, excess = [], []
    for b in range(bins):
        inside = slot == b
        if inside.any():
            centres.append((b + 0.5) / bins)
            excess.append(float(meets[inside].mean()) - 0.5)
    crossings = []
    for j in range(len(centres) - 1):
        a, b = excess[j], excess[j + 1]
        if (a > 0) != (b > 0):
            u = centres[j] + (centres[j + 1] - centres[j]) * a / (a - b)
            crossings.append((float(spread.at(u)), b > 0))
    if not crossings:
        return None, None
    nominal = float(spread.nominal())
    return min(crossings, key=lambda c: abs(c[0] - nominal))
