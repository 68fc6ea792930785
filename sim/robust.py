"""A decision that holds across what is not known: each candidate judged in every world.

A *world* is the scenario with each uncertain value fixed at one point of a design
(sim/worlds.py: scrambled Sobol' points or a Latin hypercube); a candidate's overrides are applied
on top, so every candidate meets the same worlds. In each world the candidate gets its own verdict
on P(start attempt fails) against ``1 − target`` by the sequential rule (sim/sequential.py): a
first look at ``first`` replications for every world, then replications doubled only in the worlds
whose interval still straddles the threshold, up to the cap. That is the screening: a world far
from the threshold is settled at the first look, and the replications go where the verdict is
close. A world still too close to call at the cap counts as **not meeting** (the decision must be
shown to hold, not hoped to) and is counted apart. A world whose ready fleet's connections exceed
its free slots does not meet by arithmetic, without a run.

A candidate **holds** when the share of worlds where it meets is at least ``robustness``. For the
report: its worst world (the highest P(start attempt fails)) and, per uncertain value, the
boundary where it stops meeting: the one cut of that value's range that sorts the most worlds
into "meets" and "misses" (a decision stump), kept when it sorts them better than no cut does.

Every world of a candidate runs with the same seed on one engine (common random numbers, as in
``startsim simulate``). Worlds are judged in batches of ``BATCH``, so memory holds at most a batch
of per-replication counts, whatever the design's size. Nothing here prints or writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.engines import FAST_FIELDS, NOT_MODEL, choose, unsupported
from sim.errors import ScenarioError, UsageError
from sim.plain import record_dict
from sim.runner import Executor, Serial, run_chunk
from sim.scenario import Scenario
from sim.sequential import MET, NOT_MET, TOO_CLOSE, at_most, look_sizes, spent_alpha
from sim.sizing import Demand
from sim.stats import cluster_proportion
from sim.worlds import Design, check_design, design

ROBUSTNESS = 0.9  # the share of worlds a change must meet in to hold (assumed: nine worlds in ten)
# `startsim recommend`'s worlds when the scenario gives ranges: 64 judge the default scenario's
# options in about 1.2 s more than its nominal world alone (benchmarks/robust_bench.py).
DEFAULT_WORLDS = 64
BATCH = 64  # worlds judged at once: bounds the per-replication counts held in memory


@dataclass(frozen=True)
class RobustSettings:
    """``worlds`` 0: judge at the nominal values only (today's behaviour)."""

    worlds: int = 0
    robustness: float = ROBUSTNESS
    design: str = "sobol"

    def check(self) -> None:
        if not 0 < self.robustness <= 1:
            raise UsageError(
                "must be a share of worlds above 0 and at most 1 (e.g. 0.9)",
                "robustness",
                self.robustness,
            )
        if self.worlds:
            check_design(self.worlds, self.design)


@dataclass(frozen=True)
class WorldVerdict:
    """One world's verdict for one candidate; ``p_start_failure`` None: not simulated (the ready
    fleet's connections exceed the world's free slots)."""

    world: int
    values: dict[str, float]  # each uncertain value (whole numbers stay ints)
    verdict: str
    held_fits: bool
    p_start_failure: float | None
    ci_low: float | None
    ci_high: float | None
    replications: int

    def as_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class Boundary:
    """Where a candidate stops meeting along one uncertain value: it meets on one side of
    ``value`` (``meets_below``: below it) and misses on the other, for ``sorted_right`` of the
    worlds (the rest are on the wrong side)."""

    field: str
    value: float
    meets_below: bool
    sorted_right: float
    misses_beyond: int  # worlds missing on the missing side

    def as_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class Robust:
    """A candidate across the design's worlds."""

    worlds: int
    met: int
    not_met: int
    too_close: int  # at the cap, counted as not meeting
    share_meeting: float
    robustness: float
    holds: bool
    replications: int  # spent over every world
    worst_world: WorldVerdict
    boundary: Boundary | None  # the value that best sorts meets from misses; None: none does
    boundaries: tuple[Boundary, ...]  # every value that sorts them better than no cut

    def as_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class WorldsPlan:
    """What ``recommend`` judges candidates on: the design, the first look, the engine."""

    settings: RobustSettings
    design: Design
    first: int  # replications at a world's first look (the decision's count)
    target_success: float
    confidence: float
    seed: int
    engine: str

    def as_dict(self) -> dict:
        return {
            **self.design.as_dict(),
            "design": self.design.method,
            "robustness": self.settings.robustness,
            "engine": self.engine,
            "looks": list(look_sizes(self.first)),
            "too_close_counts_as": NOT_MET,
        }


def plan(
    sc: Scenario,
    s: RobustSettings,
    first: int,
    target_success: float,
    confidence: float,
    seed: int,
    engine: str,
) -> WorldsPlan | None:
    """The design ``recommend`` judges on; None when there is nothing to judge across (no
    worlds asked for, or no uncertain value: then the decision is the nominal one)."""
    s.check()
    if not s.worlds or not sc.uncertain:
        return None
    d = design(sc, s.worlds, seed, s.design)
    return WorldsPlan(s, d, first, target_success, confidence, seed, engine)


def world_scenario(sc: Scenario, p: WorldsPlan, world: int, overrides: dict) -> Scenario:
    """World ``world`` with the candidate's overrides on top (they win over the world's value
    of a field the candidate sets)."""
    values = p.design.values(world)
    try:
        return sc.with_overrides({**values, **overrides}, source=f"world {world}")
    except ScenarioError as exc:
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        where = f"world {world} of the design ({shown})"
        raise ScenarioError(where, exc.field, exc.value, exc.problem) from None


def one_engine(engine: str, nominal: Scenario, fields: Sequence[str]) -> str:
    """One engine for every world of an option (common random numbers): ``auto`` takes the fast
    one when it runs the option at the nominal values and knows every uncertain field (worlds
    differ from the nominal only there), decided once, before any world is built."""
    if engine != "auto":
        return engine
    known = all(
        f.split(".")[0] in NOT_MODEL or f.split(".")[1] in FAST_FIELDS.get(f.split(".")[0], ())
        for f in fields
    )
    return "fast" if known and unsupported(nominal) is None else "reference"


def judge(
    sc: Scenario,
    overrides: dict[str, Any],
    p: WorldsPlan,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Robust, int, str]:
    """The candidate ``overrides`` in every world of ``p``: its share of worlds meeting, worst
    world and boundaries; with the instance starts simulated and the engine (for the counts).
    ``progress(n)`` after each world's look of ``n`` new replications."""
    executor = executor or Serial()
    verdicts: list[WorldVerdict] = []
    starts = 0
    engine = one_engine(p.engine, sc.with_overrides(overrides), p.design.fields)
    for lo in range(0, len(p.design), BATCH):
        ids = range(lo, min(lo + BATCH, len(p.design)))
        worlds = [world_scenario(sc, p, i, overrides) for i in ids]
        for w in worlds:
            choose(engine, w, p.first)  # a wrong or impossible engine is refused
        judged, spent = _batch(worlds, ids, p, engine, executor, progress)
        verdicts += judged
        starts += spent
    return summarize(verdicts, p), starts, engine


def _batch(worlds, ids, p: WorldsPlan, engine: str, executor: Executor, progress=None):
    """The sequential rule run in every world of a batch at once: each look simulates only the
    new replications of the worlds still too close to call."""
    alpha = 1 - p.target_success
    fits = [Demand.of(w).held_fits for w in worlds]
    counts = {k: ([], []) for k, ok in enumerate(fits) if ok}  # failed, attempts per replication
    state: dict[int, tuple[str, Any, int]] = {}
    pending = list(counts)
    done, starts = 0, 0
    if engine == "fast" and not isinstance(executor, Serial):
        from sim import fast

        fast.warm()  # before a pool forks its workers
    for n, a in zip(look_sizes(p.first), spent_alpha(1 - p.confidence), strict=True):
        futures = [
            (k, executor.submit(run_chunk, worlds[k], p.seed, range(done, n), engine, False))
            for k in pending
        ]
        for k, fut in futures:
            _, fleet = fut.result()
            counts[k][0].append(fleet["failed_attempts"])
            counts[k][1].append(fleet["attempts"])
            starts += worlds[k].fleet.instances * (n - done)
            if progress:
                progress(n - done)
        still = []
        for k in pending:
            failed, attempts = (np.concatenate(c) for c in counts[k])
            some = attempts > 0
            prop = cluster_proportion(failed[some], attempts[some], 1 - a)
            verdict = at_most(prop.ci_low, prop.ci_high, alpha)
            state[k] = (verdict, prop, n)
            if verdict == TOO_CLOSE:
                still.append(k)
            else:
                del counts[k]  # settled: its counts are no longer needed
        pending, done = still, n
        if not pending:
            break
    out = []
    for k, i in enumerate(ids):
        values = p.design.values(i)
        if not fits[k]:
            out.append(WorldVerdict(i, values, NOT_MET, False, None, None, None, 0))
            continue
        verdict, prop, n = state[k]
        out.append(
            WorldVerdict(i, values, verdict, True, prop.estimate, prop.ci_low, prop.ci_high, n)
        )
    return out, starts


def summarize(verdicts: Sequence[WorldVerdict], p: WorldsPlan) -> Robust:
    """The share of worlds meeting, the worst world and the boundaries."""
    met = sum(v.verdict == MET for v in verdicts)
    close = sum(v.verdict == TOO_CLOSE for v in verdicts)
    share = met / len(verdicts)
    meets = np.array([v.verdict == MET for v in verdicts])
    found = []
    for f in p.design.fields:
        b = stump(f, np.array([float(v.values[f]) for v in verdicts]), meets)
        if b is not None:
            found.append(b)
    found.sort(key=lambda b: -b.sorted_right)
    return Robust(
        len(verdicts),
        met,
        len(verdicts) - met - close,
        close,
        share,
        p.settings.robustness,
        share >= p.settings.robustness,
        sum(v.replications for v in verdicts),
        worst(verdicts),
        found[0] if found else None,
        tuple(found),
    )


def worst(verdicts: Sequence[WorldVerdict]) -> WorldVerdict:
    """The world with the highest P(start attempt fails) (its upper bound breaking ties); a
    world whose ready fleet cannot fit is worse than any simulated one."""

    def badness(v: WorldVerdict) -> tuple:
        if not v.held_fits:
            return (1, 0.0, 0.0)
        return (0, v.p_start_failure, v.ci_high)

    return max(verdicts, key=badness)


def stump(field: str, x: np.ndarray, meets: np.ndarray) -> Boundary | None:
    """The one cut of ``field``'s values that sorts the most worlds right into "meets on this
    side, misses on the other"; None when every world meets, none does, or no cut sorts them
    better than calling them all by the majority."""
    n = len(x)
    if meets.all() or not meets.any():
        return None
    order = np.argsort(x, kind="stable")
    xs, ms = x[order], meets[order].astype(int)
    below_met = np.cumsum(ms)  # worlds meeting among the first j + 1
    total_met = int(ms.sum())
    best = None
    for j in range(n - 1):
        if xs[j] == xs[j + 1]:
            continue  # no cut between equal values
        left = j + 1
        # meets below the cut: meeting on the left, missing on the right
        below = below_met[j] + (n - left) - (total_met - below_met[j])
        above = n - below
        for right, meets_below in ((below, True), (above, False)):
            if best is None or right > best[0]:
                best = (int(right), meets_below, j)
    right, meets_below, j = best
    if right <= max(total_met, n - total_met):
        return None
    cut = float((xs[j] + xs[j + 1]) / 2)
    side = order[j + 1 :] if meets_below else order[: j + 1]
    return Boundary(field, cut, meets_below, right / n, int((~meets[side]).sum()))
