"""Kubernetes events and pod status (docs/formats.md): read as container starts, counted as
monitoring counts them, the CrashLoopBackOff schedule fitted, aggregated Events accounted for,
and bad files refused naming the file, the JSON path and the field. The files are written by
``kubernetes_export`` from the documented field names, in our own values."""

from __future__ import annotations

import json
import re

import pytest
from builders import pieces_held, scenario, uniform
from cli_helpers import call_main
from kubernetes_export import (
    BASE_NS,
    PodRuns,
    Run,
    as_list,
    at,
    crash_loop,
    events,
    logged,
    watch,
    write,
)

from sim.calibrate import calibrate, jsonstream, kubernetes
from sim.calibrate.crashloop import read_kubernetes
from sim.engine import run_replication
from sim.errors import InputError
from sim.records import Outcome

KUBERNETES = [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]  # platform-facts.md


def files(tmp_path, pods, copies=False, through_logging=False):
    evs = events(pods, copies=copies)
    if through_logging:
        ev = write(tmp_path / "events.json", logged(evs))
    else:
        ev = write(tmp_path / "events.json", as_list(evs))
    return ev, write(tmp_path / "pods.json", watch(pods), stream=True)


def key(run):
    return sorted((a.instance, a.attempt, a.outcome, round(a.db_init_s, 6)) for a in run.attempts)


def test_go_durations_and_the_back_off_in_force():
    assert kubernetes.go_duration_s("5m0s") == 300.0
    assert kubernetes.go_duration_s("2m40s") == 160.0
    assert kubernetes.go_duration_s("500ms") == 0.5
    msg = "back-off 20s restarting failed container=app pod=orders-api-1_shop(uid-1)"
    assert kubernetes.back_off_s(msg) == 20.0
    assert kubernetes.back_off_s("Back-off restarting failed container app in pod x") is None
    for bad in ("", "5x", "m5s"):
        with pytest.raises(ValueError):
            kubernetes.go_duration_s(bad)


def test_a_crash_loop_gives_restarts_in_place_and_the_kubernetes_schedule(tmp_path):
    (run,) = read_kubernetes(list(files(tmp_path, crash_loop())))
    assert run.run_id == "shop.orders-api-7d4b9c5f6"
    assert len({a.instance for a in run.attempts}) == 2  # one instance per pod's container
    outcomes = sorted((a.attempt, a.outcome) for a in run.attempts)
    want = [(k, Outcome.TIMEOUT) for k in range(1, 8)] + [(8, Outcome.READY)]
    assert outcomes == sorted(want * 2)
    assert all(a.db_init_s == 20.0 for a in run.attempts if a.outcome == Outcome.TIMEOUT)
    assert all(a.reason == "exit(3)" for a in run.attempts if a.outcome == Outcome.TIMEOUT)
    m = run.monitoring
    assert (m.starts, m.ready, m.failures, m.censored, m.dropped) == (16, 2, {"exit(3)": 14}, 0, 0)
    assert m.starts_per_instance == [8, 8]
    assert sorted(m.by_restart(most=10)) == [(k + 1, d, 2) for k, d in enumerate(KUBERNETES)]
    assert "skipped" in run.notes[0] and "events about a Node 1" in run.notes[0]
    assert "events about a ReplicaSet 1" in run.notes[0]
    restart = calibrate([run], replications=1).scenario.restart
    assert (restart.policy, restart.initial_backoff_s, restart.multiplier) == (
        "exponential",
        10.0,
        2.0,
    )
    assert restart.max_backoff_s == 300.0


def test_through_cloud_logging_and_directly_read_the_same(tmp_path):
    direct = read_kubernetes(list(files(tmp_path, crash_loop())))
    (tmp_path / "l").mkdir()
    ev, pods = files(tmp_path / "l", crash_loop(), copies=True, through_logging=True)
    assert kubernetes.detect(ev) and kubernetes.detect(pods)
    (run,) = read_kubernetes([ev, pods])
    assert key(run) == key(direct[0])
    assert run.monitoring.delays == direct[0].monitoring.delays
    entries = json.loads(ev.read_text())
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert kubernetes.detect(lines) and key(read_kubernetes([lines, pods])[0]) == key(run)


