"""Recommendations: a database-init timeout, pool sizes and a connector floor, each one verified by
simulating the scenario with it, never read off a single run (why: :mod:`sim.search`).

The criterion is the one ``startsim simulate`` prints: the upper end of the cluster-aware Wilson
interval on P(database init reaches its deadline), per attempt, must not exceed ``1 − target``.
See ``docs/recommend.md``. Nothing here touches files or terminals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

from sim.advice import RareCheck, TimeoutAdvice, monitoring, on_grid, timeout_advice
from sim.afterready import after_ready
from sim.decision import COST_ORDER, Candidate, Change, Decision, least_change, merge, pruned
from sim.errors import ScenarioError, UsageError
from sim.options import breaker_changes, pooler_change, surge_change
from sim.plain import build, plain
from sim.remedies import (
    PathEvidence,
    ProbeAdvice,
    QuotaEvidence,
    connector_cost,
    direct_egress_change,
    machine_change,
    machine_overrides,
    on_google_cloud,
    path_changes,
    path_evidence,
    probe_advice,
    quota_changes,
    quota_evidence,
    tier_change,
    today_machine_type,
)
from sim.robust import RobustSettings, WorldsPlan
from sim.robust import judge as judge_worlds
from sim.robust import plan as worlds_plan
from sim.runner import Results
from sim.scenario import Scenario
from sim.search import (
    RESOLUTION_S,
    TIMEOUT,
    Lab,
    TimeoutSearch,
    at_timeout,
    guess_timeout,
    replications_for,
    search_timeout,
    zero_failure_replications,
)
from sim.sensitivity import SENSITIVITY_REPLICATIONS, Assumptions, SensitivitySettings, assess
from sim.sequential import MET, Rule, Settled, at_least, at_most, settle
from sim.sizing import ConnectorFloor, Demand, PoolAdvice, connector_floor, pool_advice, pool_fix
from sim.stack import describe, express, how_to_apply, unexpressed
from sim.stats import Proportion, Summary, check_confidence
from sim.success import Observation, judge, observe, rates_dict, success_rates
from sim.sweep import Grid

COMMON_TARGETS = (0.95, 0.99, 0.999)
# From this target up, the row's timeout is also checked by importance sampling (sim.rare), whose
# interval is narrower than plain Monte Carlo's for the same work where failures are rare.
RARE_TARGET = 0.999
RARE_REPLICATIONS = 10_000
EVIDENCE_REPLICATIONS = 100  # when arithmetic already rules every timeout out: a confirming run
NOT_JUDGED = "simulated without the scenario's traffic after ready, which is not modelled with it"


@dataclass(frozen=True)
class Settings:
    target_success: float = 0.99
    confidence: float = 0.95
    replications: int | None = None  # None: enough for the target (see replications_for)
    seed: int = 0
    max_timeout_s: float | None = None  # None: max(120 s, 3 × current), within the horizon
    tasks: int | None = None  # concurrent tasks per instance for the pool-locking bound
    connections_per_task: int = 1
    history: tuple[float, ...] | None = None  # None: the scenario's team.timeout_history_s
    criterion: float | None = None  # None: the scenario's team.success_criterion
    # worlds 0: judged at the nominal values only
    robust: RobustSettings = field(default_factory=RobustSettings)

    def check(self) -> None:
        if not 0 < self.target_success < 1:
            raise UsageError(
                "must be between 0 and 1 exclusive (e.g. 0.99); no finite simulation can show 1",
                "target_success",
                self.target_success,
            )
        check_confidence(self.confidence)
        self.robust.check()
        if self.criterion is not None and not 0 < self.criterion < 1:
            raise UsageError(
                "must be between 0 and 1 exclusive (e.g. 0.95)", "criterion", self.criterion
            )
        for t in self.history or ():
            if not (math.isfinite(t) and t > 0):
                raise UsageError("timeouts must be positive seconds", "history", self.history)
        if self.replications is not None:
            need = zero_failure_replications(1 - self.target_success, self.confidence)
            if self.replications < need:
                raise UsageError(
                    f"{self.replications} replications cannot show it at confidence "
                    f"{self.confidence}; even with no failure the upper bound stays above "
                    f"{1 - self.target_success:.4g}: use {need} replications or more",
                    "target_success",
                    self.target_success,
                )

    def check_ceiling(self, sc: Scenario) -> None:
        """The longest timeout searched must be a finite deadline no shorter than today's (the
        probe runs there and must see every init today's deadline lets finish) and within the
        horizon (the run must be long enough to show it)."""
        ceiling = self.max_timeout_s
        if ceiling is None:
            return
        current = sc.startup.db_init_timeout_s
        if not math.isfinite(ceiling) or ceiling < max(current, RESOLUTION_S):
            raise UsageError(
                "must be a finite number of seconds no shorter than the scenario's "
                f"startup.db_init_timeout_s ({current:g})",
                "max_timeout_s",
                ceiling,
            )
        if ceiling > sc.horizon_s:
            raise UsageError(
                f"longer than the scenario's horizon_s ({sc.horizon_s:g}); raise horizon_s to "
                "consider it",
                "max_timeout_s",
                ceiling,
            )


@dataclass(frozen=True)
class Verdict:
    """Whether some timeout meets the target, and why not when none does."""

    timeout_helps: bool
    reason: str
    at_max_timeout: dict | None = None  # the evidence: the run at the ceiling

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class HistoryRow:
    """A timeout the team once set, simulated in this scenario, against its own criterion on its
    own definition of success (``sim.success``), the other definitions beside it."""

    timeout_s: float
    summary: Summary
    criterion: float | None
    rates: dict[str, Proportion]
    definition: str
    settled: Settled | None = None  # where the sequential rule stopped; None: no criterion

    def as_dict(self) -> dict:
        f = self.summary.p_start_failure
        success_low, success_high = 1 - f.ci_high, 1 - f.ci_low
        return {
            "timeout_s": self.timeout_s,
            "start_success": 1 - f.estimate,
            "start_success_low": success_low,
            "start_success_high": success_high,
            "p_db_init_timeout": self.summary.p_db_init_timeout.as_dict(),
            "p_first_start_success": self.summary.p_first_start_success,
            "restarts_per_instance": self.summary.restarts_per_instance,
            "fleet_ready_p95_s": self.summary.fleet_ready_s["p95"],
            "criterion": judge(self.rates[self.definition], self.criterion),
            "success": rates_dict(self.rates, self.definition, self.criterion, self.settled),
        }


@dataclass
class Recommendation:
    """What ``startsim recommend`` found; ``as_dict`` is summary.json, ``probe`` feeds the CDF."""

    scenario: Scenario
    settings: Settings
    replications: int
    ceiling_s: float
    verdict: Verdict
    timeout: TimeoutAdvice
    pool: PoolAdvice
    connector: ConnectorFloor
    fix: TimeoutSearch | None
    fix_change: tuple[str, dict] | None  # the pool (or fleet) fix: its name and overrides
    candidates: list[Candidate]
    decision: Decision
    history: list[HistoryRow]
    criterion: float | None
    today: Results
    probe: Results
    success: dict[str, Proportion]  # today's start-up success, by each definition
    observation: Observation | None  # the team's observed failures against the model
    engines: dict[str, int] = field(default_factory=dict)  # simulations run by each engine
    # today's configuration and the decision across the scenario's ranges (sim.sensitivity);
    # None when the scenario gives no value as a range
    assumptions: Assumptions | None = None
    success_settled: Settled | None = None  # today's success verdict: where the rule stopped
    path: PathEvidence | None = None  # a faulted path today, and with its route restored
    startup_probe: ProbeAdvice | None = None  # requests failed per deploy: TCP vs HTTP probe
    worlds: WorldsPlan | None = None  # every option judged across worlds (sim.robust)
    quota: QuotaEvidence | None = None  # the Admin API quota and its 429s, with [cloudsql] on

    def as_dict(self) -> dict:
        s = self.settings
        fix = None
        if self.fix is not None:
            fix = {
                "name": self.fix_change[0],
                "overrides": self.fix_change[1],
                "search": self.fix.as_dict(),
            }
        out = {
            "scenario": self.scenario.name,
            "target_success": s.target_success,
            "confidence": s.confidence,
            "seed": s.seed,
            "engines": dict(self.engines),
            "replications": self.replications,
            "max_timeout_s": self.ceiling_s,
            "verdict": self.verdict.as_dict(),
            "decision": self.decision.as_dict(),
            "timeout": self.timeout.as_dict(),
            "pool": self.pool.as_dict(),
            "connector": self.connector.as_dict(),
            "fix": fix,
            "candidates": [c.as_dict() for c in self.candidates],
            "criterion": self.criterion,
            "history": [h.as_dict() for h in self.history],
            "monitoring": plain(monitoring(self.today)),
            "success": rates_dict(
                self.success,
                self.scenario.team.success_definition,
                self.criterion,
                self.success_settled,
            ),
            "observed_failures": None if self.observation is None else self.observation.as_dict(),
            "sources": [e.as_dict() for e in self.scenario.provenance()],
            "sequential": Rule.of(s.confidence, self.replications).as_dict(),
            "assumptions": None if self.assumptions is None else self.assumptions.as_dict(),
            "path": plain(self.path),
            "startup_probe": plain(self.startup_probe),
        }
        if self.worlds is not None:  # only then: without worlds, summary.json is as it was
            out["robust"] = self.worlds.as_dict()
        if self.quota is not None:  # only with [cloudsql] on
            out["cloudsql_quota"] = plain(self.quota)
        return out


def recommend(sc: Scenario, settings: Settings, lab: Lab | None = None) -> Recommendation:
    """Search the timeout, size the pool and the connector, and adopt the least change (in
    ``COST_ORDER``) that meets the target; weigh the team's timeout history against it."""
    settings.check()
    lab = lab or Lab(seed=settings.seed, confidence=settings.confidence)
    n = settings.replications or replications_for(1 - settings.target_success, settings.confidence)
    ceiling = _ceiling(sc, settings)
    demand = Demand.of(sc)
    advice = pool_advice(sc, settings.tasks, settings.connections_per_task)
    plan = _target_plan(settings, n)
    reps = n if demand.held_fits else min(n, EVIDENCE_REPLICATIONS)
    # The probe only guesses and draws the CDF: the decision count is plenty for both. When
    # arithmetic already rules every timeout out, a small run confirms it.
    probe = lab.run(at_timeout(sc, ceiling), reps)
    today = lab.run(sc, reps)  # with its records (monitoring), before any summary-only run
    searches = _searches(lab, sc, settings, plan, probe, ceiling, demand.held_fits)
    main = searches.get(settings.target_success)
    rare = _rare_checks(lab, sc, searches)
    timeout = timeout_advice(sc, settings.target_success, probe, searches, plan, rare)
    verdict = _verdict(sc, demand, main, ceiling, probe, settings)
    fix_change = _own_fix(sc, pool_fix(sc, advice))
    fix = None
    if not verdict.timeout_helps and fix_change is not None:
        fix = _fix_search(lab, sc, settings, fix_change[1], n, ceiling)
    connector = connector_floor(lab, sc, settings.target_success, n)
    changes = _changes(sc, main, timeout, advice, connector)
    changes = _with_paid_and_quota(lab, sc, settings.target_success, n, changes)
    worlds = worlds_plan(
        sc,
        settings.robust,
        n,
        settings.target_success,
        settings.confidence,
        settings.seed,
        lab.engine,
    )
    first = None
    if worlds is not None:  # today's configuration across the worlds, and its worst world's changes
        first = _candidate(lab, sc, settings, n, (), worlds)
        if not first.meets_target:
            changes = _with_worst_world(lab, sc, settings, n, ceiling, changes, first)
    cands, decision = _decide(
        lab, sc, settings, n, changes, ceiling, advice, main, fix, worlds, first
    )
    criterion = settings.criterion if settings.criterion is not None else sc.team.success_criterion
    history = _history(lab, sc, settings, n, criterion)
    _, success, success_settled = _judged_success(lab, sc, settings, n, criterion)
    return Recommendation(
        sc,
        settings,
        n,
        ceiling,
        verdict,
        timeout,
        advice,
        connector,
        fix,
        fix_change,
        cands,
        decision,
        history,
        criterion,
        today,
        probe,
        success,
        _observation(sc, today, settings.confidence),
        dict(lab.engines),
        _assumptions(lab, sc, settings, n, decision),
        success_settled,
        None if sc.path.fault == "none" else path_evidence(lab, sc, n, today, settings.confidence),
        probe_advice(sc, today, settings.confidence),
        worlds,
        _quota(sc, decision, settings.seed),
    )


