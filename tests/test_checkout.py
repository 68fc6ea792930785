"""The pool after ready (docs/model.md, "Traffic after ready", rules 3 and 4) is one object,
``sim.checkout.PoolState``; these tests check it alone, by pure calls, each computed by hand.
tests/test_traffic.py checks it through the engines."""

from __future__ import annotations

import pytest

from sim.checkout import FILLER, FillerPause, HandOver, OpenConnection, PoolState
from sim.scenario import Pool
from sim.traffic import ADDER_BACKOFF_FIRST_S, ADDER_BACKOFF_MAX_S


def pool(growth="per_waiter", max_size=3, held=1, idle=("c1",), opening=0) -> PoolState:
    spec = Pool(min_size=1, max_size=max_size, held_when_ready=held, growth=growth)
    return PoolState(spec, idle=idle, opening=opening)


def test_idle_connections_go_first_in_first_out():
    p = pool(max_size=3, held=2, idle=("c1", "c2"))
    assert p.checkout("r1") == [HandOver("c1", "r1")]
    assert p.release("c1") == []  # idle again, behind c2
    assert p.checkout("r2") == [HandOver("c2", "r2")]
    assert p.checkout("r3") == [HandOver("c1", "r3")]
    assert (p.idle, p.busy, p.opening, p.total) == (0, 2, 0, 2)


def test_per_waiter_opens_its_own_up_to_max_size_then_queues():
    p = pool(max_size=3, idle=("c1",))
    assert p.checkout("r1") == [HandOver("c1", "r1")]
    assert p.checkout("r2") == [OpenConnection("r2")]
    assert p.checkout("r3") == [OpenConnection("r3")]
    assert p.total == 3
    assert p.checkout("r4") == []  # at max_size: queued
    assert (p.queued, p.waiting) == (1, ["r4"])
    # r3's own connection goes to r3, not to r4 who queued
    assert p.established("c3", "r3") == [HandOver("c3", "r3")]
    # a returned connection goes to the queue, never to r2 waiting for its own
    assert p.release("c1") == [HandOver("c1", "r4")]
    assert p.established("c2", "r2") == [HandOver("c2", "r2")]
    assert (p.idle, p.busy, p.queued, p.total) == (0, 3, 0, 3)


def test_per_waiter_failure_frees_its_place_and_fails_only_its_request():
    p = pool(max_size=2, idle=("c1",))
    p.checkout("r1")
    assert p.checkout("r2") == [OpenConnection("r2")]
    assert p.failed("r2") == []  # the caller fails r2 with the connection's reason
    assert p.total == 1
    assert p.checkout("r3") == [OpenConnection("r3")]


def test_a_connection_nobody_owns_goes_to_the_first_queued_else_idle():
    p = pool(max_size=2, held=2, idle=(), opening=2)
    assert p.total == 2
    assert p.checkout("r1") == [] and p.checkout("r2") == []  # at max: both queue
    assert p.established("c1", None) == [HandOver("c1", "r1")]
    assert p.established("c2", None) == [HandOver("c2", "r2")]
    assert p.release("c1") == []
    assert p.idle == 1


def test_a_queued_request_times_out_once_and_only_while_queued():
    p = pool(max_size=1, idle=("c1",))
    p.checkout("r1")
    assert p.checkout("r2") == []
    assert p.timeout("r2") is True
    assert p.timeout("r2") is False  # already gone
    assert p.release("c1") == []  # nobody queued: idle
    assert p.timeout("r1") is False  # it had its connection


def test_background_queues_and_one_filler_opens_one_at_a_time():
    # HikariCP's spike in small: 1 idle, max 3; three requests at once.
    p = pool("background", max_size=3, held=1, idle=("c1",))
    assert p.checkout("r1") == [HandOver("c1", "r1")]
    assert p.checkout("r2") == [OpenConnection(FILLER)]  # queued; the filler starts
    assert p.checkout("r3") == []  # queued; the filler is busy
    assert (p.queued, p.opening, p.total) == (2, 1, 2)
    assert p.release("c1") == [HandOver("c1", "r2")]  # freed first to the waiters
    # the filler's connection goes to r3; then nobody is queued but 0 idle < held_when_ready 1
    # and total 2 < 3: shouldContinueCreating holds, it opens one more
    assert p.established("c2", FILLER) == [HandOver("c2", "r3"), OpenConnection(FILLER)]
    assert p.established("c3", FILLER) == []  # idle 1 ≥ 1: it stops
    assert (p.idle, p.busy, p.opening, p.total) == (1, 2, 0, 3)


def test_background_filler_looks_again_after_each_connection():
    p = pool("background", max_size=4, held=1, idle=())
    assert p.checkout("r1") == [OpenConnection(FILLER)]
    assert p.checkout("r2") == []
    # established: to r1; r2 still queued, so it opens the next one
    assert p.established("c1", FILLER) == [HandOver("c1", "r1"), OpenConnection(FILLER)]
    assert p.release("c1") == [HandOver("c1", "r2")]
    # its second connection: nobody queued, idle 0 < 1 → idle, and 1 ≥ 1 → it stops
    assert p.established("c2", FILLER) == []
    assert (p.idle, p.busy, p.opening, p.total) == (1, 1, 0, 2)


def test_background_filler_stops_at_max_size():
    p = pool("background", max_size=1, held=1, idle=(), opening=1)
    assert p.checkout("r1") == []  # total 1 = max: no filler
    assert p.established("c1", None) == [HandOver("c1", "r1")]


def test_filler_pauses_10ms_doubling_to_5s_and_a_success_resets():
    p = pool("background", max_size=2, held=1, idle=())
    assert p.checkout("r1") == [OpenConnection(FILLER)]
    pauses = []
    for _ in range(12):
        (pause,) = p.failed(FILLER)
        pauses.append(pause.delay_s)
        assert p.total == 0
        assert p.resume() == [OpenConnection(FILLER)]
    assert pauses[:3] == [ADDER_BACKOFF_FIRST_S, 0.02, 0.04]
    assert pauses[-1] == ADDER_BACKOFF_MAX_S == 5.0 and max(pauses) == 5.0
    # to r1; then idle 0 < held 1 and total 1 < 2: the next one
    assert p.established("c1", FILLER) == [HandOver("c1", "r1"), OpenConnection(FILLER)]
    assert p.checkout("r2") == []  # queued behind the filler's connection
    assert p.failed(FILLER) == [FillerPause(ADDER_BACKOFF_FIRST_S)]  # reset by the success


def test_misuse_is_refused():
    p = pool(idle=())
    with pytest.raises(ValueError, match="no connection is opening"):
        p.established("c", None)
    with pytest.raises(ValueError, match="none checked out"):
        p.release("c")
    with pytest.raises(ValueError, match="without a pause"):
        p.resume()
