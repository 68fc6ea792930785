"""What the paid options cost, in one table: a Serverless VPC Access connector's instances by
machine type, and a Cloud SQL for PostgreSQL tier by its vCPUs and memory, each price a published
figure with its source (docs/sources.md), the region and the date it applies to. A price that could
not be found is ``None``, and every cost computed from it is unknown: never a guess.

A month is 730 hours (Google's own pricing pages' convention). Also here: a Cloud SQL tier's
memory and its default ``max_connections`` (published), and a connector machine type's set-up
capacity relative to e2-micro (assumed: not published). Nothing here touches files or terminals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Price:
    """A published price per hour, or ``None`` where none was found, with its docs/sources.md
    anchor, the region and the date it applies to."""

    usd_per_hour: float | None
    anchor: str
    region: str
    as_of: str

    @property
    def known(self) -> bool:
        return self.usd_per_hour is not None


def monthly(usd_per_hour: float | None, count: float = 1) -> float | None:
    """``count`` of something billed ``usd_per_hour`` around the clock for a month (730 h)."""
    return None if usd_per_hour is None else usd_per_hour * count * HOURS_PER_MONTH


# -- the connector -------------------------------------------------------------------------------

# Connector instances are billed as Compute Engine VMs of their machine type (docs/sources.md#
# connector-prices). Only f1-micro's list price was found, in Google's own price-list file of
# August 2017; e2-micro's and e2-standard-4's were not found as published figures: unknown.
CONNECTOR_PRICES = {
    "f1-micro": Price(0.0076, "connector-prices", "us-central1", "2017-08"),
    "e2-micro": Price(None, "connector-prices", "us-central1", "not found"),
    "e2-standard-4": Price(None, "connector-prices", "us-central1", "not found"),
}
MACHINE_TYPES = tuple(CONNECTOR_PRICES)
DEFAULT_MACHINE_TYPE = "e2-micro"


@dataclass(frozen=True)
class Capacity:
    """A machine type's set-ups per instance relative to e2-micro: a nominal factor and the range
    it is assumed to lie in. Not published (docs/sources.md#connector-machine-type-capacity)."""

    factor: float
    low: float
    high: float


# Assumed. The only evidence: throughput per instance is published (about 50 / 100 / 1,600 Mbps),
# and one field report (caura-ai/caura PR #430) saw a shared e2-micro connector drop handshakes
# at about 9 parallel connections and e2-standard-4 cut burst failures from ~100 % to 10-15 %:
# more capacity, by an amount nobody measured. f1-micro: half of e2-micro (its throughput).
MACHINE_CAPACITY = {
    "f1-micro": Capacity(0.5, 0.25, 1.0),
    "e2-micro": Capacity(1.0, 1.0, 1.0),
    "e2-standard-4": Capacity(4.0, 2.0, 16.0),
}


def machine_setups(setups: int, from_type: str, to_type: str) -> int:
    """``connector.setups_per_instance`` once the connector's machine type goes from
    ``from_type`` to ``to_type``: scaled by the assumed factors, at least one."""
    ratio = MACHINE_CAPACITY[to_type].factor / MACHINE_CAPACITY[from_type].factor
    return max(1, round(setups * ratio))


def connector_monthly(machine_type: str, instances: int) -> float | None:
    """A connector floor's monthly cost: ``instances`` kept warm around the clock (a connector
    never scales in, so its minimum is the least it bills); None when the price is unknown."""
    return monthly(CONNECTOR_PRICES[machine_type].usd_per_hour, instances)


# -- the Cloud SQL tier --------------------------------------------------------------------------

# Cloud SQL Enterprise edition, dedicated core, us-central1 (docs/sources.md#cloud-sql-prices).
CLOUDSQL_VCPU_HOUR = 0.0413
CLOUDSQL_GB_HOUR = 0.007
CLOUDSQL_PRICE_AS_OF = "2026-05"
# Shared-core tiers: their memory is published; their price was not found (unknown).
SHARED_CORE_GB = {"db-f1-micro": 0.6, "db-g1-small": 1.7}
_CUSTOM = re.compile(r"^db-custom-(\d+)-(\d+)$")

# Cloud SQL for PostgreSQL's default max_connections by memory (docs/sources.md#cloud-sql-
# connection-limit-by-tier): from this many GB up, this many connections.
MAX_CONNECTIONS_BY_GB = (
    (0.0, 25),
    (1.7, 50),
    (3.75, 100),
    (6.0, 200),
    (7.5, 400),
    (15.0, 500),
    (30.0, 600),
    (60.0, 800),
    (120.0, 1000),
)


@dataclass(frozen=True)
class Tier:
    """A Cloud SQL tier: its name, vCPUs (None for shared core) and memory in GB."""

    name: str
    vcpus: int | None
    memory_gb: float

    @property
    def max_connections(self) -> int:
        return default_max_connections(self.memory_gb)

    @property
    def usd_per_hour(self) -> float | None:
        if self.vcpus is None:
            return None  # shared core: not found
        return self.vcpus * CLOUDSQL_VCPU_HOUR + self.memory_gb * CLOUDSQL_GB_HOUR

    @property
    def monthly_usd(self) -> float | None:
        return monthly(self.usd_per_hour)


def parse_tier(name: str) -> Tier:
    """``db-f1-micro``, ``db-g1-small`` or ``db-custom-<vCPUs>-<memory MB>`` (Cloud SQL's own
    names); ValueError for anything else."""
    if name in SHARED_CORE_GB:
        return Tier(name, None, SHARED_CORE_GB[name])
    m = _CUSTOM.match(name)
    if m is None:
        raise ValueError(
            "must be db-f1-micro, db-g1-small or db-custom-<vCPUs>-<memory MB> "
            "(e.g. db-custom-2-7680)"
        )
    vcpus, mb = int(m.group(1)), int(m.group(2))
    if vcpus < 1 or (vcpus > 1 and vcpus % 2) or vcpus > 96:
        raise ValueError("vCPUs must be 1 or an even number up to 96 (Cloud SQL's custom tiers)")
    gb = mb / 1024
    if mb % 256 or gb < 3.75 or not 0.9 * vcpus <= gb <= 6.5 * vcpus:
        raise ValueError(
            "memory must be a multiple of 256 MB, at least 3,840 MB and 0.9-6.5 GB per vCPU "
            "(Cloud SQL's custom tiers)"
        )
    return Tier(name, vcpus, gb)


def default_max_connections(memory_gb: float) -> int:
    """Cloud SQL for PostgreSQL's default ``max_connections`` for a tier of ``memory_gb``."""
    out = MAX_CONNECTIONS_BY_GB[0][1]
    for from_gb, conns in MAX_CONNECTIONS_BY_GB:
        if memory_gb >= from_gb:
            out = conns
    return out


def cheapest_tier(max_connections: int) -> Tier | None:
    """The cheapest tier whose default ``max_connections`` is at least ``max_connections``: the
    least memory of its class, with the fewest vCPUs that may carry it (0.9-6.5 GB per vCPU);
    None above 1,000 (raise the flag instead)."""
    for from_gb, conns in MAX_CONNECTIONS_BY_GB:
        if conns < max_connections:
            continue
        for name, gb in SHARED_CORE_GB.items():
            if default_max_connections(gb) == conns:
                return Tier(name, None, gb)
        gb = max(from_gb, 3.75)
        vcpus = max(1, math.ceil(gb / 6.5))
        if vcpus > 1 and vcpus % 2:
            vcpus += 1
        mb = math.ceil(gb * 1024 / 256) * 256
        return parse_tier(f"db-custom-{vcpus}-{mb}")
    return None


def usd(x: float | None) -> str:
    """A monthly cost as the ADR writes it: ``$98.62 / month``, or ``unknown``."""
    return "unknown (no published price found)" if x is None else f"${x:,.2f} / month"