def _quota(sc: Scenario, decision: Decision, seed: int) -> QuotaEvidence | None:
    a = decision.adopted
    return quota_evidence(sc, a.overrides if a else None, a.name if a else None, seed)


def _with_paid_and_quota(lab, sc: Scenario, target: float, n: int, changes) -> list[Change]:
    """Beside the changes found so far: a circuit breaker of each form, a surge limit and
    PgBouncer (sim.options); the connector floor priced, a connector of a bigger
    machine type (at today's floor, and at the floor it needs), a bigger Cloud SQL tier, and with
    [cloudsql] on the Admin API quota's remedies (sim.remedies); each priced where a published
    price exists (sim.costs), in COST_ORDER. The machine type and the tier only where the
    scenario runs on Google Cloud (Cloud Run, or the Cloud SQL path on)."""
    out = [*breaker_changes(sc), *(c for c in (surge_change(sc), pooler_change(sc)) if c)]
    for c in changes:
        if c.kind == "connector":
            m = c.overrides.get(
                "platform.connector.min_instances", c.overrides.get("connector.min_instances")
            )
            cost = None if m is None else connector_cost(sc, today_machine_type(sc), m)
            c = replace(c, monthly_usd=cost)
        out.append(c)
    if not on_google_cloud(sc):  # a platform of its own: no machine type, no tier to price
        return sorted([*out, *quota_changes(sc)], key=lambda c: COST_ORDER.index(c.kind))
    big = "e2-standard-4"
    if today_machine_type(sc) != big:
        out.append(machine_change(sc, big, None))
        floor = connector_floor(lab, sc.with_overrides(machine_overrides(sc, big)), target, n)
        m = floor.min_instances
        if m is not None and m != sc.connector.min_instances:
            out.append(machine_change(sc, big, m))
    tier = tier_change(sc)
    if tier is not None:
        out.append(tier)
    out += quota_changes(sc)
    return sorted(out, key=lambda c: COST_ORDER.index(c.kind))


