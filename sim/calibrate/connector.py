"""What the records say about the connector and the server: scale-outs, set-up capacity and time,
and the rejection threshold, each with an interval or the reason it cannot have one.

- **Scale-outs** come from the emulator's log (``emulator.jsonl``): each ``scale_out`` line is when
  an instance joined. A scale-out starts when connections first wait (estimated as the first
  database init's start) or, if connections still waited, when the previous one joined; one that
  started at an unknown moment only bounds its delay from above (left-censored).
- **Set-up time and the server's accept** come from the emulator's ``connection`` lines when the
  log has them: each connection's ``setup_s`` and ``accept_s`` (upstream dial to the server's
  verdict) are measured, and fitted as durations; a connection that closed before its set-up or
  before the server's verdict gives a right-censored value.
- **Set-up capacity** (and, for logs without ``connection`` lines, the set-up time) is found by
  simulation: for each candidate
  (``setups_per_instance``, median ``setup_s``) the run's own scenario is simulated with its
  scale-outs at the times observed, and the measured database-init durations are compared with the
  simulated ones by a two-sample Kolmogorov–Smirnov test. The confidence set is every candidate the
  test does not reject (test inversion); each parameter's interval is its range over that set,
  and a range that reaches the edge of the grid means the records cannot bound it.
- **The rejection threshold** (free slots) is at least the most connections the harness held at
  once; when 53300 rejections happened, it was reached, so that peak is the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sim.calibrate.inputs import Run
from sim.distributions import LogNormal
from sim.engine import run_replication
from sim.fitting import EXACT, LEFT, Sample
from sim.scenario import Scenario
from sim.streams import InOrder

NEVER_S = 1e12  # a scale-out delay past any horizon: no further scale-out in the simulation


@dataclass(frozen=True)
class Estimate:
    """One calibrated value: estimate, interval (``None`` ends: unbounded), what it rests on."""

    field: str
    value: object
    low: float | None
    high: float | None
    source: str
    n: int
    quality: str
    identifiable: bool = True

    def interval(self) -> str:
        if self.low is None and self.high is None:
            return "—"
        lo = "" if self.low is None else f"{self.low:.4g}"
        hi = "∞" if self.high is None else f"{self.high:.4g}"
        return f"[{lo}, {hi}]"


# -- scale-outs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleOut:
    at_s: float  # when the instance joined, seconds after the run's first start
    delay_s: float
    kind: int  # EXACT, or LEFT: the delay is at most ``delay_s`` (its start is unknown)


def scale_outs(run: Run) -> list[ScaleOut]:
    """The run's scale-outs from its emulator log, in order (empty without a log)."""
    t0 = run.t0_unix_s
    first_init = min(a.start_unix_s + a.before_db_s for a in run.attempts)
    out, start, exact = [], first_init, True
    for line in run.emulator:
        if line.get("event") != "scale_out":
            continue
        at = float(line["t_unix_s"])
        out.append(ScaleOut(at - t0, max(at - start, 0.0), EXACT if exact else LEFT))
        # The next scale-out starts at once only if connections were still waiting.
        start, exact = at, int(line.get("queued", 0)) > 0
    return out


def connector_start(run: Run) -> int | None:
    for line in run.emulator:
        if line.get("event") == "start":
            return int(line["instances"])
    return None


def conditional(sc: Scenario, delays: list[float]) -> Scenario:
    """``sc`` whose scale-outs take ``delays`` in order, then never: the engine draws one delay
    per scale-out, so these reproduce a run's observed scale-out times (see docs/calibration.md).
    A copy, not validated: it is only simulated, never written."""
    cx = sc.connector.model_copy(update={"scale_up_delay_s": InOrder(delays, NEVER_S)})
    return sc.model_copy(update={"connector": cx})


# -- per-connection times --------------------------------------------------------------------

# Stages of an emulator ``connection`` line after which its accept is known: the server's verdict
# (ReadyForQuery, or an ErrorResponse such as 53300: the engine, too, draws the accept before the
# slot check), or "accept": closed before a verdict, so at least that long.
VERDICTS = ("ready", "rejected")


def connection_lines(runs: list[Run]) -> list[dict]:
    return [line for r in runs for line in r.emulator if line.get("event") == "connection"]


