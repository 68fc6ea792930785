"""A roll-out (``[rollout]``, docs/model.md "A roll-out: old instances replaced by new ones"):
the old revision's instances hold their slots from t = 0 until they are let go; a Kubernetes
rolling update creates (starts) the new instances as its two sums allow, a Cloud Run revision
roll-out lets old instances go as traffic moves. Hand-computed cases on both engines (the
``engine`` fixture), the controller's own cases (sim.rollout.RolloutState), and the refusals
(exit 2) through the CLI."""

from __future__ import annotations

import math

import pytest
from builders import const, scenario
from cli_helpers import call_main
from test_reference import MIXED, assert_agree

from sim.engines import run_one
from sim.errors import FieldProblem
from sim.output import scenario_toml
from sim.records import Outcome, Reason
from sim.rollout import Moves, Rollout, RolloutState
from sim.scenario import loads
from sim.stack import default_label, express, how_to_apply

# Every start takes 10 s before the database, then nothing takes time; each instance opens and
# keeps 2 connections; room for everything.
TEN_S = {"startup.before_db_s": const(10.0), "pool.min_size": 2, "pool.held_when_ready": 2}


def by_time(timeline: dict) -> dict[float, int]:
    """The readable engine's db_connections at the end of each instant."""
    return dict(zip(timeline["t"], timeline["db_connections"], strict=True))


# -- the controller --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "pods"),
    [(8, (2, 2)), (10, (3, 2)), (4, (1, 1)), (3, (1, 0)), (1, (1, 0))],
)
def test_kubernetes_defaults_round_the_surge_up_and_the_unavailable_down(replicas, pods):
    # 25 % of 10 is 2.5: Kubernetes gives 3 pods of surge and 2 unavailable (the Deployment
    # documentation's example); 25 % of 3 is 0.75: a surge of 1, none unavailable.
    assert Rollout(kind="kubernetes").plan(replicas) == pods


def test_kubernetes_first_moves_for_ten_replicas_at_the_defaults():
    # R = 10, surge 3, unavailable 2: at t = 0 keep 10 − 2 = 8 old (2 let go), and create up to
    # 10 + 3 − 8 = 5 new ones. Each ready one lets one more old go and makes room for one more.
    state = Rollout(kind="kubernetes").state(10)
    assert state.moves() == Moves(start=5, release=2)
    assert state.became_ready() == Moves(start=1, release=1)  # keep 7, cap 10 + 3 − 7 = 6
    for _ in range(4):
        state.became_ready()
    assert (state.old, state.created, state.ready) == (3, 10, 5)
    assert [state.became_ready() for _ in range(5)] == [Moves(0, 1)] * 3 + [Moves(0, 0)] * 2
    assert state.old == 0


def test_kubernetes_surge_one_unavailable_zero_replaces_one_at_a_time():
    state = RolloutState("kubernetes", replicas=4, old=4, surge=1, unavailable=0)
    assert state.moves() == Moves(start=1, release=0)
    assert [state.became_ready() for _ in range(4)] == [Moves(1, 1)] * 3 + [Moves(0, 1)]


def test_cloud_run_steps_let_the_old_revision_keep_a_share_of_its_first_count():
    # R = O = 4, steps [50, 100]: the 50 % step is reached at 2 new ready (the old revision then
    # keeps ceil(4 × 0.5) = 2, of its first 4, also once 3 are ready), 100 % at 4.
    state = RolloutState("cloud_run", replicas=4, old=4, steps=[50.0, 100.0])
    assert state.moves().release == 0
    assert [state.became_ready().release for _ in range(4)] == [0, 2, 0, 2]


def test_both_given_as_zero_is_refused_and_both_rounded_to_zero_gives_one_unavailable():
    # Kubernetes' validation refuses 0 and 0 (or "0%"); a percentage that rounds to 0 pods is
    # allowed, and its controller (ResolveFenceposts) then takes 1 unavailable.
    assert Rollout(kind="kubernetes", max_surge="10%", max_unavailable=0).plan(5) == (1, 0)
    rounded = Rollout(kind="kubernetes", max_surge=0, max_unavailable="10%")  # 0.5 pods → 0
    rounded.check(5)
    assert rounded.plan(5) == (0, 1)
    for surge in (0, "0%"):
        with pytest.raises(FieldProblem, match="cannot both be 0") as err:
            Rollout(kind="kubernetes", max_surge=surge, max_unavailable="0%").check(5)
        assert err.value.field == "rollout.max_surge"