# A small design: 16 base points are 128 worlds for the default scenario's 6 ranges, about a
# second on the fast engine; `startsim sensitivity` runs larger ones.
ASSUMPTIONS_BASE = 16


def _assumptions(lab: Lab, sc: Scenario, settings: Settings, n: int, decision: Decision):
    """Today's configuration and the decision across the scenario's ranges."""
    s = SensitivitySettings(
        ASSUMPTIONS_BASE,
        min(n, SENSITIVITY_REPLICATIONS),
        settings.seed,
        settings.target_success,
        settings.confidence,
        lab.engine,
    )
    adopted = decision.adopted
    overrides = adopted.overrides if adopted is not None else None
    return assess(sc, s, overrides, adopted.name if adopted else "", lab.executor)


def _ceiling(sc: Scenario, settings: Settings) -> float:
    settings.check_ceiling(sc)
    if settings.max_timeout_s is not None:
        return settings.max_timeout_s
    return min(sc.horizon_s, max(120.0, 3 * sc.startup.db_init_timeout_s))


def _target_plan(settings: Settings, n: int) -> dict[float, int | None]:
    """Replications per target; None where the user's count cannot show that target."""
    plan = {}
    for target in sorted({*COMMON_TARGETS, settings.target_success}):
        alpha = 1 - target
        if target == settings.target_success:
            plan[target] = n
        elif settings.replications is None:
            plan[target] = max(n, replications_for(alpha, settings.confidence))
        elif settings.replications >= zero_failure_replications(alpha, settings.confidence):
            plan[target] = settings.replications
        else:
            plan[target] = None
    return plan


