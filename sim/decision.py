"""The least change: which set of changes to today's configuration to adopt, by a stated order
of cost and risk. Pure data and selection; ``sim.recommend`` simulates the options.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.afterready import AfterReady
from sim.errors import ScenarioError
from sim.robust import Robust
from sim.scenario import Scenario
from sim.search import TIMEOUT
from sim.sequential import MET, NOT_MET, TOO_CLOSE, Settled
from sim.sizing import PoolAdvice
from sim.stats import Summary


@dataclass(frozen=True)
class Change:
    """One change to today's configuration, of a kind ranked by ``COST_ORDER``."""

    kind: str
    name: str
    overrides: dict[str, Any]
    # How the team applies it in its own platform and code (Markdown: a command, a config
    # snippet, a code line); "" where the report words the change from its field.
    apply: str = ""
    # What it costs a month where it is paid for (sim.costs: published prices, 730 h); None for
    # a paid change whose price is unknown, and for a change with no bill of its own.
    monthly_usd: float | None = None


# The order in which changes are preferred, cheapest and least risky first: a pool setting costs
# nothing and is undone by a deploy; a longer timeout also delays noticing a database that is
# really down; a capped fleet serves less; a bigger database tier and connector instances are
# paid for around the clock, and among those the cheapest by monthly cost is preferred (PAID).
COST_ORDER = (
    "pool",
    "retry",
    "lazy_refresh",
    "jitter",
    "timeout",
    "breaker",
    "quota",
    "egress",
    "direct_egress",
    "pooler",
    "fleet",
    "surge",
    "tier",
    "connector",
)
PAID = ("tier", "connector")
# Weighed alone, never in a set with other changes: a breaker and a pooler change how the
# start-up and the path work, and are options to compare, not values to combine.
ALONE = ("breaker", "pooler")
# A machine type's set-up capacity is assumed (sim.costs): at equal cost, a change that needs it
# comes after one that does not.
ASSUMED_CAPACITY = "connector.setups_per_instance"
COST_WHY = {
    "pool": "a pool setting: free, and undone by a deploy",
    "retry": "a retry in the start-up code: a code change; each retry is one more connection",
    "lazy_refresh": "the Cloud SQL connector's lazy refresh: one line of start-up code",
    "jitter": "restart jitter: a random pause before each restart, a code or platform setting",
    "egress": "the egress route: a network change, and a NAT gateway billed per hour and per GiB",
    "direct_egress": "Direct VPC egress in place of the connector: a network change and a subnet "
    "to size; no connector billed, but each new instance's egress takes some 20 s to pass traffic",
    "timeout": "a longer deadline: also delays noticing a database that is really down",
    "breaker": "a circuit breaker: code in the start-up, and for the forms that stay up a "
    "readiness endpoint (and a Redis for a breaker the fleet shares)",
    "pooler": "PgBouncer in front of the database: a process to run and keep, and one more hop",
    "quota": "an Admin API quota increase: free, but a request Google may take days to grant",
    "fleet": "a smaller fleet: serves less traffic",
    "surge": "a smaller surge: a deploy in waves takes longer to finish",
    "tier": "a bigger Cloud SQL tier: paid for around the clock (its monthly cost); the cheapest "
    "paid option that meets is preferred",
    "connector": "connector instances kept warm: paid for around the clock (their monthly cost); "
    "the cheapest paid option that meets is preferred",
}


def _rank(kind: str) -> int:
    """A kind's place in COST_ORDER, the paid kinds sharing the first paid place (their monthly
    cost orders them)."""
    if kind in PAID:
        return COST_ORDER.index(PAID[0])
    return COST_ORDER.index(kind)


def monthly_cost(changes) -> float | None:
    """The monthly cost of a set of changes: the sum of its paid changes' costs; None when one
    of them has no known price; 0 when it has no paid change."""
    total = 0.0
    for c in changes:
        if c.kind in PAID:
            if c.monthly_usd is None:
                return None
            total += c.monthly_usd
    return total


