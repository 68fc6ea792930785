"""The six signals ``startsim diagnose`` compares (:mod:`sim.diagnose`), computed by one function,
:func:`signals`, from attempt records: the columns of :data:`sim.records.ATTEMPT_COLUMNS` plus
``deploy``, whether they were read from logs or simulated (one replication is one deploy).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sim.records import Outcome, Reason

# In the order the verdicts name them (the first ones win a tie).
SIGNALS = (
    "failure_time_in_phase_s",
    "starts_per_deploy",
    "refusals",
    "error_kinds",
    "failures_per_deploy",
    "restart_cadence_s",
)
UNCLASSIFIED = "unclassified"
# What a log can tell apart: a client's own timeout reads the same whether the connector queued
# the connection (connect_timeout), the path swallowed it (hung) or a deadline cut the phase.
REASON_FAMILIES = {
    Reason.TOO_MANY_CLIENTS.value: "refused",
    Reason.CLOSED.value: "closed by the path",
    Reason.RESET.value: "closed by the path",
    Reason.DEADLINE.value: "timed out",
    Reason.CONNECT_TIMEOUT.value: "timed out",
    Reason.HUNG.value: "timed out",
    Reason.PHASE_DEADLINE.value: "timed out",
}
FAMILY_NAMES = ("refused", "closed by the path", "timed out", "other")
_REASONS = {r.value for r in Reason}
Records = dict[str, np.ndarray]


def reason_of(outcome: str, reason: str) -> str:
    """A failed attempt's reason in the model's vocabulary; a start-up log gives only the outcome
    (timeout: the deadline; rejected: 53300); anything else (``exit(3)``) is unclassified."""
    if reason in _REASONS:
        return reason
    if not reason and outcome == Outcome.TIMEOUT:
        return Reason.DEADLINE.value
    if not reason and outcome == Outcome.REJECTED:
        return Reason.TOO_MANY_CLIENTS.value
    return UNCLASSIFIED


@dataclass(frozen=True)
class Signals:
    """The six signals of one set of records (one deploy per distinct ``deploy`` value). Each
    per-failure or per-restart value carries the index of its deploy (``*_deploy``), so a test
    can draw whole deploys: attempts of one deploy share its connector, database and path."""

    failure_time_in_phase_s: np.ndarray  # failed attempts: time from their phase's start
    failure_time_deploy: np.ndarray
    failure_reasons: np.ndarray  # every failed attempt's reason (reason_of)
    failure_deploy: np.ndarray
    starts_per_deploy: np.ndarray  # instances (chains) per deploy
    failures_per_deploy: np.ndarray
    restart_cadence_s: np.ndarray  # start to the next start of the same instance (chain)
    restart_cadence_deploy: np.ndarray
    failing_phases: dict[str, int] = field(default_factory=dict)  # when records name the phase

    @property
    def failures(self) -> int:
        return int(self.failure_reasons.size)

    @property
    def error_kinds(self) -> dict[str, int]:
        """Failures by reason (the error-kinds histogram)."""
        return dict(sorted(Counter(self.failure_reasons.tolist()).items()))

    @property
    def classified(self) -> int:
        """Failures whose reason is known."""
        return int(np.sum(self.failure_reasons != UNCLASSIFIED))

    @property
    def refusals(self) -> int:
        return int(np.sum(self.failure_reasons == Reason.TOO_MANY_CLIENTS.value))

    @property
    def deploys(self) -> int:
        return int(self.starts_per_deploy.size)

    def families(self) -> np.ndarray:
        """Classified failures by family (:data:`FAMILY_NAMES`), one row per deploy."""
        out = np.zeros((self.deploys, len(FAMILY_NAMES)))
        known = self.failure_reasons != UNCLASSIFIED
        fam = [
            FAMILY_NAMES.index(REASON_FAMILIES.get(r, "other")) for r in self.failure_reasons[known]
        ]
        np.add.at(out, (self.failure_deploy[known], fam), 1)
        return out


def signals(rec: Records) -> Signals:
    """Every signal of ``rec``: columns ``deploy``, ``instance``, ``attempt``, ``start_s``,
    ``db_init_start_s``, ``db_init_s``, ``outcome``, ``reason``; with ``phase_start_s`` (and
    ``phase``) a failure's time is counted from the start of the phase it failed in."""
    outcome = np.asarray(rec["outcome"]).astype(str)
    failed = outcome != Outcome.READY.value
    times = np.asarray(rec["db_init_s"], dtype=float)
    if "phase_start_s" in rec:
        start = np.asarray(rec["phase_start_s"], dtype=float)
        end = np.asarray(rec["db_init_start_s"], dtype=float) + times
        times = np.where(np.isfinite(start), end - start, times)
    reasons = np.array(
        [
            reason_of(o, r)
            for o, r in zip(
                outcome[failed], np.asarray(rec["reason"]).astype(str)[failed], strict=True
            )
        ],
        dtype=object,
    ).astype(str)
    phases = Counter(np.asarray(rec["phase"]).astype(str)[failed]) if "phase" in rec else {}
    index, starts, cadence, cadence_deploy = _per_deploy(rec)
    deploy = index[failed]
    t = times[failed]
    timed = np.isfinite(t)
    fails = np.bincount(deploy, minlength=starts.size).astype(float)
    return Signals(
        failure_time_in_phase_s=t[timed],
        failure_time_deploy=deploy[timed],
        failure_reasons=reasons,
        failure_deploy=deploy,
        starts_per_deploy=starts,
        failures_per_deploy=fails,
        restart_cadence_s=cadence,
        restart_cadence_deploy=cadence_deploy,
        failing_phases=dict(sorted(phases.items())),
    )


def _per_deploy(rec: Records):
    """Each row's deploy index, instances per deploy, and the restart cadences with theirs."""
    deploy = np.asarray(rec["deploy"])
    names = sorted(set(deploy.tolist()))
    position = {d: k for k, d in enumerate(names)}
    index = np.array([position[d] for d in deploy.tolist()], dtype=int)
    chains: dict[tuple, list[tuple[int, float]]] = {}
    for d, i, a, s in zip(index, rec["instance"], rec["attempt"], rec["start_s"], strict=True):
        chains.setdefault((int(d), i), []).append((int(a), float(s)))
    starts = np.bincount([d for d, _ in chains], minlength=len(names)).astype(float)
    gaps = [(d, b[1] - a[1]) for (d, _), c in chains.items() for a, b in _pairs(sorted(c))]
    cadence = np.array([g for _, g in gaps], dtype=float)
    return index, starts, cadence, np.array([d for d, _ in gaps], dtype=int)


def _pairs(seq):
    return itertools.pairwise(seq)