def _searches(lab, sc, settings, plan, probe, ceiling, feasible) -> dict[float, TimeoutSearch]:
    out = {}
    if not feasible:
        return out
    for target, reps in plan.items():
        if reps is not None:
            guess = guess_timeout(probe, 1 - target, settings.confidence, ceiling)
            out[target] = search_timeout(lab, sc, target, reps, guess, ceiling)
    return out


def _rare_checks(
    lab: Lab, sc: Scenario, searches: dict[float, TimeoutSearch]
) -> dict[float, RareCheck]:
    """P(db init reaches the found timeout) by importance sampling, for the rarest targets, on
    the engine the lab runs (the command's choice: both give the same numbers)."""
    from sim.rare import estimate_failure

    out = {}
    for target, found in searches.items():
        if target >= RARE_TARGET and found.timeout_s is not None:
            at = at_timeout(sc, found.timeout_s)
            est = estimate_failure(
                at,
                RARE_REPLICATIONS,
                lab.seed,
                lab.confidence,
                event="timeout",
                executor=lab.executor,
                engine=lab.engine,
            )
            meets = est.reliable and est.ci_high <= 1 - target
            out[target] = build(RareCheck, {**est.as_dict(), "meets": meets})
    return out


def _verdict(sc, demand: Demand, main, ceiling, probe, settings) -> Verdict:
    if main is not None and main.timeout_s is not None:
        return Verdict(True, "a timeout meets the target (verified)")
    if sc.path.fault != "none":
        why = (
            f"the path fails connections before they reach the database (`{sc.path.fault}`, "
            f"{sc.path.p_fault:.0%} of those opened in its window): a longer deadline only "
            "lengthens each failing start"
        )
    elif not demand.held_fits:
        most = demand.free_slots // max(sc.pool.held_when_ready, 1)
        why = (
            f"the fleet holds fleet.instances × pool.held_when_ready = {sc.fleet.instances} × "
            f"{sc.pool.held_when_ready} = {demand.held} connections once ready, against "
            f"{demand.free_slots} free slots: at most {most} instances can ever be ready"
        )
    elif not demand.start_fits:
        why = (
            f"fleet.instances × pool.min_size = {sc.fleet.instances} × {sc.pool.min_size} = "
            f"{demand.at_start} connections at start, against {demand.free_slots} free slots"
        )
    else:
        why = f"even a {ceiling:g} s timeout leaves too many inits unfinished"
    s = probe.summary(settings.confidence)
    if sc.path.fault == "none" and (not demand.held_fits or not demand.start_fits):
        why += (
            "; the failures are rejections (SQLSTATE 53300) and retries, and a longer timeout "
            "only lengthens the restart loop"
        )
    else:
        why += f" (P(start attempt fails) up to {s.p_start_failure.ci_high:.2%} there)"
    evidence = {
        "timeout_s": ceiling,
        "p_start_failure": s.p_start_failure.as_dict(),
        "never_ready_fraction": s.never_ready_fraction,
        "replications": s.replications,
    }
    return Verdict(False, why, evidence)


