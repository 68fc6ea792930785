"""summary.json as typed records: what the ADR and the terminal tables read.

The one way from a recommendation's data to the report: ``RecommendationView.from_dict(summary)``
rebuilds the typed view from summary.json's data (``Recommendation.as_dict()``, or the file read
back, as ``results/example/`` is), so the ADR renders the same from a run as from its folder.
``view.as_dict()`` gives the data back unchanged (tests/test_report_view.py). The records reuse
the core's types where summary.json holds them whole (``TimeoutAdvice``, ``DeployMonitoring``,
``Verdict``, ``PgBouncer``, ``Proportion``, ``Entry``, ``AfterReady``) and mirror the rest field
by field, in summary.json's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.advice import DeployMonitoring, TimeoutAdvice
from sim.afterready import AfterReady
from sim.plain import KEY, build, record_dict
from sim.provenance import Entry
from sim.recommend import Verdict
from sim.remedies import PathEvidence, ProbeAdvice, QuotaEvidence
from sim.robust import Robust
from sim.sensitivity import Assumptions
from sim.sequential import MET, Rule, Settled
from sim.sizing import PgBouncer
from sim.stats import Proportion


@dataclass(frozen=True)
class AdoptedChange:
    """One field the decision changes, and the set without it (which misses the target)."""

    field: str
    was: Any = field(metadata={KEY: "from"})
    to: Any
    kind: str
    why: str
    needed: str  # needed / not needed / too close to call (sim.decision.FieldCheck.status)
    without_it: str | None
    without_it_invalid: str | None  # why the values without it are no valid configuration
    without_it_p_start_failure: Proportion | None
    without_it_sequential: Settled | None
    change: str = ""  # the change the field belongs to (sim.decision.Change.name)
    apply: str = ""  # how the team applies that change; "" when the field says it


@dataclass(frozen=True)
class DecisionView:
    """summary.json's ``decision``: the least change that meets the target."""

    configuration: str | None  # None: no configuration tried meets the target
    overrides: dict[str, Any] | None
    changes: tuple[AdoptedChange, ...]
    dropped: tuple[AdoptedChange, ...]  # fields the least change had, shown not needed
    alternatives: tuple[str, ...]
    cost_order: tuple[str, ...]
    db_init_timeout_s: float | None
    smallest_timeout_s: float | None
    pool_min_size: int | None
    pool_max_size: int | None
    largest_fleet: int
    connector_min_instances: int | None


@dataclass(frozen=True)
class DemandView:
    """summary.json's ``pool.demand``: the fleet's connections against the free slots."""

    instances_x_min_size: int
    instances_x_held_when_ready: int
    instances_x_max_size: int
    free_slots: int
    max_connections: int
    start_fits: bool
    held_fits: bool


@dataclass(frozen=True)
class PoolView:
    """summary.json's ``pool`` (``sim.sizing.PoolAdvice.as_dict``)."""

    min_size: int
    max_size: int | None
    held_when_ready: int | None
    pool_locking_bound: int
    tasks: int
    connections_per_task: int
    fit_max_size: int
    largest_fleet_current_max_size: int
    largest_fleet: int
    largest_fleet_max_size: int
    pgbouncer: PgBouncer | None
    pool_setting_fits: bool
    demand: DemandView


@dataclass(frozen=True)
class OptionRow:
    """One candidate configuration (``sim.decision.Candidate.as_dict``)."""

    name: str
    overrides: dict[str, Any]
    kinds: tuple[str, ...]
    replications: int
    p_start_failure: Proportion
    p_db_init_timeout: Proportion
    meets_target: bool
    held_fits: bool
    sequential: Settled | None
    fleet_ready_p95_s: float | None
    peak_db_connections_max: int
    free_slots: int
    max_connections: int
    work_amplification: float | None
    restarts_per_instance: float
    never_ready_fraction: float
    p_first_start_success: float | None
    robust: Robust | None = None  # across the worlds (sim.robust); absent when not judged there
    after_ready: AfterReady | None = None  # under the scenario's traffic; absent without it
    monthly_usd: float | None = None  # what its paid changes add a month (sim.costs); None: unknown
    apply: str = ""  # the commands and code that apply it
    not_judged: str = ""  # why it cannot be adopted (sim.decision.Candidate.not_judged)

    @classmethod
    def from_dict(cls, data: dict) -> OptionRow:
        absent = {
            "robust": None,
            "after_ready": None,
            "monthly_usd": None,
            "apply": "",
            "not_judged": "",
        }
        return build(cls, {**absent, **data})

    def as_dict(self) -> dict:
        out = record_dict(self)
        for optional in ("robust", "after_ready"):
            if out[optional] is None:
                del out[optional]
        if not out["not_judged"]:
            del out["not_judged"]
        return out

    @property
    def met_nominally(self) -> bool:
        """It meets the target at the nominal values (sim.decision.Candidate.met_nominally)."""
        return self.held_fits and self.sequential is not None and self.sequential.verdict == MET


