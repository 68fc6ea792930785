"""Roll-out plans side by side (``startsim rollout``): each plan's connection budget, worked out
from the controller's rule alone, and what simulating its deploys gives.

A plan is a Kubernetes rolling update's ``max_surge/max_unavailable`` (``"25%/25%"``, ``"1/0"``)
or a Cloud Run revision roll-out's traffic steps (``"10,50,100"``); the rule is docs/model.md,
"A roll-out". The budget walks :class:`sim.rollout.RolloutState` with the new instances becoming
ready one at a time, and takes the most connections the plan can ask for at once: every old
instance kept holding ``pool.held_when_ready`` and every new one created holding
``max(pool.min_size, pool.held_when_ready)`` (what it opens while it starts, or holds once ready,
whichever is more). An old instance's slots count as free the moment it is let go
(``rollout.old_linger_s`` is left to the simulation).

P(53300) is the share of deploys (replications) in which the server refused at least one
connection (SQLSTATE 53300; the engines count every refusal, so a pool that retries after one,
whose attempt then ends as a timeout, still counts), with a Wilson interval. Beside it, the share
of deploys whose connections reached the free slots (``p_db_full``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from sim.errors import ScenarioError, UsageError
from sim.rollout import Amount, Rollout, given_zero
from sim.scenario import Scenario
from sim.stats import Proportion, Summary, cluster_proportion

# A Kubernetes plan: max_surge/max_unavailable, each a number of pods or a percentage of replicas.
_KUBE_PLAN = re.compile(r"^\s*(\d{1,6}%?)\s*/\s*(\d{1,6}%?)\s*$")
# Without a target of the team's (team.success_criterion), P(53300) per deploy must stay below 1 %.
DEFAULT_TARGET = 0.01


@dataclass(frozen=True)
class RolloutPlan:
    """One plan, as the user wrote it (``label``) and as ``[rollout]`` fields."""

    label: str
    kind: str  # "kubernetes" or "cloud_run"
    max_surge: Amount = 0
    max_unavailable: Amount = 0
    steps: tuple[float, ...] = (100.0,)

    def overrides(self) -> dict[str, object]:
        """The ``[rollout]`` fields that make a scenario take this plan."""
        if self.kind == "kubernetes":
            return {
                "rollout.kind": "kubernetes",
                "rollout.max_surge": self.max_surge,
                "rollout.max_unavailable": self.max_unavailable,
            }
        return {"rollout.kind": "cloud_run", "rollout.steps": list(self.steps)}

    def apply(self, sc: Scenario) -> Scenario:
        """``sc`` deployed with this plan (its other ``[rollout]`` fields kept). A rolling update
        creates the new pods itself: a fleet arriving otherwise is taken as all at once."""
        option = "--plan" if self.kind == "kubernetes" else "--steps"
        over = self.overrides()
        if self.kind == "kubernetes" and sc.fleet.arrival != "burst":
            over |= {"fleet.arrival": "burst", "fleet.waves": []}
        return sc.with_overrides(over, source=f"startsim rollout {option} {self.label}")


def _amount(text: str, plan: str) -> Amount:
    if not text.endswith("%"):
        return int(text)
    if int(text[:-1]) > 100:
        raise UsageError("a percentage is at most 100%", "plan", plan)
    return f"{int(text[:-1])}%"


def parse_plan(text: str) -> RolloutPlan:
    """``"SURGE/UNAVAILABLE"`` (e.g. ``"25%/25%"``, ``"1/0"``), refused as Kubernetes' validation
    refuses it: both given as 0 (both rounded to 0 pods is 1 unavailable, sim.rollout)."""
    m = _KUBE_PLAN.match(text)
    if m is None:
        raise UsageError(
            "must be SURGE/UNAVAILABLE, each a number of pods or a percentage of the replicas "
            "(e.g. 25%/25%, 1/0, 100%/0)",
            "plan",
            text,
        )
    surge, unavailable = _amount(m.group(1), text), _amount(m.group(2), text)
    if given_zero(surge) and given_zero(unavailable):  # both rounded to 0: 1 unavailable
        raise UsageError(
            "surge and unavailable cannot both be 0 (Kubernetes refuses it: the roll-out could "
            "never make progress)",
            "plan",
            text,
        )
    label = f"{m.group(1)}/{m.group(2)}"
    return RolloutPlan(label, "kubernetes", surge, unavailable)


def parse_steps(text: str) -> RolloutPlan:
    """``"10,50,100"``: percent of traffic on the new revision, rising, ending at 100."""
    try:
        steps = tuple(float(s) for s in text.split(","))
    except ValueError:
        steps = ()
    rising = all(a < b for a, b in itertools.pairwise(steps))
    if not steps or not rising or steps[-1] != 100.0 or steps[0] <= 0:
        raise UsageError(
            "must be percentages of traffic above 0, rising and ending at 100 (e.g. 10,50,100)",
            "steps",
            text,
        )
    return RolloutPlan(",".join(f"{s:g}" for s in steps), "cloud_run", steps=steps)


def rollout_kind(sc: Scenario) -> str:
    """The scenario's own roll-out kind, or the one it is taken as without ``[rollout]``: a Cloud
    Run revision roll-out on Cloud Run, a Kubernetes rolling update elsewhere."""
    if sc.rollout.on:
        return sc.rollout.kind
    return "cloud_run" if sc.platform.kind == "cloud_run" else "kubernetes"


def assumed(sc: Scenario) -> str | None:
    """What the scenario is taken as when it has no ``[rollout]`` (None when it has one)."""
    if sc.rollout.on:
        return None
    n = sc.fleet.instances
    if rollout_kind(sc) == "cloud_run":
        return f"no [rollout]: taken as a Cloud Run revision roll-out of its {n} instances"
    return f"no [rollout]: taken as a Kubernetes rolling update of its {n} instances"


# What the roll-out rule does not carry yet (docs/model.md, "A roll-out"), each off when left out.
LEFT_OUT = {
    "traffic.rate_per_s": 0.0,
    "traffic.rate_per_instance_per_s": 0.0,
    "traffic.trace_s": [],
    "probe.request_rate_per_s": 0.0,
    "fleet.warm_instances": 0,
}


def without_unmodelled(sc: Scenario) -> tuple[Scenario, str | None]:
    """``sc`` without what a roll-out is not modelled with (traffic after ready, the probe's
    requests, warm instances: the old revision's instances are the roll-out's), in model terms
    when it sets any of them, and a sentence saying what was left out (None when nothing was)."""
    given = [f for f, off in LEFT_OUT.items() if sc.get(f) != off]
    if not given:
        return sc, None
    off = {f: LEFT_OUT[f] for f in given}
    try:
        out = sc.with_overrides(off, source="startsim rollout")
    except ScenarioError:  # a platform setting gives one of them: the model's own fields then
        out = sc.in_model_terms().with_overrides(off, source="startsim rollout")
    return out, (
        f"left out, not modelled with a roll-out yet: {', '.join(given)} "
        "(the start-ups are simulated without them)"
    )


def default_plans(sc: Scenario) -> list[RolloutPlan]:
    """The scenario's own plan, then Kubernetes' default 25%/25%, 1/0, 0/1 (with 2 replicas or
    more: with one it takes the service down) and 100%/0 (the new fleet beside the old); or, for
    Cloud Run, all traffic at once and 10,50,100. A plan equal in pods to one before is left out."""
    n, ro = sc.fleet.instances, sc.rollout
    if rollout_kind(sc) == "cloud_run":
        own = [",".join(f"{s:g}" for s in ro.steps)] if ro.on else []
        plans = [parse_steps(t) for t in [*own, "100", "10,50,100"]]
        key = [p.steps for p in plans]
    else:
        own = [f"{ro.max_surge}/{ro.max_unavailable}"] if ro.on else []
        texts = [*own, "25%/25%", "1/0", *(["0/1"] if n >= 2 else []), "100%/0"]
        plans = [parse_plan(t) for t in texts]
        key = [
            Rollout(max_surge=p.max_surge, max_unavailable=p.max_unavailable).plan(n) for p in plans
        ]
    return [p for i, p in enumerate(plans) if key[i] not in key[:i]]


@dataclass(frozen=True)
class PlanBudget:
    """A plan's pods and connections at its worst moment, against the free slots."""

    surge_pods: int | None  # None: a Cloud Run roll-out, which has none
    unavailable_pods: int | None
    peak_pods: int  # old and new instances at once, at most
    old_kept: int  # at the moment of the most connections
    new_pods: int  # created by then, ready or not
    connections: int  # old_kept × held_when_ready + new_pods × max(min_size, held_when_ready)
    free_slots: int  # database.max_connections − reserved − other

    @property
    def fits(self) -> bool:
        return self.connections <= self.free_slots

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "old_kept": self.old_kept,
            "new_pods": self.new_pods,
            "connections": self.connections,
            "free_slots": self.free_slots,
            "fits": self.fits,
        }


