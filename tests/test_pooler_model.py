"""PgBouncer in front of the database as a rule of the model (docs/model.md, "A pooler in front of
the database"): hand-computed cases with constant durations, then the rules' object
(:class:`sim.pooler.PoolerState`) alone.

Each comment is the hand computation. Connector set-ups take no time, so a connection reaches
PgBouncer when it is opened; a server connection takes ``accept_s`` 0.25 s. Times are sums of
binary fractions and compared with ``==``, except a janitor's run (its phase, drawn once per
replication, plus a multiple of ⅓ s).
"""

from __future__ import annotations

import math

import pytest
from builders import const, scenario

from sim.engine import Engine
from sim.engines import choose, run_one
from sim.errors import UsageError
from sim.pooler import (
    JANITOR_S,
    Expire,
    Grant,
    Launch,
    Pooler,
    PoolerState,
    Refuse,
    Wake,
    refuse_unmodelled,
)
from sim.records import Outcome, Reason

ENGINES = ["reference", "fast"]

# Four instances of two connections (asyncpg's start: the first alone, then the second), one
# second of init queries, a pool of two server connections.
FOUR_BY_TWO = {
    "fleet.instances": 4,
    "pool.min_size": 2,
    "pool.held_when_ready": 0,
    "startup.init_queries_s": const(1.0),
    "database.accept_s": const(0.25),
    "pooler.kind": "pgbouncer",
    "pooler.default_pool_size": 2,
}


def janitor_after(sc, t: float) -> float:
    """The janitor's first run after ``t`` in replication 0 of seed 0: its phase is that
    replication's one draw of the ``pooler_janitor`` role."""
    phase_s = Engine(sc, 0).pooler.janitor_phase_s
    assert 0 <= phase_s < JANITOR_S
    return phase_s + (math.floor((t - phase_s) / JANITOR_S) + 1) * JANITOR_S


def rows(sc, engine: str) -> list[dict]:
    cols = run_one(sc, 0, engine=engine).attempts
    out = [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]
    return sorted(out, key=lambda r: (r["instance"], r["attempt"]))


@pytest.mark.parametrize("engine", ENGINES)
def test_refusals_become_waits_for_a_server(engine):
    # t=0: the four first connections reach PgBouncer; no server login yet, so they wait to log
    # in and PgBouncer opens server 1 (one at a time). t=0.25: it logs in; all four are logged in
    # and each instance opens its second connection, logged in at once. Instance 0's queries take
    # server 1 (idle): [0.25, 1.25). Instances 1-3 wait; server 2 opens at 0.25, logs in at 0.5:
    # instance 1's queries [0.5, 1.5). The pool is full (2). t=1.25: instance 0 is done and gives
    # its connections up (held_when_ready 0): server 1 goes to instance 2, [1.25, 2.25); t=1.5:
    # server 2 to instance 3, [1.5, 2.5). No 53300: two slots of the database are used.
    sc = scenario(FOUR_BY_TWO)
    got = rows(sc, engine)
    assert [r["db_init_s"] for r in got] == [1.25, 1.5, 2.25, 2.5]
    assert {r["outcome"] for r in got} == {Outcome.READY}
    rep = run_one(sc, 0, engine=engine)
    assert rep.peak_db_connections == 2 and rep.connection_attempts == 8