def _fix_search(lab, sc, settings, over, n, ceiling) -> TimeoutSearch:
    """The timeout that works once the pool (or fleet) fix is in, when no timeout works today."""
    fixed = sc.with_overrides(over)
    probe = lab.run(at_timeout(fixed, ceiling), n)
    guess = guess_timeout(probe, 1 - settings.target_success, settings.confidence, ceiling)
    return search_timeout(lab, fixed, settings.target_success, n, guess, ceiling)


# -- the least change ----------------------------------------------------------------------------


def own_terms(sc: Scenario, kind: str, name: str, model: dict) -> Change | None:
    """A change to model fields as the scenario's stack and platform apply it (sim/stack.py):
    their settings, named in their words, with the code line, configuration or command that
    applies it. None when no setting expresses it (SQLAlchemy has no ``held_when_ready``, no
    pool library a ``pool.on_failure``; a Kubernetes Deployment no connector) or the settings
    change nothing. With neither named (``custom``), the model fields as they are, worded by the
    report from their fields; a custom section beside a named one keeps its model fields too."""
    if sc.stack.kind == "custom" and sc.platform.kind == "custom":
        return Change(kind, name, model)
    over = express(sc.stack, sc.platform, model)
    if unexpressed(sc.stack, sc.platform, over):
        return None  # a change no real setting expresses is not offered
    try:
        after = sc.with_overrides(over) if over else sc
    except ScenarioError:  # the settings cannot give it (e.g. past a connector's own range)
        return None
    if after.to_dict() | {"sources": {}} == sc.to_dict() | {"sources": {}}:
        return None  # the settings already say so (labels aside)
    named = describe(after.stack, after.platform, over)
    return Change(kind, named, over, how_to_apply(after.stack, after.platform, over))


