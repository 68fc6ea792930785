"""Rules of docs/model.md that must hold in every replication, checked by watching the engine's own
events on scenarios with random durations (where hand-computed cases cannot reach)."""

from __future__ import annotations

from builders import comparable, scenario, uniform
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.engine import HELD, Engine
from sim.engines import run_one


class Watched(Engine):
    """The engine, noting when each connection started and when one was established too late."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.opened_s: dict = {}
        self.late: list[tuple[float, float]] = []  # (started, established)

    def open_conn(self, inst, pool, counted=True, awaited=True) -> None:
        super().open_conn(inst, pool, counted, awaited)
        self.opened_s[next(reversed(inst.conns))] = self.now

    def accept_done(self, conn) -> None:
        super().accept_done(conn)
        started = self.opened_s[conn]
        if conn.state == HELD and self.now - started > self.sc.pool.connect_timeout_s:
            self.late.append((started, self.now))


def late_connections(sc, seed: int) -> list[tuple[float, float]]:
    eng = Watched(sc, seed)
    eng.run()
    return eng.late


# A failed "hold" pool start leaves its other connections running (stragglers); the instance may
# retry and become ready before its deadline, and a straggler with a long set-up is then still in
# flight when its connect timeout comes. docs/model.md: a connection "not established within
# pool.connect_timeout_s of its start" is given up, straggler or not. Found by a random search
# (1 replication in 20,000 of such scenarios); seed 4097 of this one has it (with the random
# source of sim.streams: an engine that ignored a straggler's connect timeout once init was over
# establishes one late there).
STRAGGLER = {
    "fleet.instances": 8,
    "fleet.arrival": "uniform",
    "fleet.window_s": 15.0,
    "pool.min_size": 4,
    "pool.held_when_ready": 2,
    "pool.on_failure": "hold",
    "pool.retry_backoff_s": 2.0,
    "pool.connect_timeout_s": 20.0,
    "startup.db_init_timeout_s": 20.0,
    "connector.setups_per_instance": 2,
    "connector.setup_s": {"dist": "empirical", "values": [0.5] * 6 + [15.0]},
    "connector.scale_up_delay_s": uniform(5.0, 30.0),
    "database.max_connections": 10,
}


def test_a_straggler_of_a_failed_hold_pool_still_times_out():
    assert late_connections(scenario(STRAGGLER), seed=4097) == []


# The random search that found the straggler, kept in the suite: Hypothesis varies the seed and the
# fields that decide whether stragglers exist, and shrinks any failure to a small case.
@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    connect_timeout_s=st.sampled_from([2.0, 6.0, 20.0]),
    retry_backoff_s=st.sampled_from([0.0, 0.5, 2.0]),
    on_failure=st.sampled_from(["hold", "close"]),
    start=st.sampled_from(["asyncpg", "concurrent", "background", "workers"]),
    max_instances=st.integers(1, 4),
)
@example(
    seed=4097,
    connect_timeout_s=20.0,
    retry_backoff_s=2.0,
    on_failure="hold",
    start="asyncpg",
    max_instances=10,
)
def test_no_connection_is_established_after_its_connect_timeout(
    seed, connect_timeout_s, retry_backoff_s, on_failure, start, max_instances
):
    sc = scenario(
        {
            **STRAGGLER,
            "pool.connect_timeout_s": connect_timeout_s,
            "pool.retry_backoff_s": retry_backoff_s,
            "pool.on_failure": on_failure,
            "pool.start": start,
            "connector.max_instances": max_instances,
        }
    )
    assert late_connections(sc, seed) == []


def test_watching_changes_nothing(engine):
    # The watch needs the readable engine's events; the fast engine writes the same records.
    sc = scenario(STRAGGLER)
    watched = Watched(sc, 3).run()
    assert comparable(watched.attempts) == comparable(run_one(sc, 3, engine=engine).attempts)