@pytest.mark.parametrize("engine", ["reference", "fast"])  # no pooler: both engines run it
def test_without_a_pooler_the_same_fleet_meets_53300(engine):
    # The same fleet straight to a database of 5 slots: the four first connections take four
    # slots at 0.25; at 0.5 instance 0's second takes the fifth, instance 1's gets 53300 and its
    # exit frees a slot that instance 2's second takes; instance 3's gets 53300.
    sc = scenario(
        {k: v for k, v in FOUR_BY_TWO.items() if not k.startswith("pooler.")}
        | {"database.max_connections": 5}
    )
    got = rows(sc, engine)
    assert [r["outcome"] for r in got] == [Outcome.READY, Outcome.REJECTED] * 2
    assert [r["reason"] for r in got[1::2]] == [Reason.TOO_MANY_CLIENTS] * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_session_mode_keeps_the_server_with_a_ready_instance(engine):
    # held_when_ready 1: in session mode instances 0 and 1 keep their first connection, and with
    # it their server, for the rest of the run. Instances 2 and 3 wait from t=0.25; the janitor
    # (every ⅓ s, at a phase drawn once) disconnects them at its first run after 0.25 + 2 = 2.25.
    sc = scenario(FOUR_BY_TWO | {"pool.held_when_ready": 1, "pooler.query_wait_timeout": 2.0})
    got = rows(sc, engine)
    assert [r["db_init_s"] for r in got[:2]] == [1.25, 1.5]
    assert [r["outcome"] for r in got[2:]] == [Outcome.ERROR] * 2
    assert {r["reason"] for r in got[2:]} == {Reason.QUERY_WAIT_TIMEOUT}
    fired = janitor_after(sc, 2.25)
    assert 2.25 < fired <= 2.25 + JANITOR_S
    assert [r["db_init_s"] for r in got[2:]] == [pytest.approx(fired)] * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_transaction_mode_gives_the_server_back_after_the_queries(engine):
    # The same with pool_mode transaction: the server goes back when each instance's queries end,
    # and the connection's return to its pool (the reset) asks for one again, behind the clients
    # already waiting. t=1.25: instance 0's queries end; its server goes to instance 2 (queries
    # [1.25, 2.25)), its reset queues. t=1.5: instance 1's server goes to instance 3 ([1.5, 2.5)),
    # its reset queues. t=2.25: instance 2's server serves instance 0's reset (no time), then
    # instance 1's, then instance 2's own: all three done at 2.25; instance 3 at 2.5. Ready
    # instances keep their client connection only.
    sc = scenario(
        FOUR_BY_TWO
        | {
            "pool.held_when_ready": 1,
            "pooler.query_wait_timeout": 2.0,
            "pooler.pool_mode": "transaction",
        }
    )
    got = rows(sc, engine)
    assert [r["db_init_s"] for r in got] == [2.25, 2.25, 2.25, 2.5]
    assert [r["connections_held"] for r in got] == [2] * 4


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("release_s", "second"), [(0.0, Outcome.READY), (0.25, Outcome.TIMEOUT)])
def test_an_exited_instance_keeps_its_server_until_pgbouncer_notices(engine, release_s, second):
    # A pool of one server; instance 0 starts at 0, instance 1 at 0.6, each with a deadline of
    # 0.7 s and 0.5 s of queries. Instance 0 logs in at 0.25 (the server's login), its queries
    # [0.25, 0.75) outlive its deadline: it exits at 0.7. Instance 1 waits for the server from 0.6.
    # Noticed at once, the exit gives the server to instance 1 at 0.7: queries [0.7, 1.2), ready
    # (0.6 s of init). Noticed exit_release_s = 0.25 s late, the server is free only at 0.95:
    # instance 1's deadline (1.3) comes before its queries' end (1.45).
    sc = scenario(
        {
            "fleet.instances": 2,
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 0.6, "count": 1}],
            "pool.min_size": 1,
            "pool.held_when_ready": 0,
            "startup.init_queries_s": const(0.5),
            "startup.db_init_timeout_s": 0.7,
            "database.accept_s": const(0.25),
            "restart.exit_release_s": release_s,
            "pooler.kind": "pgbouncer",
            "pooler.default_pool_size": 1,
        }
    )
    got = rows(sc, engine)
    assert [r["outcome"] for r in got] == [Outcome.TIMEOUT, second]
    assert [r["db_init_s"] for r in got] == pytest.approx([0.7, 0.6 if release_s == 0 else 0.7])