def plan_budget(sc: Scenario) -> PlanBudget:
    """The budget of ``sc``'s own ``[rollout]`` plan: the controller walked with new instances
    ready one at a time (its moves depend on nothing else), the most connections at any step."""
    ro, n = sc.rollout, sc.fleet.instances
    held = sc.pool.held_when_ready
    starting = max(sc.pool.min_size, held)
    state = ro.state(n)
    state.moves()
    worst = (state.old * held + state.created * starting, state.old, state.created)
    peak = state.old + state.created
    while state.ready < state.created:
        state.became_ready()
        now = state.old * held + state.created * starting
        if now > worst[0]:  # the first moment of the most connections
            worst = (now, state.old, state.created)
        peak = max(peak, state.old + state.created)
    surge, unavailable = ro.plan(n) if ro.kind == "kubernetes" else (None, None)
    connections, old, new = worst
    return PlanBudget(surge, unavailable, peak, old, new, connections, sc.database.free_slots)


@dataclass(frozen=True)
class PlanFigures:
    """What the simulated deploys of one plan gave."""

    p_53300: Proportion  # deploys with an attempt refused by the server
    p_db_full: Proportion  # deploys whose connections reached the free slots
    p_start_failure: Proportion  # per start attempt
    fleet_ready_p50_s: float | None  # the roll-out's duration (None: some deploy never finished)
    fleet_ready_p95_s: float | None
    peak_db_connections_p50: float | None
    peak_db_connections_max: int | None


