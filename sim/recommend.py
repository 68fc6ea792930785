"""Recommendations: a database-init timeout, pool sizes and a connector floor, each one verified by
simulating the scenario with it, never read off a single run (why: :mod:`sim.search`).

The criterion is the one ``startsim simulate`` prints: the upper end of the cluster-aware Wilson
interval on P(database init reaches its deadline), per attempt, must not exceed ``1 − target``.
See ``docs/recommend.md``. Nothing here touches files or terminals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import UsageError
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
from sim.sizing import Demand, connector_floor, pool_advice, pool_fix
from sim.stats import check_confidence
from sim.sweep import Grid, summary_of

COMMON_TARGETS = (0.95, 0.99, 0.999)
EVIDENCE_REPLICATIONS = 100  # when arithmetic already rules every timeout out: a confirming run


@dataclass(frozen=True)
class Settings:
    target_success: float = 0.99
    confidence: float = 0.95
    replications: int | None = None  # None: enough for the target (see replications_for)
    seed: int = 0
    max_timeout_s: float | None = None  # None: max(120 s, 3 × current), within the horizon
    tasks: int | None = None  # concurrent tasks per instance for the pool-locking bound
    connections_per_task: int = 1

    def check(self) -> None:
        if not 0 < self.target_success < 1:
            raise UsageError(
                "must be between 0 and 1 exclusive (e.g. 0.99); no finite simulation can show 1",
                "target_success",
                self.target_success,
            )
        check_confidence(self.confidence)
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


@dataclass
class Recommendation:
    """What ``startsim recommend`` found; ``as_dict`` is summary.json, ``probe`` feeds the CDF."""

    scenario: Scenario
    settings: Settings
    replications: int
    ceiling_s: float
    verdict: dict
    timeout: dict
    pool: dict
    connector: dict
    fix: dict | None
    candidates: list[dict]
    decision: dict
    probe: Results

    def as_dict(self) -> dict:
        s = self.settings
        return {
            "scenario": self.scenario.name,
            "target_success": s.target_success,
            "confidence": s.confidence,
            "seed": s.seed,
            "replications": self.replications,
            "max_timeout_s": self.ceiling_s,
            "verdict": self.verdict,
            "decision": self.decision,
            "timeout": self.timeout,
            "pool": self.pool,
            "connector": self.connector,
            "fix": self.fix,
            "candidates": self.candidates,
        }


def recommend(sc: Scenario, settings: Settings, lab: Lab | None = None) -> Recommendation:
    """Search the timeout, size the pool and the connector, and rank candidate configurations."""
    settings.check()
    lab = lab or Lab(seed=settings.seed, confidence=settings.confidence)
    n = settings.replications or replications_for(1 - settings.target_success, settings.confidence)
    ceiling = _ceiling(sc, settings)
    demand = Demand.of(sc)
    advice = pool_advice(sc, settings.tasks, settings.connections_per_task)
    plan = _target_plan(settings, n)
    if demand.held_fits:
        # The probe only guesses and draws the CDF: the decision count is plenty for both.
        probe = lab.run(at_timeout(sc, ceiling), n)
    else:  # arithmetic already rules every timeout out: a small run confirms it
        probe = lab.run(at_timeout(sc, ceiling), min(n, EVIDENCE_REPLICATIONS))
    searches = _searches(lab, sc, settings, plan, probe, ceiling, demand.held_fits)
    main = searches.get(settings.target_success)
    timeout = _timeout_section(sc, settings, probe, searches, plan)
    verdict = _verdict(sc, demand, main, ceiling, probe, settings)
    fix = _fix(lab, sc, settings, advice, n, ceiling) if not verdict["timeout_helps"] else None
    connector = (
        connector_floor(lab, sc, settings.target_success, n)
        if demand.start_fits
        else {"min_instances": None, "skipped": "connection demand does not fit the free slots"}
    )
    cands = _candidates(lab, sc, settings, n, main, timeout, advice, connector, fix)
    decision = _decision(sc, main, advice, connector, fix, cands)
    return Recommendation(
        sc, settings, n, ceiling, verdict, timeout, advice, connector, fix, cands, decision, probe
    )


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


def _timeout_section(sc, settings, probe, searches, plan) -> dict:
    ok = probe.attempts["outcome"] == "ready"
    durations = probe.attempts["db_init_s"][ok]
    p50 = p999 = None
    if ok.any():
        p50, p999 = (float(np.percentile(durations, q)) for q in (50, 99.9))
    main = searches.get(settings.target_success)
    return {
        "current_s": sc.startup.db_init_timeout_s,
        "recommended_s": main.timeout_s if main else None,
        "criterion": "upper bound of P(db init reaches the timeout) per attempt <= 1 - target",
        "search": main.as_dict() if main else None,
        "by_target": [
            {
                "target_success": t,
                "timeout_s": searches[t].timeout_s if t in searches else None,
                "replications": plan[t],
                "p_db_init_timeout": searches[t].p_db_init_timeout if t in searches else None,
            }
            for t in plan
        ],
        # AWS Builders' Library: a timeout at the downstream's p99.9 (0.1 % false timeouts),
        # padded when p99.9 is close to p50 (docs/sources.md#aws-p999-timeout-rule).
        "aws_p999_s": p999,
        "aws_timeout_s": None if p999 is None else _on_grid(p999),
        "db_init_p50_s": p50,
        "db_init_p999_over_p50": p999 / p50 if p50 else None,
        "probe_timeout_s": probe.scenario.startup.db_init_timeout_s,
        "probe_replications": probe.replications,
    }


def _on_grid(seconds: float) -> float:
    return max(RESOLUTION_S, math.ceil(seconds / RESOLUTION_S - 1e-9) * RESOLUTION_S)


def _verdict(sc, demand: Demand, main, ceiling, probe, settings) -> dict:
    if main is not None and main.timeout_s is not None:
        return {"timeout_helps": True, "reason": "a timeout meets the target (verified)"}
    if not demand.held_fits:
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
    s = summary_of(probe, settings.confidence)
    if not demand.held_fits or not demand.start_fits:
        why += (
            "; the failures are rejections (SQLSTATE 53300) and retries, and a longer timeout "
            "only lengthens the restart loop"
        )
    else:
        why += f" (P(start attempt fails) up to {s['p_start_failure']['ci_high']:.2%} there)"
    return {
        "timeout_helps": False,
        "reason": why,
        "at_max_timeout": {
            "timeout_s": ceiling,
            "p_start_failure": s["p_start_failure"],
            "never_ready_fraction": s["never_ready_fraction"],
            "replications": s["replications"],
        },
    }


def _fix(lab, sc, settings, advice, n, ceiling) -> dict | None:
    """What works when no timeout does: the pool (or fleet) fix, with its own verified timeout."""
    change = pool_fix(sc, advice)
    if change is None:
        return None
    name, over = change
    fixed = sc.with_overrides(over)
    probe = lab.run(at_timeout(fixed, ceiling), n)
    guess = guess_timeout(probe, 1 - settings.target_success, settings.confidence, ceiling)
    found = search_timeout(lab, fixed, settings.target_success, n, guess, ceiling)
    return {"name": name, "overrides": over, "search": found.as_dict()}


def _candidates(lab, sc, settings, n, main, timeout, advice, connector, fix) -> list[dict]:
    options: list[tuple[str, dict]] = [("current configuration", {})]
    rec_t = main.timeout_s if main else None
    if rec_t:
        options.append((f"timeout {rec_t:g} s", {TIMEOUT: rec_t}))
    if timeout["aws_timeout_s"] and Demand.of(sc).held_fits:
        options.append(
            (
                f"AWS p99.9 timeout {timeout['aws_timeout_s']:g} s",
                {TIMEOUT: timeout["aws_timeout_s"]},
            )
        )
    if sc.pool.min_size > 1:
        options.append(("pool.min_size 1", {"pool.min_size": 1}))
    m = connector.get("min_instances")
    if m and m != sc.connector.min_instances:
        options.append((f"connector.min_instances {m}", {"connector.min_instances": m}))
    together: dict[str, Any] = {}
    if fix:
        options.append((fix["name"], dict(fix["overrides"])))
        together.update(fix["overrides"])
        fix_t = fix["search"]["timeout_s"]
        if fix_t:
            together[TIMEOUT] = fix_t
    elif advice["pool_setting_fits"] and advice["max_size"] != sc.pool.max_size:
        together.update(
            {"pool.max_size": advice["max_size"], "pool.held_when_ready": advice["held_when_ready"]}
        )
    if rec_t:
        together[TIMEOUT] = rec_t
    if sc.pool.min_size > 1:
        together["pool.min_size"] = 1
    if m and m != sc.connector.min_instances:
        together["connector.min_instances"] = m
    together = {k: v for k, v in together.items() if sc.get(k) != v}
    if together:
        options.append(("all recommended changes", together))
    rows, seen = [], set()
    for name, over in options:
        key = json.dumps(over, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(_candidate_row(lab, sc, settings, n, name, over))
    return sorted(rows, key=_rank_key)


def _candidate_row(lab, sc, settings, n, name, over) -> dict:
    cand = sc.with_overrides(over)
    reps = n if Demand.of(cand).held_fits else min(n, EVIDENCE_REPLICATIONS)
    s = lab.summary(cand, reps)
    f = s["p_start_failure"]
    return {
        "name": name,
        "overrides": over,
        "replications": reps,
        "p_start_failure": f,
        "p_db_init_timeout": s["p_db_init_timeout"],
        "meets_target": f["ci_high"] <= 1 - settings.target_success,
        "fleet_ready_p95_s": s["fleet_ready_s"]["p95"],
        "peak_db_connections_max": s["peak_db_connections"]["max"],
        "free_slots": cand.database.free_slots,
        "max_connections": cand.database.max_connections,
        "work_amplification": s["work_amplification"],
        "restarts_per_instance": s["restarts_per_instance"],
        "never_ready_fraction": s["never_ready_fraction"],
    }


def _rank_key(row: dict) -> tuple:
    ready = row["fleet_ready_p95_s"]
    return (
        not row["meets_target"],
        math.inf if ready is None else ready,
        row["p_start_failure"]["ci_high"],
    )


def _decision(sc, main, advice, connector, fix, cands) -> dict:
    """Adopt the best-ranked candidate that meets the target; its timeout is the one to set."""
    smallest = main.timeout_s if main else None
    if smallest is None and fix:
        smallest = fix["search"]["timeout_s"]
    best = cands[0] if cands and cands[0]["meets_target"] else None
    timeout = None
    if best is not None:
        timeout = best["overrides"].get(TIMEOUT, sc.startup.db_init_timeout_s)
    return {
        "configuration": best["name"] if best else None,
        "overrides": best["overrides"] if best else None,
        "db_init_timeout_s": timeout,
        "smallest_timeout_s": smallest,
        "pool_min_size": advice["min_size"],
        "pool_max_size": advice["max_size"],
        "largest_fleet": advice["largest_fleet"],
        "connector_min_instances": connector.get("min_instances"),
    }


# -- the figures' grid ---------------------------------------------------------------------------

FIGURE_REPLICATIONS = 100  # a picture, not a decision: enough for shades, cheap on two cores


def figure_grid(sc: Scenario, rec: Recommendation) -> Grid:
    """Timeout × fleet size around the decision (× pool.min_size when waves fix the fleet)."""
    current = sc.startup.db_init_timeout_s
    centre = rec.decision["smallest_timeout_s"] or current
    spread = (0.5, 0.75, 1.0, 1.25, 1.5)
    timeouts = sorted({_on_grid(current), *(_on_grid(centre * f) for f in spread)})
    if sc.fleet.arrival == "waves":
        sizes = sorted({1, 2, sc.pool.min_size, min(sc.pool.max_size, 2 * sc.pool.min_size)})
        return Grid((TIMEOUT, "pool.min_size"), (tuple(timeouts), tuple(sizes)))
    n = sc.fleet.instances
    fleets = sorted({max(1, round(n * f)) for f in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)})
    return Grid((TIMEOUT, "fleet.instances"), (tuple(timeouts), tuple(fleets)))


def figure_replications(sc: Scenario, settings: Settings) -> int:
    base = settings.replications or FIGURE_REPLICATIONS
    return min(base, FIGURE_REPLICATIONS if Demand.of(sc).held_fits else EVIDENCE_REPLICATIONS // 2)
