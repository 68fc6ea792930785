"""``startsim rollout``: the connection budget worked by hand, the table and JSON, the refusals, and
P(53300) on a hand-built fleet where one plan cannot fit and another just does.

The CLI runs in this process through ``sim.cli.main`` (the console script itself), so exit codes and
messages are the real ones.
"""

from __future__ import annotations

import csv
import json

import pytest
import tomli_w
from builders import const, scenario
from cli_helpers import call_main

from sim.errors import UsageError
from sim.rolloutplans import (
    CSV_COLUMNS,
    default_plans,
    parse_plan,
    parse_steps,
    plan_budget,
    team_target,
)

# Four new pods replace four old ones. Each old one holds 5 connections and each new one opens 5:
# 25 free slots (28 − 3 reserved) take the four old ones and one new one, never two new ones
# beside the old. No pool retry and no restart: a refused connection ends the attempt (53300).
TIGHT = {
    "horizon_s": 120.0,
    "fleet.instances": 4,
    "pool.min_size": 5,
    "pool.max_size": 10,
    "pool.held_when_ready": 5,
    "pool.retry_backoff_s": 0.0,
    "connector.setup_s": const(0.01),
    "database.max_connections": 28,
    "database.reserved_connections": 3,
    "database.accept_s": const(0.005),
    "startup.before_db_s": const(0.5),
    "startup.after_db_s": const(0.5),
    "startup.db_init_timeout_s": 20.0,
}


@pytest.fixture(scope="module")
def tight_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sc") / "tight.toml"
    path.write_text(tomli_w.dumps(scenario(TIGHT).to_dict()), encoding="utf-8")
    return str(path)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = call_main(*args)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the budget, by hand ------------------------------------------------------------------------

# min_size 5, held_when_ready 2: an old pod holds 2, a new one counts 5 (what it opens starting).
SMALL = {"fleet.instances": 4, "pool.min_size": 5, "pool.held_when_ready": 2}


@pytest.mark.parametrize(
    ("plan", "surge", "unavailable", "peak_pods", "old", "new", "connections"),
    [
        # 25 % of 4: surge 1 (up), unavailable 1 (down). Old, new after each ready: (3, 2),
        # (2, 3), (1, 4), (0, 4): 3·2 + 2·5 = 16, 19, 1·2 + 4·5 = 22, 20.
        ("25%/25%", 1, 1, 5, 1, 4, 22),
        # (4, 1), (3, 2), (2, 3), (1, 4), (0, 4): 13, 16, 19, 22, 20.
        ("1/0", 1, 0, 5, 1, 4, 22),
        # Old first: (3, 1), (2, 2), (1, 3), (0, 4): 11, 14, 17, 20; never more than 4 pods.
        ("0/1", 0, 1, 4, 0, 4, 20),
        # The new fleet beside the old: 4·2 + 4·5 = 28 at once, 8 pods.
        ("100%/0", 4, 0, 8, 4, 4, 28),
    ],
)
def test_budget_is_old_kept_times_held_plus_new_times_what_they_open(
    plan, surge, unavailable, peak_pods, old, new, connections
):
    sc = scenario(SMALL)
    b = plan_budget(parse_plan(plan).apply(sc))
    assert (b.surge_pods, b.unavailable_pods, b.peak_pods) == (surge, unavailable, peak_pods)
    assert (b.old_kept, b.new_pods, b.connections) == (old, new, connections)
    assert b.free_slots == sc.database.free_slots == 10_000  # the base scenario's
    assert b.fits


def test_cloud_run_budget_is_the_whole_new_revision_beside_the_old():
    sc = scenario({**SMALL, "rollout.old_instances": 3})
    b = plan_budget(parse_steps("10,50,100").apply(sc))
    assert (b.surge_pods, b.peak_pods, b.old_kept, b.new_pods) == (None, 7, 3, 4)
    assert b.connections == 3 * 2 + 4 * 5