@dataclass(frozen=True)
class Candidate:
    """A configuration simulated at the decision's replication count."""

    name: str
    changes: tuple[Change, ...]
    replications: int
    summary: Summary
    free_slots: int
    max_connections: int
    meets_target: bool
    held_fits: bool = True  # the ready fleet's connections fit the free slots
    settled: Settled | None = None  # where the sequential rule stopped; None: no look needed
    robust: Robust | None = None  # across the worlds (sim.robust); None: nominal values only
    # The first minute after ready under the scenario's [traffic] (sim.afterready); None: no traffic
    after_ready: AfterReady | None = None
    # Why it cannot be adopted however its start-ups fare ("" when it can): it was simulated
    # without something the scenario has (PgBouncer without its traffic after ready).
    not_judged: str = ""

    @property
    def met_nominally(self) -> bool:
        """It meets the target at the scenario's nominal values (whether or not it holds)."""
        return self.held_fits and self.settled is not None and self.settled.verdict == MET

    @property
    def overrides(self) -> dict[str, Any]:
        return merge(self.changes)

    @property
    def cost(self) -> tuple:
        """Fewest changes first; then the cheapest kinds in COST_ORDER, the paid ones (PAID)
        ranked together; then the lowest monthly cost (an unknown one last); then a change that
        rests on no assumed capacity (a machine type's) before one that does; then COST_ORDER."""
        month = monthly_cost(self.changes)
        return (
            len(self.changes),
            *sorted(_rank(c.kind) for c in self.changes),
            math.inf if month is None else month,
            sum(ASSUMED_CAPACITY in c.overrides for c in self.changes),
            *sorted(COST_ORDER.index(c.kind) for c in self.changes),
        )

    @property
    def monthly_usd(self) -> float | None:
        return monthly_cost(self.changes)

    def as_dict(self) -> dict:
        s = self.summary
        out = {
            "name": self.name,
            "overrides": self.overrides,
            "kinds": [c.kind for c in self.changes],
            "replications": self.replications,
            "p_start_failure": s.p_start_failure.as_dict(),
            "p_db_init_timeout": s.p_db_init_timeout.as_dict(),
            "meets_target": self.meets_target,
            "held_fits": self.held_fits,
            "sequential": None if self.settled is None else self.settled.as_dict(),
            "fleet_ready_p95_s": s.fleet_ready_s["p95"],
            "peak_db_connections_max": s.peak_db_connections_max,
            "free_slots": self.free_slots,
            "max_connections": self.max_connections,
            "work_amplification": s.work_amplification,
            "restarts_per_instance": s.restarts_per_instance,
            "never_ready_fraction": s.never_ready_fraction,
            "p_first_start_success": s.p_first_start_success,
        }
        if self.robust is not None:  # only judged across worlds: else summary.json as it was
            out["robust"] = self.robust.as_dict()
        if self.after_ready is not None:  # only with traffic: else summary.json as it was
            out["after_ready"] = self.after_ready.as_dict()
        out["monthly_usd"] = self.monthly_usd  # what its paid changes add a month (sim.costs)
        out["apply"] = "\n\n".join(c.apply for c in self.changes if c.apply)
        if self.not_judged:  # only then: else summary.json as it was
            out["not_judged"] = self.not_judged
        return out


NEEDED = "needed"
NOT_NEEDED = "not needed"


@dataclass(frozen=True)
class FieldCheck:
    """One field a decision changes, and the decision simulated without that field alone."""

    change: Change
    field: str
    without: Candidate | None  # None: without it the other values are no valid configuration
    invalid: str | None = None  # why not, then

    @property
    def status(self) -> str:
        """``needed`` when the decision without it misses the target (a settled verdict, or the
        ready fleet's connections no longer fit, or the other values need it, or it meets at the
        nominal values but does not hold across the worlds), ``not needed``
        when it still meets it, and ``too close to call`` when the sequential rule could not
        settle which."""
        w = self.without
        if w is None:
            return NEEDED
        if w.meets_target:
            return NOT_NEEDED
        if not w.held_fits or w.settled is None or w.settled.verdict == NOT_MET:
            return NEEDED
        if w.met_nominally:  # met at the nominal values, but does not hold across the worlds
            return NEEDED
        return TOO_CLOSE

    def as_dict(self, sc: Scenario) -> dict:
        w = self.without
        return {
            "field": self.field,
            "from": sc.get(self.field),
            "to": self.change.overrides[self.field],
            "kind": self.change.kind,
            "why": COST_WHY[self.change.kind],
            "needed": self.status,
            "without_it": None if w is None else w.name,
            "without_it_invalid": self.invalid,
            "without_it_p_start_failure": None
            if w is None
            else w.summary.p_start_failure.as_dict(),
            "without_it_sequential": None
            if w is None or w.settled is None
            else w.settled.as_dict(),
            "change": self.change.name,
            "apply": self.change.apply,
        }


@dataclass(frozen=True)
class Decision:
    """The least change that meets the target (none when today's configuration already does)."""

    adopted: Candidate | None
    needed: tuple[FieldCheck, ...]  # each field the adopted set changes, checked without it
    alternatives: tuple[Candidate, ...]  # other sets of the same size that also meet
    smallest_timeout_s: float | None
    advice: PoolAdvice
    scenario: Scenario
    dropped: tuple[FieldCheck, ...] = ()  # fields the least change had, shown not needed

    def value(self, field: str) -> Any:
        """A model field's value once the adopted set is in (a stack's settings give theirs)."""
        over = self.adopted.overrides if self.adopted else {}
        if field in over:
            return over[field]
        return (self.scenario.with_overrides(over) if over else self.scenario).get(field)

    def as_dict(self) -> dict:
        a = self.adopted
        sc = self.scenario
        return {
            "configuration": None if a is None else a.name,
            "overrides": None if a is None else a.overrides,
            "changes": [check.as_dict(sc) for check in self.needed],
            "dropped": [check.as_dict(sc) for check in self.dropped],
            "alternatives": [c.name for c in self.alternatives],
            "cost_order": list(COST_ORDER),
            "db_init_timeout_s": None if a is None else self.value(TIMEOUT),
            "smallest_timeout_s": self.smallest_timeout_s,
            "pool_min_size": None if a is None else self.value("pool.min_size"),
            "pool_max_size": None if a is None else self.value("pool.max_size"),
            "largest_fleet": self.advice.largest_fleet,
            "connector_min_instances": None if a is None else self.value("connector.min_instances"),
        }