@pytest.mark.parametrize("engine", ENGINES)
def test_max_client_conn_refuses_a_client(engine):
    # One connection each; PgBouncer takes one client. Instance 0's gets in (server at 0.25,
    # queries 0.5: 0.75); instance 1's is refused at once: outcome error, reason max_client_conn.
    sc = scenario(
        {
            "fleet.instances": 2,
            "startup.init_queries_s": const(0.5),
            "database.accept_s": const(0.25),
            "pooler.kind": "pgbouncer",
            "pooler.max_client_conn": 1,
        }
    )
    got = rows(sc, engine)
    assert [(r["outcome"], r["reason"], r["db_init_s"]) for r in got] == [
        (Outcome.READY, "", 0.75),
        (Outcome.ERROR, Reason.MAX_CLIENT_CONN, 0.0),
    ]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("query_wait_timeout", "reason", "db_init_s"),
    [
        # No query_wait_timeout: the clients wait to log in until asyncpg's own timeout, 1 s.
        (0.0, Reason.CONNECT_TIMEOUT, 1.0),
        # 0.5 s: the janitor's first run after 0.5 s of waiting disconnects them.
        (0.5, Reason.QUERY_WAIT_TIMEOUT, None),
    ],
)
def test_clients_wait_to_log_in_while_server_logins_fail(
    engine, query_wait_timeout, reason, db_init_s
):
    # accept_s 0.5 against server_connect_timeout 0.25: the first server connection fails at
    # 0.25 (disconnecting nobody: it is no server error) and none opens before 15.25
    # (server_login_retry), so both clients wait to log in; no database slot is ever taken.
    sc = scenario(
        {
            "fleet.instances": 2,
            "pool.connect_timeout_s": 1.0,
            "database.accept_s": const(0.5),
            "pooler.kind": "pgbouncer",
            "pooler.server_connect_timeout": 0.25,
            "pooler.query_wait_timeout": query_wait_timeout,
        }
    )
    got = rows(sc, engine)
    assert [(r["outcome"], r["reason"]) for r in got] == [(Outcome.ERROR, reason)] * 2
    expected = janitor_after(sc, 0.5) if db_init_s is None else db_init_s
    assert [r["db_init_s"] for r in got] == [pytest.approx(expected)] * 2
    assert run_one(sc, 0, engine=engine).peak_db_connections == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_the_reserve_pool_opens_after_reserve_pool_timeout(engine):
    # Pool 1, reserve 1 after 0.5 s. Server 1 logs in at 0.25 and runs instance 0's 2 s queries
    # (kept: session, held_when_ready 1). Instance 1 waits from 0.25; at 0.75 it has waited 0.5 s:
    # server 2 opens, logs in at 1.0, its queries end at 3.0.
    sc = scenario(
        {
            "fleet.instances": 2,
            "startup.init_queries_s": const(2.0),
            "database.accept_s": const(0.25),
            "pooler.kind": "pgbouncer",
            "pooler.default_pool_size": 1,
            "pooler.reserve_pool_size": 1,
            "pooler.reserve_pool_timeout": 0.5,
        }
    )
    got = rows(sc, engine)
    assert [r["db_init_s"] for r in got] == [2.25, 3.0]
    assert run_one(sc, 0, engine=engine).peak_db_connections == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_phase_runs_its_work_on_a_server(engine):
    # One database-init phase of two concurrent connections and 1 s of work on each of two
    # instances, a pool of one server: instance 1's work waits for instance 0's phase to end
    # (keep = false gives its connections, and the server, back): 1.25 and 2.25.
    phase = {
        "name": "init",
        "db_init": True,
        "connections": 2,
        "order": "concurrent",
        "duration_s": const(1.0),
        "keep": False,
    }
    sc = scenario(
        {
            "fleet.instances": 2,
            "startup.phases": [phase],
            "database.accept_s": const(0.25),
            "pooler.kind": "pgbouncer",
            "pooler.default_pool_size": 1,
        }
    )
    assert [r["db_init_s"] for r in rows(sc, engine)] == [1.25, 2.25]