@dataclass(frozen=True)
class JudgedRate:
    """A success rate by one definition, judged on the team's criterion."""

    estimate: float
    ci_low: float
    ci_high: float
    events: int
    trials: int
    effective_trials: float
    criterion: str | None  # met / not met / too close to call; None without a criterion


@dataclass(frozen=True)
class SuccessView:
    """summary.json's ``success`` (``sim.success.rates_dict``): the team's definition first."""

    definition: str
    criterion: float | None
    by_definition: dict[str, JudgedRate]
    sequential: Settled | None  # where the sequential rule stopped; None: one look

    @property
    def own(self) -> JudgedRate:
        return self.by_definition[self.definition]


@dataclass(frozen=True)
class HistoryView:
    """A timeout the team tried (``sim.recommend.HistoryRow.as_dict``)."""

    timeout_s: float
    start_success: float
    start_success_low: float
    start_success_high: float
    p_db_init_timeout: Proportion
    p_first_start_success: float | None
    restarts_per_instance: float | None
    fleet_ready_p95_s: float | None
    criterion: str | None
    success: SuccessView


@dataclass(frozen=True)
class ModelPerDeploy:
    """The model's failed starts per deploy, with its interval."""

    mean: float
    ci_low: float
    ci_high: float
    deploys_simulated: int


@dataclass(frozen=True)
class Implied:
    """Deploys (or hours) an observed count corresponds to; None where unbounded."""

    estimate: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class WindowFailures:
    """The window's failed starts under the model: mean and 95 % range."""

    mean: float
    p2_5: float = field(metadata={KEY: "p2.5"})
    p97_5: float = field(metadata={KEY: "p97.5"})


@dataclass(frozen=True)
class ObservedFailures:
    """summary.json's ``observed_failures`` (``sim.success.Observation.as_dict``)."""

    observed: int
    at_least: bool
    failed_starts_per_deploy: ModelPerDeploy
    deploys_implied: Implied
    hours_implied: Implied | None
    years_implied: Implied | None
    window_deploys: int | None
    window_failures: WindowFailures | None
    p_at_least_observed: float | None
    p_at_most_observed: float | None
    verdict: str | None
    confidence: float


@dataclass(frozen=True)
class WorldsView:
    """summary.json's ``robust`` (``sim.robust.WorldsPlan.as_dict``): the worlds every option
    was judged in."""

    method: str
    worlds: int
    seed: int
    fields: tuple[dict[str, Any], ...]  # each uncertain value, as sim.worlds.Design writes it
    design: str
    robustness: float
    engine: str
    looks: tuple[int, ...]
    too_close_counts_as: str


@dataclass(frozen=True)
class RecommendationView:
    """summary.json's data as ``Recommendation.as_dict()`` writes it, typed. ``connector``,
    ``fix`` and ``engines`` stay plain data: the report does not read them."""

    scenario: str
    target_success: float
    confidence: float
    seed: int
    engines: dict[str, int]
    replications: int
    max_timeout_s: float
    verdict: Verdict
    decision: DecisionView
    timeout: TimeoutAdvice
    pool: PoolView
    connector: dict[str, Any]
    fix: dict[str, Any] | None
    candidates: tuple[OptionRow, ...]
    criterion: float | None
    history: tuple[HistoryView, ...]
    monitoring: DeployMonitoring
    success: SuccessView
    observed_failures: ObservedFailures | None
    sources: tuple[Entry, ...]
    sequential: Rule
    assumptions: Assumptions | None = None  # across the scenario's ranges (sim.sensitivity)
    path: PathEvidence | None = None  # a faulted path today, and restored (sim.remedies)
    startup_probe: ProbeAdvice | None = None  # requests failed per deploy, TCP vs HTTP probe
    robust: WorldsView | None = None  # the worlds every option was judged in (sim.robust)
    cloudsql_quota: QuotaEvidence | None = None  # the Admin API quota's 429s (sim.remedies)

    @classmethod
    def from_dict(cls, summary: dict) -> RecommendationView:
        """The typed view of summary.json's data; keys the view does not hold (``figures``,
        ``figure_grid``, ``simulated_instance_starts``) are left to the caller. A summary.json
        written before ``assumptions``, ``path`` or ``startup_probe`` existed reads as without
        them."""
        absent = {"assumptions": None, "path": None, "startup_probe": None, "robust": None}
        return build(cls, {**absent, "cloudsql_quota": None, **summary})

    def as_dict(self) -> dict:
        out = record_dict(self)
        if self.robust is None:  # summary.json has the key only when options met worlds
            del out["robust"]
        if self.cloudsql_quota is None:  # only with [cloudsql] on
            del out["cloudsql_quota"]
        return out

    @property
    def today(self) -> OptionRow:
        """Today's configuration among the candidates (the one without overrides)."""
        return next((r for r in self.candidates if not r.overrides), self.candidates[-1])