def setup_sample(lines: list[dict]) -> Sample | None:
    """Set-up durations; a client that hung up during its set-up gives "at least" its time."""
    done = [ln for ln in lines if ln.get("setup_s") is not None and ln.get("stage") != "queued"]
    if not done:
        return None
    values = [float(ln["setup_s"]) for ln in done]
    return Sample.of(values, right=[ln["stage"] == "setup" for ln in done])


def accept_sample(lines: list[dict]) -> Sample | None:
    """The server's accept (dial to verdict); closed before a verdict gives "at least"."""
    seen = [ln for ln in lines if ln.get("accept_s") is not None]
    seen = [ln for ln in seen if ln.get("stage") in (*VERDICTS, "accept")]
    if not seen:
        return None
    values = [float(ln["accept_s"]) for ln in seen]
    return Sample.of(values, right=[ln["stage"] == "accept" for ln in seen])


# -- free slots ---------------------------------------------------------------------------------


def peak_held(run: Run, bin_s: float = 0.1) -> int:
    """The most connections the harness held at once (per-worker peaks summed per 0.1 s bin)."""
    bins: dict[int, dict[int, int]] = {}
    for s in run.connections:
        per = bins.setdefault(int(float(s["t_unix_s"]) / bin_s), {})
        per[s.get("worker", 0)] = max(per.get(s.get("worker", 0), 0), int(s["peak"]))
    return max((sum(w.values()) for w in bins.values()), default=0)


def free_slots(runs: list[Run]) -> Estimate:
    """The server's rejection threshold for the application (``max_connections`` less reserved
    and other clients' slots)."""
    peaks = [peak_held(r) for r in runs if r.connections]
    rejected = sum(a.reason == "53300" for r in runs for a in r.attempts)
    peak = max(peaks, default=0)
    field = "database.max_connections"
    if not peaks:
        why = "not identifiable: no connections.jsonl (a campaign records it)"
        return Estimate(field, None, None, None, "—", 0, why, identifiable=False)
    if rejected == 0:
        why = (
            f"not identifiable from these records: no 53300 rejection, so only at least "
            f"{peak} free slots; a campaign whose instances × min_size exceeds the free "
            "slots would identify it"
        )
        return Estimate(
            field, None, float(peak), None, "connections.jsonl", len(peaks), why, identifiable=False
        )
    quality = (
        f"{rejected} attempts rejected with 53300 while at most {peak} connections were "
        f"held: the threshold is at least {peak}, and {peak} when no connection was "
        "being authenticated at the rejections"
    )
    return Estimate(
        field, peak, float(peak), None, "connections.jsonl + 53300 records", rejected, quality
    )


# -- set-up capacity and time, by simulation ----------------------------------------------------


@dataclass(frozen=True)
class GridFit:
    setups: np.ndarray  # candidate setups_per_instance
    medians: np.ndarray  # candidate median setup_s
    p_values: np.ndarray  # [setups, medians]: KS p-values, the confidence set's test
    distances: np.ndarray  # [setups, medians]: Cramér–von Mises statistics, for the estimate
    sigma: float
    measured: int
    alpha: float

    def best(self) -> tuple[int, float]:
        """The minimum-distance candidate (Cramér–von Mises: it weighs the whole CDF, so it is
        less noisy than the KS supremum)."""
        i, j = np.unravel_index(np.argmin(self.distances), self.distances.shape)
        return int(self.setups[i]), float(self.medians[j])

    def accepted(self) -> np.ndarray:
        return self.p_values >= self.alpha


def fit_setups(
    runs: list[Run],
    scenario_of,
    *,
    sigma: float,
    confidence: float = 0.95,
    replications: int = 20,
    seed: int = 0,
    setups_grid=None,
    medians=None,
    setup_measured: bool = False,
) -> GridFit | None:
    """Test inversion over (setups_per_instance, median setup_s); ``None`` without a run that
    went through an emulated connector. ``scenario_of(run)`` is the run's scenario to simulate.
    With ``setup_measured`` the set-up time is the scenario's own (measured): only the capacity
    is searched, and ``medians`` holds ``nan``."""
    runs = [r for r in runs if r.emulator and r.scenario is not None]
    if not runs:
        return None
    measured = np.concatenate([[a.db_init_s for a in r.attempts] for r in runs])
    demand = max(r.scenario.fleet.instances * max(r.scenario.pool.min_size, 1) for r in runs)
    setups_grid = np.arange(1, min(demand, 12) + 1) if setups_grid is None else setups_grid
    medians = np.geomspace(0.02, 2.0, 21) if medians is None else medians
    medians = [math.nan] if setup_measured else [float(m) for m in medians]
    bases = [(conditional(scenario_of(r), [s.delay_s for s in scale_outs(r)])) for r in runs]
    p = np.zeros((len(setups_grid), len(medians)))
    cvm = np.zeros_like(p)
    for i, k in enumerate(setups_grid):
        for j, m in enumerate(medians):
            setup = None if setup_measured else LogNormal(dist="lognormal", median=m, sigma=sigma)
            sims = [_db_inits(_with_setup(sc, int(k), setup), replications, seed) for sc in bases]
            simulated = np.concatenate(sims)
            p[i, j] = stats.ks_2samp(measured, simulated).pvalue
            cvm[i, j] = stats.cramervonmises_2samp(measured, simulated).statistic
    grid = (np.asarray(setups_grid), np.asarray(medians, dtype=float))
    return GridFit(*grid, p, cvm, sigma, measured.size, 1 - confidence)


