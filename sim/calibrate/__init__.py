"""``startsim calibrate``: the model's parameters learnt from campaigns and production logs.

:func:`calibrate` takes :class:`~sim.calibrate.inputs.Run` objects (read by
:mod:`sim.calibrate.inputs`) and a base scenario, and returns a :class:`Calibration`: the calibrated
scenario and one :class:`~sim.calibrate.connector.Estimate` per field (value, interval, source,
sample size, fit quality), which :func:`sim.calibrate.toml.render` writes as a commented TOML.
Durations are fitted by :mod:`sim.fitting` (maximum likelihood, censored attempts kept, AIC, KS);
the connector and the server by :mod:`sim.calibrate.connector`. docs/calibration.md has the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.calibrate.connector import (
    Estimate,
    accept_sample,
    connection_lines,
    connector_start,
    fit_setups,
    free_slots,
    mean_interval,
    scale_out_delays,
    setup_estimates,
    setup_sample,
)
from sim.calibrate.fleet import deploys, observed_fleet
from sim.calibrate.inputs import PARTS, Run
from sim.calibrate.restarts import observed
from sim.calibrate.server import SERVER_SETUP, server_accept, server_slots
from sim.distributions import LogNormal
from sim.errors import UsageError
from sim.fitting import EXACT, DurationFit, Sample, fit_duration
from sim.records import Outcome
from sim.scenario import Scenario, resolve
from sim.stats import check_confidence


@dataclass
class Calibration:
    scenario: Scenario
    estimates: list[Estimate]
    notes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    db_init: DurationFit | None = None
    monitoring: list = field(default_factory=list)  # cloudrun.Monitoring per window, then all
    deploys: list = field(default_factory=list)  # fleet.Deploy: the instances each deploy started

    def estimate(self, name: str) -> Estimate:
        return next(e for e in self.estimates if e.field == name)

    def as_dict(self) -> dict:
        """What ``startsim calibrate --json`` prints: every estimate with its interval, sample
        size, source and fit; database init's fit; the monitoring windows' counts; the notes."""
        db = self.db_init
        return {
            "runs": list(self.runs),
            "scenario": self.scenario.name,
            "estimates": [
                {
                    "field": e.field,
                    "value": e.value,
                    "low": e.low,
                    "high": e.high,
                    "n": e.n,
                    "source": e.source,
                    "fit": e.quality,
                    "identifiable": e.identifiable,
                }
                for e in self.estimates
            ],
            "db_init": None
            if db is None
            else {"n": db.n, "censored": db.censored, "chosen": db.chosen, "fit": db.quality()},
            "monitoring": [m.as_dict() for m in self.monitoring],
            "deploys": [d.as_dict() for d in self.deploys],
            "notes": list(self.notes),
        }


def calibrate(
    runs: list[Run],
    base: Scenario | None = None,
    *,
    confidence: float = 0.95,
    replications: int = 20,
    seed: int = 0,
) -> Calibration:
    """Fit every duration and estimate the connector and server from ``runs``."""
    check_confidence(confidence)
    if not runs:
        raise UsageError("give at least one campaign folder or log file", "inputs", [])
    campaigns = [r for r in runs if r.scenario is not None]
    base = base or (campaigns[0].scenario if campaigns else resolve(None))
    attempts = [a for r in runs for a in r.attempts]
    cut = [a for r in runs for a in r.censored]  # lines ended before ready or exit: "at least"
    notes = _notes(runs)
    estimates: list[Estimate] = []
    overrides: dict = {}

    def duration(name: str, sample: Sample, source: str) -> DurationFit:
        fit = fit_duration(sample, alpha=1 - confidence)
        low, high = _median_interval(fit)
        estimates.append(Estimate(name, fit.chosen, low, high, source, len(sample), fit.quality()))
        overrides[name] = fit.chosen
        return fit

    db_fit = None
    if attempts or cut:  # a server log alone holds no start attempts: its figures only
        drawn = all(r.harness_drawn for r in runs)
        how = "records' before_db_s" + (" (the harness's own draws)" if drawn else "")
        duration(
            "startup.before_db_s",
            _with_censored([a.before_db_s for a in attempts], cut, "before"),
            _phases_source(runs, "before") or how,
        )
        ready = [a.after_db_s for a in attempts if a.after_db_s is not None]
        if ready:
            how = "ready attempts' after_db_s" + (" (the harness's own draws)" if drawn else "")
            after = _with_censored(ready, cut, "after")
            duration("startup.after_db_s", after, _phases_source(runs, "after") or how)
        queries = [a.init_queries_s for a in attempts if a.outcome == Outcome.READY]
        queries = [q for q in queries if q is not None]
        if queries:  # a failed attempt's queries were cut short or never ran: ready ones only
            source = f"{_phases_source(runs, 'queries')} of ready attempts"
            duration("startup.init_queries_s", Sample.exact(queries), source)
        db = Sample.of(
            [a.db_init_s for a in attempts] + [a.db_init_s for a in cut if a.censored != "before"],
            right=[a.outcome != Outcome.READY for a in attempts]
            + [a.censored == "database" for a in cut if a.censored != "before"],
        )
        db_fit = fit_duration(db, alpha=1 - confidence)
    windows = monitoring_windows(runs)
    estimates += observed(windows, overrides)
    estimates += observed_fleet(runs, overrides, confidence)

    estimates += _scale_out([r for r in runs if r.attempts], confidence, overrides)
    lines = connection_lines(runs)
    accept, setup = accept_sample(lines), setup_sample(lines)
    accept_from = f"{CONNECTION_LINES}' accept_s (dial to verdict)"
    if accept is None and (accept := server_accept(runs)) is not None:
        accept_from = SERVER_SETUP
    if accept is not None:
        duration("database.accept_s", accept, accept_from)
    else:
        estimates.append(_not_measured("database.accept_s"))
    if setup is not None:
        duration("connector.setup_s", setup, CONNECTION_LINES_SETUP)
    estimates += _connector(
        runs, base, overrides, confidence, replications, seed, setup_measured=setup is not None
    )
    slots = free_slots(campaigns)
    if not slots.identifiable and any(r.server for r in runs):
        slots = server_slots(runs, base.database.other_connections)
    estimates.append(slots)
    if slots.identifiable:
        db_base = base.database
        overrides["database.max_connections"] = int(
            slots.value + db_base.reserved_connections + db_base.other_connections
        )
    names = ", ".join(dict.fromkeys(r.run_id for r in runs))
    overrides["name"] = f"calibrated-{runs[0].run_id}"[:100]
    overrides["description"] = (
        f"Calibrated by startsim calibrate from {names}; base scenario {base.name}"
    )
    scenario = base.with_overrides(overrides, source="calibrated values")
    scenario = _labelled(scenario, estimates, names, set(overrides))
    found = [] if campaigns else deploys(runs)
    return Calibration(scenario, estimates, notes, [r.run_id for r in runs], db_fit, windows, found)


def _with_censored(values: list[float], cut: list, part: str) -> Sample:
    """Exact ``values``; of attempts cut off (their lines ended), the part's time: exact when
    they were cut after it, right-censored ("at least") when cut in it."""
    later = PARTS[PARTS.index(part) + 1 :]
    done = [getattr(a, PART_FIELDS[part]) for a in cut if a.censored in later]
    more = [getattr(a, PART_FIELDS[part]) or 0.0 for a in cut if a.censored == part]
    exact = values + [v for v in done if v is not None]
    return Sample.of(exact + more, right=[False] * len(exact) + [True] * len(more))


PART_FIELDS = {"before": "before_db_s", "database": "db_init_s", "after": "after_db_s"}


def monitoring_windows(runs: list[Run]) -> list:
    """Each log run's monitoring counts, then the whole export's when there are several."""
    from sim.calibrate.cloudrun import Monitoring

    windows = [r.monitoring for r in runs if r.monitoring is not None]
    if len(windows) > 1:
        windows.append(Monitoring.merged("all windows", windows))
    return windows


# Found by simulating candidates against the measured database-init durations, not read off a
# record: these are fitted; every other calibrated value is measured.
FITTED = ("connector.setups_per_instance", "connector.setup_s")


def _labelled(sc: Scenario, estimates: list[Estimate], names: str, applied: set[str]):
    """The calibrated scenario with a ``measured`` or ``fitted`` label on each value the
    campaigns gave (``applied``): which records, how many, from which runs."""
    labels = {k: v.model_dump(exclude_defaults=True) for k, v in sc.sources.items()}
    for e in estimates:
        if e.field not in applied or e.n == 0:
            continue
        if e.field in FITTED and e.source != CONNECTION_LINES_SETUP:
            labels[e.field] = {
                "kind": "fitted",
                "to": "the measured database-init durations (KS and Cramér–von Mises)",
                "source": f"{e.source}; {names}",
                "n": e.n,
                "note": e.quality,
            }
        else:
            labels[e.field] = {
                "kind": "measured",
                "source": f"{e.source}; {names}",
                "n": e.n,
                "note": f"interval {e.interval()}; {e.quality}",
            }
    return sc.with_overrides({"sources": labels}, source="calibrated values")


def _median_interval(fit: DurationFit) -> tuple[float | None, float | None]:
    """The fitted median's interval (every family's, by the delta method where it is no
    parameter): the calibrated tables and comments speak of medians."""
    b = fit.best
    return (None, None) if b is None else b.intervals["median"]


def _phases_source(runs: list[Run], part: str) -> str:
    names = [p for r in runs if r.phase_map for p in getattr(r.phase_map, part)]
    return f"phases {', '.join(dict.fromkeys(names))} (summed)" if names else ""


def _scale_out(runs: list[Run], confidence: float, overrides: dict) -> list[Estimate]:
    delays, kinds = scale_out_delays(runs)
    name = "connector.scale_up_delay_s"
    if delays.size == 0:
        why = (
            "not identifiable from these records: no scale-out observed (no emulator log, "
            "or the connector never queued); a campaign with `--via-emulator` and more "
            "connections than the connector's floor carries would time them"
        )
        return [Estimate(name, None, None, None, "—", 0, why, identifiable=False)]
    fit = fit_duration(Sample(delays, kinds), alpha=1 - confidence)
    overrides[name] = fit.chosen
    low, high = mean_interval(delays[kinds == EXACT], confidence)
    quality = f"mean {delays.mean():.3g} s; {fit.quality()}"
    if low is None:
        quality += "; one exact delay: an interval needs two or more (repeat the campaign)"
    out = [
        Estimate(
            name,
            fit.chosen,
            low,
            high,
            "emulator.jsonl scale_out lines",
            delays.size,
            quality,
            identifiable=low is not None,
        )
    ]
    starts = {connector_start(r) for r in runs if r.emulator} - {None}
    if starts:
        overrides["connector.min_instances"] = min(starts)
        out.append(
            Estimate(
                "connector.min_instances",
                min(starts),
                float(min(starts)),
                float(max(starts)),
                "emulator.jsonl start line",
                len(starts),
                "instances when the campaign began",
            )
        )
    return out


CONNECTION_LINES = "emulator.jsonl connection lines"
CONNECTION_LINES_SETUP = f"{CONNECTION_LINES}' setup_s"  # the set-up time measured, not fitted


def _not_measured(name: str) -> Estimate:
    why = (
        "not identifiable from these records: no emulator log with `connection` lines (the "
        "server's accept is timed per connection by the emulator); a campaign with "
        "`startsim loadtest --via-emulator` identifies it"
    )
    return Estimate(name, None, None, None, "—", 0, why, identifiable=False)


def _connector(
    runs, base, overrides, confidence, replications, seed, setup_measured=False
) -> list[Estimate]:
    """Set-up capacity by simulation; the set-up time too unless it was measured."""
    setup = base.connector.setup_s
    sigma = setup.sigma if isinstance(setup, LogNormal) else 0.3
    measured = {
        k: overrides[k] for k in ("connector.setup_s", "database.accept_s") if k in overrides
    }

    def scenario_of(run: Run) -> Scenario:
        update = dict(measured)
        if "startup.before_db_s" in overrides and not run.harness_drawn:
            update["startup.before_db_s"] = overrides["startup.before_db_s"]
        return run.scenario.with_overrides(update, "calibrated values") if update else run.scenario

    fit = fit_setups(
        runs,
        scenario_of,
        sigma=sigma,
        confidence=confidence,
        replications=replications,
        seed=seed,
        setup_measured=setup_measured,
    )
    out = setup_estimates(fit)
    k, m = out
    if k.value is not None and k.identifiable:
        overrides["connector.setups_per_instance"] = int(k.value)
    if setup_measured:
        return [k]
    if m.value is not None and m.identifiable:
        overrides["connector.setup_s"] = {
            "dist": "lognormal",
            "median": round(m.value, 4),
            "sigma": sigma,
        }
    return out


def _notes(runs: list[Run]) -> list[str]:
    notes = [n for r in runs for n in r.notes]
    for r in runs:
        if r.minute_grid:
            notes.append(
                f"{r.source} ({r.run_id}): timestamps fall on a one-minute grid — platform "
                "metrics sampled once a minute cannot resolve a 20 s deadline window; only "
                "per-attempt phase durations are used from it, no timing of scale-outs or load"
            )
    if runs and all(r.harness_drawn for r in runs):
        notes.append(
            "before_db_s and after_db_s of built-in campaigns are the harness's own draws from "
            "the campaign's scenario: their fits check the fitting, they do not measure your "
            "service (an --instance-command campaign or a production log does)"
        )
    return notes


def as_array(values) -> np.ndarray:
    return np.asarray(values, dtype=float)