def test_an_aggregated_event_counts_its_occurrences_and_times_what_it_can(tmp_path):
    """``kubectl get events`` shows one Started Event with count 8 per pod: 8 starts, the first
    and the last timed, 6 counted untimed; the pods' watch times those 6; copies of the Event at
    each count (Cloud Logging, watches) time them all."""
    pods = crash_loop()
    ev = write(tmp_path / "events.json", as_list(events(pods)))
    (alone,) = read_kubernetes([ev])
    m = alone.monitoring
    assert m.starts == 16 and m.starts_per_instance == [8, 8]
    assert "12 starts counted from aggregated Events (count > 1)" in alone.notes[0]
    assert m.failures == {"exit not recorded": 14}  # no status: ended, how not recorded
    assert m.censored == 2 and alone.censored  # the last start of each: no end in the files
    copies = write(tmp_path / "copies.json", as_list(events(pods, copies=True)))
    (timed,) = read_kubernetes([copies])
    assert "0 starts counted from aggregated" in timed.notes[0]
    assert timed.monitoring.starts == 16
    pods_file = write(tmp_path / "pods.json", watch(pods), stream=True)
    (both,) = read_kubernetes([ev, pods_file])
    assert "0 starts counted from aggregated" in both.notes[0]
    assert both.monitoring.failures == {"exit(3)": 14}
    again = write(tmp_path / "again.json", as_list(events(pods, copies=True) * 2))
    assert "30 repeated Event copies dropped" in read_kubernetes([again])[0].notes[0]


def test_waiting_back_off_killing_censoring_and_starts_before_the_window(tmp_path):
    waiting = PodRuns("orders-api-7d4b9c5f6-0000a", [Run(0.0, 20.0, 3)], waiting_s=10.0)
    killed = PodRuns("orders-api-7d4b9c5f6-0000b", [Run(1.0)])  # running, then a Killing
    starting = PodRuns("orders-api-7d4b9c5f6-0000c", [Run(2.0)])  # running, not ready yet
    pods = [waiting, killed, starting]
    objs = events(pods)
    kill = dict(objs[0])  # an Event's shape, made a Killing of pod b's container
    kill.update(reason="Killing", message="Container app failed startup probe, will be restarted")
    started_b = next(e for e in objs if e["involvedObject"]["name"] == killed.name)
    kill["involvedObject"] = {**started_b["involvedObject"], "fieldPath": "spec.containers{app}"}
    kill["metadata"] = {"uid": "kill-b"}
    kill["firstTimestamp"] = kill["lastTimestamp"] = at(5.0)
    early = watch(pods)
    early[0]["status"]["containerStatuses"][0]["restartCount"] = 3  # 3 restarts before the files
    ev = write(tmp_path / "events.json", as_list([*objs, kill]))
    (run,) = read_kubernetes([ev, write(tmp_path / "pods.json", as_list(early))])
    m = run.monitoring
    assert m.dropped == 3 and m.delays == [(4, 10.0)]  # pending restart #4: 10 s in force
    assert m.failures == {"exit(3)": 1, "startup probe failed": 1}
    assert (m.starts, m.censored, m.ready) == (3, 1, 0)
    (cut,) = run.censored
    assert cut.instance.endswith("0000c/app") and cut.censored == "database"
    assert {a.attempt for a in run.attempts} == {4, 1}  # after 3 restarts before the window
    assert "back-off in force" in run.notes[1]


# -- a simulated run, written out and read back --------------------------------------------------

ROUND_TRIP = {
    "fleet.instances": 4,
    "startup.before_db_s": uniform(0.5, 1.5),
    "startup.db_init_timeout_s": 3.0,
    "database.accept_s": uniform(1.0, 6.0),
    "restart.preset": "kubernetes",
    "restart.max_restarts": 6,
    "horizon_s": 400.0,
}