def _with_setup(sc: Scenario, setups: int, setup: LogNormal | None) -> Scenario:
    update = {"setups_per_instance": setups} | ({"setup_s": setup} if setup else {})
    cx = sc.connector.model_copy(update=update)
    return sc.model_copy(update={"connector": cx})


def _db_inits(sc: Scenario, replications: int, seed: int) -> np.ndarray:
    out: list[float] = []
    for i in range(replications):
        rep = run_replication(sc, np.random.SeedSequence(seed, spawn_key=(i,)))
        out += rep.attempts["db_init_s"]
    return np.asarray(out, dtype=float)


def setup_estimates(fit: GridFit | None) -> list[Estimate]:
    """The two estimates of a grid fit, each with its interval or why it has none."""
    if fit is None:
        why = (
            "not identifiable from these records: no campaign went through the connector "
            "emulator (its log times the scale-outs); run `startsim loadtest --via-emulator` "
            "with more connections than the connector carries at once"
        )
        return [
            Estimate("connector.setups_per_instance", None, None, None, "—", 0, why, False),
            Estimate("connector.setup_s", None, None, None, "—", 0, why, False),
        ]
    k, m = fit.best()
    ok = fit.accepted()
    src = "database-init durations vs simulation at the observed scale-outs (KS test inversion)"
    p_best = float(fit.p_values.max())
    if not ok.any():
        why = (
            f"no candidate agrees with the measurements (best KS p = {p_best:.2g}): the model "
            "does not describe these runs; see `startsim validate`"
        )
        return [
            Estimate("connector.setups_per_instance", k, None, None, src, fit.measured, why, False),
            Estimate("connector.setup_s", m, None, None, src, fit.measured, why, False),
        ]
    ks = fit.setups[ok.any(axis=1)]
    ms = fit.medians[ok.any(axis=0)]
    top_k = ks.max() == fit.setups.max()
    edge_m = ms.min() == fit.medians.min() or ms.max() == fit.medians.max()
    qk = (
        f"best KS p = {p_best:.2g}; {ok.sum()} of {ok.size} grid points not rejected at "
        f"{fit.alpha:g}"
    )
    k_est = Estimate(
        "connector.setups_per_instance",
        k,
        float(ks.min()),
        None if top_k else float(ks.max()),
        src,
        fit.measured,
        qk
        if not top_k
        else qk + f"; only at least {ks.min()}: the connector never queued "
        "enough to bound it from above (a campaign with more concurrent connections would)",
        identifiable=not top_k,
    )
    # The set is known at the grid's resolution: widen it by half a (geometric) step each way.
    half_step = math.sqrt(fit.medians[1] / fit.medians[0]) if fit.medians.size > 1 else 1.0
    m_est = Estimate(
        "connector.setup_s",
        m,
        float(ms.min() / half_step),
        float(ms.max() * half_step),
        src,
        fit.measured,
        qk
        + f"; lognormal sigma {fit.sigma:g} kept from the base scenario"
        + ("; interval reaches the grid's edge" if edge_m else ""),
        identifiable=not edge_m,
    )
    return [k_est, m_est]


def scale_out_delays(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Every observed scale-out delay with its kind, across runs."""
    outs = [s for r in runs for s in scale_outs(r)]
    return (
        np.asarray([s.delay_s for s in outs], dtype=float),
        np.asarray([s.kind for s in outs], dtype=int),
    )


def mean_interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Student-t interval of a mean (``None`` ends with fewer than two values)."""
    if values.size < 2:
        return None, None
    half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1)
    half /= math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)
