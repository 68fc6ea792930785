"""PostgreSQL server logs (docs/formats.md): connection lines counted, PostgreSQL 18's set-up times
as the measured accept sample, refusals and the connections held as the free slots; plain or in
Cloud SQL entries; bad input refused naming the file, the line and the field. The logs are
written by ``pglog_export`` from PostgreSQL's documented message formats, in our own values."""

from __future__ import annotations

import pytest
from cli_helpers import call_main
from pglog_export import HELD, Conn, storm, write_cloudsql, write_plain

from sim.calibrate import calibrate, pglog
from sim.calibrate.server import SERVER_SETUP
from sim.errors import InputError
from sim.scenario import resolve

SETUPS_S = [(10.0 + 0.5 * i) / 1000 for i in range(HELD)] + [0.030]


def test_the_prefix_becomes_a_pattern_and_times_read_exactly():
    m = pglog.prefix_regex("%m [%p] ").match("2026-11-29 06:15:02.123 UTC [4711] LOG:  hello")
    assert (m["pid"], m["level"], m["message"]) == ("4711", "LOG", "hello")
    custom = pglog.prefix_regex("%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h %q")
    line = "2026-11-29 06:15:02 UTC [9]: [3-1] user=,db=,app=[unknown],client=10.0.0.1 FATAL:  x"
    m = custom.match(line)
    assert (m["user"], m["database"], m["host"], m["level"]) == ("", "", "10.0.0.1", "FATAL")
    assert pglog.parse_pg_time_ns("2026-11-29 06:15:02.123 UTC") == 1795932902_123000000
    assert pglog.parse_pg_time_ns("2026-11-29 07:15:02.5 +01") == 1795932902_500000000
    with pytest.raises(ValueError, match="CET"):
        pglog.parse_pg_time_ns("2026-11-29 07:15:02 CET")


@pytest.mark.parametrize("kind", ["plain", "cloudsql"])
def test_a_storm_gives_the_known_setup_times_refusals_and_free_slots(tmp_path, kind):
    path = (
        write_plain(tmp_path / "postgresql.log", storm())
        if kind == "plain"
        else write_cloudsql(tmp_path / "cloudsql.json", storm())
    )
    assert pglog.detect(path)
    (run,) = pglog.read_pg_log(path)
    log = run.server
    assert run.attempts == [] and run.kind == "server-log"
    assert sorted(log.setup_s) == pytest.approx(SETUPS_S, abs=1e-12)
    assert (log.received, log.authorized, log.refusals) == (HELD + 3, HELD + 1, 2)
    assert (log.held_at_refusal, log.peak_held, log.before_log) == (HELD, HELD, 0)
    assert log.peak_received_per_s == 10  # one every 0.1 s
    assert "2 refusals (53300)" in run.notes[1] and f"at most {HELD} connections" in run.notes[1]


def test_calibrate_takes_a_server_log_alone(tmp_path):
    (run,) = pglog.read_pg_log(write_plain(tmp_path / "postgresql.log", storm()))
    base = resolve(None)
    cal = calibrate([run], base, replications=1)
    accept = cal.estimate("database.accept_s")
    assert accept.source == SERVER_SETUP and accept.n == HELD + 1
    slots = cal.estimate("database.max_connections")
    db = base.database
    assert slots.identifiable and slots.value == HELD - db.other_connections
    assert cal.scenario.database.max_connections == HELD + db.reserved_connections
    assert cal.db_init is None


def test_without_refusals_the_free_slots_are_only_at_least(tmp_path):
    conns = [c for c in storm() if not c.refused]
    (run,) = pglog.read_pg_log(write_plain(tmp_path / "postgresql.log", conns))
    cal = calibrate([run], replications=1)
    slots = cal.estimate("database.max_connections")
    assert not slots.identifiable and slots.low == HELD


def test_without_pids_connections_are_counted_and_sessions_before_the_log_noted(tmp_path):
    conns = [*storm(), Conn(300, -50.0, hold_s=52.0)]  # opened before the log, closed in it
    path = write_plain(tmp_path / "x.log", conns, prefix="{m} ")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[3:]) + "\n")  # its received, authorized, ready lines gone
    (run,) = pglog.read_pg_log(path, "%m ")
    log = run.server
    assert not log.by_pid and log.refusals == 2 and log.before_log == 1
    assert log.held_at_refusal == HELD - 1  # its disconnection was taken for one of theirs
    assert "sessions opened before the log began" in run.notes[-1]