def simulated(seed: int):
    sc = scenario(ROUND_TRIP)
    cols = run_replication(sc, seed).attempts
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    pods: dict[int, PodRuns] = {}
    for r in sorted(rows, key=lambda r: (r["instance"], r["attempt"])):
        p = pods.setdefault(r["instance"], PodRuns(f"orders-api-7d4b9c5f6-{r['instance']:05x}"))
        end = r["db_init_start_s"] + r["db_init_s"]
        if r["outcome"] == Outcome.READY:
            p.runs.append(Run(r["start_s"], ready_s=end))
        else:
            p.runs.append(Run(r["start_s"], end, 3 if r["outcome"] == Outcome.TIMEOUT else 1))
    for p in pods.values():
        last = len(p.runs)
        if p.runs[-1].code is not None and last <= sc.restart.max_restarts:
            p.waiting_s = sc.restart.backoff_s(last)  # the restart the horizon cut off
    return sc, rows, list(pods.values())


def test_a_simulated_kubernetes_run_written_out_reads_back_as_the_same_attempts(tmp_path):
    sc, rows, pods = simulated(seed=3)
    assert any(r["attempt"] > 2 for r in rows) and any(r["outcome"] == "ready" for r in rows)
    (run,) = read_kubernetes(list(files(tmp_path, pods, copies=True, through_logging=True)))
    got = sorted(run.attempts, key=lambda a: (a.instance, a.attempt))
    want = sorted(rows, key=lambda r: (r["instance"], r["attempt"]))
    assert len(got) == len(want)
    for a, r in zip(got, want, strict=True):
        assert a.start_unix_s == pytest.approx(BASE_NS / 1e9 + r["start_s"], abs=1e-5)
        assert a.attempt == r["attempt"]
        assert a.outcome == (Outcome.ERROR if r["outcome"] == Outcome.REJECTED else r["outcome"])
        assert a.instance == f"shop/orders-api-7d4b9c5f6-{r['instance']:05x}/app"
        whole = r["db_init_start_s"] + r["db_init_s"] - r["start_s"]
        assert a.db_init_s == pytest.approx(whole, abs=1e-5)
    pauses = sorted(
        (r["attempt"] - 1, sc.restart.backoff_s(r["attempt"] - 1)) for r in rows if r["attempt"] > 1
    )
    pending = sorted((len(p.runs), p.waiting_s) for p in pods if p.waiting_s is not None)
    got_delays = [(k, round(d, 4)) for k, d in run.monitoring.delays]
    assert got_delays == sorted(pauses + pending)


# -- through the command line, and bad files ------------------------------------------------------


