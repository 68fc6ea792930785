"""The connector's rules (docs/model.md, "One connection", rules 1, 2 and 4) are one object,
``sim.connector.ConnectorState``; these tests check it alone, by pure calls, and through both of
its drivers: the readable engine's event loop and the emulator's asyncio
(``loadtests/emulator.py``).

The cases below are computed by hand, in units of time; each runs on three drivers: a dozen-line
event loop around the object here, the readable engine (its records and timeline show the same
times; the fast engine's compiled twin is held to them too), and the emulator's connector with one
unit = 0.2 s of real time (lower bounds exact, upper bounds leaving room for a busy machine; every
pair of events in a case is a unit apart or more).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass
from heapq import heappop, heappush

import numpy as np
import pytest
from builders import const, scenario

from loadtests.emulator import Connection, ConnectorModel, Emulator
from sim.connector import ConnectorState
from sim.engines import run_one
from sim.records import Outcome
from sim.scenario import Connector


def connector(setups: int = 1, min_i: int = 1, max_i: int = 1, setup_s=0.0, delay_s=0.0):
    return Connector(
        min_instances=min_i,
        max_instances=max_i,
        setups_per_instance=setups,
        setup_s=const(setup_s),
        scale_up_delay_s=const(delay_s),
    )


# -- the object alone ---------------------------------------------------------------------------


def test_capacity_fills_then_connections_wait_in_order():
    cx = ConnectorState(connector(setups=2, min_i=1, max_i=1))
    assert (cx.instances, cx.capacity, cx.in_setup, cx.queued) == (1, 2, 0, 0)
    assert [cx.request(c) for c in "abcde"] == [["a"], ["b"], [], [], []]
    assert (cx.in_setup, cx.queued) == (2, 3)
    assert cx.setup_done("b") == ["c"]  # first in, first out
    assert cx.setup_done("a") == ["d"]
    assert cx.setup_done("c") == ["e"]
    assert cx.setup_done("d") == [] and cx.setup_done("e") == []
    assert (cx.in_setup, cx.queued) == (0, 0)


def test_a_scale_out_starts_when_something_waits_and_one_at_a_time():
    cx = ConnectorState(connector(setups=1, min_i=1, max_i=3))
    assert cx.request("a") == ["a"]
    assert not cx.begin_scale_out()  # nothing waits
    assert cx.request("b") == []
    assert cx.begin_scale_out() and cx.scaling
    assert cx.request("c") == [] and cx.request("d") == []
    assert not cx.begin_scale_out()  # one is pending already
    # It joins (after the delay the caller drew): its place goes to the first waiting at once.
    assert cx.instance_joined() == ["b"]
    assert (cx.instances, cx.capacity, cx.scaling) == (2, 2, False)
    assert cx.begin_scale_out()  # c and d still wait: the next one starts at once
    assert cx.instance_joined() == ["c"]
    assert not cx.begin_scale_out()  # max_instances reached, though d waits
    assert cx.queued == 1 and cx.setup_done("a") == ["d"]


def test_a_join_that_empties_the_queue_starts_no_other_scale_out():
    cx = ConnectorState(connector(setups=2, min_i=1, max_i=5))
    for c in "abc":
        cx.request(c)
    assert cx.begin_scale_out()
    assert cx.instance_joined() == ["c"]
    assert not cx.begin_scale_out()


def test_it_never_scales_in():
    cx = ConnectorState(connector(setups=1, min_i=1, max_i=2))
    cx.request("a"), cx.request("b"), cx.begin_scale_out()
    cx.instance_joined()
    cx.setup_done("a"), cx.setup_done("b")
    assert (cx.instances, cx.capacity, cx.in_setup, cx.queued) == (2, 2, 0, 0)  # idle, still 2
    assert cx.request("c") == ["c"] and cx.request("d") == ["d"]


def test_giving_up_leaves_the_queue_or_frees_the_place_and_serves_once():
    cx = ConnectorState(connector(setups=2))
    for c in "abcdef":
        cx.request(c)
    assert cx.give_up(["d"]) == [] and cx.queued == 3  # left the queue; nothing freed
    # a is setting up, e waits: both leave at once, then the freed place is served: c (not e).
    assert cx.give_up(["a", "e"]) == ["c"]
    assert cx.give_up(["a", "x"]) == []  # no longer (or never) at the connector: nothing happens
    assert cx.setup_done("b") == ["f"]
    assert (cx.in_setup, cx.queued) == (2, 0)


def test_misuse_is_refused_with_the_connection_named():
    cx = ConnectorState(connector())
    cx.request("a")
    with pytest.raises(ValueError, match="'a' is already at the connector"):
        cx.request("a")
    with pytest.raises(ValueError, match="'b' is not in a set-up"):
        cx.setup_done("b")
    with pytest.raises(ValueError, match="no scale-out pending"):
        cx.instance_joined()


# -- the same cases on every driver ---------------------------------------------------------------

DONE, GAVE_UP = "done", "gave up"


@dataclass(frozen=True)
class Case:
    """Connections reach the connector at ``opens``; each is ``(set-up start or None, end, how)``
    expected, ``how`` DONE (its set-up ended) or GAVE_UP (its client gave up, ``timeout_s`` after
    it arrived); ``joins`` are when the scale-outs' instances joined."""

    setups: int
    min_i: int
    max_i: int
    setup_s: float
    delay_s: float
    opens: tuple[float, ...]
    expect: tuple[tuple[float | None, float, str], ...]
    joins: tuple[float, ...]
    timeout_s: float | None = None

    def spec(self, unit: float = 1.0) -> Connector:
        return connector(
            self.setups, self.min_i, self.max_i, self.setup_s * unit, self.delay_s * unit
        )