def test_budget_that_does_not_fit():
    b = plan_budget(parse_plan("100%/0").apply(scenario(TIGHT)))
    assert (b.connections, b.free_slots, b.fits) == (40, 25, False)
    b = plan_budget(parse_plan("1/0").apply(scenario(TIGHT)))
    assert (b.connections, b.free_slots, b.fits) == (25, 25, True)


# -- plans -----------------------------------------------------------------------------------


def test_percentages_round_as_kubernetes_does():
    sc = scenario({"fleet.instances": 3})
    b = plan_budget(parse_plan("25%/25%").apply(sc))
    assert (b.surge_pods, b.unavailable_pods) == (1, 0)  # 0.75 up, 0.75 down


def test_default_plans_start_with_the_scenarios_own_and_leave_out_equal_ones():
    sc = scenario({"fleet.instances": 4})
    assert [p.label for p in default_plans(sc)] == ["25%/25%", "1/0", "0/1", "100%/0"]
    own = scenario({"fleet.instances": 4, "rollout.kind": "kubernetes", "rollout.max_surge": 1})
    assert [p.label for p in default_plans(own)] == ["1/25%", "1/0", "0/1", "100%/0"]
    one = scenario({"fleet.instances": 1})  # 25%/25%, 1/0 and 100%/0 of one pod: all 1/0
    assert [p.label for p in default_plans(one)] == ["25%/25%"]
    cloud = scenario({"rollout.kind": "cloud_run", "rollout.steps": [50.0, 100.0]})
    assert [p.label for p in default_plans(cloud)] == ["50,100", "100", "10,50,100"]


def test_target_is_the_teams_or_one_percent():
    assert team_target(scenario()) == 0.01
    assert team_target(scenario({"team.success_criterion": 0.95})) == pytest.approx(0.05)


def test_both_rounded_to_0_pods_is_one_unavailable_as_kubernetes_resolves_it():
    b = plan_budget(parse_plan("0%/10%").apply(scenario({"fleet.instances": 4})))
    assert (b.surge_pods, b.unavailable_pods, b.peak_pods) == (0, 1, 4)


@pytest.mark.parametrize("text", ["0/0", "0%/0", "abc", "1", "-1/0", "101%/0", "1.5/0"])
def test_a_bad_plan_is_refused_naming_it(text):
    with pytest.raises(UsageError) as err:
        parse_plan(text)
    assert (err.value.option, err.value.value) == ("plan", text)


# -- the command -----------------------------------------------------------------------------


def test_table_and_json(capsys, tight_file, tmp_path):
    code, out, _ = run_cli(capsys, "rollout", tight_file, "-n", "3", "--jobs", "1")
    assert code == 0
    assert "taken as a Kubernetes rolling update of its 4 instances" in out
    for word in ("plan", "budget", "53300 %", "25%/25%", "1/0", "0/1", "100%/0", "40/25✗"):
        assert word in out
    args = ("rollout", tight_file, "-n", "3", "--jobs", "1", "--json", "--out", str(tmp_path))
    code, out, _ = run_cli(capsys, *args, "--plan", "1/0", "--plan", "100%/0")
    data = json.loads(out)
    assert code == 0
    assert set(data) == {
        "scenario",
        "assumed",
        "left_out",
        "engine",
        "replications",
        "seed",
        "confidence",
        "target",
        "free_slots",
        "plans",
    }
    assert [p["plan"] for p in data["plans"]] == ["1/0", "100%/0"]  # as given
    assert set(data["plans"][0]) == {
        "plan",
        "kind",
        "surge_pods",
        "unavailable_pods",
        "peak_pods",
        "budget",
        "p_53300",
        "p_db_full",
        "p_start_failure",
        "fleet_ready_s",
        "peak_db_connections",
        "meets_target",
    }
    assert json.loads((tmp_path / "rollout.json").read_text(encoding="utf-8")) == data
    with open(tmp_path / "rollout.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["budget_connections"] for r in rows] == ["25", "40"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--plan", "0/0"], "--plan 0/0: surge and unavailable cannot both be 0"),
        (["--plan", "abc"], "--plan abc: must be SURGE/UNAVAILABLE"),
        (["--plan", "25%/x"], "--plan 25%/x: must be SURGE/UNAVAILABLE"),
        (["--steps", "10,100"], "--steps 10,100: test is rolled out by Kubernetes"),
        (["--target", "0"], "--target 0: must be between 0 and 1"),
        (["--engine", "warp"], "--engine warp: must be one of"),
    ],
)
def test_usage_errors_exit_2_naming_the_option(capsys, tight_file, tmp_path, args, says):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "rollout", tight_file, "-n", "2", "--out", str(out), *args)
    assert code == 2
    assert says in " ".join(err.split())
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()  # nothing half-written