def test_calibrate_reads_both_files_together_and_writes_the_counts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    ev, pods = files(tmp_path, crash_loop())
    out = tmp_path / "cal.toml"
    assert call_main("calibrate", str(ev), str(pods), "-n", "1", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "as monitoring counts" in printed and "exit(3) 14" in printed
    text = out.read_text()
    assert "# as monitoring counts: shop.orders-api-7d4b9c5f6: 16 starts" in text
    assert "max_backoff_s = 300.0" in text and "observed_failures = 14" in text
    args = ["--format", "kubernetes", "-n", "1", "--out", str(out)]
    assert call_main("calibrate", str(ev), str(pods), *args) == 0


def _refused(tmp_path, capsys, path, expected):
    out = tmp_path / "cal.toml"
    assert call_main("calibrate", str(path), "-n", "1", "--out", str(out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expected in err and "Traceback" not in err, err
    assert not out.exists()


def test_bad_files_exit_2_naming_file_json_path_and_field(tmp_path, capsys):
    objs = events(crash_loop())
    i = next(k for k, e in enumerate(objs) if e["reason"] == "Started")
    del objs[i]["involvedObject"]["name"]
    path = write(tmp_path / "noname.json", as_list(objs))
    _refused(tmp_path, capsys, path, f"noname.json: $.items[{i}].involvedObject.name: missing")
    entries = logged(events(crash_loop()))
    j = next(k for k, e in enumerate(entries) if e["jsonPayload"]["reason"] == "Started")
    entries[j]["jsonPayload"]["lastTimestamp"] = "2026-11-29T25:61:00Z"
    lines = tmp_path / "bad.jsonl"
    lines.write_text("".join(json.dumps(e) + "\n" for e in entries))
    _refused(tmp_path, capsys, lines, f"bad.jsonl:{j + 1}: jsonPayload.lastTimestamp = '2026-11")
    pods = watch(crash_loop())
    pods[2]["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] = "three"
    bad_pods = write(tmp_path / "pods.json", pods, stream=True)
    field = "status.containerStatuses[0].lastState.terminated.exitCode = 'three'"
    _refused(tmp_path, capsys, bad_pods, f"pods.json: $[2].{field}")
    text = json.dumps(as_list(events(crash_loop())))
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    out = tmp_path / "cal.toml"
    assert call_main("calibrate", str(cut), "--format", "kubernetes", "--out", str(out)) == 2
    # streamed a List item at a time: the item cut short is named
    assert re.search(r"cut\.json: \$\.items\[\d+\]: cut short", capsys.readouterr().err)


def test_only_events_about_other_kinds_is_refused(tmp_path):
    objs = [e for e in events(crash_loop()) if e["involvedObject"]["kind"] != "Pod"]
    path = write(tmp_path / "events.json", as_list(objs))
    assert kubernetes.detect(path)
    with pytest.raises(
        InputError, match=r"no container start in it \(3 objects, 0 out .*, 3 skipped"
    ):
        read_kubernetes([path])


def test_validate_reads_the_files_and_prints_their_monitoring_counts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    ev, pods = files(tmp_path, crash_loop())
    cal = tmp_path / "cal.toml"
    assert call_main("calibrate", str(ev), str(pods), "-n", "1", "--out", str(cal)) == 0
    capsys.readouterr()
    out = tmp_path / "validation"
    args = ["--scenario", str(cal), "-n", "10", "--out", str(out), "--format", "kubernetes"]
    assert call_main("validate", str(ev), str(pods), *args) == 0
    printed = capsys.readouterr().out
    assert "measured vs predicted" in printed and "as monitoring counts" in printed
    assert "first 2, restart 14" in printed and (out / "validation.md").exists()


def test_a_pod_deleted_stops_no_start_but_cuts_one_short(tmp_path):
    """``Stopping container app`` (the pod deleted): a ready start stays ready, a start not yet
    ready is censored at the Killing, and neither counts as a failure."""
    ready = PodRuns("orders-api-7d4b9c5f6-0000d", [Run(0.0, ready_s=4.0)])
    starting = PodRuns("orders-api-7d4b9c5f6-0000e", [Run(1.0)])
    objs = events([ready, starting], noise=False)
    for p, t in ((ready, 30.0), (starting, 3.0)):
        started = next(
            e for e in objs if e["involvedObject"]["name"] == p.name and e["reason"] == "Started"
        )
        kill = json.loads(json.dumps(started))
        kill.update(reason="Killing", message="Stopping container app", metadata={"uid": p.name})
        kill["firstTimestamp"] = kill["lastTimestamp"] = at(t)
        objs.append(kill)
    ev = write(tmp_path / "events.json", as_list(objs))
    (run,) = read_kubernetes([ev, write(tmp_path / "pods.json", as_list(watch([ready, starting])))])
    m = run.monitoring
    assert (m.ready, m.censored, m.failures) == (1, 1, {})
    (cut,) = run.censored
    assert cut.db_init_s == 2.0 and cut.instance.endswith("0000e/app")


def test_watch_events_and_a_started_event_without_its_container(tmp_path):
    pods = crash_loop(pods=1, failures=2)
    stream = [{"type": "MODIFIED", "object": o} for o in watch(pods)]  # --output-watch-events
    ev = write(tmp_path / "events.json", events(pods, copies=True), stream=True)
    (run,) = read_kubernetes([ev, write(tmp_path / "pods.json", stream, stream=True)])
    assert [a.outcome for a in run.attempts] == [Outcome.TIMEOUT, Outcome.TIMEOUT, Outcome.READY]
    assert run.monitoring.delays == [(1, 10.0), (2, 20.0)]
    objs = events(pods)
    i = next(k for k, e in enumerate(objs) if e["reason"] == "Started")
    del objs[i]["involvedObject"]["fieldPath"]
    path = write(tmp_path / "nofield.json", as_list(objs))
    with pytest.raises(InputError, match=rf"\$\.items\[{i}\]\.involvedObject\.fieldPath = None"):
        read_kubernetes([path])


def test_an_event_with_event_time_and_series_counts_like_one_with_count(tmp_path):
    """Events recorded through events.k8s.io show ``eventTime`` (microseconds) and ``series{count,
    lastObservedTime}`` instead of ``firstTimestamp``, ``lastTimestamp`` and ``count``."""
    pods = crash_loop(pods=1, failures=2)
    objs = events(pods, noise=False)
    for e in objs:
        first, last, n = e.pop("firstTimestamp"), e.pop("lastTimestamp"), e.pop("count")
        e["eventTime"] = first.replace("Z", ".000000Z")
        if n > 1:
            e["series"] = {"count": n, "lastObservedTime": last.replace("Z", ".000000Z")}
    ev = write(tmp_path / "events.json", as_list(objs))
    (run,) = read_kubernetes([ev, write(tmp_path / "pods.json", watch(pods), stream=True)])
    assert run.monitoring.starts == 3 and run.monitoring.delays == [(1, 10.0), (2, 20.0)]
    assert "1 starts counted from aggregated" not in run.notes[0]


def test_a_list_is_read_an_item_at_a_time_in_bounded_memory(tmp_path, monkeypatch):
    """kubectl's List is streamed: each item decoded alone, the text held never more than the
    look-ahead (for a second document, 2 KiB here), an item and two pieces: far less than the
    file."""
    lst = as_list(events(crash_loop(pods=8)))
    path = write(tmp_path / "events.json", lst)
    held = pieces_held(monkeypatch, 512, lookahead=2048)
    got = list(kubernetes.objects(path))
    assert [obj for _, obj in got] == lst["items"]
    assert [w for w, _ in got] == [f"$.items[{i}]" for i in range(len(lst["items"]))]
    # json.dumps(indent=2) writes an item nested at depth 2 with 4 more spaces a line: bounded
    # by twice its own indented text
    item = max(len(json.dumps(o, indent=2)) for o in lst["items"])
    bound = 2048 + 2 * item + 2 * 512
    assert len(held) > 10 and max(held) <= bound < path.stat().st_size / 2


def test_a_watch_stream_is_read_an_object_at_a_time(tmp_path, monkeypatch):
    pods = watch(crash_loop())
    path = write(tmp_path / "pods.json", pods, stream=True)
    held = pieces_held(monkeypatch, 512)
    got = list(kubernetes.objects(path))
    assert [obj for _, obj in got] == pods
    assert [w for w, _ in got] == [f"$[{i}]" for i in range(len(pods))]
    biggest = max(len(json.dumps(o, indent=2)) for o in pods)
    assert max(held) <= biggest + 2 * 512 < path.stat().st_size


def test_progress_is_told_in_bytes_per_file(tmp_path, monkeypatch):
    ev, pods = files(tmp_path, crash_loop())
    monkeypatch.setattr(jsonstream, "PIECE_CHARS", 512)
    told: dict = {}
    read_kubernetes([ev, pods], progress=lambda p, at: told.setdefault(p, []).append(at))
    assert set(told) == {ev, pods}
    for path, seen in told.items():
        assert seen == sorted(seen) and len(seen) > 3 and seen[-1] == path.stat().st_size