def test_the_engines_refuse_what_the_rule_does_not_cover():
    pooler = Pooler(kind="pgbouncer")
    refuse_unmodelled(pooler, 0, False)  # start-up through PgBouncer: modelled
    with pytest.raises(UsageError, match=r"\[traffic\]"):
        refuse_unmodelled(pooler, 0, True)
    with pytest.raises(UsageError, match="warm_instances"):
        refuse_unmodelled(pooler, 2, False)
    refuse_unmodelled(Pooler(), 2, True)  # no pooler: nothing to refuse


# -- the rules' object alone ----------------------------------------------------------------------


def pgbouncer(**settings) -> PoolerState:
    return PoolerState(Pooler(kind="pgbouncer", query_wait_timeout=0, **settings))


def test_servers_open_one_at_a_time_up_to_the_pool_size():
    pb = pgbouncer(default_pool_size=2)
    assert pb.arrive("a", 0.0) == [Launch()] and pb.arrive("b", 0.0) == []
    assert pb.server_up(0.25) == [Grant("a"), Grant("b")]  # both log in; the server is idle
    assert pb.need_server("a", 0.25) == [Grant("a")]
    assert pb.need_server("b", 0.25) == [Launch()]  # the second server
    assert pb.arrive("c", 0.3) == [Grant("c")] and pb.need_server("c", 0.3) == []  # one at a time
    assert pb.server_up(0.5) == [Grant("b")]  # first in, first out; the pool is full now
    assert pb.servers == 2 and pb.waiting == 1
    assert pb.leave(["a"], 1.0) == [Grant("c")]  # session mode: a's server goes with a


def test_janitor_runs_decide_when_query_wait_timeout_fires():
    pb = PoolerState(Pooler(kind="pgbouncer", query_wait_timeout=1.0))
    (expire, launch) = pb.arrive("a", 0.5)  # the janitor's phase: 0
    assert launch == Launch() and expire == Expire("a", 5 * JANITOR_S)  # first run after 1.5
    assert pb.expire("a", 5 * JANITOR_S) == [Refuse("a", Reason.QUERY_WAIT_TIMEOUT)]
    assert pb.clients == 0
    exact = PoolerState(Pooler(kind="pgbouncer", query_wait_timeout=1.0))
    (expire, _) = exact.arrive("b", 0.0)
    assert expire.at_s == pytest.approx(4 / 3)  # a wait of exactly 1 s is not "longer than"
    late = PoolerState(Pooler(kind="pgbouncer", query_wait_timeout=1.0), janitor_phase_s=0.25)
    assert late.arrive("c", 0.0)[0] == Expire("c", 0.25 + 3 * JANITOR_S)


def test_a_failed_login_pauses_launches_and_fast_fails_new_clients():
    pb = pgbouncer(default_pool_size=2, server_login_retry=2.0)
    pb.arrive("a", 0.0)
    pb.server_up(0.25)
    pb.need_server("a", 0.25)  # a holds server 1
    pb.arrive("b", 0.25)
    assert pb.need_server("b", 0.25) == [Launch()]
    # Server 2 meets 53300; server 1 is open, so nobody is refused; no launch before 2.25.
    assert pb.server_failed(0.5, Reason.TOO_MANY_CLIENTS, kill=True) == [Wake(2.25)]
    assert pb.tick(2.25) == [Launch()]
    # It fails again; then a leaves: its server goes to b, and nobody waits any more.
    assert pb.server_failed(2.5, Reason.TOO_MANY_CLIENTS, kill=True) == [Wake(4.25)]
    assert pb.leave(["a"], 3.0) == [Grant("b")]
    # A new client asking while no server is open is refused at once (check_fast_fail).
    lone = pgbouncer(server_login_retry=2.0)
    lone.arrive("x", 0.0)
    lone.server_up(0.25)
    lone.leave(["x"], 0.5)  # the server stays open, idle
    lone.idle, lone.servers = 0, 0  # (as if it had been closed)
    lone.arrive("y", 1.0)
    assert lone.need_server("y", 1.0) == [Launch()]
    assert lone.server_failed(1.25, Reason.TOO_MANY_CLIENTS, kill=True) == [
        Refuse("y", Reason.TOO_MANY_CLIENTS),
    ]
    lone.arrive("z", 1.5)
    assert lone.need_server("z", 1.5) == [Refuse("z", Reason.SERVER_LOGIN_RETRY)]


