"""Start-up phases in the load harness (docs/model.md, "Start-up phases"), against a throwaway
PostgreSQL: the phases open real asyncpg connections, sleep their work and keep their bounds."""

from __future__ import annotations

import asyncio

import numpy as np
from builders import const
from throwaway_pg import PASSWORD

from loadtests.container import Gauge, Instance
from sim import scenario as scenarios

MIGRATIONS = {
    "name": "migrations",
    "db_init": False,
    "connections": 1,
    "keep": False,
    "on_failure": "continue",
}


def _scenario(phases: list[dict], held: int):
    # held_when_ready apart from min_size: the model's own fields, no asyncpg setting
    return (
        scenarios.resolve("gang-allocation")
        .in_model_terms()
        .with_overrides(
            {
                "startup.before_db_s": const(0.0),
                "startup.after_db_s": const(0.0),
                "startup.db_init_timeout_s": 20.0,
                "pool.held_when_ready": held,
                "startup.phases": phases,
            }
        )
    )


def _attempt(pg_server, sc):
    async def main():
        gauge = Gauge()
        inst = Instance(sc, pg_server.dsn, np.random.default_rng(0), gauge, (PASSWORD,))
        res = await inst.attempt(1)
        await asyncio.sleep(0.2)
        on_server = pg_server.harness_connections()
        await inst.close()
        return res, on_server

    return asyncio.run(main())


def test_a_two_phase_start_up_keeps_what_its_phases_keep(pg_server):
    # Migrations' connection is closed when it ends; the table check opens two at once and keeps
    # them; the ready instance holds those two.
    check = {"name": "table_check", "connections": 2, "order": "concurrent"}
    res, on_server = _attempt(pg_server, _scenario([MIGRATIONS, check], held=2))
    assert (res.outcome, res.reason, res.phase) == ("ready", "", "")
    assert res.connection_attempts == 3 and res.connections_held == 2
    assert res.phase_start_s == res.before_db_s  # a ready attempt: when database init began
    assert on_server == 2
    assert pg_server.wait_no_harness_connections() == 0


def test_a_phase_that_outlasts_its_own_deadline_times_out_by_it(pg_server):
    # The table check's work (5 s) outlasts its 0.3 s bound, well inside the 20 s deadline.
    check = {
        "name": "table_check",
        "connections": 1,
        "deadline_s": 0.3,
        "duration_s": const(5.0),
    }
    res, _ = _attempt(pg_server, _scenario([MIGRATIONS, check], held=1))
    assert (res.outcome, res.reason, res.phase) == ("timeout", "phase_deadline", "table_check")
    assert 0.3 <= res.db_init_s < 2.0
    assert res.phase_start_s >= res.before_db_s  # it began with database init
    assert pg_server.wait_no_harness_connections() == 0
