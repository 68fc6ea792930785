"""OpenTelemetry OTLP/JSON traces (docs/formats.md): start-up spans and their phase children read
as attempts, the pool metrics reported, bad input refused naming file, line, JSON path and field.
The files are written by ``otlp_export`` from the OTLP/JSON field names, in our own values."""

from __future__ import annotations

import json

import pytest
from builders import LOG_ROUND_TRIP, pieces_held, scenario
from cli_helpers import call_main
from otlp_export import BASE_NS, Boot, boot_object, pool_metrics, write

from sim.calibrate import otlp
from sim.engine import run_replication
from sim.errors import InputError

PHASES = "before=config;database=db;after=warm"


def boots() -> list[Boot]:
    return [
        Boot("i-1", 0.0, [("config", 0.5), ("db", 20.0)], exit_code=3),
        Boot("i-1", 28.0, [("config", 0.5), ("db", 1.25), ("warm", 0.75)], exit_code=0),
        Boot("i-2", 0.1, [("config", 0.4), ("db", 2.0), ("warm", 1.0)]),
        Boot("i-3", 0.2, [("config", 0.3), ("db", 4.0)], status_error=True, deadline_event=True),
        Boot("i-4", 0.3, [("config", 0.3), ("db", 0.5)], status_error=True),
    ]


def objects(bs=None):
    return [boot_object(b, n) for n, b in enumerate(bs or boots(), start=1)]


def test_spans_become_attempts_with_exact_phases_and_the_outcome_rule(tmp_path):
    (run,) = otlp.read_otlp(write(tmp_path / "t.jsonl", objects()), PHASES)
    got = {(a.instance, a.attempt): a for a in run.attempts}
    assert run.run_id == "orders-api" and len(got) == 5
    assert (got["i-1", 1].outcome, got["i-1", 1].reason) == ("timeout", "exit(3)")
    assert got["i-1", 1].db_init_s == 20.0 and got["i-1", 1].after_db_s is None
    assert got["i-1", 2].outcome == "ready" and got["i-1", 2].after_db_s == 0.75
    assert got["i-2", 1].outcome == "ready" and got["i-2", 1].before_db_s == 0.4
    assert (got["i-3", 1].outcome, got["i-3", 1].reason) == ("timeout", "deadline")
    assert got["i-4", 1].outcome == "error"
    assert got["i-1", 2].start_unix_s == (BASE_NS + 28 * 10**9) / 1e9
    assert "spans of other names 5" in run.notes[0]


def key(run):
    return [(x.instance, x.attempt, x.db_init_s, x.after_db_s, x.outcome) for x in run.attempts]


def test_one_pretty_object_reads_as_json_lines_and_detection_says_otlp(tmp_path):
    a = write(tmp_path / "a.jsonl", objects())
    b = write(tmp_path / "b.json", objects(), lines=False)
    assert otlp.detect(a) and otlp.detect(b)
    assert key(otlp.read_otlp(a, PHASES)[0]) == key(otlp.read_otlp(b, PHASES)[0])
    other = tmp_path / "c.json"
    other.write_text('{"insertId": "x", "resource": {"type": "cloud_run_revision"}}\n')
    assert not otlp.detect(other)


def test_pool_metrics_are_reported(tmp_path):
    objs = [*objects(), pool_metrics([0.02, 0.04, 0.06], [0.0, 0.5], 2)]
    (run,) = otlp.read_otlp(write(tmp_path / "t.jsonl", objs), PHASES)
    text = " ".join(run.notes)
    assert "db.client.connection.create_time: n 3, mean 0.04 s" in text
    assert "db.client.connection.wait_time: n 2, mean 0.25 s" in text
    assert "db.client.connection.timeouts: 2" in text


