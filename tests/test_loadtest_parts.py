"""Pieces of the load harness: arrival plans, target safety, records to summary, the asyncio bridge
under gevent, and the connector emulator against a real PostgreSQL with hand-computed timings.

Locust monkey-patches whatever process imports it, so the bridge test runs in a child process and
nothing here imports ``locust`` or ``loadtests.shapes``/``locustfile`` itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import asyncpg
import numpy as np
import pytest
from throwaway_pg import PASSWORD

from loadtests import safety
from loadtests.arrivals import BURST_RATE_PER_S, ArrivalPlan
from loadtests.emulator import Emulator
from loadtests.records import peak_connections, summarize_records
from sim import scenario as scenarios
from sim.errors import TargetError, UsageError
from sim.runner import simulate
from sim.stats import summarize


def test_the_simulation_core_never_loads_locust_or_asyncpg():
    code = "import sys, sim.cli; print(sorted({'gevent', 'locust', 'asyncpg'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- arrival plans ------------------------------------------------------------------------------
def test_a_burst_starts_everyone_at_once():
    assert ArrivalPlan([0.0] * 7).tick(0.0, 0) == (7, BURST_RATE_PER_S)


def test_waves_start_at_the_first_tick_at_or_after_their_time():
    plan = ArrivalPlan([0.0, 0.0, 5.0, 5.0, 5.0])
    assert plan.tick(0.0, 0) == (2, BURST_RATE_PER_S)
    assert plan.tick(4.99, 2) == (2, BURST_RATE_PER_S)  # never early
    assert plan.tick(5.0, 2) == (5, BURST_RATE_PER_S)
    assert plan.tick(6.0, 5) == (5, BURST_RATE_PER_S)


def test_plans_follow_the_scenario_arrivals():
    base = scenarios.resolve("capacity-storm")
    waves = base.with_overrides(
        {
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 0.0, "count": 10}, {"at_s": 30.0, "count": 30}],
        }
    )
    plan = ArrivalPlan.for_scenario(waves, seed=0)
    assert (plan.due(0.0), plan.due(29.9), plan.due(30.0)) == (10, 10, 40)
    uniform = base.with_overrides({"fleet.arrival": "uniform", "fleet.window_s": 20.0})
    plan = ArrivalPlan.for_scenario(uniform, seed=0)
    assert plan.due(20.0) == 40 and 0 < plan.due(10.0) < 40
    poisson = base.with_overrides({"fleet.arrival": "poisson", "fleet.rate_per_s": 4.0})
    plan = ArrivalPlan.for_scenario(poisson, seed=1)
    gaps = np.diff([0.0, *plan.times_s])
    assert len(gaps) == 40 and (gaps > 0).all()  # one start each, none before t = 0
    # Mean gap 1 / rate = 0.25 s; over 40 gaps its standard error is 0.25 / √40: five of them.
    assert abs(gaps.mean() - 0.25) < 5 * 0.25 / np.sqrt(40)
    assert plan.times_s == ArrivalPlan.for_scenario(poisson, seed=1).times_s  # the seed repeats it
    assert plan.times_s != ArrivalPlan.for_scenario(poisson, seed=2).times_s


# -- safety -------------------------------------------------------------------------------------
def test_loopback_and_named_targets_pass_others_do_not():
    for host in ("127.0.0.1", "127.8.9.1", "::1", "/var/run/postgresql"):
        safety.check_target(host, [])
    safety.check_target("10.1.2.3", ["10.1.2.3"])
    with pytest.raises(TargetError, match=r"'10\.1\.2\.3'.*--allow-target 10\.1\.2\.3"):
        safety.check_target("10.1.2.3", ["other"])


def test_dsn_handling_never_shows_the_password():
    dsn = f"postgresql://app:{PASSWORD}@127.0.0.1:6432/appdb?sslmode=disable"
    assert PASSWORD not in safety.redact_dsn(dsn)
    assert safety.redact_dsn(dsn) == "postgresql://app:***@127.0.0.1:6432/appdb?sslmode=disable"
    moved = safety.with_host_port(dsn, "127.0.0.1", 7000)
    assert moved == f"postgresql://app:{PASSWORD}@127.0.0.1:7000/appdb?sslmode=disable"
    assert safety.dsn_password(dsn) == PASSWORD
    with pytest.raises(UsageError, match="postgresql://") as info:
        safety.resolve_dsn(f"mysql://app:{PASSWORD}@h/db", [])
    assert PASSWORD not in str(info.value)
    with pytest.raises(UsageError, match="--listen = 'nope'"):
        safety.parse_host_port("nope", "--listen")


# -- records ------------------------------------------------------------------------------------
def _record(instance, attempt, outcome, start, ready=None):
    return {
        "instance": instance,
        "attempt": attempt,
        "outcome": outcome,
        "start_unix_s": start,
        "ready_unix_s": ready,
        "connection_attempts": 2,
    }


def test_a_campaign_summary_has_the_simulation_summary_shape():
    sc = scenarios.resolve("gang-allocation").with_overrides({"fleet.instances": 2})
    records = [
        _record(0, 1, "ready", 100.0, 100.5),
        _record(1, 1, "rejected", 100.0),
        _record(1, 2, "ready", 110.0, 112.0),
    ]
    samples = [{"t_unix_s": 100.2, "worker": 0, "open": 5, "peak": 5}]
    measured = summarize_records(sc, records, samples, seed=0)
    res = simulate(sc, replications=2, seed=0, jobs=1)
    simulated = summarize(res.attempts, res.fleet, instances=2, min_size=3, seed=0).as_dict()
    assert set(simulated) <= set(measured)
    assert measured["fleet_ready_s"]["p50"] == pytest.approx(12.0)
    assert measured["p_first_start_success"] == 0.5
    assert measured["restarts_per_instance"] == 0.5
    assert measured["work_amplification"] == pytest.approx(6 / 6)


def test_peak_sums_workers_in_the_same_instant():
    samples = [
        {"t_unix_s": 1.00, "worker": 0, "open": 3, "peak": 4},
        {"t_unix_s": 1.05, "worker": 1, "open": 2, "peak": 5},
        {"t_unix_s": 2.00, "worker": 0, "open": 1, "peak": 6},
    ]
    assert peak_connections(samples) == 9


# -- the bridge under gevent ----------------------------------------------------------------------
BRIDGE_CHILD = textwrap.dedent(
    """
    import asyncio, time
    import locust  # monkey-patches the process for gevent, as in a real run
    import gevent
    from loadtests.bridge import AsyncioBridge

    bridge = AsyncioBridge()
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    async def wait(i):
        await asyncio.sleep(0.5)
        return i

    gevent.spawn(ticker)
    start = time.monotonic()
    users = [gevent.spawn(bridge.run, wait(i)) for i in range(200)]
    gevent.joinall(users)
    took = time.monotonic() - start
    during = sum(start < t < start + 0.5 for t in ticks)
    print(sorted(u.value for u in users) == list(range(200)), round(took, 2), during)
    """
)


def test_users_waiting_on_asyncio_never_block_the_worker():
    out = subprocess.run(
        [sys.executable, "-c", BRIDGE_CHILD], capture_output=True, text=True, timeout=60
    )
    ok, took_s, ticks_during = out.stdout.split()
    assert ok == "True", out.stderr
    # 200 waits of 0.5 s one after another would take 100 s; concurrently about 0.5 s.
    assert float(took_s) < 20
    assert int(ticks_during) > 5  # other greenlets kept running while every user waited


# -- the connector emulator ---------------------------------------------------------------------
def _cx(setups, min_i, max_i, setup_s, delay_s):
    return scenarios.Connector.model_validate(
        {
            "min_instances": min_i,
            "max_instances": max_i,
            "setups_per_instance": setups,
            "setup_s": {"dist": "constant", "value": setup_s},
            "scale_up_delay_s": {"dist": "constant", "value": delay_s},
        }
    )


async def _connect_times(emulator, dsn, n, timeout_s=10.0):
    start = time.monotonic()

    async def one():
        con = await asyncpg.connect(dsn, timeout=timeout_s)
        took = time.monotonic() - start
        assert await con.fetchval("select 41 + 1") == 42  # bytes relayed both ways
        return took, con

    results = await asyncio.gather(*(one() for _ in range(n)))
    for _, con in results:
        await con.close()
    return sorted(t for t, _ in results)


def test_setups_beyond_capacity_wait_for_the_scale_up_delay(pg_server, tmp_path):
    # Capacity 2 (one instance × 2 set-ups), set-ups of 2 s, one scale-out after 0.5 s.
    # Four at once: two finish at 2.0 s; the other two start when the second instance arrives
    # at 0.5 s and finish at 2.5 s (without it they would wait for a place until 2.0, end 4.0).
    # Lower bounds are exact; upper bounds leave room for a busy machine's connect and auth.
    cx = _cx(setups=2, min_i=1, max_i=2, setup_s=2.0, delay_s=0.5)

    async def main():
        log = tmp_path / "emulator.jsonl"
        emu = Emulator(cx, ("127.0.0.1", 0), ("127.0.0.1", pg_server.port), log_path=log)
        await emu.start()
        serving = asyncio.ensure_future(emu.serve())
        dsn = safety.with_host_port(pg_server.dsn, "127.0.0.1", emu.port)
        try:
            return await _connect_times(emu, dsn, 4), emu.model.state.instances
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    times, instances = asyncio.run(main())
    assert instances == 2
    assert 2.0 <= times[0] <= times[1] < 2.5
    assert 2.5 <= times[2] <= times[3] < 3.5
    assert pg_server.wait_no_harness_connections() == 0
    # One connection line each: the set-up as drawn, the wait for the scale-out, and the accept
    # up to ReadyForQuery, which is part of the client's own connect time.
    lines = [json.loads(x) for x in (tmp_path / "emulator.jsonl").read_text().splitlines()]
    conns = sorted((x for x in lines if x["event"] == "connection"), key=lambda x: x["queued_s"])
    assert [c["stage"] for c in conns] == ["ready"] * 4
    assert all(c["setup_s"] >= 2.0 and c["accept_s"] > 0 for c in conns)
    assert conns[2]["queued_s"] >= 0.5 and conns[3]["queued_s"] >= 0.5
    # Each line's total lies within its client's connect, so sorted totals lie under sorted times
    # (the 0.1 ms is the log's rounding).
    totals = sorted(c["queued_s"] + c["setup_s"] + c["accept_s"] for c in conns)
    assert all(t <= took + 1e-4 for t, took in zip(totals, times, strict=True))


def test_a_hung_path_holds_no_place_and_times_the_client_out(tmp_path):
    # p_fault 1, hung: the client's 0.3 s connect timeout ends it (asyncpg's TimeoutError, so a
    # campaign records connect_timeout); the emulator took no set-up place and dialled nothing
    # (its upstream is a closed port), and logs the connection as hung.
    cx = _cx(setups=1, min_i=1, max_i=1, setup_s=0.0, delay_s=0.0)
    path = scenarios.PathFaults(fault="hung")

    async def main():
        log = tmp_path / "emulator.jsonl"
        emu = Emulator(cx, ("127.0.0.1", 0), ("127.0.0.1", 9), log_path=log, path=path)
        await emu.start()
        serving = asyncio.ensure_future(emu.serve())
        try:
            for _ in range(2):  # one place only: a faulted connection must not keep it
                with pytest.raises(TimeoutError):
                    await asyncpg.connect(
                        host="127.0.0.1", port=emu.port, user="u", password="p", timeout=0.3
                    )
            await asyncio.sleep(0.05)  # the hang-ups reach the emulator
            return emu.model.setups, emu.model.state.in_setup
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    assert asyncio.run(main()) == (0, 0)
    lines = [json.loads(x) for x in (tmp_path / "emulator.jsonl").read_text().splitlines()]
    conns = [x for x in lines if x["event"] == "connection"]
    assert [c["stage"] for c in conns] == ["hung", "hung"]
    # Held until the client gave up: about its 0.3 s timeout, which starts before the emulator's
    # accept, so a loaded machine shows a little less (0.2: far from an early hang-up).
    assert all(c["fault_s"] >= 0.2 for c in conns)


def test_path_faults_draw_only_inside_their_window():
    from loadtests.faults import PathFaultInjector

    path = scenarios.PathFaults(fault="reset", p_fault=0.5, from_s=5.0, until_s=10.0)
    rng = np.random.default_rng(7)
    faults = PathFaultInjector(path, rng, t0=100.0)
    before = rng.bit_generator.state
    assert faults.fault(104.9) is None and faults.fault(110.0) is None  # outside: no draw
    assert rng.bit_generator.state == before
    inside = [faults.fault(105.0 + i / 1000) for i in range(2000)]
    assert set(inside) == {"reset", None}
    assert abs(inside.count("reset") / 2000 - 0.5) < 4.5 * (0.25 / 2000) ** 0.5
    off, now = PathFaultInjector(scenarios.PathFaults(), rng, t0=0.0), rng.bit_generator.state
    assert off.fault(1.0) is None and rng.bit_generator.state == now  # fault "none": no draw


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
STARTUP = (9).to_bytes(4, "big") + (196608).to_bytes(4, "big") + b"\0"


def test_the_startup_watch_finds_the_servers_verdict():
    """Walks the server's first messages (split anywhere) to ReadyForQuery or ErrorResponse;
    an SSL request's one-byte answer comes first; TLS or a cancel request end the watch."""
    from loadtests.emulator import StartupWatch

    server = (
        b"N"  # no SSL: the client goes on in plain text
        + _message(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0")
        + _message(b"S", b"server_version\x0018.0\0")
        + _message(b"K", bytes(8))
        + _message(b"Z", b"I")
        + _message(b"T", bytes(40))  # a query's reply: not looked at
    )
    for cut in range(len(server)):
        watch = StartupWatch()
        assert watch.client_sent(SSL_REQUEST) is None
        first = watch.server_sent(server[:cut])  # the watch ends at a verdict: no more feeding
        assert (first or watch.server_sent(server[cut:])) == ("ready", ""), cut
    error = _message(b"E", b"SFATAL\0C53300\0Msorry, too many clients already\0\0")
    watch = StartupWatch()
    watch.client_sent(STARTUP)
    assert watch.server_sent(error) == ("rejected", "53300")
    watch = StartupWatch()
    watch.client_sent(SSL_REQUEST)
    assert watch.server_sent(b"S\x16\x03\x03") == ("encrypted", "")
    assert StartupWatch().client_sent(b"\x16\x03\x01\x02\x00") == "encrypted"
    cancel = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big") + bytes(8)
    assert StartupWatch().client_sent(cancel) == "other"


def test_a_client_that_gives_up_leaves_the_queue(pg_server):
    cx = _cx(setups=1, min_i=1, max_i=1, setup_s=1.0, delay_s=0.0)

    async def main():
        emu = Emulator(cx, ("127.0.0.1", 0), ("127.0.0.1", pg_server.port))
        await emu.start()
        serving = asyncio.ensure_future(emu.serve())
        dsn = safety.with_host_port(pg_server.dsn, "127.0.0.1", emu.port)
        try:
            first = asyncio.ensure_future(asyncpg.connect(dsn))
            await asyncio.sleep(0.1)
            with pytest.raises(TimeoutError):
                await asyncpg.connect(dsn, timeout=0.3)
            await asyncio.sleep(0.1)
            queued = emu.model.state.queued
            await (await first).close()
            return queued
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    assert asyncio.run(main()) == 0


def test_the_documented_record_format_is_the_real_one():
    """docs/loadtests.md shows a record and a table of its fields: both match what is written."""
    import json
    import re
    from pathlib import Path

    from loadtests.container import AttemptResult
    from loadtests.records import make_record

    doc = (Path(__file__).parent.parent / "docs" / "loadtests.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"```json\n(.*?)```", doc, flags=re.S).group(1))
    real = make_record(AttemptResult(1, 0.0), run_id="r", worker=0, instance=0, final=True)
    assert list(example) == list(real)
    table = doc.split("### Record format", 1)[1]
    for key in real:
        assert f"`{key}`" in table, key


# -- one instance, no Locust ----------------------------------------------------------------------
@pytest.mark.parametrize(("min_size", "held"), [(4, 1), (2, 5)])
def test_a_ready_instance_holds_held_when_ready_connections(pg_server, min_size, held):
    from loadtests.container import Gauge, Instance

    sc = scenarios.resolve("gang-allocation").in_model_terms()  # held apart from min_size
    sc = sc.with_overrides(
        {"pool.min_size": min_size, "pool.max_size": 6, "pool.held_when_ready": held}
    )

    async def main():
        gauge = Gauge()
        inst = Instance(sc, pg_server.dsn, np.random.default_rng(0), gauge, (PASSWORD,))
        res = await inst.attempt(1)
        await asyncio.sleep(0.2)  # let asyncpg's own upkeep run, if it would reopen any
        on_server, open_now = pg_server.harness_connections(), gauge.open_now
        await inst.close()
        await asyncio.sleep(0.1)
        return res, on_server, open_now, gauge.open_now

    res, on_server, open_now, after = asyncio.run(main())
    assert res.outcome == "ready" and res.connection_attempts == min_size
    assert on_server == open_now == held
    assert after == 0 and pg_server.wait_no_harness_connections() == 0


def test_a_fatal_failure_is_an_error_with_its_reason_never_a_timeout(pg_server):
    """A wrong password with retries inside the deadline: outcome error (auth), at once."""
    from loadtests.container import Gauge, Instance

    sc = scenarios.resolve("gang-allocation").with_overrides(
        {"pool.retry_backoff_s": 0.2, "startup.db_init_timeout_s": 30.0}
    )
    dsn = safety.with_host_port(
        pg_server.dsn.replace(PASSWORD, "wrong"), "127.0.0.1", pg_server.port
    )

    async def main():
        inst = Instance(sc, dsn, np.random.default_rng(0), Gauge())
        try:
            return await inst.attempt(1)
        finally:
            await inst.close()

    res = asyncio.run(main())
    assert (res.outcome, res.reason, res.sqlstate) == ("error", "auth", "28P01")
    assert res.pool_starts == 1  # no retry: it could not help
    assert "password authentication failed" in res.error_message


def test_failure_reasons():
    from loadtests.container import failure_reason

    class Pg(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert failure_reason(Pg("53300")) == ("53300", False)
    assert failure_reason(Pg("28P01")) == ("auth", True)
    assert failure_reason(Pg("3D000")) == ("database", True)
    assert failure_reason(ConnectionRefusedError(111, "refused")) == ("refused", True)
    assert failure_reason(TimeoutError()) == ("connect_timeout", False)
    # The path failing the connection (asyncpg's exceptions, seen on a loopback socket that
    # closes or resets after the client's first message): closed or reset.
    assert failure_reason(ConnectionResetError(104, "reset")) == ("reset", False)
    closed = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert failure_reason(closed) == ("closed", False)
    closed.__cause__ = ConnectionResetError(104, "reset")
    assert failure_reason(closed) == ("reset", False)
    assert failure_reason(ConnectionError("unexpected connection_lost() call")) == ("closed", False)
    assert failure_reason(ValueError("something else")) == ("error", False)


def test_a_queued_client_that_hangs_up_as_the_queue_is_served_leaves_cleanly():
    """The hang-up cancels the wait; a place frees in the same loop step, before the waiter
    runs again. The served future was cancelled, so its place goes back at once, and the
    waiter's own give-up must neither fail nor free a place twice."""
    from loadtests.emulator import ConnectorModel

    cx = _cx(setups=1, min_i=1, max_i=1, setup_s=10.0, delay_s=0.0)

    async def main():
        model = ConnectorModel(cx, np.random.default_rng(0))
        holder = asyncio.ensure_future(model.setup())
        await asyncio.sleep(0)  # holds the only place
        waiter = asyncio.ensure_future(model.setup())
        await asyncio.sleep(0)  # queued
        holder.cancel()  # a place frees in this step; its holder runs first ...
        waiter.cancel()  # ... and the queued client hangs up in the same step
        # The holder's give-back serves the queue: it pops the waiter's cancelled future.
        results = await asyncio.gather(holder, waiter, return_exceptions=True)
        return results, model.state.in_setup, model.state.queued

    results, busy, queued = asyncio.run(main())
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert (busy, queued) == (0, 0)


def test_a_served_client_that_hangs_up_gives_its_place_back():
    from loadtests.emulator import ConnectorModel

    cx = _cx(setups=1, min_i=1, max_i=1, setup_s=10.0, delay_s=0.0)

    async def main():
        model = ConnectorModel(cx, np.random.default_rng(0))
        holder = asyncio.ensure_future(model.setup())
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(model.setup())
        await asyncio.sleep(0)
        holder.cancel()
        await asyncio.sleep(0)  # the holder gives back: the waiter's future is served
        waiter.cancel()  # hangs up before it runs again
        await asyncio.gather(holder, waiter, return_exceptions=True)
        return model.state.in_setup, model.state.queued

    assert asyncio.run(main()) == (0, 0)


GETADDRINFO_CHILD = textwrap.dedent(
    """
    import asyncio
    import locust  # monkey-patches the process for gevent, as in a real run
    from loadtests.bridge import AsyncioBridge

    async def lookup():
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.getaddrinfo("localhost", 5432), 20)

    infos = AsyncioBridge().run(lookup())
    print(sorted({i[4][0] for i in infos}))
    """
)


def test_host_names_resolve_on_the_bridge_loop():
    """asyncio's default executor starts gevent-patched threads the loop thread never runs:
    a name lookup hung, and so did the process's exit (a 10 s campaign ran 70 s)."""
    out = subprocess.run(
        [sys.executable, "-c", GETADDRINFO_CHILD], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "127.0.0.1" in out.stdout or "::1" in out.stdout