# -- the engines -----------------------------------------------------------------------------------


def test_kubernetes_surge_one_unavailable_zero_starts_each_new_instance_at_the_last_ready(engine):
    # R = 4 new instances replace 4 old ones (2 slots each: 8 held at t = 0). Surge 1,
    # unavailable 0: one new instance at a time.
    #   t = 0   instance 0 created and started (4 old + 1 new = 5 pods = R + 1)
    #   t = 10  instance 0 ready (its 2 connections: 10 held, the peak); one old let go (8),
    #           instance 1 started
    #   t = 20, 30: the same for instances 1 and 2; t = 40: instance 3 ready, the last old gone.
    sc = scenario(
        {
            **TEN_S,
            "fleet.instances": 4,
            "rollout.kind": "kubernetes",
            "rollout.max_surge": 1,
            "rollout.max_unavailable": 0,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert rep.attempts["instance"] == [0, 1, 2, 3]
    assert rep.attempts["start_s"] == [0.0, 10.0, 20.0, 30.0]
    assert rep.attempts["ready_s"] == [10.0, 20.0, 30.0, 40.0]
    assert rep.peak_db_connections == 4 * 2 + 2  # old × held + one new instance's
    assert rep.fleet_ready_s == 40.0
    if engine == "reference":
        held = by_time(run_one(sc, 0, timeline=True).timeline)
        assert held == {0.0: 8, 10.0: 8, 20.0: 8, 30.0: 8, 40.0: 8}


def test_kubernetes_defaults_for_eight_replicas(engine):
    # R = 8 (1 slot each), 25 %/25 %: surge 2, unavailable 2. At t = 0 two old go (6 left) and
    # 8 + 2 − 6 = 4 new start: 6 old + 4 new = 10 connections, the peak. At t = 10 the four are
    # ready, one after another: each lets one old go and creates the next new one (4 … 7, started
    # at 10); at t = 20 those are ready and the last two old go.
    sc = scenario(
        {
            "startup.before_db_s": const(10.0),
            "fleet.instances": 8,
            "rollout.kind": "kubernetes",
        }
    )
    rep = run_one(sc, 0, engine=engine)
    starts = dict(zip(rep.attempts["instance"], rep.attempts["start_s"], strict=True))
    assert [starts[i] for i in range(8)] == [0.0] * 4 + [10.0] * 4
    assert rep.peak_db_connections == 10
    assert rep.fleet_ready_s == 20.0
    # With old_linger_s = 15 an old instance's slots free 15 s after it is let go: the 2 let go at
    # t = 0 hold theirs until 15, the 4 let go at 10 until 25, the last 2 (at 20) until 35. At 10
    # the first 4 new connect beside 8 old (12), at 20 the next 4 beside 6 (14, the peak).
    lingering = scenario({**sc.to_dict(), "rollout": {"kind": "kubernetes", "old_linger_s": 15.0}})
    assert run_one(lingering, 0, engine=engine).peak_db_connections == 14
    if engine == "reference":
        held = by_time(run_one(lingering, 0, timeline=True).timeline)
        assert held == {0.0: 8, 10.0: 12, 15.0: 10, 20.0: 14, 25.0: 10, 35.0: 8}


def test_a_stalled_kubernetes_roll_out_keeps_the_old_instances_slots(engine):
    # 2 old instances hold the only 2 free slots. Surge 1, unavailable 0: the first new instance
    # starts, finds no slot (53300) and, without a restart, never becomes ready: the roll-out
    # stalls, the second new instance is never created and the old ones keep their slots.
    sc = scenario(
        {
            "fleet.instances": 2,
            "database.max_connections": 2,
            "rollout.kind": "kubernetes",
            "rollout.max_surge": 1,
            "rollout.max_unavailable": 0,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert rep.attempts["instance"] == [0]
    assert (rep.attempts["outcome"], rep.attempts["reason"]) == (
        [Outcome.REJECTED],
        [Reason.TOO_MANY_CLIENTS],
    )
    assert (rep.instances_ready, rep.peak_db_connections) == (0, 2)
    assert math.isinf(rep.fleet_ready_s)
    if engine == "reference":
        assert set(run_one(sc, 0, timeline=True).timeline["db_connections"]) == {2}


def test_cloud_run_moves_traffic_in_steps_and_lets_old_instances_go(engine):
    # Cloud Run starts the new revision's instances as [fleet] says: waves at 0, 10, 20 and 30 s,
    # one instance each, ready 5 s later. R = O = 4 (1 slot each), steps [50, 100]:
    #   t = 5   instance 0 ready: 4 old + 1 new = 5 held
    #   t = 15  instance 1 ready: 6 held, then 50 % reached (2 of 4 ready): the old revision
    #           keeps ceil(4 × 0.5) = 2: 4 held
    #   t = 25  instance 2 ready: 5 held (still the 50 % step: the old keep 2)
    #   t = 35  instance 3 ready: 6 held, then 100 %: the last 2 old go: 4 held
    sc = scenario(
        {
            "startup.before_db_s": const(5.0),
            "fleet.instances": 4,
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 10.0 * k, "count": 1} for k in range(4)],
            "rollout.kind": "cloud_run",
            "rollout.steps": [50.0, 100.0],
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert rep.attempts["start_s"] == [0.0, 10.0, 20.0, 30.0]
    assert rep.peak_db_connections == 6
    assert rep.fleet_ready_s == 35.0
    if engine == "reference":
        held = by_time(run_one(sc, 0, timeline=True).timeline)
        assert held == {0.0: 4, 5.0: 5, 15.0: 4, 25.0: 5, 35.0: 4}


def test_cloud_run_all_at_once_keeps_every_old_instance_until_every_new_one_is_ready(engine):
    # A burst of 3 new instances, all ready at 10 s; steps [100] (the default): the 3 old ones
    # (2 slots each) hold theirs until the third is ready, then go, old_linger_s = 2 s later.
    sc = scenario(
        {
            **TEN_S,
            "fleet.instances": 3,
            "rollout.kind": "cloud_run",
            "rollout.old_linger_s": 2.0,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert rep.attempts["start_s"] == [0.0] * 3
    assert rep.peak_db_connections == 3 * 2 + 3 * 2
    if engine == "reference":
        held = by_time(run_one(sc, 0, timeline=True).timeline)
        assert (held[0.0], held[10.0], held[12.0]) == (6, 12, 6)


def test_kind_none_is_no_rule_whatever_the_other_fields_say(engine):
    sc = scenario({**TEN_S, "fleet.instances": 3})
    off = scenario(
        {**TEN_S, "fleet.instances": 3, "rollout.old_linger_s": 3.0, "rollout.steps": [50.0, 100.0]}
    )
    a, b = run_one(sc, 1, engine=engine), run_one(off, 1, engine=engine)
    assert a.attempts == b.attempts and a.peak_db_connections == b.peak_db_connections == 6


# -- refusals: exit 2 naming the field -------------------------------------------------------------

BAD = {
    "both zero": ('kind = "kubernetes"\nmax_surge = 0\nmax_unavailable = 0\n', "", "max_surge"),
    "120 % unavailable": ('kind = "kubernetes"\nmax_unavailable = "120%"\n', "", "max_unavailable"),
    "steps not ending at 100": ('kind = "cloud_run"\nsteps = [50, 90]\n', "", "rollout.steps"),
    "warm instances": ('kind = "cloud_run"\n', "warm_instances = 2\n", "fleet.warm_instances"),
    "a non-burst arrival": (
        'kind = "kubernetes"\n',
        'arrival = "uniform"\nwindow_s = 10.0\n',
        "fleet.arrival",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_roll_outs_exit_2_naming_the_field(case, tmp_path, capsys):
    rollout, fleet, field = BAD[case]
    path = tmp_path / "rollout.toml"
    path.write_text(
        f'name = "r"\n[fleet]\ninstances = 4\n{fleet}[rollout]\n{rollout}', encoding="utf-8"
    )
    assert call_main("simulate", str(path), "-n", "1", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# -- Kubernetes in its own words: [platform] replicas, max_surge, max_unavailable -----------------

SMALL_POOL = 'name = "k"\n[pool]\nmin_size = 2\nheld_when_ready = 2\n'


def _k8s(platform: str):
    return loads(f'{SMALL_POOL}[platform]\nkind = "kubernetes"\n{platform}\n')


def test_replicas_make_the_run_a_rolling_update_at_kubernetes_defaults():
    sc = _k8s("replicas = 10")
    assert sc.fleet.instances == 10
    assert (sc.rollout.kind, sc.rollout.max_surge, sc.rollout.max_unavailable) == (
        "kubernetes",
        "25%",
        "25%",
    )
    assert sc.rollout.plan(10) == (3, 2)
    # left out, the two are Kubernetes' published defaults in the reports' labels
    label = default_label(sc.stack, sc.platform, "platform.max_unavailable", None)
    assert label is not None and label.kind == "published"


def test_max_surge_and_max_unavailable_go_to_the_roll_out_as_given():
    sc = _k8s('replicas = 8\nmax_surge = 1\nmax_unavailable = "0%"')
    assert (sc.fleet.instances, sc.rollout.max_surge, sc.rollout.max_unavailable) == (8, 1, "0%")


def test_without_replicas_max_surge_keeps_its_meaning_of_pods_started_together():
    sc = _k8s("max_surge = 3")
    assert (sc.fleet.instances, sc.rollout.kind) == (3, "none")


def test_a_roll_out_plan_is_applied_with_max_surge_and_max_unavailable_both():
    sc = _k8s("replicas = 8\nmax_unavailable = 0")
    overrides = express(sc.stack, sc.platform, {"rollout.max_surge": 2})
    assert overrides == {"platform.max_surge": 2}
    after = sc.with_overrides(overrides)
    assert after.rollout.max_surge == 2
    how = how_to_apply(after.stack, after.platform, overrides)
    assert '"rollingUpdate":{"maxSurge":2,"maxUnavailable":0}' in how
    # maxUnavailable left out of the file: Kubernetes' 25 %, written out all the same
    left_out = _k8s("replicas = 8")
    how = how_to_apply(left_out.stack, left_out.platform, {"platform.max_surge": 1})
    assert '{"maxSurge":1,"maxUnavailable":"25%"}' in how
    assert express(sc.stack, sc.platform, {"fleet.instances": 6}) == {"platform.replicas": 6}


BAD_PLATFORM = {
    "a percentage without replicas": ('max_surge = "25%"', "platform.max_surge"),
    "max_unavailable without replicas": ("max_unavailable = 1", "platform.max_unavailable"),
    "both 0": ("replicas = 4\nmax_surge = 0\nmax_unavailable = 0", "platform.max_surge"),
    "120 %": ('replicas = 4\nmax_unavailable = "120%"', "platform.max_unavailable"),
    "replicas beside another fleet size": (
        "replicas = 4\n[fleet]\ninstances = 5",
        "fleet.instances",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PLATFORM))
def test_bad_kubernetes_settings_exit_2_naming_the_setting(case, tmp_path, capsys):
    platform, field = BAD_PLATFORM[case]
    path = tmp_path / "k.toml"
    path.write_text(f'{SMALL_POOL}[platform]\nkind = "kubernetes"\n{platform}\n', encoding="utf-8")
    assert call_main("simulate", str(path), "-n", "1", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_rolling_update_round_trips_through_its_written_file_and_in_model_terms():
    sc = _k8s("replicas = 8\nmax_surge = 1")
    assert loads(scenario_toml(sc)) == sc
    model = sc.in_model_terms()  # [platform] custom, each field it gave written as itself
    assert (model.platform.kind, model.fleet.instances) == ("custom", 8)
    assert (model.rollout.kind, model.rollout.max_surge, model.rollout.max_unavailable) == (
        "kubernetes",
        1,
        "25%",
    )
    assert loads(scenario_toml(model)) == model
    assert run_one(model, 3).attempts == run_one(sc, 3).attempts


# -- the SimPy reference, written from docs/model.md, agrees in distribution -----------------------


@pytest.mark.parametrize(
    "variant",
    [
        # 10 new instances over 5 s beside 5 old ones holding 10 of the 22 usable slots; traffic
        # moves a quarter at a time; old instances shut down 2 s after they are let go.
        {
            "rollout.kind": "cloud_run",
            "rollout.old_instances": 5,
            "rollout.steps": [25.0, 50.0, 100.0],
            "rollout.old_linger_s": 2.0,
        },
        # A rolling update of 10 pods beside 6 old ones (12 slots), 2 surge and 1 unavailable.
        {
            "fleet.arrival": "burst",
            "rollout.kind": "kubernetes",
            "rollout.old_instances": 6,
            "rollout.max_surge": 2,
            "rollout.max_unavailable": 1,
            "rollout.old_linger_s": 3.0,
        },
    ],
    ids=["cloud_run", "kubernetes"],
)
def test_roll_outs_agree_with_the_simpy_reference(variant):
    sc = scenario({**MIXED, "pool.on_failure": "close", **variant})
    eng, ref = assert_agree(sc)
    held = sc.rollout_held
    assert eng["peak_db_connections"].min() >= held and ref["peak_db_connections"].min() >= held
    assert eng["timeouts"].sum() > 0 and ref["timeouts"].sum() > 0  # the slots are scarce
