"""The report reads typed records: summary.json's data and its typed view give each other back
unchanged (``RecommendationView.from_dict``), and the ADR, its evidence, the figures' jobs and the
recommend tables never index the recommendation's data by string keys."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
from builders import REPORT_SMALL, scenario

from sim import advice
from sim.advice import RareCheck, TargetRow, TimeoutAdvice
from sim.output import dumps
from sim.plain import build, key, plain
from sim.recommend import Settings, recommend
from sim.report import adr, evidence, folder, robust, tables, view
from sim.report.view import PoolView, RecommendationView
from sim.search import Step, TimeoutSearch
from sim.sizing import PgBouncer, pool_advice
from sim.stats import Proportion

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "results" / "example" / "summary.json"
ADDED_BY_THE_FOLDER = ("figure_grid", "simulated_instance_starts", "figures")

# test_report's small scenario (a timeout above today's 4 s is needed), with a team history and
# observed failures so that every part of summary.json has something in it.
SMALL = {
    **REPORT_SMALL,
    "team.timeout_history_s": [4.0, 8.0],
    "team.observed_failures": 40,
    "team.window_deploys": 20,
}


@pytest.fixture(scope="module")
def rec():
    return recommend(scenario(SMALL), Settings(target_success=0.95, replications=400, seed=2))


def test_the_view_gives_a_recommendations_data_back_unchanged(rec):
    data = rec.as_dict()
    typed = RecommendationView.from_dict(data)
    assert typed.as_dict() == data
    assert dumps(typed.as_dict()) == dumps(data)  # the same JSON, key order included
    assert isinstance(typed.timeout, TimeoutAdvice) and typed.observed_failures is not None
    assert typed.history and typed.timeout.search is not None


def test_the_view_gives_summary_json_back_unchanged():
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    typed = RecommendationView.from_dict(data)
    mine = {k: v for k, v in data.items() if k not in ADDED_BY_THE_FOLDER}
    assert json.dumps(typed.as_dict()) == json.dumps(mine)


def test_timeout_advice_round_trips_with_a_rare_check():
    p = Proportion(0.0004, 0.0001, 0.0009, 4, 10_000, 9_876.5)
    search = TimeoutSearch(0.999, 4_000, 12.5, [Step(12.0, p, False), Step(12.5, p, True)])
    rare = build(
        RareCheck,
        {
            "estimator": "importance sampling", "event": "timeout", "tilt": 0.5,
            "tilted_draws": 3, "mixture": 0.1, "estimate": 0.0003, "ci_low": 0.0002,
            "ci_high": 0.0005, "replications": 10_000, "effective_replications": 2_345.6,
            "event_replications": 40, "reliable": True, "relative_half_width": 0.3,
            "confidence": 0.95, "meets": True,
        },
    )  # fmt: skip
    row = TargetRow(0.999, 12.5, 4_000, search.at_timeout, rare)
    found = TimeoutAdvice(8.0, search, (row,), 11.93, 3.2, 120.0, 4_000)
    data = found.as_dict()
    assert data["aws_timeout_s"] == 12.0 and data["recommended_s"] == 12.5
    assert data["by_target"][0]["p_db_init_timeout"] == search.as_dict()["p_db_init_timeout"]
    assert TimeoutAdvice.from_dict(data) == found
    assert TimeoutAdvice.from_dict(data).as_dict() == data


def test_the_pool_view_keeps_summary_jsons_keys_in_order():
    # 5 tasks × 4 connections: a pool-locking bound of 16 per instance, more than the 6 that fit,
    # so the advice names a pooler (its keys in summary.json's order too).
    advice = pool_advice(scenario(SMALL), tasks=5, connections_per_task=4)
    assert isinstance(advice.pgbouncer, PgBouncer)
    data = advice.as_dict()
    assert json.dumps(plain(build(PoolView, data))) == json.dumps(data)


def _keys(data, skip=("overrides", "value", "figures", "figure_grid")) -> set[str]:
    """Every key of summary.json's data, past scenario field paths and values."""
    out: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            out.add(k)
            if k not in skip:
                out |= _keys(v, skip)
    elif isinstance(data, list):
        for v in data:
            out |= _keys(v, skip)
    return out


def summary_keys() -> set[str]:
    """summary.json's keys: the example's, and every field key of the typed records (some
    parts, like an observation's window, are absent from the example)."""
    records = [
        obj
        for module in (view, advice)
        for obj in vars(module).values()
        if dataclasses.is_dataclass(obj)
    ]
    fields = {key(f) for cls in records for f in dataclasses.fields(cls)}
    return fields | _keys(json.loads(EXAMPLE.read_text(encoding="utf-8")))


def _indexed(tree: ast.AST, keys: set[str]) -> list[str]:
    """``x["key"]`` (read) and ``x.get("key")`` with a key of summary.json."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            index = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            index = node.args[0]
        else:
            continue
        if isinstance(index, ast.Constant) and index.value in keys:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


RENDERERS = [
    adr,
    evidence,
    robust,
    folder._figure_jobs,
    tables.recommend_table,
    tables.candidates_table,
]


@pytest.mark.parametrize("code", RENDERERS, ids=lambda c: c.__name__)
def test_the_report_reads_typed_records_not_string_keys(code):
    keys = summary_keys()
    assert {"timeout", "aws_timeout_s", "by_definition", "p2.5"} <= keys
    tree = ast.parse(inspect.getsource(code))
    assert _indexed(tree, keys) == [], "read the typed view (sim.report.view), not as_dict()'s keys"


def test_the_scan_would_see_a_key_read_again():
    keys = summary_keys()
    tree = ast.parse('t = data["timeout"]\nx = row.get("rare")\nfigures[role]\ny["pool.min_size"]')
    assert len(_indexed(tree, keys)) == 2


def test_the_renderers_take_the_typed_view():
    for fn in (adr.render, tables.recommend_table, tables.candidates_table):
        params = list(inspect.signature(fn).parameters.values())
        data = params[1] if fn is tables.recommend_table else params[0]
        assert data.annotation == "RecommendationView", fn.__name__
