"""``[traffic]``: requests that reach the ready instances and check out pooled connections.

The rule is docs/model.md, "Traffic after ready": requests arrive as one Poisson stream of
``rate_per_s`` spread over the ready instances, or as each ready instance's own Poisson stream of
``rate_per_instance_per_s``, or at the times of a recorded trace (``trace_s``); each checks a
connection out of its instance's pool for a ``query_s`` draw. The pool grows on demand up to
``pool.max_size`` through the same connector and database slots, by the rule ``pool.growth``
names; a checkout waits at most ``pool.timeout_s``. Off by default: no rate and no trace, then no
event and no random draw.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.distributions import Distribution, LogNormal, PositiveSeconds, Seconds
from sim.errors import FieldProblem

# Requests one replication may generate, expected: each is a record (~0.1 kB) and a few events.
MAX_REQUESTS = 1_000_000
# HikariCP's background filler: after a failed connection it sleeps 10 ms, doubling to 5 s
# (PoolEntryCreator, HikariPool.java; docs/sources.md#hikaricp-background-filler).
ADDER_BACKOFF_FIRST_S = 0.01
ADDER_BACKOFF_MAX_S = 5.0


class Traffic(BaseModel):
    """``[traffic]``: the requests after ready (docs/model.md, "Traffic after ready")."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    rate_per_s: Annotated[float, Field(ge=0, le=1e6)] = 0.0  # the fleet's, over ready instances
    rate_per_instance_per_s: Annotated[float, Field(ge=0, le=1e6)] = 0.0  # each ready instance's
    trace_s: list[Seconds] = Field(default_factory=list, max_length=MAX_REQUESTS)  # recorded times
    # Time a request holds its connection: a few short queries. An assumption.
    query_s: Distribution = LogNormal(dist="lognormal", median=0.005, sigma=0.5)
    # The figures' window: requests arriving within window_s of their instance's ready time.
    window_s: PositiveSeconds = 60.0

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        given = [
            name
            for name, on in (
                ("rate_per_s", self.rate_per_s > 0),
                ("rate_per_instance_per_s", self.rate_per_instance_per_s > 0),
                ("trace_s", bool(self.trace_s)),
            )
            if on
        ]
        if len(given) > 1:
            raise FieldProblem(
                f"traffic.{given[1]}",
                getattr(self, given[1]),
                f"traffic.{given[0]} is set too: give one of rate_per_s, "
                "rate_per_instance_per_s and trace_s",
            )
        if any(b < a for a, b in zip(self.trace_s, self.trace_s[1:], strict=False)):
            raise FieldProblem("traffic.trace_s", self.trace_s[:5], "must be in time order")
        return self

    @property
    def on(self) -> bool:
        """Whether any request arrives: a rate or a trace."""
        return self.rate_per_s > 0 or self.rate_per_instance_per_s > 0 or bool(self.trace_s)