def test_without_a_mapping_the_children_are_named_and_without_children_timed_whole(tmp_path):
    with pytest.raises(InputError, match="children of 'startup': config, db, GET /config, warm"):
        otlp.read_otlp(write(tmp_path / "t.jsonl", objects()))
    bare = boot_object(Boot("i-9", 0.0, [("db", 2.5)]), 1)
    spans = bare["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[1:] = []  # the start-up span alone
    (run,) = otlp.read_otlp(write(tmp_path / "u.jsonl", [bare]), None)
    assert run.attempts[0].db_init_s == 2.5  # the whole span, as a note says
    assert "whole duration is taken as database init" in run.notes[-1]


# -- a simulated run, written as spans and read back ------------------------------------------


def test_a_simulated_run_written_as_spans_reads_back_as_the_same_attempts(tmp_path):
    cols = run_replication(scenario(LOG_ROUND_TRIP), 5).attempts
    rows = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
    assert {r["outcome"] for r in rows} == {"ready", "timeout"}
    assert any(r["attempt"] > 1 for r in rows)
    bs = []
    for r in rows:
        ok = r["outcome"] == "ready"
        phases = [("config", r["db_init_start_s"] - r["start_s"]), ("db", r["db_init_s"])]
        bs.append(
            Boot(
                f"sim-{r['instance']}", r["start_s"], phases + [("warm", 0.75)] * ok, 0 if ok else 3
            )
        )
    (run,) = otlp.read_otlp(write(tmp_path / "sim.jsonl", objects(bs)), PHASES)
    got = sorted(run.attempts, key=lambda a: (a.instance, a.attempt))
    want = sorted(rows, key=lambda r: (f"sim-{r['instance']}", r["attempt"]))
    assert len(got) == len(want)
    for a, r in zip(got, want, strict=True):
        assert (a.instance, a.attempt, a.outcome) == (
            f"sim-{r['instance']}",
            r["attempt"],
            r["outcome"],
        )
        assert a.start_unix_s == pytest.approx(BASE_NS / 1e9 + r["start_s"], abs=1e-6)
        assert a.before_db_s == pytest.approx(r["db_init_start_s"] - r["start_s"], abs=1e-8)
        assert a.db_init_s == pytest.approx(r["db_init_s"], abs=1e-8)


# -- bad input --------------------------------------------------------------------------------


def cli(*args):
    return call_main("calibrate", *args, "--phases", PHASES, "-n", "1")


@pytest.mark.parametrize(
    ("field", "value"),
    [("startTimeUnixNano", "soon"), ("endTimeUnixNano", None), ("traceId", "")],
)
def test_a_bad_span_exits_2_naming_file_line_path_and_field(tmp_path, capsys, field, value):
    objs = objects()
    objs[2]["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = value
    path = write(tmp_path / "bad.jsonl", objs)
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"bad.jsonl:3: $.resourceSpans[0].scopeSpans[0].spans[0].{field}" in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_cut_line_no_startup_span_and_not_otlp_exit_2(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    text = "".join(json.dumps(o) + "\n" for o in objects())
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text[: len(text) - 40])
    assert cli(str(cut), "--out", str(out)) == 2
    assert "cut.jsonl:5: not JSON (cut short" in " ".join(capsys.readouterr().err.split())
    path = write(tmp_path / "t.jsonl", objects())
    assert cli(str(path), "--startup-span", "boot", "--out", str(out)) == 2
    assert "no start-up span named 'boot'" in capsys.readouterr().err
    csv = tmp_path / "x.csv"
    csv.write_text("timestamp,instance\n")
    assert cli(str(csv), "--format", "otlp", "--out", str(out)) == 2
    assert "x.csv" in capsys.readouterr().err
    assert not out.exists()


def test_calibrate_reads_an_otlp_file(tmp_path, capsys):
    path = write(tmp_path / "t.jsonl", [*objects(), pool_metrics([0.02], [0.1], 0)])
    out = tmp_path / "cal.toml"
    assert cli(str(path), "--out", str(out)) == 0
    assert cli(str(path), "--format", "otlp", "--out", str(out)) == 0
    text = out.read_text()
    assert "db.client.connection.create_time: n 1" in text


def test_a_span_without_its_key_is_named(tmp_path):
    objs = objects()
    del objs[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"]
    with pytest.raises(
        InputError, match=r":1: \$\.resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.spanId"
    ):
        otlp.read_otlp(write(tmp_path / "t.jsonl", objs), PHASES)


def test_a_bad_metric_point_names_its_path(tmp_path):
    metrics = pool_metrics([0.02], [0.1], 0)
    points = metrics["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]
    points["dataPoints"][0]["count"] = "many"
    path = write(tmp_path / "t.jsonl", [*objects(), metrics])
    where = r"t\.jsonl:6: \$\.resourceMetrics\[0\]\.scopeMetrics\[0\]\.metrics\[0\]"
    with pytest.raises(InputError, match=where + r"\.histogram\.dataPoints\[0\]\.count"):
        otlp.read_otlp(path, PHASES)


def test_an_exit_code_that_is_no_whole_number_is_named(tmp_path):
    objs = objects()
    root = objs[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    root["attributes"] = [{"key": "process.exit.code", "value": {"stringValue": "three"}}]
    with pytest.raises(InputError, match=r"spans\[0\]\.attributes\.process\.exit\.code: 'three'"):
        otlp.read_otlp(write(tmp_path / "t.jsonl", objs), PHASES)


# -- large files: read a span at a time ---------------------------------------------------------


def test_one_document_is_read_a_span_at_a_time_in_bounded_memory(tmp_path, monkeypatch):
    """A pretty-printed document (all spans in one object) is streamed: every span arrives alone
    with its resource's attributes, the text held stays far below the file, and only the
    start-up and phase spans are kept."""
    merged = write(tmp_path / "one.json", objects(boots() * 6), lines=False)
    held = pieces_held(monkeypatch, 512, 1024)
    told = []
    items = list(otlp._items(merged, progress=told.append))
    assert told == sorted(told) and told[-1] == merged.stat().st_size  # bytes read, per piece
    # boots(): a start-up span, its phases and a GET each: 4 + 5 + 5 + 4 + 4 spans, six times
    assert len(items) == 6 * 22
    assert all(kind == "span" for kind, *_ in items)
    where = [at for _, _, at, _, _ in items]
    assert where[:2] == [f"$.resourceSpans[0].scopeSpans[0].spans[{k}]" for k in (0, 1)]
    assert items[0][4]["service.instance.id"] == "i-1" and items[-1][4]["service.instance.id"]
    # a span is a few hundred characters, indented: the text held is bounded by the
    # look-ahead, a span's text and two pieces
    assert max(held) <= 1024 + 2000 + 2 * 512 < merged.stat().st_size / 10
    tally = otlp._Tally()
    kept = list(otlp._spans(iter(items), "one.json", {"startup"}, tally, otlp.PoolFigures()))
    assert len(kept) == 30 and tally.skipped == {"spans of other names": len(items) - 30}


def test_a_resource_after_its_spans_still_names_their_instance(tmp_path):
    """The encoding does not fix the members' order: spans read before their resource wait for
    it."""
    objs = objects()
    for o in objs:
        rs = o["resourceSpans"][0]
        o["resourceSpans"][0] = {"scopeSpans": rs["scopeSpans"], "resource": rs["resource"]}
    reordered = write(tmp_path / "late.json", objs, lines=False)
    plain = write(tmp_path / "t.jsonl", objects())
    assert key(otlp.read_otlp(reordered, PHASES)[0]) == key(otlp.read_otlp(plain, PHASES)[0])


def test_without_a_mapping_one_document_names_the_children_too(tmp_path):
    with pytest.raises(InputError, match="children of 'startup': config, db, GET /config, warm"):
        otlp.read_otlp(write(tmp_path / "one.json", objects(), lines=False))


# -- counting as monitoring counts ----------------------------------------------------------------


def test_start_up_spans_are_counted_as_monitoring_counts(tmp_path):
    # boots(): i-1 fails with exit(3) (0 + 0.5 + 20 = 20.5 s) and starts again at 28 s: restart #1
    # after 7.5 s; i-2 ready; i-3 status ERROR with a deadline event; i-4 status ERROR. i-3 and
    # i-4 end failed with no start after them: no replacement to chain.
    (run,) = otlp.read_otlp(write(tmp_path / "t.jsonl", objects()), PHASES)
    m = run.monitoring
    assert (m.starts, m.ready, m.failed, m.censored, m.dropped) == (5, 2, 3, 0, 0)
    assert m.failures == {"exit(3)": 1, "status ERROR": 1, "status ERROR (deadline)": 1}
    assert m.reasons == {"first": 4, "restart": 1}
    assert m.starts_per_instance == [1, 1, 1, 2]
    assert m.delays == [(1, pytest.approx(7.5))]


def test_a_replacement_instance_continues_the_chain_it_replaces(tmp_path):
    # r-1 fails at 0.5 + 20 = 20.5 s (exit 3) and never starts again; r-2's first span starts at
    # 28 s: r-1's replacement (restart #1 after 7.5 s), counted as r-1's attempt 2. r-3 started
    # at 0.1 s, before any failure: an instance of its own.
    bs = [
        Boot("r-1", 0.0, [("config", 0.5), ("db", 20.0)], exit_code=3),
        Boot("r-3", 0.1, [("config", 0.4), ("db", 2.0), ("warm", 1.0)]),
        Boot("r-2", 28.0, [("config", 0.5), ("db", 1.25), ("warm", 0.75)]),
    ]
    (run,) = otlp.read_otlp(write(tmp_path / "t.jsonl", objects(bs)), PHASES)
    assert [(a.instance, a.attempt) for a in run.attempts] == [("r-1", 1), ("r-3", 1), ("r-1", 2)]
    assert run.monitoring.delays == [(1, pytest.approx(7.5))]
    assert run.monitoring.starts_per_instance == [1, 2]


def test_the_restart_schedule_is_calibrated_from_traces(tmp_path):
    # otlp_export.demo(): two instances each fail twice (exit 3) and start again 8 s after each
    # failed span's end: four delays of 8 s, no growth: fixed at 8 s; 4 failures observed.
    from otlp_export import demo

    from sim.calibrate import calibrate

    runs = otlp.read_otlp(write(tmp_path / "t.jsonl", demo()), PHASES)
    cal = calibrate(runs, replications=1)
    assert cal.scenario.restart.policy == "fixed"
    assert cal.scenario.restart.initial_backoff_s == pytest.approx(8.0)
    assert cal.scenario.team.observed_failures == 4
    assert cal.scenario.sources["restart.initial_backoff_s"].kind == "measured"
    assert cal.as_dict()["monitoring"][0]["failures"] == {"exit(3)": 4}
