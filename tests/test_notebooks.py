"""Every notebook runs from top to bottom with a real kernel, and shows what its text says.

Each notebook is executed in memory, with one cell appended: checks that read the notebook's own
variables, so the numbers its prose states (a fifth of inits past 20 s, 25 s too close to call at
95 %, the gang measurement's shortfall, …) are asserted, not just printed. The files on disk stay
without outputs, and executing them writes nothing into the repository. Time is bounded per cell
(``CELL_TIMEOUT_S``); no assertion depends on how long a cell took.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 180  # each runs in 10-30 s on two shared cores; a cell this slow is broken

# What each notebook must show: (figures drawn, checks run in its kernel after its last cell).
EXPECTED = {
    "01_incident_reproduced.ipynb": (
        3,
        """
by_t = {h["timeout_s"]: h for h in history}
assert team_timeouts == [8.0, 20.0, 25.0] and criterion == 0.95, (team_timeouts, criterion)
# as logged every start fails (a path fault); the capacity story fails at its corner
assert default.name == "staging-incident" and default.path.fault == "closed"
assert nominal_failed == nominal.attempts["outcome"].size > 0
assert sc.name == "capacity-storm" and sc.team.timeout_history_s == default.team.timeout_history_s
# the slots are plenty; the connector's floor alone cannot serve the burst within the deadline
assert connections <= sc.database.free_slots
assert floor_alone_s > sc.startup.db_init_timeout_s, floor_alone_s
assert 0.1 < s.p_db_init_timeout.estimate < 0.3, s.p_db_init_timeout  # about a fifth
assert len(durations_s) > 0.99 * unbound.attempts["db_init_s"].size  # 120 s does not bind
# the timeline is replication `rep` of `today`, drawn again, with timeouts and a scale-out
assert one_timeouts == per_deploy[rep] > 0, (one_timeouts, per_deploy[rep])
assert joins and joins[0] > 10.0, joins
# "What it says"
assert 0.35 < by_t[8.0]["start_success"] < 0.65, by_t[8.0]
assert by_t[8.0]["restarts_per_instance"] > 0.8, by_t[8.0]
assert by_t[8.0]["fleet_ready_p95_s"] > by_t[20.0]["fleet_ready_p95_s"]
assert 0.12 < 1 - by_t[20.0]["start_success"] < 0.3, by_t[20.0]
assert by_t[8.0]["criterion"] == by_t[20.0]["criterion"] == "not met"
assert by_t[25.0]["criterion"] == "too close to call", by_t[25.0]
for t in (30.0, 40.0, 60.0):
    assert by_t[t]["criterion"] == "met" and by_t[t]["restarts_per_instance"] < 0.01, by_t[t]
    assert by_t[t]["fleet_ready_p95_s"] < by_t[20.0]["fleet_ready_p95_s"], by_t[t]
success = [h["start_success"] for h in history]
assert success == sorted(success), success  # common random numbers: no noise between timeouts
""",
    ),
    "02_pool_arithmetic_vs_simulation.ipynb": (
        2,
        """
row = {r["configuration"]: r for r in storm_rows + gang_rows + held_rows + start_rows}
def first(name):
    return row[name]["first start succeeds"]
# the storm: the division is right
assert row["eager-pool-storm"]["by division"] == 4 and abs(first("eager-pool-storm") - 4) < 0.5
# gang allocation: 33 by division, the field saw 17; holding pools is what makes the difference
assert row["failed pools hold (as measured)"]["by division"] == 33
assert 8 < first("failed pools hold (as measured)") < 23, first("failed pools hold (as measured)")
assert abs(first("failed pools close") - 33) < 1, first("failed pools close")
# held connections
assert first("min_size 20, keeps 1") > 4
assert row["min_size 20, keeps 1"]["ready in the end"] > 19.9
assert 4 < first("min_size 1, keeps 20") < 19.5, first("min_size 1, keeps 20")  # in between
assert row["min_size 1, keeps 20"]["ready in the end"] < 20
assert first("min_size 1, keeps 1") > 19.9
# pool-start strategies: a third or a quarter of staging's first starts miss; background beats 33
for start in ("asyncpg", "concurrent"):
    assert 0.2 < 1 - first(f"capacity-storm, {start}") / 40 < 0.4, start