def test_a_cloud_run_scenario_takes_steps_not_plans(capsys):
    code, _, err = run_cli(capsys, "rollout", "staging-incident", "--plan", "1/0")
    assert code == 2
    assert "--plan 1/0: staging-incident is rolled out by Cloud Run" in " ".join(err.split())
    code, _, err = run_cli(capsys, "rollout", "staging-incident", "--steps", "50,40")
    assert code == 2
    assert "--steps 50,40: must be percentages of traffic" in " ".join(err.split())


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_surge_into_tight_slots_is_refused_in_every_deploy_and_one_at_a_time_never(
    capsys, tight_file, engine
):
    # 100%/0: four new pods open 5 each beside the old ones' 20, in 25 slots: every deploy sees
    # 53300. 1/0: one new pod at a time fills the 25 slots exactly and never asks for more.
    args = ("rollout", tight_file, "-n", "20", "--jobs", "1", "--json", "--engine", engine)
    code, out, _ = run_cli(capsys, *args, "--plan", "100%/0", "--plan", "1/0")
    assert code == 0
    data = json.loads(out)
    assert data["engine"] == engine
    surge, one = data["plans"]
    assert surge["p_53300"]["events"] == 20 and surge["p_53300"]["estimate"] == 1.0
    assert one["p_53300"]["events"] == 0 and one["p_53300"]["ci_high"] < 0.2
    assert surge["budget"]["fits"] is False and one["budget"]["fits"] is True
    assert one["peak_db_connections"]["max"] == 25  # the budget, reached
    assert one["fleet_ready_s"]["p95"] is not None and surge["fleet_ready_s"]["p95"] is None
    assert not surge["meets_target"]
    assert one["p_db_full"]["estimate"] == 1.0  # full, never over


def test_old_instances_beyond_the_free_slots_are_refused_naming_the_field(capsys):
    # gang-allocation's 60 instances × 3 connections: 180 held before any new one starts, of 100.
    code, out, err = run_cli(capsys, "rollout", "gang-allocation", "-n", "2")
    assert code == 2 and out == ""
    said = " ".join(err.split())
    assert "--plan 25%/25%: rollout.old_instances = 60" in said and "100 free slots" in said


def test_what_a_roll_out_does_not_carry_is_left_out_and_said_so(capsys):
    # The default scenario has traffic after ready and the probe's requests, which the roll-out
    # rule does not carry yet: the plans are simulated without them, and the output says so.
    args = ("rollout", "staging-incident", "-n", "20", "--jobs", "1", "--json")
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    data = json.loads(out)
    assert data["left_out"].startswith(
        "left out, not modelled with a roll-out yet: traffic.rate_per_s, probe.request_rate_per_s"
    )
    assert [p["plan"] for p in data["plans"]][:1] == ["100"]


def test_a_fleet_in_waves_is_rolled_out_by_kubernetes_all_at_once():
    sc = scenario(
        {
            "fleet.instances": 4,
            "fleet.arrival": "waves",
            "pool.held_when_ready": 1,
            "fleet.waves": [{"at_s": 0.0, "count": 2}, {"at_s": 5.0, "count": 2}],
        }
    )
    deployed = parse_plan("1/0").apply(sc)
    assert deployed.fleet.arrival == "burst" and deployed.rollout.kind == "kubernetes"
