"""`startsim simulate` across worlds (issue 22, item 2): the design's properties by hand, a
constructed scenario whose one uncertain value switches failures on above a threshold, common
random numbers across worlds, seeds that repeat, today's output without uncertain values, bad
input, and an interrupted --out that keeps the worlds it finished."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from cli_helpers import call_main

from sim import scenario as scenarios
from sim import worlds
from sim.errors import ScenarioError, UsageError
from sim.runner import simulate
from sim.uncertainty import Spread

# One instance, no restart, every duration constant: db init takes exactly init_queries_s (the
# connection's set-up and accept take 0 s), so an attempt fails exactly when it exceeds 3.3 s.
THRESHOLD_S = 3.3
SWITCH = f"""name = "switch"
[fleet]
instances = 1
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = {THRESHOLD_S}
init_queries_s = {{ dist = "constant", value = {{ range = [0.0, 10.0] }} }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
min_size = 1
held_when_ready = 1
[connector]
setup_s = {{ dist = "constant", value = 0.0 }}
[database]
accept_s = {{ dist = "constant", value = 0.0 }}
[restart]
policy = "none"
"""


def _run(sc, n, seed=0, method="sobol", replications=2):
    d = worlds.design(sc, n, seed, method)
    done = list(worlds.run(d, worlds.world_scenarios(sc, d), replications, seed,
                           engine="reference"))  # fmt: skip
    return d, done


@pytest.mark.parametrize(("n", "method"), [(16, "sobol"), (32, "sobol"), (20, "lhs")])
def test_the_share_of_failing_worlds_is_the_share_of_the_design_above_the_threshold(n, method):
    sc = scenarios.loads(SWITCH)
    _, done = _run(sc, n, method=method)
    failing = [w for w in done if w.summary.p_start_failure.estimate == 1.0]
    assert all(w.summary.p_start_failure.estimate in (0.0, 1.0) for w in done)
    assert {w.index for w in failing} == {
        w.index for w in done if w.values["startup.init_queries_s.value"] > THRESHOLD_S
    }
    # Each 1-D projection holds one world per slice of width 1/n: the count of worlds above the
    # threshold is within one of n × (share of the range above it).
    share = (10.0 - THRESHOLD_S) / 10.0
    assert abs(len(failing) - n * share) <= 1
    pooled, _ = worlds.pooled(done, 0)
    assert pooled.p_start_failure.estimate == pytest.approx(len(failing) / n)
    figures = worlds.across([w.row() for w in done], pooled)["p_start_failure"]
    assert (figures["p10"], figures["median"], figures["p90"]) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize(("n", "method"), [(64, "sobol"), (50, "lhs")])
def test_the_design_puts_one_world_in_each_slice_of_every_value(n, method):
    sc = scenarios.resolve(scenarios.DEFAULT)
    d = worlds.design(sc, n, seed=5, method=method)
    assert d.units.shape == (n, len(sc.uncertain)) and len(sc.uncertain) >= 5
    for column in d.units.T:
        assert sorted(np.floor(column * n).astype(int)) == list(range(n))
    for i in range(n):
        for field, value in d.values(i).items():
            spread = sc.uncertain[field]
            assert spread.range[0] <= value <= spread.range[1], (field, value)
            assert isinstance(value, int) == spread.integer


def test_a_log_range_is_mapped_in_log_space():
    s = Spread(range=(0.05, 0.8), scale="log")
    assert s.at(0.0) == pytest.approx(0.05)
    assert s.at(0.5) == pytest.approx(0.2)  # the geometric middle, the nominal value
    assert s.at(0.25) == pytest.approx(0.1)  # a quarter of the way in log: 0.05 × 16^(1/4)
    sc = scenarios.resolve(scenarios.DEFAULT)
    d = worlds.design(sc, 16, seed=1)
    logs = [
        math.log(d.values(i)["connector.setup_s.median"] / 0.05) / math.log(16) for i in range(16)
    ]
    assert sorted(int(x * 16) for x in logs) == list(range(16))  # one world per log slice


def test_choices_by_equal_probability_bins_and_whole_numbers_each_equally_often():
    tiers = Spread(choices=(25, 50, 100, 200, 400, 500, 600, 800, 1000), integer=True)
    assert [tiers.at(u) for u in (0.0, 0.11, 0.12, 0.5, 0.999)] == [25, 25, 50, 400, 1000]
    four = Spread(choices=(1.0, 2.0, 4.0, 8.0))
    setups = Spread(range=(2.0, 8.0), integer=True)  # 7 whole numbers, each 1/7 of [1.5, 8.5]
    assert [setups.at(u) for u in (0.0, 0.142, 0.143, 0.5, 0.999)] == [2, 2, 3, 5, 8]
    units = worlds.design(scenarios.loads(SWITCH), 16, seed=2).units[:, 0]
    assert sorted(four.at(u) for u in units) == [1.0] * 4 + [2.0] * 4 + [4.0] * 4 + [8.0] * 4
    counts = np.bincount([tiers.choices.index(tiers.at(u)) for u in units], minlength=9)
    # A bin of 16/9 slices is cut by a slice at each end: it holds 16/9 worlds give or take 2.
    assert counts.sum() == 16 and all(abs(c - 16 / 9) < 2 for c in counts)
    lhs = worlds.design(scenarios.loads(SWITCH), 14, seed=2, method="lhs").units[:, 0]
    assert sorted(setups.at(u) for u in lhs) == [v for v in range(2, 9) for _ in range(2)]


def test_same_seed_same_worlds_and_every_world_shares_its_random_numbers():
    text = scenarios.resolve("gang-allocation").file_dict()
    text["restart"]["max_backoff_s"] = {"range": [100.0, 300.0]}  # unused: a fixed schedule
    text["restart"]["policy"] = "fixed"
    sc = scenarios.from_dict(text)
    d, done = _run(sc, 4, seed=3, replications=3)
    again = _run(sc, 4, seed=3, replications=3)[1]
    assert [w.row() for w in done] == [w.row() for w in again]
    assert not np.array_equal(d.units, worlds.design(sc, 4, seed=4).units)
    # The worlds differ only in a value the model does not read: with the same random numbers
    # they give the same figures, those of one world at the nominal value with that seed.
    nominal = simulate(sc, 3, seed=3, jobs=1, engine="reference", records=False).summary()
    figures = {k: v for k, v in done[0].row().items() if k != "world" and k not in d.fields}
    for w in done:
        assert {k: w.row()[k] for k in figures} == figures
    assert done[0].summary.p_start_failure == nominal.p_start_failure
    assert done[0].summary.fleet_ready_s == nominal.fleet_ready_s


def test_without_uncertain_values_the_output_is_todays(capsys, tmp_path):
    args = ("simulate", "gang-allocation", "-n", "5", "--seed", "1", "--json", "--jobs", "1")
    assert call_main(*args) == 0
    today = capsys.readouterr().out
    assert call_main(*args, "--worlds", "8", "--design", "lhs") == 0
    assert capsys.readouterr().out == today and "worlds" not in json.loads(today)
    # --nominal on an uncertain scenario: the scenario at its middles, figure for figure.
    path = tmp_path / "switch.toml"
    path.write_text(SWITCH, encoding="utf-8")
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(SWITCH.replace("{ range = [0.0, 10.0] }", "5.0"), encoding="utf-8")
    assert call_main("simulate", str(path), "-n", "3", "--json", "--nominal") == 0
    nominal = json.loads(capsys.readouterr().out)
    assert call_main("simulate", str(fixed), "-n", "3", "--json") == 0
    plain = json.loads(capsys.readouterr().out)
    assert {**nominal, "sources": None} == {**plain, "sources": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--worlds", "12"), "--worlds 12: Sobol' points keep their balance only in powers"),
        (("--design", "grid"), "--design grid: must be one of sobol, lhs"),
    ],
)
def test_a_bad_design_exits_2(args, message, capsys):
    assert call_main("simulate", "-n", "2", *args) == 2
    assert message in capsys.readouterr().err


def test_a_world_that_is_no_valid_scenario_is_refused_by_its_values():
    sc = scenarios.loads(
        'name = "clash"\n[database]\nmax_connections = { choices = [25, 100, 1000] }\n'
        "other_connections = { range = [0, 40] }\n"
    )
    with pytest.raises(ScenarioError, match=r"world \d+ of the design \(database.max_connections"
                       r"=25, database.other_connections=\d+\).*leaves no slot"):  # fmt: skip
        worlds.world_scenarios(sc, worlds.design(sc, 16, seed=0))
    with pytest.raises(UsageError, match="no uncertain value"):
        worlds.design(scenarios.loads('name = "x"'), 16, seed=0)


def _rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_out_writes_a_row_per_world_and_a_run_cut_short_keeps_the_finished_ones(
    tmp_path, monkeypatch, capsys
):
    source = tmp_path / "switch.toml"
    source.write_text(SWITCH, encoding="utf-8")
    whole = tmp_path / "whole"
    run = ("simulate", str(source), "-n", "2", "--worlds", "8", "--jobs", "1", "--json")
    assert call_main(*run, "--out", str(whole)) == 0
    data = json.loads(capsys.readouterr().out)
    rows = _rows(whole / "worlds.csv")
    assert rows[0][:2] == ["world", "startup.init_queries_s.value"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(8)]
    assert len(data["worlds"]["per_world"]) == 8
    assert json.loads((whole / "summary.json").read_text(encoding="utf-8")) == data
    assert scenarios.load(whole / "scenario.toml") == scenarios.loads(SWITCH)

    real = worlds.run_points

    def interrupted(*args, **kwargs):
        assert kwargs["records"] is False  # no attempt record is kept across worlds
        for i, res in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield res

    monkeypatch.setattr(worlds, "run_points", interrupted)
    cut = tmp_path / "cut"
    assert call_main(*run, "--out", str(cut)) == 130
    kept = _rows(cut / "worlds.csv")
    assert kept == rows[:4]  # the header and worlds 0-2, whole and as an uninterrupted run has
    assert not (cut / "summary.json").exists()