CASES = {
    # Capacity 2, set-ups 12, scale-out 5: 0 and 1 set up at once; 2-5 wait, and the first to
    # wait starts a scale-out. t=5: an instance joins, 2 and 3 begin; 4 and 5 still wait, so the
    # next scale-out starts at once. t=10: the third joins, 4 and 5 begin.
    "scale-outs serve the queue": Case(
        2, 1, 3, 12, 5, (0,) * 6,
        ((0, 12, DONE),) * 2 + ((5, 17, DONE),) * 2 + ((10, 22, DONE),) * 2,
        joins=(5, 10),
    ),
    # The same at max_instances 2: no second scale-out; 4 and 5 wait for 0 and 1 to end at 12.
    "at max instances a set-up's end serves it": Case(
        2, 1, 2, 12, 5, (0,) * 6,
        ((0, 12, DONE),) * 2 + ((5, 17, DONE),) * 2 + ((12, 24, DONE),) * 2,
        joins=(5,),
    ),
    # Capacity 4, four connections: none waits, so no scale-out although max_instances is 10.
    "nothing waits, nothing scales": Case(
        4, 1, 10, 3, 1, (0,) * 4, ((0, 3, DONE),) * 4, joins=()
    ),
    # Capacity 1 per instance, set-ups 6, scale-out 4; arrivals at 0, 1, 2, 3. 1 waits: a
    # scale-out starts at 1; 2 and 3 wait too but start none (one is pending). t=5: it joins, 1
    # begins, 2 and 3 still wait: the next starts. t=6: 0 ends, 2 begins (first in, first out).
    # t=9: the third instance joins, 3 begins.
    "one scale-out at a time, first in first out": Case(
        1, 1, 3, 6, 4, (0, 1, 2, 3),
        ((0, 6, DONE), (5, 11, DONE), (6, 12, DONE), (9, 15, DONE)),
        joins=(5, 9),
    ),
    # Capacity 1, max 2, set-ups 4, scale-out 2: 1 waits, the instance joins at 2. At 10 the
    # connector is idle and stays at 2 instances: 2 and 3 begin at once.
    "it never scales in": Case(
        1, 1, 2, 4, 2, (0, 0, 10, 10),
        ((0, 4, DONE), (2, 6, DONE), (10, 14, DONE), (10, 14, DONE)),
        joins=(2,),
    ),
    # Capacity 1, set-ups 4, clients give up 7 after they arrive. 1 begins at 4 when 0 ends and
    # gives up at 7, mid-set-up: its place goes to 2 (waiting since 5), which ends at 11 < 12.
    "a set-up given up frees its place": Case(
        1, 1, 1, 4, 1, (0, 0, 5),
        ((0, 4, DONE), (4, 7, GAVE_UP), (7, 11, DONE)),
        joins=(),
        timeout_s=7,
    ),
}  # fmt: skip


