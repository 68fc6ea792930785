"""Direct VPC egress (docs/model.md, "Direct VPC egress"), hand-computed.

Each test's comment is the computation, following the rules of docs/model.md. Durations are
binary fractions or whole seconds, so times are exact and the checks use ``==``. The base scenario
(tests/builders.py) is one instance, zero durations, room everywhere, no retry and no restart.
The hand-computed cases run on both engines.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import asyncpg
import pytest
from builders import const, scenario

from loadtests import safety
from loadtests.emulator import Emulator
from sim.decision import COST_ORDER
from sim.engines import run_one, unsupported
from sim.errors import ScenarioError
from sim.records import Outcome, Reason
from sim.remedies import direct_egress_change
from sim.scenario import from_dict, loads, resolve

ENGINES = ["reference", "fast"]


def rows(sc, engine: str, seed: int = 0) -> list[dict]:
    """The attempt records in the order they ended, one dict each."""
    cols = run_one(sc, seed, engine=engine).attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def direct(ready_s: float, **more) -> dict:
    return {"egress.kind": "direct", "egress.ready_s": const(ready_s), **more}


# A connector that would show itself if it were used: one set-up at a time, each 100 s.
SLOW_CONNECTOR = {"connector.setups_per_instance": 1, "connector.setup_s": const(100.0)}


@pytest.mark.parametrize("engine", ENGINES)
def test_connections_wait_for_the_attempts_egress_then_go_straight_to_the_database(engine):
    # The attempt starts at 0; before_db 1: database init at 1. Its egress is usable at 0 + 5.
    # asyncpg, min_size 2: the first connection opens at 1, waits to 5, accept 0.25: held at 5.25;
    # the second opens at 5.25 (egress ready: straight on), held at 5.5; queries 0.5: init done at
    # 6.0, db_init_s 5.0; after_db 1: ready at 7.0. The slow connector is never used (it would
    # have taken 200 s), and there is none at the end.
    sc = scenario(
        {
            **direct(5.0),
            **SLOW_CONNECTOR,
            "startup.before_db_s": const(1.0),
            "startup.init_queries_s": const(0.5),
            "startup.after_db_s": const(1.0),
            "database.accept_s": const(0.25),
            "pool.min_size": 2,
            "pool.held_when_ready": 2,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    [row] = rows(sc, engine)
    assert row["outcome"] == Outcome.READY
    assert (row["db_init_start_s"], row["db_init_s"], row["ready_s"]) == (1.0, 5.0, 7.0)
    assert (row["connection_attempts"], row["connections_held"]) == (2, 2)
    assert rep.fleet_ready_s == 7.0
    assert rep.connector_instances_end == 0
    assert rep.peak_db_connections == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_each_instance_waits_for_its_own_egress_not_for_a_shared_scale_out(engine):
    # 30 instances at t = 0, each one connection, egress usable at 5: each connection waits to 5,
    # held at 5 (accept 0); each init lasts 5. Through the one-slot connector of 100 s set-ups
    # the last would have waited 3,000 s.
    sc = scenario({**direct(5.0), **SLOW_CONNECTOR, "fleet.instances": 30})
    rep = run_one(sc, 0, engine=engine)
    assert [r["db_init_s"] for r in rows(sc, engine)] == [5.0] * 30
    assert rep.fleet_ready_s == 5.0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_connect_timeout_before_the_egress_is_ready_fails_and_a_restart_waits_anew(engine):
    # Egress usable 5 s after each attempt's start; before_db 1; connect timeout 3. Attempt 1:
    # connection at 1, timeout at 4 < 5: error, connect_timeout, db_init_s 3. Restart after 0.5:
    # attempt 2 starts at 4.5, a new draw: egress at 9.5; connection at 5.5, timeout at 8.5: the
    # same again. max_restarts 1: two records, never ready.
    sc = scenario(
        {
            **direct(5.0),
            "startup.before_db_s": const(1.0),
            "pool.connect_timeout_s": 3.0,
            "restart.policy": "fixed",
            "restart.initial_backoff_s": 0.5,
            "restart.max_restarts": 1,
        }
    )
    got = [(r["start_s"], r["outcome"], r["reason"], r["db_init_s"]) for r in rows(sc, engine)]
    assert got == [
        (0.0, Outcome.ERROR, Reason.CONNECT_TIMEOUT, 3.0),
        (4.5, Outcome.ERROR, Reason.CONNECT_TIMEOUT, 3.0),
    ]
    assert math.isinf(run_one(sc, 0, engine=engine).fleet_ready_s)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_connect_timeout_at_the_instant_the_egress_is_ready_wins(engine):
    # before_db 2, connect timeout 3: the connection opens at 2, its timeout (scheduled when it
    # opened) at 5, the egress too at 5: the timeout was scheduled first and gives it up.
    sc = scenario({**direct(5.0), "startup.before_db_s": const(2.0), "pool.connect_timeout_s": 3.0})
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (
        Outcome.ERROR,
        Reason.CONNECT_TIMEOUT,
        3.0,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_the_deadline_ends_an_attempt_still_waiting_for_its_egress(engine):
    # db_init_timeout 4, egress at 5, before_db 0: the connection waits from 0; the deadline at
    # 4 ends the attempt: timeout, deadline, db_init_s 4.
    sc = scenario({**direct(5.0), "startup.db_init_timeout_s": 4.0})
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (
        Outcome.TIMEOUT,
        Reason.DEADLINE,
        4.0,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_the_subnet_bounds_the_fleet_and_the_rest_never_start(engine):
    # 7 addresses, 2 per instance: 3 instances. One is warm (it holds its 1 connection from 0),
    # so 2 of the 5 cold starts get addresses: instances 0 and 1, ready at 5 (egress 5); 2, 3, 4
    # never start: no record, never ready, the fleet never ready.
    sc = scenario(
        {
            **direct(5.0),
            "fleet.instances": 5,
            "fleet.warm_instances": 1,
            "egress.subnet_addresses": 7,
            "egress.addresses_per_instance": 2,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert [(r["instance"], r["db_init_s"]) for r in rows(sc, engine)] == [(0, 5.0), (1, 5.0)]
    assert rep.instances_ready == 2
    assert math.isinf(rep.fleet_ready_s)
    assert rep.peak_db_connections == 3  # the warm one's and the two started


@pytest.mark.parametrize("engine", ENGINES)
def test_path_faults_still_apply_and_do_not_wait_for_the_egress(engine):
    # The path closes the connection 0.25 s after it opens at 0 (p_fault 1), before the egress
    # at 5: error, closed, db_init_s 0.25.
    sc = scenario({**direct(5.0), "path.fault": "closed", "path.fail_after_s": const(0.25)})
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (
        Outcome.ERROR,
        Reason.CLOSED,
        0.25,
    )


def test_off_by_default_no_draw_and_the_same_records():
    # kind "connector": the egress fields are not read and nothing is drawn from their role.
    base = {
        "fleet.instances": 4,
        "connector.setups_per_instance": 1,
        "connector.setup_s": {"dist": "exponential", "mean": 0.5},
    }
    a = run_one(scenario(base), 3)
    b = run_one(scenario({**base, "egress.ready_s": const(99.0)}), 3)
    assert a.attempts == b.attempts
    assert unsupported(scenario(base)) is None


def test_direct_egress_runs_on_the_fast_engine_too():
    assert unsupported(scenario(direct(5.0))) is None


@pytest.mark.parametrize(
    ("egress", "fleet", "field"),
    [
        ({"kind": "nat"}, {}, "egress.kind"),
        ({"subnet_addresses": 0}, {}, "egress.subnet_addresses"),
        ({"addresses_per_instance": 0}, {}, "egress.addresses_per_instance"),
        ({"ready_s": {"dist": "constant", "value": -1.0}}, {}, "egress.ready_s"),
        (
            {"kind": "direct", "subnet_addresses": 4},
            {"instances": 5, "warm_instances": 3},
            "fleet.warm_instances",
        ),
    ],
)
def test_bad_egress_values_are_refused_by_name(egress, fleet, field):
    with pytest.raises(ScenarioError) as err:
        from_dict({"name": "bad", "egress": egress, "fleet": fleet}, "bad.toml")
    assert err.value.field.startswith(field), err.value


# -- the connector emulator's Direct VPC egress (docs/loadtests.md, "The connector emulator") ----


def test_the_emulator_holds_each_instances_connections_until_its_egress_is_ready(
    pg_server, tmp_path
):
    # Egress usable 1 s after each instance's start. Instance "a/1" opens one connection at 0
    # (its first: its clock starts) and another at 0.5: both go through at 1.0. Instance "b/1"
    # says it started 0.75 s ago (its name's @ suffix): its connection, opened at 0, goes through
    # at 0.25. A connection of "c/1" with a 0.5 s connect timeout gives up first (a campaign's
    # connect_timeout). Lower bounds are exact; upper bounds leave room for connect and auth.
    sc = scenario(direct(1.0))

    async def main():
        log = tmp_path / "emulator.jsonl"
        emu = Emulator(
            sc.connector,
            ("127.0.0.1", 0),
            ("127.0.0.1", pg_server.port),
            log_path=log,
            egress=sc.egress,
        )
        await emu.start()
        serving = asyncio.ensure_future(emu.serve())
        dsn = safety.with_host_port(pg_server.dsn, "127.0.0.1", emu.port)
        t0 = time.monotonic()

        async def one(name: str, after_s: float = 0.0, timeout_s: float = 10.0):
            await asyncio.sleep(after_s)
            try:
                con = await asyncpg.connect(
                    dsn, ssl=False, timeout=timeout_s, server_settings={"application_name": name}
                )
            except TimeoutError:
                return name, None
            took = time.monotonic() - t0
            await con.close()
            return name, took

        try:
            return await asyncio.gather(
                one("a/1"),
                one("a/1", 0.5),
                one(f"b/1@{time.time() - 0.75}"),
                one("c/1", timeout_s=0.5),
            )
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    (_, a0), (_, a1), (_, b), (_, c) = asyncio.run(main())
    assert 1.0 <= a0 < 1.9 and 1.0 <= a1 < 1.9
    assert 0.25 <= b < 0.9
    assert c is None
    assert pg_server.wait_no_harness_connections() == 0
    lines = [json.loads(x) for x in (tmp_path / "emulator.jsonl").read_text().splitlines()]
    conns = [x for x in lines if x["event"] == "connection"]
    assert sorted(c["stage"] for c in conns) == ["queued", "ready", "ready", "ready"]
    ready = [c for c in conns if c["stage"] == "ready"]
    assert all(c["setup_s"] == 0 for c in ready)  # no connector: no set-up
    assert max(c["queued_s"] for c in ready) >= 0.99  # the wait for the egress


# -- Cloud Run's own words, and recommend's candidate ---------------------------------------------

CLOUD_RUN = 'name = "x"\n[platform]\nkind = "cloud_run"\n'


def test_cloud_runs_network_and_subnet_range_give_direct_egress_and_its_addresses():
    # 10.8.0.0/26: 64 addresses less Google's 4 = 60, at 2 each: 30 instances.
    sc = loads(CLOUD_RUN + 'network = "default"\nsubnet_range = "10.8.0.0/26"\n')
    assert (sc.egress.kind, sc.egress.subnet_addresses, sc.egress.instance_bound) == (
        "direct",
        60,
        30,
    )
    assert loads(CLOUD_RUN + 'subnet = "run"\n').egress.direct


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('network = "n"\n[platform.connector]\nmin_instances = 2\n', "platform.network"),
        ('[platform.connector]\nmin_instances = 2\n[egress]\nkind = "direct"\n', "egress.kind"),
        ('subnet = "s"\nsubnet_range = "10.0.0.0/28"\n', "platform.subnet_range"),
        ('subnet_range = "10.0.0.0/24"\n', "platform.subnet_range"),
        ('network = "n"\n[egress]\nkind = "connector"\n', "egress.kind"),
    ],
    ids=["connector-and-network", "connector-and-direct", "small-subnet", "range-alone", "both"],
)
def test_cloud_run_egress_conflicts_are_refused_by_name(text, field):
    with pytest.raises(ScenarioError) as err:
        loads(CLOUD_RUN + text)
    assert err.value.field == field, err.value


def test_recommend_offers_direct_egress_with_its_gcloud_command_beside_the_connector_floor():
    # capacity-storm: 40 instances × 5 connections at once against 2 connector instances × 2
    # set-ups: the connector is what the burst waits for. In the model's own terms first.
    change = direct_egress_change(resolve("capacity-storm").in_model_terms())
    assert (change.kind, change.overrides) == ("direct_egress", {"egress.kind": "direct"})
    assert (
        "gcloud run services update SERVICE --region REGION --network=NETWORK --subnet=SUBNET "
        "--vpc-egress=private-ranges-only --clear-vpc-connector" in change.apply
    )
    assert COST_ORDER.index("direct_egress") < COST_ORDER.index("connector")
    # Under Cloud Run's own settings (capacity-storm's too) the change is those settings, the
    # connector cleared.
    named = direct_egress_change(resolve("capacity-storm"))
    assert named.overrides["platform.connector"] is None, named.overrides
    sc = loads(
        CLOUD_RUN + "[platform.connector]\nmin_instances = 2\n[fleet]\ninstances = 40\n"
        "[pool]\nmin_size = 5\n[connector]\nsetups_per_instance = 2\n"
    )
    change = direct_egress_change(sc)
    after = sc.with_overrides(change.overrides)
    assert (after.egress.kind, after.platform.connector, after.platform.network) == (
        "direct",
        None,
        "NETWORK",
    )
    # On Cloud Run it is offered even where the burst fits the connector (the staging incident's
    # three starts): a move the team can make, weighed in the default ADR. Off Cloud Run, only
    # where the connector is what the burst waits for.
    assert direct_egress_change(resolve("staging-incident")) is not None
    fits = resolve("staging-incident").in_model_terms()
    assert direct_egress_change(fits) is None