def _own_fix(sc: Scenario, fix: tuple[str, dict] | None) -> tuple[str, dict] | None:
    """The pool (or fleet) fix in the stack's and the platform's own terms."""
    if fix is None:
        return None
    change = own_terms(sc, "fleet" if "fleet.instances" in fix[1] else "pool", *fix)
    return None if change is None else (change.name, change.overrides)


def _changes(sc, main, timeout, advice, connector, sized=None) -> list[Change]:
    """Each change that could help on its own, in ``COST_ORDER``, in the stack's and the
    platform's own terms (``own_terms``); ``sized``: the scenario the pool fix was sized in (a
    world's; default ``sc``), ``timeout`` or ``advice`` None: none."""
    out: list[Change | None] = list(path_changes(sc))  # the route back, a retry (sim.remedies)
    if sc.pool.min_size > 1:
        out.append(own_terms(sc, "pool", "pool.min_size 1", {"pool.min_size": 1}))
    fix = pool_fix(sized or sc, advice) if advice is not None else None
    if fix is not None and fix[1] != {"pool.min_size": 1}:
        kind = "fleet" if "fleet.instances" in fix[1] else "pool"
        out.append(own_terms(sc, kind, *fix))
    aws = timeout.aws_timeout_s if timeout is not None else None
    for t in (main.timeout_s if main else None, aws):
        if (
            t
            and t != sc.startup.db_init_timeout_s
            and all(c is None or c.overrides != {TIMEOUT: t} for c in out)
        ):
            out.append(own_terms(sc, "timeout", f"timeout {t:g} s", {TIMEOUT: t}))
    out.append(direct_egress_change(sc))  # the connector floor's alternative (sim.remedies)
    m = connector.min_instances
    if m is None and connector.steps and on_google_cloud(sc):
        # No floor meets: the largest one tried is still an option the ADR weighs, with its cost.
        m = int(max(s.value for s in connector.steps))
    if m and m != sc.connector.min_instances:
        over = {"connector.min_instances": m}
        out.append(own_terms(sc, "connector", f"connector.min_instances {m}", over))
    kept = [c for c in out if c is not None]
    return sorted(kept, key=lambda c: COST_ORDER.index(c.kind))


def _with_worst_world(lab, sc, settings, n, ceiling, changes, today) -> list[Change]:
    """With worlds, when today's configuration does not hold: the changes the same search finds
    in today's worst world (its pool fix, smallest timeout and connector floor), beside those found
    at the assumed values, so that a change sized for what is not known can be offered at all
    (at the assumed values today's configuration may already meet and need none)."""
    worst = sc.with_overrides(today.robust.worst_world.values)
    target = settings.target_success
    advice = pool_advice(worst, settings.tasks, settings.connections_per_task)
    main = None
    if Demand.of(worst).held_fits:
        probe = lab.run(at_timeout(worst, ceiling), n)
        guess = guess_timeout(probe, 1 - target, settings.confidence, ceiling)
        main = search_timeout(lab, worst, target, n, guess, ceiling)
    floor = connector_floor(lab, worst, target, n)
    found = _changes(sc, main, None, advice if pool_fix(worst, advice) else None, floor, worst)
    known = [c.overrides for c in changes]
    extra = [c for c in found if c.overrides not in known]
    return sorted([*changes, *extra], key=lambda c: COST_ORDER.index(c.kind))


