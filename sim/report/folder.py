"""``startsim recommend``'s report folder: figures, summary.json, scenario.toml and adr.md."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sim.engine import run_replication
from sim.output import atomic_write, scenario_toml, write_json
from sim.recommend import Recommendation
from sim.runner import replication_seed
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
) -> dict:
    """Write the whole folder (figures first, adr.md last) and return summary.json's data."""
    from sim.report import adr

    data = rec.as_dict()
    data["figure_grid"] = {"vary": grid.as_dict(), "replications": grid_replications, "rows": rows}
    grid_starts = sum(r.get("fleet.instances", sc.fleet.instances) for r in rows)
    data["simulated_instance_starts"] = instance_starts + grid_starts * grid_replications
    data["figures"] = _figures(out, sc, rec, data, rows, grid, svg)
    write_json(out / "summary.json", data)
    atomic_write(out / "scenario.toml", scenario_toml(sc))
    created = datetime.now(UTC).strftime("%Y-%m-%d")
    text = adr.render(data, sc, data["figures"], command, created, adr.docs_href(out))
    atomic_write(out / "adr.md", text)
    return data


def _figures(out, sc, rec, data, rows, grid: Grid, svg: bool) -> dict[str, str]:
    """The four figures; returns role → PNG file name (the ADR links these)."""
    from sim.report import figures

    t, d = data["timeout"], data["decision"]
    names: dict[str, str] = {}
    ok = rec.probe.attempts["outcome"] == "ready"
    marks = [("current timeout", t["current_s"])]
    if d["db_init_timeout_s"] is not None and d["db_init_timeout_s"] != t["current_s"]:
        marks.append(("recommended timeout", d["db_init_timeout_s"]))
    elif d["smallest_timeout_s"] is not None and d["smallest_timeout_s"] != t["current_s"]:
        marks.append(("smallest timeout meeting the target alone", d["smallest_timeout_s"]))
    if t["aws_timeout_s"] is not None:
        marks.append(("AWS p99.9 rule", t["aws_timeout_s"]))
    fig = figures.db_init_cdf(
        rec.probe.attempts["db_init_s"][ok],
        marks,
        data["target_success"],
        f"{sc.name}, {rec.probe.replications} replications, deadline {t['probe_timeout_s']:g} s",
    )
    names["cdf"] = figures.save(fig, out, "db-init-cdf", svg)[0]
    x, y = grid.fields
    fig = figures.heatmap(
        rows,
        x,
        y,
        subtitle=f"{sc.name} as today ({_short(sc)}, connector "
        f"{sc.connector.min_instances}–{sc.connector.max_instances}), "
        f"{data['figure_grid']['replications']} replications per cell",
    )
    names["heatmap"] = figures.save(fig, out, "heatmap-p-start-fails", svg)[0]
    names["timeline"] = figures.save(_timeline(sc, data), out, "timeline", svg)[0]
    if y == "fleet.instances":
        series = [
            (f"timeout {v:g} s", [r for r in rows if r[x] == v])
            for v in sorted({t["current_s"], d["db_init_timeout_s"] or t["current_s"]})
        ]
        fig = figures.restarts_vs_fleet(series)
        names["restarts"] = figures.save(fig, out, "restarts-vs-fleet", svg)[0]
    return names


def _timeline(sc, data):
    from sim.report import figures

    seed = replication_seed(data["seed"], 0)
    panels = [("today: " + _short(sc), run_replication(sc, seed, timeline=True).timeline)]
    over = data["decision"]["overrides"]
    if over:
        chosen = sc.with_overrides(over)
        panels.append(
            (
                f"{data['decision']['configuration']}",
                run_replication(chosen, seed, timeline=True).timeline,
            )
        )
    return figures.timeline(panels, sc.database.free_slots, sc.database.max_connections)


def _short(sc) -> str:
    return f"timeout {sc.startup.db_init_timeout_s:g} s, min_size {sc.pool.min_size}"
