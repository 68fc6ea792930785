"""``startsim diagnose``: which story can produce what the logs show, before any recommendation.

Six **signals** are computed by one function, :func:`sim.signals.signals`, from attempt records:
once on the records read from the logs, once on every simulated replication of each hypothesis (a
replication is one deploy). Each signal is then tested per hypothesis with a posterior-predictive
p-value (:mod:`sim.predictive`: how often the hypothesis gives something at least as far from its
own prediction as the observation is), the p-values of one hypothesis are combined by Holm's rule
at ``alpha``, and a hypothesis with any signal rejected "cannot produce" what was observed. Those
that can are ranked by the likelihood of the observed failure times and error kinds under each.
docs/diagnose.md has the method and its error rates; :mod:`sim.verdicts` says it in sentences.

No file is read or written here: the CLI reads the logs (``sim.calibrate``'s readers), the report
writer (``sim.report.diagnose``) writes the files.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sim.predictive import (
    BOUND_CONFIDENCE,
    BOUND_TOLERANCE_S,
    binned,
    categorical_p,
    effective,
    holm,
    ks_p,
    mean_p,
    refusal_p,
    time_bins,
)
from sim.records import Outcome, Reason
from sim.signals import (
    FAMILY_NAMES,
    SIGNALS,
    UNCLASSIFIED,
    Records,
    Signals,
    reason_of,
    signals,
)
from sim.stats import clustered_proportion

__all__ = ["SIGNALS", "UNCLASSIFIED", "Signals", "diagnose", "observed", "reason_of", "signals"]

# The test per hypothesis: Holm over its measured signals, family-wise error rate ALPHA.
ALPHA = 0.01
# Assumed: a deploy's instances started within about 3 s (R2); a new instance (not a replacement:
# the readers join those to their chain, R3) more than this after the previous one is a new deploy.
DEPLOY_GAP_S = 5.0


# -- the observed records -------------------------------------------------------------------------


@dataclass
class Observed:
    """The logs' records as :func:`signals` takes them, and what they cannot measure."""

    records: Records
    sources: list[str]
    deploys: int
    not_measured: dict[str, str] = field(default_factory=dict)  # signal -> why
    server_refusals: int | None = None  # 53300s in a server log, when one was given
    partial: bool = False  # the logs keep only part of each deploy (`deploys: partial`)


def observed(runs: list) -> Observed:
    """The readers' runs (:class:`sim.calibrate.inputs.Run`) as records. Deploys: every new
    instance (a chain's first start, replacements joined by the readers) starting within
    :data:`DEPLOY_GAP_S` of the previous one, across runs, belongs to the same deploy."""
    rows = []
    for r in runs:
        timed = not (r.kind == "log" and r.phase_map is None)  # else: whole start, not the phase
        for a in [*r.attempts, *r.censored]:
            rows.append((r, a, timed))
    if not rows:
        from sim.errors import UsageError

        names = ", ".join(r.source for r in runs)
        raise UsageError(f"{names}: no start attempts in them", "inputs", names)
    t0 = min(a.start_unix_s for _, a, _ in rows)
    first: dict[tuple, float] = {}
    for r, a, _ in rows:
        key = (r.run_id, r.source, a.instance)
        first[key] = min(first.get(key, math.inf), a.start_unix_s)
    deploy_of = _deploys(first)
    rec = {k: [] for k in ("deploy", "instance", "attempt", "start_s", "db_init_start_s")}
    rec |= {"db_init_s": [], "outcome": [], "reason": [], "phase": []}
    for r, a, timed in rows:
        key = (r.run_id, r.source, a.instance)
        rec["deploy"].append(deploy_of[key])
        rec["instance"].append("/".join(key))
        rec["attempt"].append(a.attempt)
        rec["start_s"].append(a.start_unix_s - t0)
        rec["db_init_start_s"].append(a.start_unix_s - t0 + a.before_db_s)
        cut = bool(a.censored)  # lines end before the outcome: a start, not a failure time
        rec["db_init_s"].append(a.db_init_s if timed and not cut else math.nan)
        rec["outcome"].append(Outcome.READY.value if cut else a.outcome)
        rec["reason"].append("" if cut else a.reason)
        rec["phase"].append("" if cut else a.phase)
    records = {k: np.array(v) for k, v in rec.items()}
    servers = [r.server for r in runs if r.server is not None]
    out = Observed(records, [r.source for r in runs], len(set(deploy_of.values())))
    out.server_refusals = sum(s.refusals for s in servers) if servers else None
    out.not_measured = _not_measured(signals(records), runs, out.server_refusals)
    cut = sorted({r.source for r in runs if r.partial_deploys})
    if cut:
        why = (
            f"the logs keep only part of each deploy ({', '.join(cut)}: `deploys: partial`): "
            "their starts and failures per deploy are not whole deploys"
        )
        out.not_measured |= {"starts_per_deploy": why, "failures_per_deploy": why}
        out.partial = True
    return out


