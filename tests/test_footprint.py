"""A rule's footprint: each handler of the readable engine and its twin in the fast kernel, and the
kernel's codes against the vocabularies they encode (sim.records, the scenario's Literals).

A new rule changes a handler of sim/engine.py; this table says which kernel function must change
with it, and fails when a handler appears, disappears or is renamed without its twin.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from sim import fast
from sim.breaker import BreakerState
from sim.checkout import PoolState
from sim.connector import ConnectorState
from sim.engine import Engine
from sim.fast import layout
from sim.pooler import PoolerState
from sim.records import Outcome, Reason, RequestOutcome
from sim.rollout import RolloutState
from sim.scenario import Fleet, PathFaults, Pool, Restart, Scenario
from sim.streams import ROLES

# Engine method → its kernel function (module.function in sim/fast/), or where the kernel does the
# same work.
TWINS = {
    "at": "queue.at",  # and `later`, for the timers due a constant time after they are set
    "run": "kernel.run_one",
    "arrival_times": "kernel.arrivals",
    "_finish": "kernel.run_block",
    "_sample": "none: only the readable engine keeps a timeline",
    "start_attempt": "handlers.start_attempt",
    "begin_db_init": "handlers.begin_db_init",
    "refresh": "handlers.refresh",
    "refresh_done": "handlers.refresh_done",
    "start_pool": "handlers.start_pool",
    "pool_conn_ready": "handlers.pool_conn_ready",
    "run_queries": "handlers.run_queries",
    "db_init_done": "handlers.db_init_done",
    "_settle_ready_pool": "handlers.settle_ready_pool",
    "became_ready": "handlers.became_ready",  # without traffic, its time noted in init_done
    "pool_failed": "handlers.pool_failed",
    "retry": "inlined in handlers.dispatch",
    "deadline": "inlined in handlers.dispatch",
    "exit": "handlers.exit_attempt",
    "_record": "handlers.record",
    "open_conn": "handlers.open_conn",
    "_begin_setups": "handlers.begin_setup",
    "_maybe_scale": "handlers.maybe_scale",
    "scaled_up": "handlers.scaled_up",
    "setup_done": "handlers.setup_done",
    "accept_done": "handlers.accept_done",
    "conn_timeout": "handlers.conn_timeout",
    "_path_faults": "handlers.path_faults",
    "_fault": "inlined in handlers.open_conn",
    "path_failed": "handlers.path_failed",
    "cancel": "handlers.cancel",
    "_cancel_all": "handlers.cancel_all",
    "release": "inlined in handlers.cancel",
    "_free_slot": "inlined in handlers.dispatch",
    "_drop": "handlers.drop",
    # Start-up phases (docs/model.md, "Start-up phases").
    "_begin_init_work": "handlers.begin_init_work",
    "begin_phases": "handlers.begin_phases",
    "next_phase": "handlers.next_phase",
    "_enter_phase": "handlers.enter_phase",
    "_phase_work": "handlers.phase_work",
    "phase_conn_ready": "handlers.phase_conn_ready",
    "phase_conn_failed": "handlers.phase_conn_failed",
    "phase_retry": "inlined in handlers.dispatch",
    "phase_deadline": "inlined in handlers.dispatch",
    "phase_failed": "handlers.phase_failed",
    "phase_done": "handlers.phase_done",
    "phase_duration_s": "handlers.phase_duration",
    "_init_done": "handlers.init_done",
    # Traffic after ready (docs/model.md, "Traffic after ready").
    "start_traffic": "handlers.start_traffic",
    "_next_arrival": "handlers.next_arrival",
    "fleet_arrival": "inlined in handlers.traffic_event",
    "instance_arrival": "inlined in handlers.traffic_event",
    "route": "handlers.route",
    "_new_request": "handlers.new_request",
    "checkout": "handlers.checkout",
    "_apply": "none: the kernel does each of the pool's actions where the pool decides it",
    "_served": "handlers.served",
    "query_done": "inlined in handlers.traffic_event",
    "filler_resume": "inlined in handlers.traffic_event",
    "checkout_timeout": "handlers.checkout_timeout",
    "pool_conn_failed": "handlers.pool_conn_failed",
    "_request_rows": "none: each request's record is written as it goes (handlers.new_request)",
    # Direct VPC egress (docs/model.md, "Direct VPC egress").
    "direct_egress": "handlers.direct_egress",
    # Circuit breakers (docs/model.md, "Circuit breakers").
    "try_due": "handlers.try_due",
    "_connector_instances": "none: with Direct VPC egress the kernel has no connector instance "
    "(sim.fast's layout starts it with none, and nothing scales it out)",
    # A pooler in front of the database (docs/model.md, "A pooler in front of the database").
    "_begin_work": "handlers.begin_work",
    "_pooler_do": "pooler_engine.pooler_do",  # a loop over a stack instead of the recursion
    "_granted": "pooler_engine.granted",
    "_refused": "pooler_engine.refused",
    "_launch": "pooler_engine.launch",
    "_server_login": "inlined in pooler_engine.pooler_event",
    "_server_failed": "inlined in pooler_engine.pooler_event",
    "_work_done": "handlers.take_busy",  # and its pooler call where it is asked (pooler.work_done)
    "_expire": "inlined in pooler_engine.pooler_event",
    "_pooler_tick": "inlined in pooler_engine.pooler_event",
    "_pooler_leave": "inlined in pooler_engine.pooler_event",
    # A roll-out (docs/model.md, "A roll-out: old instances replaced by new ones").
    "_rollout_acts": "handlers.rollout_moves",  # at t = 0, handlers.rollout_begin calls it
    "_let_go": "inlined in handlers.rollout_moves",
    "_free_slots": "inlined in handlers.dispatch",
}


# The connector's rules are one object, sim.connector.ConnectorState, which the readable engine
# and the emulator both drive; the kernel keeps a compiled copy in its flat arrays. Each method →
# the kernel function that does its work.
CONNECTOR_TWINS = {
    "request": "handlers.open_conn",
    "setup_done": "handlers.setup_done",
    "give_up": "handlers.cancel",  # and cancel_all, for several at once
    "begin_scale_out": "handlers.maybe_scale",
    "instance_joined": "handlers.scaled_up",
    "_serve": "handlers.serve_queue",
}


# PgBouncer's rules are one object too, sim.pooler.PoolerState; the kernel keeps a compiled copy
# in the pooler's region of its flat arrays (sim.fast.pooler). Each method → its twin.
POOLER_TWINS = {
    "clients": "none: a count in the pooler's region (PB_CLIENTS)",
    "waiting": "none: a list through the client slots (PB_WHEAD)",
    "holds_server": "none: a flag per client slot (PS_LINKED)",
    "arrive": "pooler.arrive",
    "need_server": "pooler.need_server",
    "work_done": "pooler.work_done",
    "leave": "pooler.leaving",  # and all_left, once every client leaving at once has
    "server_up": "pooler.server_up",
    "server_failed": "pooler.server_failed",
    "expire": "pooler.expire",
    "janitor_after": "pooler.janitor_at",
    "tick": "pooler.tick",
    "_wait": "pooler.wait",
    "_link": "pooler.link",
    "_serve": "pooler.serve",
    "_reserve_on": "none: a setting of the pooler's region (PB_RESERVE is 0 without it)",
    "_activate": "pooler.activate",
}


# A ready pool's rules after ready are one object too, sim.checkout.PoolState; the kernel keeps a
# compiled copy per instance in its flat arrays. Each method → the kernel function doing its work.
CHECKOUT_TWINS = {
    "checkout": "handlers.checkout",
    "established": "handlers.established",
    "failed": "handlers.pool_conn_failed",
    "resume": "handlers.traffic_event",
    "release": "handlers.traffic_event",
    "timeout": "handlers.checkout_timeout",
    "_opened": "handlers.established",  # and pool_conn_failed
    "_give": "handlers.give",
    "_fill": "handlers.fill_pool",
}


# A circuit breaker's rules are one object, sim.breaker.BreakerState; the kernel keeps a compiled
# copy per breaker (each instance's, or the fleet's) in its flat arrays.
BREAKER_TWINS = {
    "admits": "handlers.breaker_admits",
    "wait_until": "handlers.try_due",
    "failed": "handlers.breaker_failed",
    "succeeded": "handlers.breaker_succeeded",
}


def test_every_rule_of_a_breaker_has_its_twin_in_the_kernel():
    methods = {n for n, m in vars(BreakerState).items() if inspect.isfunction(m)}
    assert methods - {"__init__"} == set(BREAKER_TWINS)
    for method, twin in BREAKER_TWINS.items():
        assert callable(_function(twin)), f"{method}: sim.fast.{twin} is gone"


def test_every_rule_of_a_ready_pool_has_its_twin_in_the_kernel():
    methods = {n for n, m in vars(PoolState).items() if inspect.isfunction(m)}
    assert methods - {"__init__"} == set(CHECKOUT_TWINS)
    for method, twin in CHECKOUT_TWINS.items():
        assert callable(_function(twin)), f"{method}: sim.fast.{twin} is gone"


def test_every_rule_of_the_pooler_has_its_twin_in_the_kernel():
    methods = {
        n for n, m in vars(PoolerState).items() if inspect.isfunction(m) or isinstance(m, property)
    }
    assert methods - {"__init__"} == set(POOLER_TWINS)
    for method, twin in POOLER_TWINS.items():
        if not twin.startswith("none: "):
            assert callable(_function(twin)), f"{method}: sim.fast.{twin} is gone"


def test_every_rule_of_the_connector_has_its_twin_in_the_kernel():
    methods = {n for n, m in vars(ConnectorState).items() if inspect.isfunction(m)}
    assert methods - {"__init__"} == set(CONNECTOR_TWINS)
    for method, twin in CONNECTOR_TWINS.items():
        assert callable(_function(twin)), f"{method}: sim.fast.{twin} is gone"


def _function(qualified: str):
    """``module.function`` of sim/fast/, or None."""
    module, _, name = qualified.partition(".")
    return getattr(importlib.import_module(f"sim.fast.{module}"), name, None)


def _handlers() -> set[str]:
    """The engine's methods, those of its mixins (sim/engine_pooler.py, engine_traffic.py)
    included."""
    return {
        name
        for klass in Engine.__mro__
        if klass.__module__.startswith("sim.")
        for name, member in vars(klass).items()
        if inspect.isfunction(member) and name != "__init__"
    }


def test_every_handler_has_its_twin_in_the_table():
    assert _handlers() == set(TWINS)


@pytest.mark.parametrize("handler", sorted(TWINS))
def test_each_twin_exists_in_the_kernel(handler):
    twin = TWINS[handler]
    if twin.startswith("none: "):
        return
    name = twin.removeprefix("inlined in ")
    assert callable(_function(name)), f"{handler}: sim.fast.{name} is gone"
    if twin.startswith("inlined in "):  # the host names the handler where it does its work
        source = inspect.getsource(_function(name).py_func)
        assert handler.strip("_") in source, f"sim.fast.{name} does not name {handler}"


def test_the_handlers_are_in_the_handlers_module_and_the_loop_in_the_kernel():
    # One job per module: what an event does in sim.fast.handlers, the queue's scheduling in
    # sim.fast.queue, the loop over replications in sim.fast.kernel.
    # A pooler's: its rules in sim.fast.pooler, the engine's side of them in pooler_engine.
    twins = [
        t.removeprefix("inlined in ")
        for t in (
            *TWINS.values(),
            *CONNECTOR_TWINS.values(),
            *CHECKOUT_TWINS.values(),
            *BREAKER_TWINS.values(),
            *POOLER_TWINS.values(),
        )
    ]
    modules = {t.partition(".")[0] for t in twins if not t.startswith("none: ")}
    assert modules == {"handlers", "queue", "kernel", "pooler", "pooler_engine"}
    for twin in twins:
        if not twin.startswith("none: "):
            module = twin.partition(".")[0]
            assert _function(twin).py_func.__module__ == f"sim.fast.{module}", twin


def test_outcome_and_reason_codes_are_the_vocabularys():
    assert [str(o) for o in fast.OUTCOME_NAMES] == [str(o) for o in Outcome]
    assert [
        list(Outcome).index(o)
        for o in (Outcome.READY, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.ERROR)
    ] == [layout.READY, layout.TIMEOUT, layout.REJECTED, layout.ERROR]
    model_reasons = (
        Reason.DEADLINE,
        Reason.TOO_MANY_CLIENTS,
        Reason.CONNECT_TIMEOUT,
        Reason.CLOSED,
        Reason.RESET,
        Reason.HUNG,
        Reason.PHASE_DEADLINE,
        Reason.POOL_TIMEOUT,
        Reason.MAX_CLIENT_CONN,
        Reason.SERVER_LOGIN_RETRY,
        Reason.QUERY_WAIT_TIMEOUT,
    )
    assert fast.REASON_NAMES.tolist() == ["", *map(str, model_reasons)]
    assert fast.REASON_NAMES[layout.R_DEADLINE] == Reason.DEADLINE
    assert fast.REASON_NAMES[layout.R_53300] == Reason.TOO_MANY_CLIENTS
    assert fast.REASON_NAMES[layout.R_CONNECT_TIMEOUT] == Reason.CONNECT_TIMEOUT
    assert fast.REASON_NAMES[layout.R_CLOSED] == Reason.CLOSED
    assert fast.REASON_NAMES[layout.R_RESET] == Reason.RESET
    assert fast.REASON_NAMES[layout.R_HUNG] == Reason.HUNG
    assert fast.REASON_NAMES[layout.R_PHASE_DEADLINE] == Reason.PHASE_DEADLINE
    assert fast.REASON_NAMES[layout.R_POOL_TIMEOUT] == Reason.POOL_TIMEOUT
    assert fast.REASON_NAMES[layout.R_MAX_CLIENT_CONN] == Reason.MAX_CLIENT_CONN
    assert fast.REASON_NAMES[layout.R_SERVER_LOGIN_RETRY] == Reason.SERVER_LOGIN_RETRY
    assert fast.REASON_NAMES[layout.R_QUERY_WAIT_TIMEOUT] == Reason.QUERY_WAIT_TIMEOUT
    assert fast.REQUEST_OUTCOME_NAMES.tolist() == [str(o) for o in RequestOutcome]
    assert [
        list(RequestOutcome).index(o)
        for o in (
            RequestOutcome.SERVED,
            RequestOutcome.FAILED,
            RequestOutcome.UNROUTED,
            RequestOutcome.WARM,
            RequestOutcome.UNFINISHED,
        )
    ] == [layout.SERVED, layout.FAILED, layout.UNROUTED, layout.WARM, layout.UNFINISHED]


@pytest.mark.parametrize(
    ("literal", "codes"),
    [
        (Pool.model_fields["start"].annotation, fast._STARTS),
        (Fleet.model_fields["arrival"].annotation, fast._ARRIVALS),
        (Restart.model_fields["policy"].annotation, fast._POLICIES),
        (PathFaults.model_fields["fault"].annotation, fast._FAULTS),
        (Pool.model_fields["growth"].annotation, fast._GROWTHS),
    ],
)
def test_every_choice_of_the_scenario_has_a_kernel_code(literal, codes):
    assert set(codes) == set(get_args(literal))
    assert sorted(codes.values()) == list(range(len(codes)))  # one code each


def test_the_kernels_roles_are_the_streams():
    kernel_names = {
        "ARRIVAL": "arrival",
        "BEFORE": "before_db",
        "SETUP_S": "setup",
        "ACCEPT_S": "accept",
        "QUERIES": "queries",
        "AFTER": "after_db",
        "SCALE": "scale_up",
        "RESTART_U": "restart_jitter",
        "RETRY_U": "retry_jitter",
        "API": "cloudsql",
        "MIX": "mixture",
        "PATH_FAULT": "path_fault",
        "PATH_DELAY": "path_delay",
        "PHASE": "phase",
        "TRAFFIC_ARRIVAL": "traffic_arrival",
        "TRAFFIC_PICK": "traffic_pick",
        "TRAFFIC_QUERY": "traffic_query",
        "POOLER_JANITOR": "pooler_janitor",
        "EGRESS_READY": "egress_ready",
        "BREAKER_JITTER": "breaker_jitter",
    }
    assert sorted(kernel_names.values()) == sorted(ROLES)
    assert len(ROLES) == layout.N_ROLES
    for name, role in kernel_names.items():
        assert getattr(layout, name) == ROLES.index(role), name


def test_no_getattr_default_stands_in_for_a_scenario_field():
    # A scenario is validated and frozen: every field is there, with the scenario's default. A
    # getattr default restates it, and can disagree (pool.workers once defaulted to 1 in sim.fast,
    # 3 in the scenario).
    fields = {"cloudsql"} | {
        name
        for section in Scenario().to_dict().values()
        if isinstance(section, dict)
        for name in section
    }
    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("sim/**/*.py"), *root.glob("loadtests/**/*.py")]:
        for name in re.findall(r'getattr\(\s*[\w.]+\s*,\s*"(\w+)"\s*,', path.read_text()):
            assert name not in fields, f"{path.relative_to(root)}: getattr(…, {name!r}, default)"


# A roll-out's controller is one object, sim.rollout.RolloutState, which the readable engine
# drives; the kernel keeps a compiled copy in its flat arrays (layout's RO_ slots).
ROLLOUT_TWINS = {
    "moves": "handlers.rollout_moves",
    "became_ready": "handlers.traffic_event",  # its E_READY branch counts the ready one
}


def test_every_rule_of_the_roll_out_has_its_twin_in_the_kernel():
    methods = {n for n, m in vars(RolloutState).items() if inspect.isfunction(m)}
    assert methods - {"__init__"} == set(ROLLOUT_TWINS)
    for method, twin in ROLLOUT_TWINS.items():
        assert callable(_function(twin)), f"{method}: sim.fast.{twin} is gone"