def object_driver(case: Case) -> tuple[list, list[float], int]:
    """The object under the smallest event loop: a heap of (time, order scheduled, event)."""
    cx = ConnectorState(case.spec())
    heap, seq = [], itertools.count()
    start: dict[int, float] = {}
    end: dict[int, tuple[float, str]] = {}
    joins = []

    def at(t, *event):
        heappush(heap, (t, next(seq), event))

    def begin(now, conns):
        for c in conns:
            start[c] = now
            at(now + case.setup_s, DONE, c)

    def maybe_scale(now):
        if cx.begin_scale_out():
            at(now + case.delay_s, "join")

    for i, t in enumerate(case.opens):
        at(t, "open", i)
    while heap:
        now, _, (kind, *args) = heappop(heap)
        if kind == "open":
            if case.timeout_s is not None:
                at(now + case.timeout_s, GAVE_UP, args[0])
            begin(now, cx.request(args[0]))
        elif kind == "join":
            joins.append(now)
            begin(now, cx.instance_joined())
        elif args[0] not in end:  # a set-up's end, or a give-up, of a connection still there
            end[args[0]] = (now, kind)
            begin(now, cx.setup_done(args[0]) if kind == DONE else cx.give_up(args))
        maybe_scale(now)
    rows = [(start.get(i), *end[i]) for i in range(len(case.opens))]
    return rows, joins, cx.instances


@pytest.mark.parametrize("name", CASES)
def test_the_object_alone_gives_the_hand_computed_times(name):
    case = CASES[name]
    instances = case.min_i + len(case.joins)
    assert object_driver(case) == (list(case.expect), list(case.joins), instances)


def engine_driver(case: Case, engine: str):
    """One instance per connection, arriving at its time; it opens that one connection and
    nothing else takes time, so database init lasts exactly the queue wait and the set-up."""
    waves = Counter(case.opens)
    sc = scenario(
        {
            "fleet.instances": len(case.opens),
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": t, "count": n} for t, n in sorted(waves.items())],
            "pool.connect_timeout_s": case.timeout_s or 1000.0,
            "connector.min_instances": case.min_i,
            "connector.max_instances": case.max_i,
            "connector.setups_per_instance": case.setups,
            "connector.setup_s": const(case.setup_s),
            "connector.scale_up_delay_s": const(case.delay_s),
        }
    )
    return run_one(sc, 0, engine=engine, timeline=engine == "reference")


@pytest.mark.parametrize("name", CASES)
def test_the_engines_give_the_hand_computed_times(engine, name):
    # The readable engine drives the object; the fast one keeps a compiled twin of it
    # (tests/test_footprint.py), held to the same cases here.
    case = CASES[name]
    rep = engine_driver(case, engine)
    cols = rep.attempts
    order = sorted(range(len(cols["instance"])), key=lambda k: cols["instance"][k])
    for k, (start, end, how) in zip(order, case.expect, strict=True):
        ends_at = cols["db_init_start_s"][k] + cols["db_init_s"][k]
        assert ends_at == end, (k, cols)
        if how == DONE:
            assert cols["outcome"][k] == Outcome.READY
            assert end - case.setup_s == start  # it waited until then
        else:
            assert cols["outcome"][k] == Outcome.ERROR  # a connect timeout
    assert rep.connector_instances_end == case.min_i + len(case.joins)
    if rep.timeline is not None:  # the readable engine's: sampled at every change
        counts = [case.min_i, *rep.timeline["connector_instances"]]
        grew = [t for t, a, b in zip(rep.timeline["t"], counts, counts[1:], strict=False) if b > a]
        assert grew == list(case.joins)