def _decide(lab, sc, settings, n, changes, ceiling, advice, main, fix, worlds=None, first=None):
    """Candidates (today, each change alone, then larger sets while none meets) and the least
    set that meets: fewest changes first, then the cheapest kinds in ``COST_ORDER``. With
    ``worlds`` (sim.robust), a set meets only when it also holds across the worlds (``first``:
    today's configuration, already judged there)."""
    seen: dict[str, Candidate] = {}
    if first is not None:
        seen[json.dumps({}, sort_keys=True)] = first

    def run(combo: tuple[Change, ...]) -> Candidate | None:
        try:
            sc.with_overrides(merge(combo))
        except ScenarioError:  # a set the model refuses (a stay-up breaker and a pooler)
            return None
        combo = _with_own_timeout(lab, sc, settings, n, combo, ceiling)
        key = json.dumps(merge(combo), sort_keys=True)
        if key not in seen:
            seen[key] = _candidate(lab, sc, settings, n, combo, worlds)
        return seen[key]

    def as_is(combo: tuple[Change, ...]) -> Candidate:
        key = json.dumps(merge(combo), sort_keys=True)
        if key not in seen:
            seen[key] = _candidate(lab, sc, settings, n, combo, worlds)
        return seen[key]

    today = run(())
    adopted, alternatives = (today, []) if today.meets_target else least_change(changes, run)
    for single in changes:  # every change alone is an option the ADR lists
        run((single,))
    # Each field of the adopted set is checked: the set without it is simulated (the other values
    # as they are) and judged by the same rule; a field it still meets without is dropped.
    needed, dropped = (), ()
    if adopted is not None:
        adopted, needed, dropped = pruned(adopted, as_is)
        alternatives = [a for a in alternatives if a.overrides != adopted.overrides]
    cands = sorted(seen.values(), key=lambda c: (not c.meets_target, c.cost))
    smallest = main.timeout_s if main else (fix.timeout_s if fix else None)
    decision = Decision(adopted, needed, tuple(alternatives), smallest, advice, sc, dropped)
    return cands, decision


def _with_own_timeout(lab, sc, settings, n, combo, ceiling) -> tuple[Change, ...]:
    """A set with a timeout change gets the smallest timeout that meets the target together with
    the set's other changes (it may be shorter than today's configuration needs)."""
    others = tuple(c for c in combo if c.kind != "timeout")
    if len(others) == len(combo) or not others:
        return combo
    base = sc.with_overrides(merge(others))
    probe = lab.run(at_timeout(base, ceiling), n)
    guess = guess_timeout(probe, 1 - settings.target_success, settings.confidence, ceiling)
    found = search_timeout(lab, base, settings.target_success, n, guess, ceiling)
    if found.timeout_s is None:
        return combo
    t = found.timeout_s
    own = own_terms(sc, "timeout", f"timeout {t:g} s", {TIMEOUT: t})
    return combo if own is None else (*others, own)


def _candidate(lab, sc, settings, n, combo: tuple[Change, ...], worlds=None) -> Candidate:
    """A set of changes simulated and judged on P(start attempt fails) by the sequential rule
    (``sim.sequential``): replications are added while its interval straddles ``1 − target``.
    With ``worlds``, also judged in every world (``sim.robust``): it meets when it also holds."""
    over = merge(combo)
    cand = sc.with_overrides(over)
    fits = Demand.of(cand).held_fits
    alpha = 1 - settings.target_success

    def judge(reps: int, confidence: float) -> str:
        p = lab.run(cand, reps, records=False).summary(confidence).p_start_failure
        return at_most(p.ci_low, p.ci_high, alpha)

    # Starts that succeed are not enough when the ready fleet cannot hold its connections: the
    # instances would then starve under traffic (the model opens those lazily and lets them fail).
    # That is arithmetic, not chance: one small run shows it, and no look is needed.
    settled = settle(judge, n, settings.confidence) if fits else None
    reps = settled.replications if settled else min(n, EVIDENCE_REPLICATIONS)
    confidence = settled.confidence if settled else settings.confidence
    s = lab.run(cand, reps, records=False).summary(confidence)
    name = " + ".join(c.name for c in combo) or "today's configuration"
    meets = fits and settled is not None and settled.verdict == MET
    after = _after_ready(lab, cand, reps, alpha, confidence)
    # A change that meets the start-up target but breaks the first minute's requests under the
    # scenario's traffic is not adopted (docs/recommend.md#the-cost-after-ready).
    meets = meets and (after is None or not after.breaks)
    # A change simulated without the scenario's traffic (PgBouncer: sim.options) is weighed, never
    # adopted: its first minute after ready is not known.
    unjudged = NOT_JUDGED if sc.traffic.on and not cand.traffic.on else ""
    meets = meets and not unjudged
    robust = None
    if worlds is not None:
        if lab.on_point:  # the progress bar: one look of every world
            lab.on_point(lab.points, len(worlds.design) * worlds.first)
        robust, starts, engine = judge_worlds(sc, over, worlds, lab.executor, lab.progress)
        lab.tally(engine, robust.worlds, starts)
        meets = meets and robust.holds
    db = cand.database
    return Candidate(
        name,
        combo,
        reps,
        s,
        db.free_slots,
        db.max_connections,
        meets,
        fits,
        settled,
        robust,
        after,
        unjudged,
    )