assert first("capacity-storm, background") > 39.9
assert first("gang-allocation, background") > 33 > first("gang-allocation, concurrent")
# the heatmap: exact within the slots, optimistic beyond them by up to a few dozen points
assert len(rows) == len(sizes) * len(fleets) == 36
for r in rows:
    n, m = r["fleet.instances"], r["pool.min_size"]
    if n * m <= 100:
        assert r["p_start_failure"] == 0 == r["by_division"], r
    else:
        assert r["p_start_failure"] > r["by_division"], r
assert 0.2 < worst["p_start_failure"] - worst["by_division"] < 0.6, worst
""",
    ),
    "03_campaign_to_recommendation.ipynb": (
        3,
        """
assert run.run_id == "20261204T204756Z-small" and len(run.attempts) == 20
assert len(scale_outs) == 2
est = {e.field: e for e in cal.estimates}
assert est["database.max_connections"].value == 17  # the 53300 threshold: the free slots seen
assert 1 <= est["connector.setups_per_instance"].value <= 12
delay = est["connector.scale_up_delay_s"]
assert delay.low < 1.0 < delay.high, delay  # the emulator scaled out after 1 s
assert "[connector]" in calibrated_toml(cal)
assert all(f.verdict == "agrees" for f in val.figures), [f for f in val.figures]
assert not rec.verdict.timeout_helps  # 12 instances x 2 against 17 slots
assert decision.adopted is not None and decision.adopted.meets_target
for section in ("## Context", "## Decision", "## Options considered", "## Consequences"):
    assert section in adr_text, section
assert run.run_id in adr_text  # the ADR names the campaign it rests on
""",
    ),
    "incident-case-study.ipynb": (
        1,
        """
# the reader of a Cloud Logging export finds two starts in the cut exports
assert cloud_starts == 2, cloud_starts
# the attempts: 8 failures in two one-at-a-time chains, all cut at the table check's 10 s bound
assert s.failures == 8 and s.refusals == 0 and s.starts_per_deploy.tolist() == [1, 1]
assert s.failing_phases == {"table_check": 8} and s.error_kinds == {"phase_deadline": 8}
assert 10.1 < s.failure_time_in_phase_s.min() and s.failure_time_in_phase_s.max() < 10.4
assert 62 < s.restart_cadence_s.min() and s.restart_cadence_s.max() < 82
# "What it says": capacity and slow-dependency cannot produce the logs, the path fault can
assert d.supported is by["path-fault"], verdict(d)
assert not by["capacity"].survives and not by["slow-dependency"].survives
deciding = {t.signal for t in by["capacity"].deciding}
assert {"failure_time_in_phase_s", "refusals", "error_kinds"} <= deciding, deciding
# the exports kept part of each deploy: no count per deploy is compared
assert set(obs.not_measured) == {"starts_per_deploy", "failures_per_deploy"}
assert by["capacity"].simulated.starts_per_deploy.min() == 40
assert "20" in predicted_phrase(next(t for t in by["slow-dependency"].tests if t.rejected))
""",
    ),
}


def _tree(*folders: str) -> dict[str, int]:
    """Files under ``folders`` with their sizes: what executing a notebook must leave alone."""
    return {
        str(p.relative_to(REPO)): p.stat().st_size
        for folder in folders
        for p in (REPO / folder).rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts
    }


def test_the_notebooks_are_the_ones_expected():
    assert sorted(p.name for p in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_and_says_what_it_answers(path):
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip the outputs"
            # The package's public API only: no private names, not the CLI (an edge).
            assert not re.search(r"from sim\S* import .*\b_\w", cell.source), cell.source
            assert "sim.cli" not in cell.source
    top = nb.cells[0]
    assert top.cell_type == "markdown"
    assert "**Question:**" in top.source
    assert re.search(r"\*\*Runs in:\*\* about \d+ s", top.source), top.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.timeout(600)
def test_notebook_runs_and_shows_what_it_says(path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as in Jupyter
    figures, checks = EXPECTED[path.name]
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(checks))
    before = _tree("notebooks", "examples")
    NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()  # any cell error, the checks included, raises CellExecutionError
    assert _tree("notebooks", "examples") == before  # nothing written into the repository
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == figures, f"{len(pngs)} figures shown, {figures} expected"
    tables = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert tables, "the notebook shows its tables"
    if path.name.startswith("03_"):
        assert any(t.startswith("# ADR") for t in tables)
