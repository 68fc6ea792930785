"""Rules of docs/model.md that must hold in every replication, checked by watching the engine's own
events on scenarios with random durations (where hand-computed cases cannot reach)."""

from __future__ import annotations

import numpy as np
from builders import scenario, uniform

from sim.engine import HELD, Engine, run_replication


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
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    eng = Watched(sc, rng)
    eng.run()
    return eng.late


# A failed "hold" pool start leaves its other connections running (stragglers); the instance may
# retry and become ready before its deadline, and a straggler with a long set-up is then still in
# flight when its connect timeout comes. docs/model.md: a connection "not established within
# pool.connect_timeout_s of its start" is given up, straggler or not. Found by a random search
# (1 replication in 20,000 of such scenarios); seed 5448 of this one has it.
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
    assert late_connections(scenario(STRAGGLER), seed=5448) == []


def test_no_connection_is_established_after_its_connect_timeout():
    sc = scenario({**STRAGGLER, "pool.connect_timeout_s": 6.0, "connector.max_instances": 3})
    for seed in range(200):
        assert late_connections(sc, seed) == [], seed


def test_watching_changes_nothing():
    sc = scenario(STRAGGLER)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(3)))
    watched = Watched(sc, rng).run()
    assert watched.attempts == run_replication(sc, 3).attempts
