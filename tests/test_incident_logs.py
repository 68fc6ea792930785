"""The incident's derived log set (docs/incident/): our Cloud Logging reader reads it as it is, and
the figures docs/incident/README.md quotes come out of it, the Cloud Run restart preset's pause
among them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from builders import derive_incident_tool

from sim.calibrate.cloudlogging import read_cloud_logging
from sim.scenario import RESTART_PRESETS

ROOT = Path(__file__).parent.parent
DERIVED = ROOT / "docs" / "incident" / "derived-logs.jsonl"


@pytest.fixture(scope="module")
def figures():
    entries = [json.loads(x) for x in DERIVED.read_text(encoding="utf-8").splitlines()]
    return derive_incident_tool().figures(entries)


def test_the_reader_reads_the_derived_set_as_it_is():
    # Only two instances have their platform start in the exports (50 lines a severity each):
    # one censored (its lines end), one failed with exit(3); the other 56 instances started
    # before their lines in the file and are dropped, and counted.
    runs = read_cloud_logging(DERIVED)
    assert [r.run_id for r in runs] == [
        "netra-backend-staging-00719-fgq",
        "netra-backend-staging-00740-47l",
    ]
    mon = [r.monitoring for r in runs]
    assert [(m.starts, m.censored, m.failures, m.dropped) for m in mon] == [
        (1, 1, {}, 15),
        (1, 0, {"exit(3)": 1}, 17),
    ]
    assert [r.reason for r in runs[1].attempts] == ["exit(3)"]
    assert "164 entries" in runs[0].notes[0]
    assert "audit and other protoPayload entries 42" in runs[0].notes[0]
    assert "24 more dropped" in runs[0].notes[0]  # the revisions with no platform start at all


def test_the_counts_of_the_derived_set(figures):
    f = figures
    assert (f["entries"], f["instances"], f["exit3_lines"]) == (164, 58, 28)
    assert (f["platform_starts"], f["probes_passed"]) == (2, 3)
    assert (f["closed"], f["refused"]) == (7, 0)  # R7: closed by the path, never refused
    assert (len(f["deploys"]), f["traffic_updates"]) == (21, 20)
    assert f["revision_kinds"] == {
        "netra-backend-staging-00704-ds8": "database",
        "netra-backend-staging-00709-bg5": "database",
        "netra-backend-staging-00711-d6z": "database",
        "netra-backend-staging-00719-fgq": "import",
        "netra-backend-staging-00740-47l": "import",
    }


def test_the_timings_the_readme_quotes(figures):
    f = figures
    # Phase 1's migration connection failed about 40-60 s into the start, every time.
    phase1 = f["first_warning_to_phase1_end_s"]
    assert len(phase1) == 15
    assert statistics.median(phase1) == pytest.approx(46.53, abs=0.005)
    # R6: the database-init failure ≈ 10.2 s after the migration's failure, every time.
    gaps = f["migration_to_db_timeout_s"]
    assert len(gaps) == 7 and min(gaps) > 10.1 and max(gaps) < 10.4
    # R3: the import loop's exits every ≈ 8 s, no growth over 15 failures in a row.
    # Two of its 15 gaps span exits the export lost (≥ 1.8 × the median): 13 single cycles.
    loop, lost = derive_incident_tool().steady(f["exit_gaps_s"]["netra-backend-staging-00740-47l"])
    assert (len(loop), lost) == (13, 2)
    assert statistics.median(loop) == pytest.approx(8.00, abs=0.005)
    assert statistics.median(loop[-6:]) <= statistics.median(loop[:6])
    # R3: database-phase failures one at a time every ≈ 56–75 s, start to start.
    s2s = f["database_start_to_start_s"]
    assert len(s2s) == 7 and min(s2s) > 55 and max(s2s) < 76
    # The one platform start with its failure: probe +3.477 s (R4), error +7.448 s, exit +7.959 s.
    assert f["platform_starts_detail"]["7fbe1cb0d3a9b4c3"] == {
        "probe": 3.477,
        "exit": 7.959,
        "import_error": 7.448,
    }


def test_the_cloudrun_preset_is_the_fitted_pause(figures):
    pauses = figures["pause_s"]
    assert len(pauses) == 7
    assert round(statistics.median(pauses), 2) == RESTART_PRESETS["cloudrun"]["initial_backoff_s"]


def test_the_readme_deploy_fleet_is_a_valid_scenario():
    # docs/incident/README.md: two new instances at once, the old revision's 1.327 s later (R2).
    import re
    import tomllib

    from sim.scenario import from_dict

    text = (ROOT / "docs" / "incident" / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    fleet = from_dict(tomllib.loads(block)).fleet
    assert fleet.arrival_times(None) == [0.0, 0.0, 1.327]