def least_change(
    changes: list[Change], run: Callable[[tuple[Change, ...]], Candidate | None]
) -> tuple[Candidate | None, list[Candidate]]:
    """The first set of changes that meets the target, trying sets of one change, then of two,
    and so on; among sets of one size the cheapest in ``COST_ORDER``. Returns it and the other
    sets of that size that also meet (or ``None`` and ``[]``). Only one timeout change enters a
    set (``run`` gives it the set's own smallest timeout; None for a set the model refuses).
    Changes of the ``ALONE`` kinds enter only sets of one."""
    pool = [c for c in changes if c.kind != "timeout"]
    timeouts = [c for c in changes if c.kind == "timeout"][:1]
    for size in range(1, len(pool) + len(timeouts) + 1):
        kept = pool if size == 1 else [c for c in pool if c.kind not in ALONE]
        combos = itertools.combinations(kept + timeouts, size)
        results = [r for r in (run(c) for c in combos if not redundant(c)) if r is not None]
        meeting = sorted((c for c in results if c.meets_target), key=lambda c: c.cost)
        if meeting:
            return meeting[0], meeting[1:]
    return None, []


def redundant(combo: tuple[Change, ...]) -> bool:
    """A set where one change already contains another's overrides adds nothing; one where two
    changes set the same field to different values (two forms of breaker) is not a set."""
    for a, b in itertools.permutations(combo, 2):
        if a.overrides.items() <= b.overrides.items():
            return True
        if any(a.overrides[k] != b.overrides[k] for k in a.overrides.keys() & b.overrides.keys()):
            return True
    return False


def merge(changes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in changes:
        out.update(c.overrides)
    return out


def pruned(
    adopted: Candidate, as_is: Callable[[tuple[Change, ...]], Candidate]
) -> tuple[Candidate, tuple[FieldCheck, ...], tuple[FieldCheck, ...]]:
    """Each field of the adopted set checked by simulating the set without that field alone
    (``as_is`` simulates a set exactly as given). A field without which the set still meets the
    target is dropped, the costliest kind first, until every field left is needed or too close to
    call. Returns the set that holds, its fields' checks, and the fields dropped."""
    dropped: list[FieldCheck] = []
    while True:
        checks = [_check(as_is, adopted, c, f) for c, f in _fields(adopted.changes)]
        gone = next((chk for chk in checks if chk.status == NOT_NEEDED), None)
        if gone is None:  # listed in the set's own order, cheapest kind first
            order = [(c.name, f) for c in adopted.changes for f in c.overrides]
            checks.sort(key=lambda chk: order.index((chk.change.name, chk.field)))
            return adopted, tuple(checks), tuple(dropped)
        dropped.append(gone)
        adopted = gone.without


def _check(as_is, adopted: Candidate, change: Change, field: str) -> FieldCheck:
    try:
        return FieldCheck(change, field, as_is(without_field(adopted.changes, change, field)))
    except ScenarioError as e:  # e.g. pool.min_size back above the new pool.max_size
        return FieldCheck(change, field, None, str(e))


# A setting that only names what a model field's value stands for (the machine type behind a
# connector's assumed capacity, the tier behind max_connections): checked and dropped with it.
COMPANIONS = {
    "connector.setups_per_instance": "platform.connector.machine_type",
    "database.max_connections": "platform.database_tier",
}


def _fields(changes: tuple[Change, ...]) -> list[tuple[Change, str]]:
    """Every (change, field) of a set, the costliest kind first (the first to drop); a companion
    setting rides with its field."""
    riders = set(COMPANIONS.values())
    pairs = [(c, f) for c in changes for f in c.overrides if f not in riders]
    return sorted(pairs, key=lambda cf: -COST_ORDER.index(cf[0].kind))


def without_field(changes: tuple[Change, ...], change: Change, field: str) -> tuple[Change, ...]:
    """The set with one field of one change taken out (the change goes when it was its only
    field; otherwise it is renamed after the fields it keeps)."""
    gone = {field, COMPANIONS.get(field)}
    rest = {f: v for f, v in change.overrides.items() if f not in gone}
    kept = Change(
        change.kind,
        " + ".join(f"{f} {v:g}" if isinstance(v, float) else f"{f} {v}" for f, v in rest.items()),
        rest,
    )
    return tuple(kept if c is change else c for c in changes if c is not change or rest)