def test_a_custom_prefix_is_read(tmp_path):
    path = write_plain(
        tmp_path / "p.log", storm(), prefix="{t} [{p}]: [1-1] user=orders,db=orders "
    )
    prefix = "%t [%p]: [%l-1] user=%u,db=%d "
    assert not pglog.detect(path) and pglog.detect(path, prefix)
    (run,) = pglog.read_pg_log(path, prefix)
    assert run.server.refusals == 2 and run.server.held_at_refusal == HELD


# -- through the command line, and bad input -----------------------------------------------------


def cli(*args):
    return call_main("calibrate", *args, "-n", "1")


def test_calibrate_command_reads_a_plain_log_and_cloudsql_entries(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    plain = write_plain(tmp_path / "postgresql.log", storm())
    assert cli(str(plain), "--out", str(out)) == 0
    text = out.read_text()
    assert "connection ready: setup total" in text and "max_connections" in text
    cloud = write_cloudsql(tmp_path / "cloudsql.json", storm())
    assert cli(str(cloud), "--format", "postgres-log", "--out", str(out)) == 0
    assert cli(str(cloud), "--out", str(out)) == 0


def test_a_bad_timestamp_exits_2_naming_file_line_and_field(tmp_path, capsys):
    path = write_plain(tmp_path / "postgresql.log", storm())
    lines = path.read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if "too many clients" in ln)
    lines[i] = "2026-11-29 25:61:00.000 UTC" + lines[i][27:]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--format", "postgres-log", "--out", str(out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"postgresql.log:{i + 1}: %m: timestamp '2026-11-29 25:61:00.000 UTC'" in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_log_without_connection_lines_or_the_wrong_prefix_is_refused(tmp_path):
    path = write_plain(tmp_path / "postgresql.log", storm())
    with pytest.raises(InputError, match=r"no connection lines among .* --log-line-prefix"):
        pglog.read_pg_log(path, "%t | %u ")


def test_validate_refuses_a_server_log_alone(tmp_path, capsys):
    path = write_plain(tmp_path / "postgresql.log", storm())
    out = tmp_path / "val"
    assert call_main("validate", str(path), "-n", "10", "--out", str(out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "postgresql.log: no start attempts in them" in err and "Traceback" not in err
    assert not out.exists()


def test_a_bad_cloudsql_timestamp_names_the_json_path(tmp_path):
    import json

    path = write_cloudsql(tmp_path / "cloudsql.json", storm())
    entries = json.loads(path.read_text())
    entries[4]["timestamp"] = "yesterday"
    path.write_text(json.dumps(entries))
    with pytest.raises(InputError, match=r"cloudsql\.json: \$\[4\]\.timestamp: 'yesterday'"):
        pglog.read_pg_log(path)


def test_odd_bytes_in_a_statement_and_progress_in_bytes(tmp_path, monkeypatch):
    path = write_plain(tmp_path / "postgresql.log", storm())
    path.write_bytes(path.read_bytes() + b"\tSELECT 'caf\xe9'\n")  # a latin-1 statement line
    monkeypatch.setattr(pglog.cloudlogging, "PROGRESS_EVERY", 10)
    told = []
    (run,) = pglog.read_pg_log(path, progress=told.append)
    assert run.server.refusals == 2 and told == sorted(told) and len(told) >= 10


def test_lines_are_read_one_at_a_time_and_only_connection_events_kept(tmp_path, monkeypatch):
    """Of a large log only the connection events are kept, as four numbers in typed arrays
    (25 bytes each): statements and other lines are counted and dropped as they are read.
    storm(): 25 held connections × 4 lines (received, authorized, ready, disconnection), two
    refusals × 2 lines, one more connection × 4 lines = 108 events, among 112 lines + padding."""
    conns = storm()
    path = write_plain(tmp_path / "postgresql.log", conns)
    padding = "2026-11-29 11:00:00.000 UTC [7] LOG:  statement: SELECT 1\n" * 5000
    path.write_text(path.read_text() + padding)
    kept = []

    class Spy(pglog._Events):
        def in_time_order(self):
            kept.append(self)
            return super().in_time_order()

    monkeypatch.setattr(pglog, "_Events", Spy)
    (run,) = pglog.read_pg_log(path)
    (events,) = kept
    assert len(events) == 25 * 4 + 2 * 2 + 4 and run.server.lines == 112 + 5000
    arrays = (events.t_ns, events.kind, events.pid, events.value)
    assert sum(a.itemsize * len(a) for a in arrays) == 25 * len(events)
    # Cloud SQL's newest-first entries put in time order give the same counts
    (cloud,) = pglog.read_pg_log(write_cloudsql(tmp_path / "cloudsql.json", conns))
    assert (cloud.server.peak_held, cloud.server.held_at_refusal) == (HELD, HELD)
    assert (run.server.peak_held, run.server.held_at_refusal) == (HELD, HELD)
