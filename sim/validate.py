"""``startsim validate``: measured and predicted, figure by figure, with a verdict for each.

Each campaign (a :class:`~sim.calibrate.inputs.Run`) is simulated with its own scenario — its
fleet, pool, deadline and restart rules — and, given a calibrated scenario, that scenario's
connector, server and (unless the harness drew them itself) phase durations. Runs are clusters:
their attempts fail together, as a replication's do (:func:`sim.stats.cluster_proportion`).

- Shares (P(database init reaches the deadline), P(first start succeeds)): the difference's
  interval from both clustered intervals (Newcombe's hybrid score method); *agrees* when it holds 0.
- Per-run figures (fleet time-to-ready, rejections, restarts, work amplification): the measured
  mean over the runs against the simulated distribution of the mean of as many replications;
  *agrees* when it lies in the central interval.
- Database-init durations: the Kolmogorov–Smirnov distance of the measured durations from the
  simulated ones, its p-value by drawing whole campaigns from the model (:func:`ks_by_runs`): a
  run's attempts share its scale-outs and its queue, so they are not independent draws, and the
  two-sample test's own p-value, which takes them as such, rejects a right model too often.
  An attempt the deadline ended is **censored** there: all we know is "at least the deadline".
  A real process overshoots it by milliseconds, the model's sit on it exactly, so a timeout
  within :func:`deadline_tolerance_s` of the deadline is cut at the deadline on both sides
  (:func:`cut_at_deadline`) before any duration is compared: the distance is then the censored
  KS (the two Kaplan–Meier curves' largest gap below the deadline; the censored share has its
  own figure), and the fleet's time-to-ready loses the overshoots of the restarts before it.
- A figure that no record measured (a start-up command that never reported
  ``connection_attempts``) is *not measured*: no verdict, and the overall one does not count it.
- **Traffic after ready** (a campaign with ``requests.jsonl``, docs/loadtests.md): the checkout
  wait's p50 and p99 over the served requests that arrived within ``traffic.window_s`` of their
  instance's ready time, pooled over the runs, with the order statistics' interval, against the
  same quantile over campaigns of as many runs drawn from the replications; the failed requests
  per deploy, with the Poisson interval of the measured count, as the per-run
  figures above. A checkout the harness served from an idle connection still takes it a few
  microseconds; waits under :data:`WAIT_RESOLUTION_S` count as 0 on both sides.
- **Conditional**: each run with an emulator log is simulated again with its scale-outs at the
  times it observed (:func:`sim.calibrate.connector.conditional`). The scale-out delay dominates
  run-to-run spread, so this comparison is far sharper than the pooled one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.afterready import quantile_interval, window_waits
from sim.calibrate.connector import conditional, scale_outs
from sim.calibrate.inputs import Run
from sim.engine import run_replication
from sim.errors import UsageError
from sim.measured_requests import read_requests
from sim.records import Outcome, RequestOutcome, reported_total
from sim.scenario import Scenario
from sim.stats import Proportion, check_confidence, cluster_proportion

INFRASTRUCTURE = ("connector", "database")

AGREES, DISAGREES, NOT_MEASURED = "agrees", "disagrees", "not measured"

# A real process ends past its deadline by the timer's latency, its exit and the record's
# millisecond rounding (an --instance-command campaign of examples/sqlalchemy_startup.py: 20.000–
# 20.020 s at a 20 s deadline); the model's timeouts sit on it exactly. Assumed: 50 ms, or 0.5 %
# of a longer deadline, covers that and stays far below any duration the model tells apart.
DEADLINE_TOLERANCE_S = 0.05
DEADLINE_TOLERANCE_SHARE = 0.005
# A campaign's checkout from an idle connection takes the harness some microseconds of its own
# (asyncio's scheduling: 10-100 µs measured on the 2-core development machine); the model's is
# 0. Assumed: a wait under 1 ms is the harness's, not the pool's (a new connection takes more).
WAIT_RESOLUTION_S = 0.001
QUANTILE_DRAWS = 2000  # campaigns drawn from the replications for a checkout-wait quantile


@dataclass(frozen=True)
class Comparison:
    """One figure measured against its prediction, with the verdict (not a plotted figure)."""

    name: str
    measured: float
    measured_interval: tuple[float, float] | None
    predicted: float
    predicted_interval: tuple[float, float] | None
    verdict: str  # AGREES | DISAGREES | NOT_MEASURED (no verdict)
    method: str


@dataclass
class Validation:
    figures: list[Comparison]
    conditional: list[Comparison]
    measured_inits: np.ndarray
    simulated_inits: np.ndarray
    conditional_inits: dict[str, np.ndarray] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    confidence: float = 0.95
    replications: int = 0
    # Traffic after ready: the checkout waits in the window, measured (the runs with request
    # records) and simulated (their replications); empty without traffic.
    measured_waits: np.ndarray = field(default_factory=lambda: np.zeros(0))
    simulated_waits: np.ndarray = field(default_factory=lambda: np.zeros(0))


def scenario_for(run: Run, calibrated: Scenario | None) -> Scenario:
    """The run's own scenario, with the calibrated infrastructure (and phases, when measured)."""
    if run.scenario is None:
        if calibrated is None:
            raise UsageError(f"{run.source} has no scenario of its own: give one", "scenario", None)
        return calibrated.with_overrides({"fleet.instances": _instances(run)}, "validate")
    sc = run.scenario
    if calibrated is None:
        return sc
    update = {s: getattr(calibrated, s) for s in INFRASTRUCTURE}
    if not run.harness_drawn:
        st = calibrated.startup
        update["startup"] = sc.startup.model_copy(
            update={"before_db_s": st.before_db_s, "after_db_s": st.after_db_s}
        )
    return sc.model_copy(update=update)


