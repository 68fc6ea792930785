"""What the paid options cost and the Admin API quota's remedies (issue 24, items 5 and 6): the
one price table (sim/costs.py), a month of 730 hours, the cheapest option that holds preferred,
a Cloud SQL tier giving its default max_connections (refused beside a different one), a
connector's machine type as an assumed capacity, and the quota storm's ADR naming the quota, the
429s and the remedy it adopts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import call_main

from sim import costs
from sim.decision import Candidate, Change, least_change
from sim.remedies import (
    QUOTA_NAME,
    machine_change,
    quota_changes,
    quota_evidence,
    tier_change,
)
from sim.scenario import loads, resolve

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")


def _anchors() -> set[str]:
    heads = re.findall(r"^### (.+)$", SOURCES, flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in heads}


# -- the price table -----------------------------------------------------------------------------


def test_every_machine_type_has_a_price_entry_with_a_source_and_unknown_ones_stay_unknown():
    anchors = _anchors()
    assert set(costs.CONNECTOR_PRICES) == {"f1-micro", "e2-micro", "e2-standard-4"}
    for price in costs.CONNECTOR_PRICES.values():
        assert price.anchor in anchors and price.region
    # found: f1-micro's list price; not found: e2-micro's and e2-standard-4's (no guess)
    assert costs.CONNECTOR_PRICES["f1-micro"].usd_per_hour == pytest.approx(0.0076)
    assert costs.connector_monthly("e2-micro", 3) is None
    assert costs.connector_monthly("e2-standard-4", 2) is None
    assert {"cloud-sql-prices", "connector-machine-type-capacity"} <= anchors


def test_a_month_is_730_hours():
    assert costs.monthly(0.0076, 2) == pytest.approx(0.0076 * 2 * 730)
    assert costs.connector_monthly("f1-micro", 3) == pytest.approx(3 * 0.0076 * 730)
    assert costs.monthly(None, 5) is None
    tier = costs.parse_tier("db-custom-2-7680")
    assert tier.monthly_usd == pytest.approx((2 * 0.0413 + 7.5 * 0.007) * 730)
    assert costs.parse_tier("db-g1-small").monthly_usd is None  # shared core: not found
    assert costs.usd(None).startswith("unknown")


@pytest.mark.parametrize(
    "gb, conns",
    [(0.6, 25), (1.7, 50), (3.75, 100), (5.99, 100), (6.0, 200), (7.5, 400), (14.9, 400),
     (15.0, 500), (30.0, 600), (60.0, 800), (120.0, 1000), (624.0, 1000)],
)  # fmt: skip
def test_a_tiers_default_max_connections_follows_its_memory(gb, conns):
    assert costs.default_max_connections(gb) == conns


def test_the_cheapest_tier_of_each_class_is_the_least_memory_on_the_fewest_vcpus():
    assert costs.cheapest_tier(26).name == "db-g1-small"
    assert costs.cheapest_tier(201).name == "db-custom-2-7680"  # 7.5 GB needs 2 vCPUs
    assert costs.cheapest_tier(401).name == "db-custom-4-15360"
    assert costs.cheapest_tier(1001) is None


# -- the tier and the machine type in the scenario's terms ---------------------------------------

TIER = '[platform]\nkind = "cloud_run"\ndatabase_tier = "db-custom-2-7680"\n'


def test_a_tier_gives_its_default_max_connections():
    sc = loads('name = "x"\n' + TIER)
    assert sc.database.max_connections == 400
    assert loads('name = "x"\n' + TIER + "[database]\nmax_connections = 400\n")


@pytest.mark.parametrize(
    "extra, names",
    [
        ("[database]\nmax_connections = 200\n", ("database.max_connections", "database_tier")),
        (None, ("platform.database_tier", "even number")),
    ],
)
def test_a_tier_beside_another_max_connections_or_a_bad_tier_exits_2(
    tmp_path, capsys, extra, names
):
    text = TIER + extra if extra else TIER.replace("db-custom-2-7680", "db-custom-3-7680")
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n' + text, encoding="utf-8")
    out = tmp_path / "out"
    assert call_main("simulate", str(path), "-n", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in names) and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_machine_type_scales_the_set_ups_by_its_assumed_factor():
    assert costs.machine_setups(5, "e2-micro", "e2-standard-4") == 20
    assert costs.machine_setups(5, "e2-micro", "f1-micro") == 2  # round(2.5)
    assert costs.machine_setups(1, "e2-micro", "f1-micro") == 1  # at least one
    for cap in costs.MACHINE_CAPACITY.values():
        assert cap.low <= cap.factor <= cap.high


def test_the_default_is_offered_a_bigger_machine_with_the_command_that_creates_it():
    sc = resolve("staging-incident")
    c = machine_change(sc, "e2-standard-4", 3)
    assert c.kind == "connector"
    assert c.overrides["platform.connector.machine_type"] == "e2-standard-4"
    assert c.overrides["connector.setups_per_instance"] == 4 * sc.connector.setups_per_instance
    assert c.overrides["platform.connector.min_instances"] == 3
    assert "--machine-type e2-standard-4" in c.apply and "--min-instances=3" in c.apply
    assert "cannot be updated in place" in c.apply
    assert c.monthly_usd is None  # neither e2 price was found
    after = sc.with_overrides(c.overrides)
    assert after.platform.connector.machine_type == "e2-standard-4"


def test_the_default_is_offered_the_next_tier_priced_by_what_it_adds():
    sc = resolve("staging-incident")  # max_connections 200: a 6 GB tier's default
    c = tier_change(sc)
    assert c.kind == "tier" and "db-custom-2-7680" in c.name
    big, now = costs.parse_tier("db-custom-2-7680"), costs.parse_tier("db-custom-1-6144")
    assert c.monthly_usd == pytest.approx(big.monthly_usd - now.monthly_usd)
    assert "gcloud sql instances patch INSTANCE --tier=db-custom-2-7680" in c.apply
    assert sc.with_overrides(c.overrides).database.max_connections == 400


# -- the cheapest option that holds ---------------------------------------------------------------


def _cand(*changes: Change, meets: bool = True) -> Candidate:
    name = " + ".join(c.name for c in changes)
    return Candidate(name, changes, 1, None, 100, 100, meets)


def test_among_paid_options_that_meet_the_cheapest_by_monthly_cost_wins():
    floor = Change("connector", "floor 3", {"connector.min_instances": 3}, "", 40.0)
    tier = Change("tier", "tier", {"database.max_connections": 400}, "", 37.8)
    unknown = Change("connector", "e2-standard-4", {"connector.setups_per_instance": 20}, "")
    pool = Change("pool", "pool", {"pool.min_size": 1})
    ranked = sorted([_cand(floor), _cand(unknown), _cand(tier), _cand(pool)], key=lambda c: c.cost)
    assert [c.name for c in ranked] == ["pool", "tier", "floor 3", "e2-standard-4"]
    adopted, others = least_change([floor, unknown, tier], lambda combo: _cand(*combo))
    assert adopted.name == "tier" and [c.name for c in others] == ["floor 3", "e2-standard-4"]
    # both unknown: the floor, which rests on no assumed capacity, before the machine type
    unknown_floor = Change("connector", "floor 4", {"connector.min_instances": 4}, "")
    adopted, _ = least_change([unknown, unknown_floor], lambda combo: _cand(*combo))
    assert adopted.name == "floor 4"
    # one that misses is never preferred, however cheap
    adopted, _ = least_change([floor, tier], lambda combo: _cand(*combo, meets=combo != (tier,)))
    assert adopted.name == "floor 3"


# -- the Admin API quota storm -------------------------------------------------------------------


def test_the_quota_storm_is_offered_each_remedy_with_how_it_is_applied():
    sc = resolve("cloudsql-quota-storm")
    changes = {c.kind: c for c in quota_changes(sc)}
    assert set(changes) == {"quota", "jitter", "surge", "lazy_refresh"}
    assert changes["quota"].overrides == {"cloudsql.quota_per_minute": 300}
    assert "sqladmin.googleapis.com" in changes["quota"].apply
    assert changes["jitter"].overrides == {"restart.jitter": 0.5}
    waves = changes["surge"].overrides["fleet.waves"]
    assert sum(w["count"] for w in waves) == 75 and waves[1]["at_s"] == 60.0
    assert 'refresh_strategy="lazy"' in changes["lazy_refresh"].apply
    for c in changes.values():
        sc.with_overrides(c.overrides)  # each is a valid scenario
    assert quota_changes(resolve("staging-incident")) == []  # no Admin API path


def test_the_quota_storm_counts_its_429s_and_a_quota_increase_cuts_them():
    sc = resolve("cloudsql-quota-storm")
    ev = quota_evidence(sc, {"cloudsql.quota_per_minute": 300}, "quota 300", seed=0)
    assert ev.quota == QUOTA_NAME and ev.quota_per_minute == 180
    assert ev.throttled_today > 0
    assert ev.throttled_adopted < ev.throttled_today
    assert set(ev.throttled_by_remedy) == {c.name for c in quota_changes(sc)}


def test_the_quota_storms_adr_names_the_quota_the_429s_and_the_remedy_it_adopts(tmp_path):
    out = tmp_path / "qs"
    args = ["recommend", "cloudsql-quota-storm", "--target-success", "0.9", "--replications"]
    args += ["40", "--worlds", "0", "--out", str(out)]
    assert call_main(*args) == 0
    adr = (out / "adr.md").read_text(encoding="utf-8")
    assert "Admin API (sqladmin.googleapis.com) requests per minute per user" in adr
    assert "180 a minute" in adr
    assert re.search(r"[\d,]+ calls a run answered 429", adr)
    assert re.search(r"adopted, .+, leaves [\d,]+ \(same runs\)", adr)
    own = adr.split("The quota's own remedies, the same way: ")[1].split("\n")[0]
    for remedy in ("Admin API quota 300 / min", "restart jitter", "deploy in waves", "lazy"):
        assert re.search(re.escape(remedy) + r"[^;]*: [\d,]+ 429s, (meets|does not meet)", own)
