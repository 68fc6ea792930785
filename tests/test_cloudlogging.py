"""Cloud Logging exports of Cloud Run (docs/formats.md): read as attempts, counted as monitoring
counts them, censored where the export cuts them, and refused with the file, the line or JSON
path and the field when they are wrong. The exports are written by ``cloudlogging_export`` from
the documented field names and messages, in our own values."""

from __future__ import annotations

import json
import random

import pytest
from builders import LOG_ROUND_TRIP, scenario
from cli_helpers import call_main
from cloudlogging_export import (
    BASE_NS,
    EXIT_LAG_S,
    PATTERN,
    Boot,
    crash_loop,
    export,
    write,
)

from sim.calibrate import calibrate, cloudlogging, cloudrun
from sim.calibrate.cloudlogging import parse_time_ns, read_cloud_logging
from sim.engine import run_replication
from sim.errors import InputError, UsageError

PHASES = "database=db"


def read(path, phases=PHASES, pattern=PATTERN):
    return read_cloud_logging(path, phases, pattern)


def test_rfc3339_timestamps_are_read_to_the_nanosecond():
    assert parse_time_ns("2026-11-29T06:15:02.123456789Z") == 1795932902_123456789
    assert parse_time_ns("2026-11-29T07:15:02.5+01:00") == 1795932902_500000000
    assert parse_time_ns("2026-11-29T06:15:02Z") == 1795932902_000000000
    for bad in ("2026-11-29 06:15", "1795976102", "2026-11-29T06:15:02.1234567891Z", 17, None):
        with pytest.raises(ValueError):
            parse_time_ns(bad)


def test_a_crash_loop_gives_chains_of_replacements_and_the_monitoring_counts(tmp_path):
    """R2–R3: two instances at a deploy, each failing database init (exit 3) twice, replaced by
    new instances 6.5 s after each exit, the third start ready."""
    path = write(tmp_path / "export.json", export(crash_loop(), noise_at=[3.0]))
    (run,) = read(path)
    assert run.run_id == "orders-api-00007-kip" and run.kind == "log"
    assert sorted((a.attempt, a.outcome) for a in run.attempts) == sorted(
        [(1, "timeout"), (2, "timeout"), (3, "ready")] * 2
    )
    assert len({a.instance for a in run.attempts}) == 2  # two chains of three instances
    timeouts = [a for a in run.attempts if a.outcome == "timeout"]
    assert all(a.db_init_s == pytest.approx(20.0, abs=1e-9) for a in timeouts)
    assert all(a.reason == "exit(3)" for a in timeouts)
    ready = [a for a in run.attempts if a.outcome == "ready"]
    assert sorted(a.db_init_s for a in ready) == pytest.approx([2.0, 2.3])
    assert all(a.after_db_s == pytest.approx(1.2) for a in ready)
    m = run.monitoring
    assert (m.starts, m.ready, m.failures, m.censored, m.dropped) == (6, 2, {"exit(3)": 4}, 0, 0)
    assert m.starts_per_instance == [3, 3]
    assert [d for _, d in m.delays] == pytest.approx([6.5] * 4)
    assert [k for k, _, _ in m.by_restart()] == [1, 2]
    text = " ".join(m.lines())
    assert "exit(3) 4" in text and "median 6.5 s" in text and "kubernetes 10, 20 s" in text
    note = run.notes[0]
    assert "newest first" in note and "request logs (httpRequest) 1" in note
    assert "audit and other protoPayload entries 1" in note
    assert "lines about no one instance (no labels.instanceId) 1" in note


def test_array_json_lines_any_order_and_small_pieces_read_the_same(tmp_path, monkeypatch):
    entries = export(crash_loop(), noise_at=[3.0])
    first = read(write(tmp_path / "a.json", entries))[0].attempts
    lines = read(write(tmp_path / "b.jsonl", entries[::-1], lines=True))[0].attempts
    random.Random(4).shuffle(entries)
    monkeypatch.setattr(cloudlogging, "CHUNK_CHARS", 7)  # elements and numbers split across reads
    (shuffled,) = read(write(tmp_path / "c.json", entries))
    key = sorted((a.start_unix_s, a.outcome, a.db_init_s, a.attempt) for a in first)
    assert key == sorted((a.start_unix_s, a.outcome, a.db_init_s, a.attempt) for a in lines)
    again = shuffled.attempts
    assert key == sorted((a.start_unix_s, a.outcome, a.db_init_s, a.attempt) for a in again)
    assert "out of that order" in shuffled.notes[0]


