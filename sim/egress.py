"""``[egress]``: how an instance's connections leave it for the database's network.

The rule is docs/model.md, "Direct VPC egress". ``kind = "connector"`` (the default) is the model
as it was: every connection goes through the shared connector (``[connector]``), record for
record, no draw of this section's. ``kind = "direct"`` is Cloud Run's Direct VPC egress: no
connector, no shared capacity, no queue, no scale-out; each start attempt's egress becomes usable
one ``ready_s`` draw after the attempt starts (a connection opened before then waits for it,
bounded by its connect timeout, then goes straight to the database), and the subnet's addresses
bound the fleet: at most ``subnet_addresses // addresses_per_instance`` instances, warm ones
included; the others never start.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from sim.distributions import Distribution, LogNormal

# A fresh instance's egress passed traffic after a median of 20.2 s, p90 36.5 s (n = 19; the
# estuary/flow report, docs/sources.md#direct-vpc-egress-readiness): the lognormal with that median
# and p90, sigma = ln(36.5 / 20.2) / z(0.9).
READY_MEDIAN_S = 20.2
READY_SIGMA = 0.4617


class Egress(BaseModel):
    """``[egress]``: the connector, or Direct VPC egress (docs/model.md, "Direct VPC egress")."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    kind: Literal["connector", "direct"] = "connector"
    # Direct only: from an attempt's start to when its egress passes traffic (fitted).
    ready_s: Distribution = LogNormal(dist="lognormal", median=READY_MEDIAN_S, sigma=READY_SIGMA)
    # Direct only: the subnet's free addresses (assumed: a /24 less the 4 Google keeps) and the
    # addresses each instance takes (Google: instances × 2 estimates the addresses in use).
    subnet_addresses: Annotated[int, Field(ge=1, le=16_777_216)] = 252
    addresses_per_instance: PositiveInt = 2

    @property
    def direct(self) -> bool:
        return self.kind == "direct"

    @property
    def instance_bound(self) -> int:
        """Instances the subnet's addresses let run at once, warm ones included."""
        return self.subnet_addresses // self.addresses_per_instance