def plan_figures(
    fleet: dict[str, np.ndarray], free_slots: int, summary: Summary, confidence: float
) -> PlanFigures:
    """From the replication rows (one a deploy) and their summary."""
    ones = np.ones(len(fleet["replication"]), dtype=np.int64)
    refused = (fleet["refused_connections"] > 0).astype(np.int64)
    full = (fleet["peak_db_connections"] >= free_slots).astype(np.int64)
    ready = summary.fleet_ready_s
    return PlanFigures(
        p_53300=cluster_proportion(refused, ones, confidence),
        p_db_full=cluster_proportion(full, ones, confidence),
        p_start_failure=summary.p_start_failure,
        fleet_ready_p50_s=ready["p50"],
        fleet_ready_p95_s=ready["p95"],
        peak_db_connections_p50=summary.peak_db_connections_p50,
        peak_db_connections_max=summary.peak_db_connections_max,
    )


@dataclass(frozen=True)
class PlanRow:
    """One plan of the table: its budget, its simulated figures, and whether it meets the target
    (the budget fits and P(53300)'s upper bound is below the target)."""

    plan: RolloutPlan
    budget: PlanBudget
    figures: PlanFigures
    target: float

    @property
    def meets_target(self) -> bool:
        return self.budget.fits and self.figures.p_53300.ci_high < self.target

    def as_dict(self) -> dict:
        b, f = self.budget, self.figures
        return {
            "plan": self.plan.label,
            "kind": self.plan.kind,
            "surge_pods": b.surge_pods,
            "unavailable_pods": b.unavailable_pods,
            "peak_pods": b.peak_pods,
            "budget": b.as_dict(),
            "p_53300": f.p_53300.as_dict(),
            "p_db_full": f.p_db_full.as_dict(),
            "p_start_failure": f.p_start_failure.as_dict(),
            "fleet_ready_s": {"p50": f.fleet_ready_p50_s, "p95": f.fleet_ready_p95_s},
            "peak_db_connections": {
                "p50": f.peak_db_connections_p50,
                "max": f.peak_db_connections_max,
            },
            "meets_target": self.meets_target,
        }

    def csv_row(self) -> list:
        b, f = self.budget, self.figures
        return [
            self.plan.label,
            self.plan.kind,
            b.surge_pods,
            b.unavailable_pods,
            b.peak_pods,
            b.old_kept,
            b.new_pods,
            b.connections,
            b.free_slots,
            b.fits,
            f.p_53300.estimate,
            f.p_53300.ci_low,
            f.p_53300.ci_high,
            f.p_db_full.estimate,
            f.p_db_full.ci_high,
            f.p_start_failure.estimate,
            f.p_start_failure.ci_high,
            f.fleet_ready_p50_s,
            f.fleet_ready_p95_s,
            f.peak_db_connections_p50,
            f.peak_db_connections_max,
            self.meets_target,
        ]


CSV_COLUMNS = (
    "plan",
    "kind",
    "surge_pods",
    "unavailable_pods",
    "peak_pods",
    "old_kept",
    "new_pods",
    "budget_connections",
    "free_slots",
    "fits",
    "p_53300",
    "p_53300_low",
    "p_53300_high",
    "p_db_full",
    "p_db_full_high",
    "p_start_failure",
    "p_start_failure_high",
    "fleet_ready_p50_s",
    "fleet_ready_p95_s",
    "peak_db_connections_p50",
    "peak_db_connections_max",
    "meets_target",
)


def team_target(sc: Scenario) -> float:
    """The share of deploys allowed a refusal: 1 − team.success_criterion, or 1 %."""
    criterion = sc.team.success_criterion
    return DEFAULT_TARGET if criterion is None else 1.0 - criterion


def check_target(target: float) -> None:
    if not 0 < target < 1:
        raise UsageError("must be between 0 and 1 exclusive (e.g. 0.01)", "target", target)
