"""``startsim recommend``'s report folder: figures, summary.json, scenario.toml and adr.md."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sim.engine import run_replication
from sim.options import BREAKER, BREAKER_FIGURE_REPLICATIONS, breaker_curves, breaker_scenarios
from sim.output import atomic_write, scenario_toml, write_json
from sim.recommend import Recommendation
from sim.records import Outcome
from sim.report.assumptions import figure_jobs
from sim.report.view import RecommendationView
from sim.runner import Executor, Serial, evaluate, replication_seed
from sim.scenario import Scenario
from sim.sweep import Grid


def write_recommendation(
    out: Path,
    sc: Scenario,
    rec: Recommendation,
    grid: Grid,
    grid_replications: int,
    rows: list[dict],
    instance_starts: int,
    command: str,
    svg: bool = False,
    pool: Executor | None = None,
) -> dict:
    """Write the whole folder (figures first, adr.md last) and return summary.json's data. The
    ADR and the figures read its typed view (``RecommendationView.from_dict``), as a folder's
    summary.json read back gives it.
    ``pool``: local worker processes to draw the figures in, one figure each, instead of one
    after another here (drawing them is most of the time the report takes)."""
    from sim.report import adr

    data = rec.as_dict()
    data["figure_grid"] = {"vary": grid.as_dict(), "replications": grid_replications, "rows": rows}
    grid_starts = sum(r.get("fleet.instances", sc.fleet.instances) for r in rows)
    data["simulated_instance_starts"] = instance_starts + grid_starts * grid_replications
    view = RecommendationView.from_dict(data)
    jobs = _figure_jobs(sc, rec, view, rows, grid, grid_replications)
    pool = pool or Serial()
    drawn = {role: pool.submit(draw_figure, *job, out, svg) for role, job in jobs.items()}
    data["figures"] = {role: future.result() for role, future in drawn.items()}
    write_json(out / "summary.json", data)
    atomic_write(out / "scenario.toml", scenario_toml(sc))
    created = datetime.now(UTC).strftime("%Y-%m-%d")
    text = adr.render(view, sc, data["figures"], command, created, adr.docs_href(out))
    atomic_write(out / "adr.md", text)
    return data


def draw_figure(stem: str, builder: str, args: tuple, out: Path, svg: bool) -> str:
    """Draw one figure with ``sim.report.figures.<builder>(*args)`` (or the timeline) and write
    it; returns the PNG's file name. Plain data in, so it runs in any local process."""
    from sim.report import figures

    if builder == "timeline":
        fig = _timeline(*args)
    elif builder == "breakers":
        fig = _breakers(*args)
    else:
        fig = getattr(figures, builder)(*args)
    return figures.save(fig, out, stem, svg)[0]


def _figure_jobs(
    sc, rec, view: RecommendationView, rows, grid: Grid, grid_replications: int
) -> dict[str, tuple[str, str, tuple]]:
    """The four figures as role → (file stem, builder, arguments); the ADR links them by role."""
    t, d = view.timeout, view.decision
    jobs: dict[str, tuple[str, str, tuple]] = {}
    ok = rec.probe.attempts["outcome"] == Outcome.READY
    marks = [("current timeout", t.current_s)]
    if d.db_init_timeout_s is not None and d.db_init_timeout_s != t.current_s:
        marks.append(("recommended timeout", d.db_init_timeout_s))
    elif d.smallest_timeout_s is not None and d.smallest_timeout_s != t.current_s:
        marks.append(("smallest timeout meeting the target alone", d.smallest_timeout_s))
    if t.aws_timeout_s is not None:
        marks.append(("AWS p99.9 rule", t.aws_timeout_s))
    subtitle = f"{sc.name}, {rec.probe.replications} replications, deadline {t.probe_timeout_s:g} s"
    cdf = (rec.probe.attempts["db_init_s"][ok], marks, view.target_success, subtitle)
    jobs["cdf"] = ("db-init-cdf", "db_init_cdf", cdf)
    x, y = grid.fields
    subtitle = (
        f"{sc.name} as today ({_short(sc)}, connector "
        f"{sc.connector.min_instances}–{sc.connector.max_instances}), "
        f"{grid_replications} replications per cell"
    )
    jobs["heatmap"] = (
        "heatmap-p-start-fails",
        "heatmap",
        (rows, x, y, "p_start_failure", subtitle),
    )
    jobs["timeline"] = (
        "timeline",
        "timeline",
        (sc, view.seed, d.overrides, d.configuration),
    )
    if y == "fleet.instances":
        series = [
            (f"timeout {v:g} s", [r for r in rows if r[x] == v])
            for v in sorted({t.current_s, d.db_init_timeout_s or t.current_s})
        ]
        jobs["restarts"] = ("restarts-vs-fleet", "restarts_vs_fleet", (series,))
    if any(BREAKER in r.kinds for r in view.candidates):
        jobs["breakers"] = ("breaker-forms", "breakers", (sc, view.seed))
    if view.assumptions is not None:  # the tornado, and P(start fails) against the key unknown
        jobs |= figure_jobs(view.assumptions, sc.name)
    return jobs


def _timeline(sc, seed: int, overrides: dict, configuration: str):
    from sim.report import figures

    first = replication_seed(seed, 0)
    panels = [("today: " + _short(sc), run_replication(sc, first, timeline=True).timeline)]
    if overrides:
        chosen = sc.with_overrides(overrides)
        panels.append((configuration, run_replication(chosen, first, timeline=True).timeline))
    return figures.timeline(panels, sc.database.free_slots, sc.database.max_connections)


def _breakers(sc, seed: int):
    """Each form of breaker on the scenario (sim.options), on the readable engine: a few dozen
    replications with their records, a picture and not a decision."""
    from sim.report import figures

    forms, recover = breaker_scenarios(sc)
    reps = BREAKER_FIGURE_REPLICATIONS
    runs = {f: evaluate(s, reps, seed, Serial(), None, 1, "reference") for f, s in forms.items()}
    c = breaker_curves(runs, sc.horizon_s, recover)
    subtitle = f"{sc.name}, {c.replications} replications each"
    return figures.breaker_forms(c.times_s, c.tries, c.ready, c.recovers_at_s, subtitle)


def _short(sc) -> str:
    return f"timeout {sc.startup.db_init_timeout_s:g} s, min_size {sc.pool.min_size}"