def test_duplicates_dropped_censored_kept_as_at_least_early_starts_dropped(tmp_path):
    boots = crash_loop()
    boots.append(Boot("00cut0000001", 100.0, [("config", 0.9)], cut=5.0))  # no db line yet
    entries = export(boots)
    entries += entries[:3]  # an export that holds some entries twice
    early = [e for e in entries if e.get("labels", {}).get("instanceId") == boots[0].instance]
    entries = [e for e in entries if "Reason" not in e.get("textPayload", "") or e not in early]
    (run,) = read(write(tmp_path / "export.json", entries))
    assert "3 duplicate insertIds dropped" in run.notes[0]
    (cut,) = run.censored
    assert cut.censored == "database" and cut.reason == "censored: lines end database"
    assert cut.before_db_s == pytest.approx(0.9)
    m = run.monitoring
    assert (m.starts, m.censored, m.dropped) == (6, 1, 1)  # the first start's line is gone
    cal = calibrate([run], replications=1)
    assert cal.estimate("startup.before_db_s").n == 6  # 5 complete + the censored one's config
    assert cal.db_init.censored == 3 + 1  # the timeouts and the cut one: "at least"
    assert cal.scenario.team.observed_failures == 3 and cal.scenario.team.observed_failures_at_least


def test_a_start_cut_off_after_database_init_is_at_least_that_long_after_it(tmp_path):
    boots = [Boot("00cut0000002", 0.0, [("config", 0.5), ("db", 2.0)], cut=4.0)]
    boots.append(Boot("00ok00000001", 1.0, [("config", 0.5), ("db", 2.0), ("warm", 1.0)]))
    (run,) = read(write(tmp_path / "export.json", export(boots)))
    (cut,) = run.censored
    assert cut.censored == "after" and cut.db_init_s == pytest.approx(2.0)
    assert cut.after_db_s == pytest.approx(1.0)  # its last line, the probe at 3.5 s: 1 s after init
    cal = calibrate([run], replications=1)
    assert cal.db_init.censored == 0 and cal.db_init.n == 2  # its database init was measured


def test_phase_edges_read_as_durations(tmp_path):
    """A service that logs each phase's start and end instead of its duration."""
    entries = export(crash_loop())
    for e in entries:
        msg = e.get("jsonPayload", {}).get("message", "")
        if msg.startswith("phase "):
            name, seconds = msg.split()[1], float(msg.split()[3])
            end = e.copy()
            end["jsonPayload"] = {"message": f"end {name}"}
            began = json.loads(json.dumps(e))
            t = cloudlogging.parse_time_ns(e["timestamp"]) - round(seconds * 1e9)
            began["timestamp"] = _stamp(t)
            began["insertId"] += "b"
            began["jsonPayload"] = {"message": f"start {name}"}
            e.clear()
            e.update(end)
            entries.append(began)
    edges = r"(?P<edge>start|end) (?P<phase>\w+)$"
    (run,) = read(write(tmp_path / "edges.json", entries), pattern=edges)
    (plain,) = read(write(tmp_path / "plain.json", export(crash_loop())))
    key = sorted((a.start_unix_s, a.outcome, round(a.db_init_s, 6)) for a in plain.attempts)
    assert key == sorted((a.start_unix_s, a.outcome, round(a.db_init_s, 6)) for a in run.attempts)


def test_an_exit_after_ready_is_no_failed_start_but_exit_3_after_the_tcp_probe_is(tmp_path):
    """A ready instance that exits an hour later started; without phase lines an exit(3) after
    the default TCP probe is a failed start (R4: the probe passes once the port is bound)."""
    boots = [
        Boot("00life0001", 0.0, [("config", 0.5), ("db", 1.0), ("warm", 0.2)]),
        Boot("00tcp00001", 10.0, [("config", 0.5), ("db", 20.0)], exit_code=3),
    ]
    entries = export(boots)
    late = json.loads(json.dumps(entries[-1]))  # the first boot's start line, oldest last
    late.update(timestamp=_stamp(BASE_NS + 3600 * 10**9), insertId="late", textPayload="")
    late["textPayload"] = "Container called exit(1)."
    path = write(tmp_path / "export.json", [late, *entries])
    by_id = {a.instance: a.outcome for a in read(path).pop().attempts}
    assert by_id == {"00life0001": "ready", "00tcp00001": "timeout"}
    (plain,) = read_cloud_logging(path)
    assert {a.instance: a.outcome for a in plain.attempts} == by_id
    assert plain.monitoring.failures == {"exit(3)": 1}