def _deploys(first: dict[tuple, float]) -> dict[tuple, int]:
    out, deploy, last = {}, -1, -math.inf
    for key, t in sorted(first.items(), key=lambda kv: kv[1]):
        if t - last > DEPLOY_GAP_S:
            deploy += 1
        out[key], last = deploy, t
    return out


def _not_measured(s: Signals, runs: list, server_refusals: int | None) -> dict[str, str]:
    why = {}
    if s.failures == 0:
        for name in ("failure_time_in_phase_s", "refusals", "error_kinds"):
            why[name] = "no failed start in the logs"
    elif s.failure_time_in_phase_s.size == 0:
        why["failure_time_in_phase_s"] = (
            "the logs time whole starts, not the phase that failed (give --phase-pattern and "
            "--phases for a Cloud Logging export)"
        )
    if s.failures and s.classified == 0:
        why["error_kinds"] = (
            f"no failure's reason is known ({', '.join(_raw_reasons(runs))}): the records say "
            "how a start ended, not why a connection failed"
        )
        if server_refusals is None:
            why["refusals"] = why["error_kinds"] + "; a PostgreSQL server log would count 53300s"
    if s.restart_cadence_s.size == 0:
        why["restart_cadence_s"] = "no instance started more than once (no replacement seen)"
    return why


def _raw_reasons(runs: list) -> list[str]:
    seen = Counter(
        a.reason or a.outcome for r in runs for a in r.attempts if a.outcome != Outcome.READY
    )
    return [f"{k} {n}" for k, n in seen.most_common(3)]


# -- the tests ------------------------------------------------------------------------------------


@dataclass
class SignalTest:
    """One signal tested against one hypothesis."""

    signal: str
    p_value: float | None  # None: not comparable (the hypothesis produced nothing to compare)
    method: str
    observed: dict
    predicted: dict
    note: str = ""
    adjusted_p: float | None = None
    rejected: bool = False


def deadlines(sc) -> list[float]:
    """The bounds a hypothesis cuts an attempt at: the connection's, database init's and each
    start-up phase's own (``deadline_s``, docs/model.md "Start-up phases")."""
    phases = {float(p.deadline_s) for p in sc.startup.phases if p.deadline_s is not None}
    return sorted({float(sc.pool.connect_timeout_s), float(sc.startup.db_init_timeout_s), *phases})


# -- hypotheses -----------------------------------------------------------------------------------


@dataclass
class Hypothesis:
    """A hypothesis's simulated signals, its tests against the observation and its verdict."""

    name: str
    source: str
    replications: int
    simulated: Signals
    tests: list[SignalTest] = field(default_factory=list)
    log_likelihood: float | None = None  # of the observed failure-time bins and error families
    rank: int | None = None  # among those that can produce the observation, 1 = best

    @property
    def survives(self) -> bool:
        return not any(t.rejected for t in self.tests)

    @property
    def deciding(self) -> list[SignalTest]:
        return [t for t in self.tests if t.rejected]

    @property
    def min_adjusted_p(self) -> float | None:
        ps = [t.adjusted_p for t in self.tests if t.adjusted_p is not None]
        return min(ps) if ps else None

    @property
    def verdict(self) -> str:
        return "can produce what was observed" if self.survives else "cannot produce it"


def simulated_records(results) -> Records:
    """A run's attempt records (``sim.runner.Results``) with each replication as one deploy."""
    rec = dict(results.attempts)
    rec["deploy"] = rec["replication"]
    return rec


@dataclass
class Diagnosis:
    observed: Observed
    signals: Signals
    hypotheses: list[Hypothesis]
    edges: np.ndarray
    bin_labels: list[str]
    alpha: float
    seed: int

    @property
    def supported(self) -> Hypothesis | None:
        ranked = [h for h in self.hypotheses if h.rank is not None]
        return min(ranked, key=lambda h: h.rank) if ranked else None


