"""A rule's footprint: each handler of the readable engine and its twin in the fast kernel, and the
kernel's codes against the vocabularies they encode (sim.records, the scenario's Literals).

A new rule changes a handler of sim/engine.py; this table says which kernel function must change
with it, and fails when a handler appears, disappears or is renamed without its twin.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from sim import fast
from sim.connector import ConnectorState
from sim.engine import Engine
from sim.fast import kernel
from sim.records import Outcome, Reason
from sim.scenario import Fleet, Pool, Restart, Scenario
from sim.streams import ROLES

# Engine method → its kernel function, or where the kernel does the same work.
TWINS = {
    "at": "at",  # and `later`, for the timers due a constant time after they are set
    "run": "run_one",
    "arrival_times": "arrivals",
    "_finish": "run_block",
    "_sample": "none: only the readable engine keeps a timeline",
    "start_attempt": "start_attempt",
    "begin_db_init": "begin_db_init",
    "refresh": "refresh",
    "refresh_done": "refresh_done",
    "start_pool": "start_pool",
    "pool_conn_ready": "pool_conn_ready",
    "run_queries": "run_queries",
    "db_init_done": "db_init_done",
    "_settle_ready_pool": "settle_ready_pool",
    "became_ready": "inlined in db_init_done",
    "pool_failed": "pool_failed",
    "retry": "inlined in dispatch",
    "deadline": "inlined in dispatch",
    "exit": "exit_attempt",
    "_record": "record",
    "open_conn": "open_conn",
    "_begin_setups": "begin_setup",
    "_maybe_scale": "maybe_scale",
    "scaled_up": "scaled_up",
    "setup_done": "setup_done",
    "accept_done": "accept_done",
    "conn_timeout": "conn_timeout",
    "cancel": "cancel",
    "_cancel_all": "cancel_all",
    "release": "inlined in cancel",
    "_free_slot": "inlined in dispatch",
    "_drop": "drop",
}


# The connector's rules are one object, sim.connector.ConnectorState, which the readable engine
# and the emulator both drive; the kernel keeps a compiled copy in its flat arrays. Each method →
# the kernel function that does its work.
CONNECTOR_TWINS = {
    "request": "open_conn",
    "setup_done": "setup_done",
    "give_up": "cancel",  # and cancel_all, for several at once
    "begin_scale_out": "maybe_scale",
    "instance_joined": "scaled_up",
    "_serve": "serve_queue",
}


def test_every_rule_of_the_connector_has_its_twin_in_the_kernel():
    methods = {n for n, m in vars(ConnectorState).items() if inspect.isfunction(m)}
    assert methods - {"__init__"} == set(CONNECTOR_TWINS)
    for method, twin in CONNECTOR_TWINS.items():
        assert callable(getattr(kernel, twin, None)), f"{method}: kernel.{twin} is gone"


def _handlers() -> set[str]:
    return {
        name
        for name, member in vars(Engine).items()
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
    assert callable(getattr(kernel, name, None)), f"{handler}: kernel.{name} is gone"
    if twin.startswith("inlined in "):  # the host names the handler where it does its work
        source = inspect.getsource(getattr(kernel, name).py_func)
        assert handler.strip("_") in source, f"kernel.{name} does not name {handler}"


def _codes(prefix: str) -> dict[str, int]:
    return {n: v for n, v in vars(kernel).items() if n.startswith(prefix) and isinstance(v, int)}


def test_outcome_and_reason_codes_are_the_vocabularys():
    assert [str(o) for o in fast.OUTCOME_NAMES] == [str(o) for o in Outcome]
    assert [
        list(Outcome).index(o)
        for o in (Outcome.READY, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.ERROR)
    ] == [kernel.READY, kernel.TIMEOUT, kernel.REJECTED, kernel.ERROR]
    model_reasons = (Reason.DEADLINE, Reason.TOO_MANY_CLIENTS, Reason.CONNECT_TIMEOUT)
    assert fast.REASON_NAMES.tolist() == ["", *map(str, model_reasons)]
    assert fast.REASON_NAMES[kernel.R_DEADLINE] == Reason.DEADLINE
    assert fast.REASON_NAMES[kernel.R_53300] == Reason.TOO_MANY_CLIENTS
    assert fast.REASON_NAMES[kernel.R_CONNECT_TIMEOUT] == Reason.CONNECT_TIMEOUT


@pytest.mark.parametrize(
    ("literal", "codes"),
    [
        (Pool.model_fields["start"].annotation, fast._STARTS),
        (Fleet.model_fields["arrival"].annotation, fast._ARRIVALS),
        (Restart.model_fields["policy"].annotation, fast._POLICIES),
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
    }
    assert sorted(kernel_names.values()) == sorted(ROLES)
    assert len(ROLES) == kernel.N_ROLES
    for name, role in kernel_names.items():
        assert getattr(kernel, name) == ROLES.index(role), name


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