def test_max_db_connections_caps_the_pool():
    pb = pgbouncer(default_pool_size=5, max_db_connections=1)
    pb.arrive("a", 0.0)
    pb.server_up(0.25)
    pb.arrive("b", 0.25)
    pb.need_server("a", 0.25)
    assert pb.need_server("b", 0.25) == [] and pb.servers == 1


def test_transaction_mode_returns_the_server_when_the_work_ends():
    pb = pgbouncer(default_pool_size=1, pool_mode="transaction")
    pb.arrive("a", 0.0)
    pb.server_up(0.25)
    pb.arrive("b", 0.25)
    pb.need_server("a", 0.25)
    assert pb.need_server("b", 0.25) == []
    assert pb.work_done("a", 1.25) == [Grant("b")] and pb.clients == 2
    session = pgbouncer(default_pool_size=1)
    session.arrive("a", 0.0)
    session.server_up(0.25)
    session.need_server("a", 0.25)
    assert session.work_done("a", 1.25) == [] and session.holds_server("a")


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("seed", range(4))
def test_invariants_through_pgbouncer(mode, seed):
    # Random durations and restarts: the database never holds more than the pool allows, and a
    # client never meets 53300 or server_login_retry (docs/model.md, rule 6: a pool that had one
    # server keeps it).
    sc = scenario(
        {
            "horizon_s": 60.0,
            "fleet.instances": 12,
            "fleet.arrival": "uniform",
            "fleet.window_s": 3.0,
            "pool.min_size": 3,
            "pool.held_when_ready": 2,
            "pool.connect_timeout_s": 5.0,
            "pool.retry_backoff_s": 0.5,
            "startup.db_init_timeout_s": 6.0,
            "startup.init_queries_s": {"dist": "exponential", "mean": 0.5},
            "connector.setup_s": {"dist": "exponential", "mean": 0.05},
            "database.max_connections": 6,
            "database.accept_s": {"dist": "exponential", "mean": 0.02},
            "restart.policy": "fixed",
            "restart.initial_backoff_s": 1.0,
            "pooler.kind": "pgbouncer",
            "pooler.pool_mode": mode,
            "pooler.max_client_conn": 30,
            "pooler.default_pool_size": 4,
            "pooler.reserve_pool_size": 4,
            "pooler.reserve_pool_timeout": 1.0,
            "pooler.server_connect_timeout": 0.03,
            "pooler.query_wait_timeout": 2.0,
        }
    )
    rep = run_one(sc, seed)
    assert rep.peak_db_connections <= 6  # pool 4 + reserve 4, but 6 slots: 53300 at the seventh
    reasons = set(rep.attempts["reason"])
    assert not reasons & {Reason.TOO_MANY_CLIENTS, Reason.SERVER_LOGIN_RETRY}, reasons


def test_a_pooler_behind_direct_vpc_egress_is_refused_not_simulated_past_it():
    # Direct VPC egress leads a connection straight to the database: the pooler would be skipped.
    sc = scenario({"egress.kind": "direct", "pooler.kind": "pgbouncer"})
    with pytest.raises(UsageError, match=r'egress\.kind = "direct"'):
        choose("reference", sc, 1)