def _stamp(ns: int) -> str:
    from cloudlogging_export import stamp

    return stamp(ns)


def test_the_phase_pattern_must_name_its_groups():
    with pytest.raises(UsageError, match="named groups"):
        cloudlogging.PhasePattern.of(r"phase (\w+) took ([0-9.]+)")
    with pytest.raises(UsageError, match="not a regular expression"):
        cloudlogging.PhasePattern.of(r"phase (?P<phase>\w+")


# -- a simulated run, written out and read back --------------------------------------------------

AFTER_S = 0.75


def simulated_export(seed: int):
    sc = scenario(LOG_ROUND_TRIP)
    cols = run_replication(sc, seed).attempts
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    boots = []
    for i, r in enumerate(rows):
        before = r["db_init_start_s"] - r["start_s"]
        phases = [("config", before), ("db", r["db_init_s"])]
        ok = r["outcome"] == "ready"
        phases += [("warm", AFTER_S)] * ok
        name = f"00sim{r['instance']:03d}{r['attempt']:02d}{i:04d}"
        boots.append(Boot(name, r["start_s"], phases, None if ok else 3))
    return sc, rows, boots


def test_a_simulated_run_written_as_cloud_logging_reads_back_as_the_same_attempts(tmp_path):
    sc, rows, boots = simulated_export(seed=5)
    assert {r["outcome"] for r in rows} == {"ready", "timeout"}  # both kinds, and restarts
    assert any(r["attempt"] > 1 for r in rows)
    (run,) = read(write(tmp_path / "sim.json", export(boots)))
    got = sorted(run.attempts, key=lambda a: a.start_unix_s)
    want = sorted(rows, key=lambda r: r["start_s"])
    assert len(got) == len(want)
    chains = {}
    for a, r in zip(got, want, strict=True):
        assert a.start_unix_s == pytest.approx(BASE_NS / 1e9 + r["start_s"], abs=1e-6)
        assert a.outcome == r["outcome"] and a.attempt == r["attempt"]
        assert a.before_db_s == pytest.approx(r["db_init_start_s"] - r["start_s"], abs=1e-6)
        assert a.db_init_s == pytest.approx(r["db_init_s"], abs=1e-6)
        assert a.after_db_s == (pytest.approx(AFTER_S) if a.outcome == "ready" else None)
        chains.setdefault(a.instance, set()).add(r["instance"])
    assert all(len(v) == 1 for v in chains.values())  # each chain is one simulated instance
    m = run.monitoring
    pause = sc.restart.initial_backoff_s - EXIT_LAG_S  # the exit line comes 1.5 s late (R12)
    assert [d for _, d in m.delays] == pytest.approx([pause] * sum(r["attempt"] > 1 for r in rows))
    assert m.failures == {"exit(3)": sum(r["outcome"] == "timeout" for r in rows)}
    cal = calibrate([run], replications=1)
    assert cal.scenario.restart.policy == "fixed"
    assert cal.scenario.restart.initial_backoff_s == pytest.approx(pause)


# -- through the command line --------------------------------------------------------------------


def cli(*args):
    return call_main("calibrate", *args, "--phase-pattern", PATTERN, "--phases", PHASES, "-n", "1")


def test_calibrate_prints_the_monitoring_counts_and_writes_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    path = write(tmp_path / "export.json", export(crash_loop()))
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "as monitoring counts" in printed and "exit(3) 4" in printed
    text = out.read_text()
    assert "# as monitoring counts: orders-api-00007-kip: 6 starts" in text
    assert 'policy = "fixed"' in text and "observed_failures = 4" in text
    assert cli(str(path), "--format", "cloud-logging", "--out", str(out)) == 0


def test_calibrate_json_prints_one_object_with_the_same_counts(tmp_path, capsys):
    path = write(tmp_path / "export.json", export(crash_loop()))
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(out), "--json") == 0
    data = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert data["out"] == str(out) and out.exists()
    (window, *_), whole = data["monitoring"], data["monitoring"][-1]
    assert window["window"] == "orders-api-00007-kip" and window["starts"] == 6
    assert whole["failures"] == {"exit(3)": 4} and whole["failed"] == 4
    delays = whole["restart_delay_s"]
    assert delays["n"] == sum(r["n"] for r in whole["restart_delays_by_restart"])
    assert delays["min"] <= delays["median"] <= delays["max"]
    fields = {e["field"]: e for e in data["estimates"]}
    assert fields["team.observed_failures"]["value"] == 4
    assert fields["restart.initial_backoff_s"]["value"] > 0
    assert fields["database.max_connections"]["value"] is None  # not in a platform log
    for e in data["estimates"]:  # each with what it rests on
        assert e["source"] and isinstance(e["n"], int)