def check_replications(replications: int) -> None:
    if replications < KS_MIN_REPLICATIONS:
        raise UsageError(
            f"must be at least {KS_MIN_REPLICATIONS}: half the replications make the model's "
            "distribution of init durations, the other half are drawn as campaigns",
            "replications",
            replications,
        )


def validate(
    runs: list[Run],
    calibrated: Scenario | None = None,
    *,
    replications: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> Validation:
    check_confidence(confidence)
    if not runs:
        raise UsageError("give at least one campaign folder", "campaigns", [])
    check_replications(replications)
    alpha = 1 - confidence
    scenarios = [scenario_for(r, calibrated) for r in runs]
    deadlines = [sc.startup.db_init_timeout_s for sc in scenarios]
    measured = [
        _run_figures(r, _min_size(r, calibrated), d) for r, d in zip(runs, deadlines, strict=True)
    ]
    simulated = [_simulate(sc, replications, seed) for sc in scenarios]
    for r, sc, mf in zip(runs, scenarios, measured, strict=True):
        mf.update(_measured_traffic(r, sc))
    m_runs = [_measured_inits(r, d) for r, d in zip(runs, deadlines, strict=True)]
    m_inits = np.concatenate(m_runs)
    s_inits = np.concatenate([s["inits"] for s in simulated])
    figures = [
        _share("P(database init reaches the deadline)", "timeouts", measured, simulated, alpha),
        _share("P(first start succeeds)", "first_ok", measured, simulated, alpha, "instances"),
    ]
    for name, key in (
        ("fleet time-to-ready (s)", "fleet_ready_s"),
        ("rejections per instance", "rejected"),
        ("restarts per instance", "restarts"),
        ("work amplification", "amplification"),
    ):
        figures.append(_mean_figure(name, key, measured, simulated, alpha, seed))
    d, p = ks_by_runs(m_runs, [s["by_replication"] for s in simulated], seed=seed)
    figures.append(_ks_figure("database-init durations (KS D)", d, p, alpha, "whole runs"))
    figures += _traffic_figures(measured, simulated, alpha, seed)
    cond, cond_inits = [], {}
    for r, mf, sc, inits in zip(runs, measured, scenarios, m_runs, strict=True):
        delays = [s.delay_s for s in scale_outs(r)]
        if not r.emulator:
            continue
        sim = _simulate(conditional(sc, delays), replications, seed)
        cond_inits[r.run_id] = sim["inits"]
        d, p = ks_by_runs([inits], [sim["by_replication"]], seed=seed)
        how = f"{len(delays)} scale-outs at the observed times; replications"
        cond.append(_ks_figure(f"{r.run_id}: database-init durations (KS D)", d, p, alpha, how))
        share = mf["timeouts"] / max(mf["attempts"], 1)
        cond.append(
            _predictive(
                f"{r.run_id}: P(database init reaches the deadline)",
                share,
                sim["timeouts"] / np.maximum(sim["attempts"], 1),
                alpha,
            )
        )
    traffic = [i for i, f in enumerate(measured) if "waits" in f]
    return Validation(
        figures,
        cond,
        m_inits,
        s_inits,
        cond_inits,
        [r.run_id for r in runs],
        confidence,
        replications,
        _pooled([measured[i]["waits"] for i in traffic]),
        _pooled([w for i in traffic for w in simulated[i]["waits"]]),
    )


def _pooled(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0)


# -- figures of one run, measured or simulated --------------------------------------------------


def _instances(run: Run) -> int:
    if run.scenario is not None:
        return run.scenario.fleet.instances
    return len({a.instance for a in run.attempts})


def _min_size(run: Run, calibrated: Scenario | None) -> int:
    sc = run.scenario or calibrated
    return max(sc.pool.min_size, 1) if sc is not None else 1


def deadline_tolerance_s(deadline_s: float) -> float:
    """How far from the deadline a timeout's measured duration may lie and still be cut there."""
    return max(DEADLINE_TOLERANCE_S, DEADLINE_TOLERANCE_SHARE * deadline_s)


def cut_at_deadline(durations, outcomes, deadline_s: float) -> np.ndarray:
    """Database-init durations with every timeout within the tolerance of the deadline set to the
    deadline itself: censored there ("at least the deadline"), wherever the process really
    stopped. Other durations are kept as they are: a timeout far from the deadline, or an
    attempt that went on past it, is a disagreement to show, not noise to hide."""
    d = np.asarray(durations, dtype=float)
    timeout = np.asarray(outcomes, dtype=str) == Outcome.TIMEOUT
    cut = timeout & (np.abs(d - deadline_s) <= deadline_tolerance_s(deadline_s))
    return np.where(cut, deadline_s, d)


def _measured_inits(run: Run, deadline_s: float) -> np.ndarray:
    at = run.attempts
    return cut_at_deadline([a.db_init_s for a in at], [a.outcome for a in at], deadline_s)


def _ready_unix_s(attempts: list, cut_inits: np.ndarray) -> dict[str, float]:
    """When each instance became ready, less the overshoots of its timeouts before that: each
    restart began as much later as the deadline's overshoot before it, and the model has none."""
    ready = {
        a.instance: (a.attempt, a.start_unix_s + a.before_db_s + a.db_init_s + (a.after_db_s or 0))
        for a in attempts
        if a.outcome == Outcome.READY
    }
    late = dict.fromkeys(ready, 0.0)
    for a, cut in zip(attempts, cut_inits, strict=True):
        if a.instance in ready and a.attempt < ready[a.instance][0]:
            late[a.instance] += a.db_init_s - cut
    return {i: t - late[i] for i, (_, t) in ready.items()}


def _run_figures(run: Run, min_size: int, deadline_s: float) -> dict[str, float]:
    n = _instances(run)
    at = run.attempts
    ready = _ready_unix_s(at, _measured_inits(run, deadline_s))
    # Not measured (NaN) unless every attempt reported it: a partial sum would pass for a count.
    conns = reported_total(a.connection_attempts for a in at)
    return {
        "attempts": len(at),
        "timeouts": sum(a.outcome == Outcome.TIMEOUT for a in at),
        "instances": n,
        "first_ok": sum(a.attempt == 1 and a.outcome == Outcome.READY for a in at),
        "fleet_ready_s": max(ready.values()) - run.t0_unix_s if len(ready) >= n else math.inf,
        "rejected": sum(a.outcome == Outcome.REJECTED for a in at) / n,
        "restarts": sum(a.attempt > 1 for a in at) / n,
        "amplification": conns / (n * min_size),
    }


def _measured_traffic(run: Run, sc: Scenario) -> dict:
    """A campaign's request records (``requests.jsonl``), when it has them and its scenario has
    traffic: its window's checkout waits and its failed requests."""
    requests = read_requests(Path(run.source)) if run.kind == "campaign" else None
    if requests is None or not sc.traffic.on:
        return {}
    return _request_figures(requests, sc.traffic.window_s)


def _request_figures(requests: dict, window_s: float) -> dict:
    waits = window_waits(requests, window_s)
    return {
        "waits": np.where(waits < WAIT_RESOLUTION_S, 0.0, waits),
        "failed_requests": float(np.sum(np.asarray(requests["outcome"]) == RequestOutcome.FAILED)),
    }


def _simulate(sc: Scenario, replications: int, seed: int) -> dict[str, np.ndarray]:
    keys = (
        "attempts",
        "timeouts",
        "instances",
        "first_ok",
        "fleet_ready_s",
        "rejected",
        "restarts",
        "amplification",
    )
    out: dict[str, list] = {k: [] for k in keys}
    by_replication: list[np.ndarray] = []
    waits: list[np.ndarray] = []  # with traffic: each replication's window waits
    failed_requests: list[float] = []
    n, need = sc.fleet.instances, sc.fleet.instances * max(sc.pool.min_size, 1)
    for i in range(replications):
        rep = run_replication(sc, np.random.SeedSequence(seed, spawn_key=(i,)))
        a = rep.attempts
        outcome, attempt = np.asarray(a["outcome"], dtype=str), np.asarray(a["attempt"])
        deadline_s = sc.startup.db_init_timeout_s
        by_replication.append(cut_at_deadline(a["db_init_s"], outcome, deadline_s))
        for key, value in (
            ("attempts", outcome.size),
            ("timeouts", int(np.sum(outcome == Outcome.TIMEOUT))),
            ("instances", n),
            ("first_ok", int(np.sum((attempt == 1) & (outcome == Outcome.READY)))),
            ("fleet_ready_s", rep.fleet_ready_s),
            ("rejected", np.sum(outcome == Outcome.REJECTED) / n),
            ("restarts", np.sum(attempt > 1) / n),
            ("amplification", rep.connection_attempts / need),
        ):
            out[key].append(value)
        if sc.traffic.on:
            figs = _request_figures(rep.requests, sc.traffic.window_s)
            waits.append(figs["waits"])
            failed_requests.append(figs["failed_requests"])
    result = {k: np.asarray(v, dtype=float) for k, v in out.items()}
    result["inits"] = np.concatenate(by_replication) if by_replication else np.zeros(0)
    result["by_replication"] = by_replication
    result["waits"] = waits
    result["failed_requests"] = np.asarray(failed_requests, dtype=float)
    return result


# -- verdicts -----------------------------------------------------------------------------------

KS_DRAWS = 1000  # campaigns drawn from the model for a KS p-value
KS_MIN_REPLICATIONS = 10


def ks_by_runs(
    measured: list[np.ndarray],
    simulated: list[list[np.ndarray]],
    draws: int = KS_DRAWS,
    seed: int = 0,
) -> tuple[float, float]:
    """The KS distance of the measured runs' pooled durations from the model's, and its p-value.

    ``simulated[i]`` holds the durations of each replication of run ``i``'s scenario. Half of them
    (the first) make the model's distribution; each of ``draws`` campaigns drawn from the model
    takes, for every run, one replication of the other half at random, and its distance from the
    model's distribution counts towards the p-value, (1 + drawn at least as far) / (1 + draws), a
    parametric bootstrap that keeps each run's attempts together as they happened."""
    halves = [(reps[: len(reps) // 2], reps[len(reps) // 2 :]) for reps in simulated]
    reference = np.sort(np.concatenate([a for ref, _ in halves for a in ref] or [np.zeros(0)]))
    observed = _ks_distance(np.concatenate(measured), reference)
    rng = np.random.default_rng(seed)
    farther = 0
    for _ in range(draws):
        campaign = [pool[rng.integers(len(pool))] for _, pool in halves if pool]
        farther += _ks_distance(np.concatenate(campaign or [np.zeros(0)]), reference) >= observed
    return observed, (1 + farther) / (1 + draws)


def _ks_distance(sample: np.ndarray, reference_sorted: np.ndarray) -> float:
    """The largest gap between the two empirical distribution functions (0 if either is empty)."""
    if sample.size == 0 or reference_sorted.size == 0:
        return 0.0
    x = np.sort(sample)
    at = np.concatenate([x, reference_sorted])
    fx = np.searchsorted(x, at, side="right") / x.size
    fr = np.searchsorted(reference_sorted, at, side="right") / reference_sorted.size
    return float(np.max(np.abs(fx - fr)))


def _ks_figure(name: str, d: float, p: float, alpha: float, how: str) -> Comparison:
    return Comparison(
        name,
        d,
        None,
        0.0,
        None,
        AGREES if p >= alpha else DISAGREES,
        f"KS, timeouts censored at the deadline, p = {p:.3g} from campaigns drawn from the "
        f"model ({how})",
    )


def _share(name, key, measured, simulated, alpha, total="attempts") -> Comparison:
    m = cluster_proportion(
        [int(f[key]) for f in measured], [int(f[total]) for f in measured], 1 - alpha
    )
    sim_events = np.concatenate([s[key] for s in simulated]).astype(int)
    sim_trials = np.concatenate([s[total] for s in simulated]).astype(int)
    p = cluster_proportion(sim_events, sim_trials, 1 - alpha)
    low, high = newcombe(m, p)
    verdict = AGREES if low <= 0 <= high else DISAGREES
    return Comparison(
        name,
        m.estimate,
        (m.ci_low, m.ci_high),
        p.estimate,
        (p.ci_low, p.ci_high),
        verdict,
        f"difference {m.estimate - p.estimate:+.3f}, interval "
        f"[{low:+.3f}, {high:+.3f}] (Newcombe, runs and replications as clusters)",
    )


def newcombe(a: Proportion, b: Proportion) -> tuple[float, float]:
    """Interval of ``a − b`` from the two proportions' own intervals (Newcombe 1998, method 10)."""
    d = a.estimate - b.estimate
    low = d - math.hypot(a.estimate - a.ci_low, b.ci_high - b.estimate)
    high = d + math.hypot(a.ci_high - a.estimate, b.estimate - b.ci_low)
    return low, high


def _traffic_figures(measured, simulated, alpha: float, seed: int) -> list[Comparison]:
    """Checkout waits and failed requests of the runs with request records (none: no figure)."""
    kept = [i for i, f in enumerate(measured) if "waits" in f]
    if not kept:
        return []
    m = [measured[i] for i in kept]
    s = [simulated[i] for i in kept]
    figures = [
        _quantile_figure(f"checkout wait p{round(q * 100)} in the window (s)", q, m, s, alpha, seed)
        for q in (0.50, 0.99)
    ]
    total = sum(f["failed_requests"] for f in m)
    interval = tuple(x / len(m) for x in poisson_interval(total, 1 - alpha))
    figures.append(
        _mean_figure("failed requests per deploy", "failed_requests", m, s, alpha, seed, interval)
    )
    return figures


def poisson_interval(count: float, confidence: float) -> tuple[float, float]:
    """The exact (Garwood) interval of a Poisson mean from one observed count."""
    from scipy.stats import chi2

    alpha = 1 - confidence
    low = 0.0 if count == 0 else float(chi2.ppf(alpha / 2, 2 * count)) / 2
    return low, float(chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2


def _quantile_figure(name: str, q: float, measured, simulated, alpha, seed) -> Comparison:
    """A checkout-wait quantile pooled over the runs against the same quantile over campaigns
    drawn from the model: for each of :data:`QUANTILE_DRAWS`, one replication of each run's
    scenario at random, their waits pooled (a run's requests share its pools and its queue,
    so they are drawn together, as :func:`ks_by_runs` does)."""
    waits = np.concatenate([f["waits"] for f in measured])
    everything = np.concatenate([w for s in simulated for w in s["waits"]] or [np.zeros(0)])
    predicted = float(np.quantile(everything, q)) if everything.size else math.nan
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(QUANTILE_DRAWS):
        pooled = np.concatenate([s["waits"][rng.integers(len(s["waits"]))] for s in simulated])
        if pooled.size:
            drawn.append(np.quantile(pooled, q))
    if not waits.size or not drawn:
        return Comparison(
            name, math.nan, None, predicted, None, NOT_MEASURED, "no request served in the window"
        )
    lo, hi = np.quantile(drawn, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    value = float(np.quantile(waits, q))
    iv = quantile_interval(waits, q, 1 - alpha)
    measured_iv = None if None in (iv.ci_low, iv.ci_high) else (iv.ci_low, iv.ci_high)
    runs = f"{len(measured)} run{'s' * (len(measured) > 1)}"
    return Comparison(
        name,
        value,
        measured_iv,
        predicted,
        (float(lo), float(hi)),
        AGREES if lo <= value <= hi else DISAGREES,
        f"{waits.size} requests served in the window over {runs} (interval: order statistics) "
        f"vs the central {1 - alpha:.0%} of the same quantile over campaigns drawn from the "
        f"replications; waits under {WAIT_RESOLUTION_S * 1000:g} ms count as 0",
    )


def _mean_figure(name, key, measured, simulated, alpha, seed, measured_interval=None) -> Comparison:
    """The runs that measured the figure (NaN: not measured) against their own simulations."""
    kept = [i for i, f in enumerate(measured) if not math.isnan(f[key])]
    if not kept:
        pool = np.concatenate([s[key] for s in simulated])
        return Comparison(
            name,
            math.nan,
            None,
            float(np.median(pool)),
            None,
            NOT_MEASURED,
            "not measured: no run's records report every attempt's count, so no verdict",
        )
    values = np.asarray([measured[i][key] for i in kept], dtype=float)
    pool = np.concatenate([simulated[i][key] for i in kept])
    rng = np.random.default_rng(seed)
    means = rng.choice(pool, (4000, values.size)).mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    mean = float(values.mean())
    verdict = AGREES if lo <= mean <= hi else DISAGREES
    runs = f"mean of {values.size} run{'s' * (values.size > 1)}"
    if len(kept) < len(measured):
        runs += f" (of {len(measured)}; the others did not measure it)"
    return Comparison(
        name,
        mean,
        measured_interval,
        float(np.median(pool)),
        (float(lo), float(hi)),
        verdict,
        f"{runs} vs the simulated central {1 - alpha:.0%} of such means",
    )


def _predictive(name: str, value: float, sims: np.ndarray, alpha: float) -> Comparison:
    lo, hi = np.quantile(sims, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    verdict = AGREES if lo <= value <= hi else DISAGREES
    return Comparison(
        name,
        value,
        None,
        float(np.median(sims)),
        (float(lo), float(hi)),
        verdict,
        "the run against replications with its own scale-out times",
    )


def verdict_line(v: Validation) -> str:
    """The overall verdict: over the figures that have one (a figure not measured has none)."""
    figs = [f for f in v.figures + v.conditional if f.verdict != NOT_MEASURED]
    unmeasured = [f.name for f in v.figures + v.conditional if f.verdict == NOT_MEASURED]
    bad = [f.name for f in figs if f.verdict == DISAGREES]
    tail = f" ({NOT_MEASURED}: {'; '.join(unmeasured)})" if unmeasured else ""
    if not bad:
        return f"all {len(figs)} figures agree at {v.confidence:.0%} confidence{tail}"
    return (
        f"{len(bad)} of {len(figs)} figures disagree at {v.confidence:.0%}: {'; '.join(bad)}{tail}"
    )