def _after_ready(lab, cand: Scenario, reps: int, alpha: float, confidence: float):
    """The first minute after ready under ``cand``'s traffic, on the candidate's own
    replications (with the request records); None without traffic. Judged at the nominal values
    only, not across the worlds."""
    if not cand.traffic.on:
        return None
    res = lab.run(cand, reps, records=True)
    return after_ready(res.requests, res.fleet, cand.traffic, alpha, confidence)


# -- the team's history, and what monitoring would have seen -------------------------------------


def _history(lab, sc, settings, n, criterion) -> list[HistoryRow]:
    timeouts = settings.history if settings.history is not None else sc.team.timeout_history_s
    rows = []
    for t in timeouts:
        cand = at_timeout(sc, t)
        s, rates, settled = _judged_success(lab, cand, settings, n, criterion)
        definition = sc.team.success_definition
        rows.append(HistoryRow(float(t), s, criterion, rates, definition, settled))
    return rows


def _judged_success(lab, sc, settings, n, criterion):
    """Start-up success by each definition, the team's judged on its criterion by the sequential
    rule (``sim.sequential``): replications are added while its interval straddles the criterion.
    Returns the summary and the rates at the look that stopped, and where it stopped."""
    reps = n if Demand.of(sc).held_fits else min(n, EVIDENCE_REPLICATIONS)
    definition = sc.team.success_definition

    def rates_at(r: int, confidence: float) -> dict[str, Proportion]:
        res = lab.run(sc, r, records=False)
        return success_rates(res.fleet, sc.fleet.instances, confidence)

    def judge(r: int, confidence: float) -> str:
        p = rates_at(r, confidence)[definition]
        return at_least(p.ci_low, p.ci_high, criterion)

    settled = None if criterion is None else settle(judge, reps, settings.confidence)
    reps = settled.replications if settled else reps
    confidence = settled.confidence if settled else settings.confidence
    summary = lab.run(sc, reps, records=False).summary(confidence)
    return summary, rates_at(reps, confidence), settled


def _observation(sc: Scenario, today: Results, confidence: float) -> Observation | None:
    """The team's observed failures (``team.observed_failures``) against today's model."""
    team = sc.team
    if team.observed_failures is None:
        return None
    return observe(
        today.fleet["failed_attempts"],
        team.observed_failures,
        at_least=team.observed_failures_at_least,
        window_deploys=team.deploys_in_window(),
        deploys_per_hour=team.deploys_per_hour,
        confidence=confidence,
    )


# -- the figures' grid ---------------------------------------------------------------------------

FIGURE_REPLICATIONS = 100  # a picture, not a decision: enough for shades, cheap on two cores


def figure_grid(sc: Scenario, rec: Recommendation) -> Grid:
    """Timeout × fleet size around the decision (× pool.min_size when waves fix the fleet)."""
    current = sc.startup.db_init_timeout_s
    centre = rec.decision.smallest_timeout_s or current
    spread = (0.5, 0.75, 1.0, 1.25, 1.5)
    timeouts = sorted({on_grid(current), *(on_grid(centre * f) for f in spread)})
    if sc.fleet.arrival == "waves":
        sizes = sorted({1, 2, sc.pool.min_size, min(sc.pool.max_size, 2 * sc.pool.min_size)})
        return Grid((TIMEOUT, "pool.min_size"), (tuple(timeouts), tuple(sizes)))
    n = sc.fleet.instances
    fleets = sorted({max(1, round(n * f)) for f in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)})
    return Grid((TIMEOUT, "fleet.instances"), (tuple(timeouts), tuple(fleets)))


def figure_replications(sc: Scenario, settings: Settings) -> int:
    base = settings.replications or FIGURE_REPLICATIONS
    return min(base, FIGURE_REPLICATIONS if Demand.of(sc).held_fits else EVIDENCE_REPLICATIONS // 2)
