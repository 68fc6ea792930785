"""Scenarios for the model tests: a neutral base where nothing takes time and nothing is scarce,
so that each test switches on exactly the mechanism it checks, by dotted overrides."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from sim.calibrate import jsonstream
from sim.scenario import Scenario, from_dict


def const(value: float) -> dict[str, Any]:
    return {"dist": "constant", "value": value}


def uniform(low: float, high: float) -> dict[str, Any]:
    return {"dist": "uniform", "low": low, "high": high}


def exponential(mean: float) -> dict[str, Any]:
    return {"dist": "exponential", "mean": mean}


# One instance, one connection, zero durations, room for everything, no retry and no restart.
BASE: dict[str, Any] = {
    "name": "test",
    "horizon_s": 10_000.0,
    "fleet": {"instances": 1, "arrival": "burst"},
    "startup": {
        "before_db_s": const(0.0),
        "db_init_timeout_s": 1000.0,
        "init_queries_s": const(0.0),
        "after_db_s": const(0.0),
    },
    "pool": {
        "min_size": 1,
        "max_size": 10,
        "held_when_ready": 1,
        "connect_timeout_s": 1000.0,
        "on_failure": "close",
        "retry_backoff_s": 0.0,
    },
    "connector": {
        "min_instances": 1,
        "max_instances": 1,
        "setups_per_instance": 1000,
        "setup_s": const(0.0),
        "scale_up_delay_s": const(0.0),
    },
    "database": {
        "max_connections": 10_000,
        "reserved_connections": 0,
        "other_connections": 0,
        "accept_s": const(0.0),
    },
    "restart": {
        "policy": "none",
        "initial_backoff_s": 10.0,
        "max_backoff_s": 300.0,
        "max_restarts": 20,
        "exit_release_s": 0.0,
    },
}


def scenario(overrides: dict[str, Any] | None = None) -> Scenario:
    """The base scenario with dotted fields replaced, e.g. ``{"pool.min_size": 3}``."""
    return from_dict(BASE, "tests").with_overrides(overrides or {}, "tests")


# Two instances, one set-up slot: instance 0's 31 s set-up holds it, so instance 1's connection
# waits exactly until the second connector instance joins at D ~ Uniform(10, 30) (the scale-out
# starts when it queues, at t = 0), then takes 31 + accept 0.5 + queries 0.25. So instance 1's db
# init lasts D + 31.75 exactly and instance 0's 31.75: a known answer for timeout questions.
LOW_S, HIGH_S, FIXED_S = 10.0, 30.0, 31.75
WAIT_FOR_SCALE_OUT: dict[str, Any] = {
    "fleet.instances": 2,
    "connector.max_instances": 2,
    "connector.setups_per_instance": 1,
    "connector.setup_s": const(31.0),
    "connector.scale_up_delay_s": uniform(LOW_S, HIGH_S),
    "database.accept_s": const(0.5),
    "startup.init_queries_s": const(0.25),
}


# The report tests' scenario. Three instances behind a one-slot connector that scales out after
# 2–6 s: it needs a timeout above the current 4 s, so every part of the report has something to
# say.
REPORT_SMALL: dict[str, Any] = {
    "horizon_s": 120.0,
    "fleet.instances": 3,
    "pool.min_size": 2,
    "pool.max_size": 10,
    "pool.held_when_ready": 2,
    "connector.max_instances": 3,
    "connector.setups_per_instance": 1,
    "connector.setup_s": const(1.0),
    "connector.scale_up_delay_s": uniform(2.0, 6.0),
    "database.max_connections": 20,
    "startup.db_init_timeout_s": 4.0,
    "restart.policy": "exponential",
    "restart.max_restarts": 3,
}


# 6 instances each hold 5 connections once ready: 30 against 12 free slots. Only 2 instances can
# ever be ready, whatever the timeout; pool max_size 12 // 6 = 2 makes the fleet fit.
STORM = {
    "horizon_s": 120.0,
    "fleet.instances": 6,
    "pool.min_size": 5,
    "pool.max_size": 10,
    "pool.held_when_ready": 5,
    "pool.retry_backoff_s": 1.0,
    "connector.setup_s": const(0.01),
    "database.max_connections": 15,
    "database.reserved_connections": 3,
    "database.accept_s": const(0.005),
    "startup.before_db_s": const(0.5),
    "startup.after_db_s": const(0.5),
    "startup.db_init_timeout_s": 20.0,
    "restart.policy": "exponential",
}


# A small fleet with random phases and fixed restarts, written out in a log format and read
# back by the readers' round-trip tests (Cloud Logging, OTLP).
LOG_ROUND_TRIP: dict[str, Any] = {
    "fleet.instances": 4,
    "startup.before_db_s": uniform(0.5, 1.5),
    "startup.db_init_timeout_s": 3.0,
    "database.accept_s": uniform(1.0, 6.0),
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 8.0,
    "restart.max_restarts": 3,
    "horizon_s": 200.0,
}


def comparable(attempts: dict[str, list]) -> dict[str, list]:
    """Attempt records with NaN as text: a failed attempt's ready_s is NaN, never equal to itself
    (the fast engine's come as new floats, where the readable engine's are one object)."""
    return {
        key: ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]
        for key, values in attempts.items()
    }


def set_fields(data: dict, prefix: str = "") -> list[str]:
    """Every field a TOML file sets: a distribution counts as one field, its table as a value."""
    out = []
    for key, value in data.items():
        if key in ("name", "description", "sources"):
            continue
        if isinstance(value, dict) and "dist" not in value:
            out += set_fields(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def pieces_held(monkeypatch, piece_chars: int, lookahead: int = 4096) -> list[int]:
    """Make the streaming reader read ``piece_chars`` at a time (and look ``lookahead`` ahead
    for a second document) and record, after each piece, how much text it holds."""
    monkeypatch.setattr(jsonstream, "PIECE_CHARS", piece_chars)
    monkeypatch.setattr(jsonstream, "LOOKAHEAD_CHARS", lookahead)
    held, real = [], jsonstream._Text.more

    def more(self):
        got = real(self)
        held.append(len(self.buf))
        return got

    monkeypatch.setattr(jsonstream._Text, "more", more)
    return held


def derive_incident_tool():
    """``tools/derive_incident.py`` as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / "derive_incident.py"
    spec = importlib.util.spec_from_file_location("derive_incident", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