def _bad(tmp_path, entries, lines: bool):
    return write(tmp_path / ("bad.jsonl" if lines else "bad.json"), entries, lines=lines)


def _mutate(field: str):
    def edit(entries):
        for i, e in enumerate(entries):
            if "exit(" in e.get("textPayload", ""):
                if field == "labels.instanceId":
                    del e["labels"]
                else:
                    e["timestamp"] = "2026-11-29T25:61:00Z"
                return i
        raise AssertionError

    return edit


@pytest.mark.parametrize("lines", [True, False], ids=["json-lines", "array"])
@pytest.mark.parametrize("field", ["labels.instanceId", "timestamp"])
def test_bad_entries_exit_2_naming_file_line_or_path_and_field(tmp_path, capsys, lines, field):
    entries = export(crash_loop())
    i = _mutate(field)(entries)
    path = _bad(tmp_path, entries, lines)
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    where = f"{path.name}:{i + 1}: {field}" if lines else f"{path.name}: $[{i}].{field}"
    assert where in err and "Traceback" not in err, err
    assert not out.exists()


def test_not_a_known_format_and_a_truncated_array_exit_2(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    numbers = tmp_path / "numbers.json"
    numbers.write_text("[1, 2, 3]\n")
    assert cli(str(numbers), "--out", str(out)) == 2
    assert "numbers.json: not a known format" in capsys.readouterr().err
    text = json.dumps(export(crash_loop()))
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    assert cli(str(cut), "--out", str(out)) == 2
    assert "cut.json: $[" in capsys.readouterr().err
    csv = tmp_path / "startup.csv"
    csv.write_text("timestamp,instance,outcome\n1,a,ready\n")
    assert cli(str(csv), "--format", "cloud-logging", "--out", str(out)) == 2
    assert "startup.csv:1: not JSON" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_a_bad_phase_pattern_or_one_without_an_export_is_a_usage_error(tmp_path, capsys):
    path = write(tmp_path / "export.json", export(crash_loop()))
    assert call_main("calibrate", str(path), "--phase-pattern", r"phase (\w+)") == 2
    assert "--phase-pattern 'phase (\\w+)': needs the named groups" in capsys.readouterr().err
    csv = tmp_path / "startup.csv"
    csv.write_text("timestamp,instance,outcome,phase.db\n1,a,ready,1.0\n")
    code = call_main("calibrate", str(csv), "--phases", PHASES, "--phase-pattern", PATTERN)
    assert code == 2 and "none of the inputs is one" in capsys.readouterr().err


def test_an_export_without_starts_or_phases_mapping_is_refused(tmp_path):
    only_noise = write(tmp_path / "noise.json", export([], noise_at=[1.0, 2.0]))
    with pytest.raises(InputError, match="no Cloud Run start-up lines among 6 entries"):
        read(only_noise)
    path = write(tmp_path / "export.json", export(crash_loop()))
    with pytest.raises(InputError, match="which phases are database init"):
        read(path, phases=None)
    starts = [e for e in export(crash_loop()) if "Starting new" not in e.get("textPayload", "")]
    with pytest.raises(InputError, match="no instance start in it: 6 instances"):
        read(write(tmp_path / "late.json", starts))


def test_without_a_phase_pattern_a_start_is_timed_whole_and_said_so(tmp_path):
    (run,) = read_cloud_logging(write(tmp_path / "export.json", export(crash_loop())))
    ready = [a for a in run.attempts if a.outcome == "ready"]
    assert all(a.before_db_s == 0 for a in run.attempts)
    assert sorted(a.db_init_s for a in ready) == pytest.approx([3.5, 3.5])  # to the TCP probe
    assert "no phase lines" in run.notes[1]


def test_entries_in_bounded_memory_one_at_a_time(tmp_path, monkeypatch):
    """A large array is decoded piece by piece: the reader never holds the whole text."""
    entries = export(crash_loop())
    path = write(tmp_path / "export.json", entries)
    monkeypatch.setattr(cloudlogging, "CHUNK_CHARS", 512)
    read_back = list(cloudlogging._entries(path))
    assert [obj for _, obj in read_back] == entries
    assert [w for w, _ in read_back] == [f"$[{i}]" for i in range(len(entries))]


def test_validate_reads_an_export_and_prints_its_monitoring_counts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps its tables to the terminal
    path = write(tmp_path / "export.json", export(crash_loop()))
    cal = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(cal)) == 0
    capsys.readouterr()
    out = tmp_path / "validation"
    args = ["--phase-pattern", PATTERN, "--phases", PHASES, "--format", "cloud-logging"]
    code = call_main(
        "validate", str(path), "--scenario", str(cal), "--out", str(out), *args[:2], "-n", "10"
    )
    assert code == 2 and "give --phases" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
    code = call_main(
        "validate", str(path), "--scenario", str(cal), "-n", "10", "--out", str(out), *args
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "measured vs predicted" in printed and "as monitoring counts" in printed
    assert "DEPLOYMENT_ROLLOUT 2" in printed and (out / "validation.md").exists()


def test_a_cloud_run_job_is_read_by_its_job_name_and_progress_is_told(tmp_path):
    entries = export(crash_loop())
    for e in entries:
        e["resource"] = {"type": "cloud_run_job", "labels": {"job_name": "orders-migrate"}}
    path = write(tmp_path / "job.jsonl", entries, lines=True)
    seen = []
    (run,) = read_cloud_logging(path, PHASES, PATTERN, progress=seen.append)
    assert run.run_id == "orders-migrate" and len(run.attempts) == 6
    assert seen == [] or seen == sorted(seen)  # told every PROGRESS_EVERY entries


def test_progress_is_told_in_bytes_read(tmp_path, monkeypatch):
    monkeypatch.setattr(cloudlogging, "PROGRESS_EVERY", 5)
    for lines in (True, False):
        path = write(tmp_path / f"e{lines}.json", export(crash_loop()), lines=lines)
        seen = []
        read_cloud_logging(path, PHASES, PATTERN, progress=seen.append)
        assert seen and seen == sorted(seen) and seen[-1] <= path.stat().st_size


def test_a_chatty_instance_keeps_only_its_latest_lines(tmp_path, monkeypatch):
    """A thousand of the service's own lines: the reader keeps each instance's latest few (the
    last before the exit times a failed start, R12), so memory grows with instances only."""
    boot = Boot("00chat00001", 0.0, [("config", 0.5)], exit_code=3)  # exit(3) at 2.0 s
    entries = export([boot])
    chatter = next(e for e in entries if "jsonPayload" in e)
    for k in range(1000):  # 0.6 s … 1.599 s
        e = json.loads(json.dumps(chatter))
        e.update(insertId=f"chat{k}", timestamp=_stamp(BASE_NS + 6 * 10**8 + k * 10**6))
        e["jsonPayload"] = {"message": f"retrying the database, try {k}"}
        entries.append(e)
    kept = []
    runs_of = cloudrun.runs_of
    monkeypatch.setattr(
        cloudrun, "runs_of", lambda lines, *a: kept.extend(lines) or runs_of(lines, *a)
    )
    path = write(tmp_path / "chatty.json", entries)
    with pytest.raises(InputError, match="db never appears in the file, so name every part"):
        read(path)
    (run,) = read(path, phases="before=config;database=db")
    (a,) = run.attempts
    assert a.outcome == "timeout" and a.db_init_s == pytest.approx(1.599 - 0.5)
    assert sum(ln.kind == "app" for ln in kept) == cloudlogging.APP_LINES_KEPT


def test_delays_growing_with_the_restart_number_calibrate_an_exponential_backoff(tmp_path):
    boots, t = [], 0.0
    for k, pause in enumerate([2.0, 4.0, 8.0, None]):
        ok = pause is None
        phases = [("config", 0.5), ("db", 1.0 if ok else 5.0)] + [("warm", 0.3)] * ok
        boots.append(Boot(f"00grow{k:04d}", t, phases, None if ok else 3))
        t += 5.5 + EXIT_LAG_S + (pause or 0)
    (run,) = read(write(tmp_path / "export.json", export(boots)))
    assert [a.attempt for a in run.attempts] == [1, 2, 3, 4]
    assert [d for _, d in run.monitoring.delays] == pytest.approx([2.0, 4.0, 8.0])
    restart = calibrate([run], replications=1).scenario.restart
    assert (restart.policy, restart.initial_backoff_s) == ("exponential", 2.0)
    assert restart.multiplier == pytest.approx(2.0)