def diagnose(
    obs: Observed,
    simulated: list[tuple[str, str, object, Records, int]],
    *,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Diagnosis:
    """Test every hypothesis against ``obs``. ``simulated``: (name, source, scenario, records,
    replications) per hypothesis. The failure-time bins are common to all hypotheses (every
    hypothesis's bounds), so their likelihoods compare."""
    s_obs = signals(obs.records)
    bounds = sorted({d for _, _, sc, _, _ in simulated for d in deadlines(sc)})
    edges, labels = time_bins(bounds)
    out = []
    for k, (name, source, _sc, rec, n) in enumerate(simulated):
        rng = np.random.default_rng([seed, k])
        h = Hypothesis(name, source, n, signals(rec))
        h.tests, h.log_likelihood = _tests(obs, s_obs, h.simulated, edges, labels, rng)
        for t, adjusted in zip(h.tests, holm([t.p_value for t in h.tests]), strict=True):
            t.adjusted_p, t.rejected = adjusted, adjusted is not None and adjusted <= alpha
        out.append(h)
    # Ranked: those that can produce it, by the observed failures' likelihood (the higher, the
    # better), then by their weakest Holm-adjusted p.
    alive = sorted(
        (h for h in out if h.survives),
        key=lambda h: (-(h.log_likelihood or 0.0), -(h.min_adjusted_p or 1.0)),
    )
    for rank, h in enumerate(alive, start=1):
        h.rank = rank
    return Diagnosis(obs, s_obs, out, edges, labels, alpha, seed)


def _tests(obs: Observed, o: Signals, s: Signals, edges, labels, rng):
    tests, lls = [], []
    skip = obs.not_measured
    if "failure_time_in_phase_s" not in skip:
        t, ll = _time_test(o, s, edges, labels, rng, obs.partial)
        tests.append(t)
        lls.append(ll)
    if "refusals" not in skip:
        tests.append(_refusal_test(obs, o, s))
    if "error_kinds" not in skip:
        t, ll = _kinds_test(o, s, rng, obs.partial)
        tests.append(t)
        lls.append(ll)
    for name in ("starts_per_deploy", "failures_per_deploy"):
        if name in skip:
            continue
        x, y = getattr(o, name), getattr(s, name)
        seen = {"mean": float(x.mean()), "deploys": int(x.size), "values": _few(x)}
        method = "predictive: mean of as many whole simulated deploys, two-sided"
        tests.append(SignalTest(name, mean_p(x, y, rng), method, seen, _spread(y)))
    if "restart_cadence_s" not in skip:
        tests.append(_cadence_test(o, s, rng, obs.partial))
    tests.sort(key=lambda t: SIGNALS.index(t.signal))
    lls = [x for x in lls if x is not None]
    return tests, (sum(lls) if lls else None)


def _cadence_test(o: Signals, s: Signals, rng, partial: bool) -> SignalTest:
    x, y = o.restart_cadence_s, s.restart_cadence_s
    size = x.size if partial else None  # logs cut short: samples of the observed size
    p, d = ks_p(x, y, s.restart_cadence_deploy, s.deploys, o.deploys, rng, size=size)
    seen = {"median_s": float(np.median(x)), "n": int(x.size), "ks_distance": d}
    note = "" if p is not None else "the hypothesis never starts an instance twice"
    method = (
        f"predictive: Kolmogorov–Smirnov distance with {BOUND_TOLERANCE_S:g} s slack, "
        "whole simulated deploys"
    )
    return SignalTest("restart_cadence_s", p, method, seen, _spread(y), note)


def _time_test(o: Signals, s: Signals, edges, labels, rng, partial: bool):
    x = binned(o.failure_time_in_phase_s, o.failure_time_deploy, o.deploys, edges).sum(axis=0)
    y = binned(s.failure_time_in_phase_s, s.failure_time_deploy, s.deploys, edges)
    seen = {
        "median_s": float(np.median(o.failure_time_in_phase_s)),
        "n": int(x.sum()),
        "bins": dict(zip(labels, x.astype(int).tolist(), strict=True)),
        "phases": o.failing_phases,  # when the records name the phase a failure ended in
    }
    p, ll = categorical_p(x, y, o.deploys, rng, size=int(x.sum()) if partial else None)
    if p is None:
        why = "the hypothesis produced no failure: failures_per_deploy decides"
        return SignalTest("failure_time_in_phase_s", None, "binned", seen, {"n": 0}, why), None
    pooled = y.sum(axis=0)
    predicted = {
        "median_s": float(np.median(s.failure_time_in_phase_s)),
        "n": int(pooled.sum()),
        "shares": dict(zip(labels, (pooled / pooled.sum()).round(4).tolist(), strict=True)),
    }
    method = (
        f"predictive: divergence of the shares over {len(labels)} bins, one at each bound "
        f"(± {BOUND_TOLERANCE_S:g} s: censored at the deadline), whole simulated deploys"
    )
    return SignalTest("failure_time_in_phase_s", p, method, seen, predicted), ll


def _refusal_test(obs: Observed, o: Signals, s: Signals) -> SignalTest:
    if o.classified:
        r, k, where = o.refusals, o.classified, "failures whose reason is known"
    else:
        r, k, where = min(obs.server_refusals or 0, o.failures), o.failures, "the server log"
    seen = {"refusals": r, "failures": k, "share": r / k, "from": where}
    if s.classified == 0:
        why = "the hypothesis produced no failure: failures_per_deploy decides"
        return SignalTest("refusals", None, "binomial", seen, {"failures": 0}, why)
    known = s.failure_reasons != UNCLASSIFIED
    refused = s.failure_reasons[known] == Reason.TOO_MANY_CLIENTS.value
    share = clustered_proportion(refused, s.failure_deploy[known], BOUND_CONFIDENCE)
    deff = _design_effect(share, s.failure_deploy[known], o.failure_deploy, k)
    r_eff, k_eff = effective(r, k, deff)
    predicted = {
        "refusals": s.refusals,
        "failures": s.classified,
        "share": share.estimate,
        "share_low": share.ci_low,
        "share_high": share.ci_high,
        "design_effect": deff,
        "observed_as": {"refusals": r_eff, "failures": k_eff},
    }
    method = (
        f"binomial, the simulated share at its {BOUND_CONFIDENCE:.0%} clustered Wilson bound, "
        "the failures counted over the simulated design effect, two-sided"
    )
    p = refusal_p(r_eff, k_eff, share.ci_low, share.ci_high)
    return SignalTest("refusals", p, method, seen, predicted)


def _design_effect(share, sim_deploys: np.ndarray, obs_deploys: np.ndarray, k: int) -> float:
    """The observed failures' design effect, 1 + (m − 1) ρ: ρ, the failures' correlation within
    a deploy, from the simulated design effect at the simulated failures per deploy; m, the
    observed failures per deploy that has any."""
    m_sim = share.trials / max(np.unique(sim_deploys).size, 1)
    deff_sim = share.trials / share.effective_trials if share.effective_trials else 1.0
    rho = min(1.0, max(0.0, (deff_sim - 1) / (m_sim - 1))) if m_sim > 1 else 0.0
    m_obs = k / max(np.unique(obs_deploys).size, 1)
    return 1 + max(m_obs - 1, 0.0) * rho


def _kinds_test(o: Signals, s: Signals, rng, partial: bool):
    x, y = o.families().sum(axis=0), s.families()
    seen = {
        "kinds": o.error_kinds,
        "families": dict(zip(FAMILY_NAMES, x.astype(int).tolist(), strict=True)),
    }
    p, ll = categorical_p(x, y, o.deploys, rng, size=int(x.sum()) if partial else None)
    if p is None:
        why = "the hypothesis produced no failure: failures_per_deploy decides"
        return SignalTest("error_kinds", None, "families", seen, {"kinds": {}}, why), None
    pooled = y.sum(axis=0)
    predicted = {
        "kinds": s.error_kinds,
        "shares": dict(zip(FAMILY_NAMES, (pooled / pooled.sum()).round(4).tolist(), strict=True)),
    }
    method = (
        "predictive: divergence of the shares of the families refused, closed by the path, "
        "timed out and other, whole simulated deploys"
    )
    return SignalTest("error_kinds", p, method, seen, predicted), ll


def _few(x: np.ndarray, most: int = 20) -> list[float]:
    return [float(v) for v in x[:most]]


def _spread(y: np.ndarray) -> dict:
    if y.size == 0:
        return {"n": 0}
    q = np.percentile(y, [5, 50, 95])
    return {"mean": float(y.mean()), "p5": q[0], "p50": q[1], "p95": q[2], "n": int(y.size)}


# -- the shipped hypotheses -----------------------------------------------------------------------


def shipped_hypotheses() -> list[str]:
    """Names of the hypotheses shipped in ``sim/scenarios/hypotheses/``."""
    from importlib import resources

    folder = resources.files("sim") / "scenarios" / "hypotheses"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_hypothesis(name_or_path: str):
    """(scenario, where it came from): a shipped hypothesis by name, else any scenario
    (a shipped scenario's name or a TOML file, as every command takes it)."""
    from importlib import resources

    from sim import scenario as scenarios

    if name_or_path in shipped_hypotheses():
        res = resources.files("sim") / "scenarios" / "hypotheses" / f"{name_or_path}.toml"
        where = f"{name_or_path} (built-in hypothesis)"
        return scenarios.loads(res.read_text(encoding="utf-8"), where), where
    return scenarios.resolve(name_or_path), name_or_path