UNIT_S = 0.2  # one unit of a case in the emulator's real time
EARLY_S, LATE_S = 0.01, 0.15  # a timer never fires early beyond clock resolution; late, a little


def _near(seen_s: float | None, units: float | None) -> bool:
    if seen_s is None or units is None:
        return seen_s is None and units is None
    return units * UNIT_S - EARLY_S <= seen_s <= units * UNIT_S + LATE_S


async def _emulator_case(case: Case):
    log = io.StringIO()
    model = ConnectorModel(case.spec(UNIT_S), np.random.default_rng(0), log)

    async def client(open_units: float):
        await asyncio.sleep(max(0.0, model.t0 + open_units * UNIT_S - time.monotonic()))
        conn = Connection(time.monotonic())
        timeout = None if case.timeout_s is None else case.timeout_s * UNIT_S
        try:
            await asyncio.wait_for(model.setup(conn), timeout)
            how, ended = DONE, conn.set_up
        except TimeoutError:
            how, ended = GAVE_UP, time.monotonic()
        placed = None if conn.placed is None else conn.placed - model.t0
        return placed, ended - model.t0, how

    rows = await asyncio.gather(*(client(t) for t in case.opens))
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    return rows, lines, model.state


@pytest.fixture(scope="module")
def emulated():
    """Every case at once on one event loop, each with a connector of its own (about 5 s)."""

    async def main():
        runs = await asyncio.gather(*(_emulator_case(c) for c in CASES.values()))
        return dict(zip(CASES, runs, strict=True))

    return asyncio.run(main())


@pytest.mark.parametrize("name", CASES)
def test_the_emulator_gives_the_hand_computed_times(emulated, name):
    case = CASES[name]
    rows, lines, state = emulated[name]
    for (placed, ended, how), (start, end, want) in zip(rows, case.expect, strict=True):
        assert how == want and _near(placed, start) and _near(ended, end), (rows, case.expect)
    joins = [x["t_s"] for x in lines if x["event"] == "scale_out"]
    assert len(joins) == len(case.joins)
    assert all(_near(t, j) for t, j in zip(joins, case.joins, strict=True)), joins
    assert (state.instances, state.in_setup, state.queued) == (case.min_i + len(case.joins), 0, 0)


# -- the whole emulator, over TCP, with a stand-in upstream ---------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
    writer.close()


def test_the_proxy_relays_when_the_connector_lets_a_set_up_end():
    """Case "scale-outs serve the queue" through the proxy: six clients connect and send 8 bytes
    that are not a PostgreSQL start-up; each hears them back from an echo upstream once its
    set-up ended (and the proxy dialled). The log's ``queued`` after each join is who still
    waits: 2, then 0 (docs/calibration.md reads the next scale-out's start from it)."""
    case = CASES["scale-outs serve the queue"]

    async def main():
        upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
        log = io.StringIO()
        port = upstream.sockets[0].getsockname()[1]
        emu = Emulator(case.spec(UNIT_S), ("127.0.0.1", 0), ("127.0.0.1", port), log_stream=log)
        await emu.start()
        serving = asyncio.ensure_future(emu.serve())
        t0 = emu.model.t0

        async def client():
            reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
            writer.write(b"not a pg")
            assert await reader.readexactly(8) == b"not a pg"
            writer.close()
            return time.monotonic() - t0

        try:
            return await asyncio.gather(*(client() for _ in case.opens)), log
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            upstream.close()

    heard, log = asyncio.run(main())
    for seen, (_, end, _) in zip(sorted(heard), case.expect, strict=True):
        assert end * UNIT_S <= seen <= end * UNIT_S + LATE_S, heard
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    outs = [x for x in lines if x["event"] == "scale_out"]
    assert [(x["instances"], x["busy"], x["queued"]) for x in outs] == [(2, 4, 2), (3, 6, 0)]
    assert [x["stage"] for x in lines if x["event"] == "connection"] == ["other"] * 6
