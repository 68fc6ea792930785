"""``[pooler]``: a connection pooler between the instances and the database (PgBouncer).

With ``kind = "pgbouncer"`` the instances' connections end at PgBouncer, which opens at most
``default_pool_size`` (plus ``reserve_pool_size``) server connections per user and database and
queues the clients beyond them: a refusal (53300) becomes a wait at the pooler, bounded by
``query_wait_timeout``. The settings carry PgBouncer's own names, units (seconds) and published
defaults (docs/sources.md#pgbouncer-settings). Off by default: ``kind = "none"``.

The model has no pooler rule yet: ``startsim simulate`` and ``recommend`` refuse a scenario with
a pooler (:func:`refuse_unmodelled`) rather than simulate it as if there were none, and
``startsim loadtest --via-pgbouncer`` measures it through a real PgBouncer
(:mod:`loadtests.pgbouncer`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from sim.distributions import PositiveSeconds, Seconds
from sim.errors import FieldProblem, UsageError

# PgBouncer's own fields, in the order its documentation gives them (doc/config.md).
PGBOUNCER_SETTINGS = (
    "pool_mode",
    "max_client_conn",
    "default_pool_size",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "max_db_connections",
    "server_connect_timeout",
    "server_login_retry",
    "query_wait_timeout",
)
MAX_POOLER_CONNECTIONS = 262_143  # no PostgreSQL server takes more (MAX_BACKENDS, 2^18 − 1)
UNMODELLED = (
    'pooler.kind = "pgbouncer": the model has no pooler rule yet; '
    "`startsim loadtest --via-pgbouncer` measures it (docs/loadtests.md#through-a-real-pgbouncer)"
)

PoolSize = Annotated[int, Field(ge=1, le=MAX_POOLER_CONNECTIONS)]


class Pooler(BaseModel):
    """``[pooler]``: none, or PgBouncer with its own settings (docs/scenario.md#pooler)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    kind: Literal["none", "pgbouncer"] = "none"
    # When a server connection goes back to the pool: at the client's disconnect, at the end of
    # each transaction, or of each statement.
    pool_mode: Literal["session", "transaction", "statement"] = "session"
    max_client_conn: PositiveInt = 100  # clients PgBouncer accepts; beyond, it refuses them
    default_pool_size: PoolSize = 20  # server connections per user/database pair
    reserve_pool_size: Annotated[int, Field(ge=0, le=MAX_POOLER_CONNECTIONS)] = 0  # 0: none
    reserve_pool_timeout: Seconds = 5.0  # a client waiting this long may use the reserve
    max_db_connections: Annotated[int, Field(ge=0, le=MAX_POOLER_CONNECTIONS)] = 0  # 0: no cap
    server_connect_timeout: PositiveSeconds = 15.0  # connect and login to the server
    server_login_retry: Seconds = 15.0  # after a failed server login: wait, refuse new clients
    query_wait_timeout: Seconds = 120.0  # a client's wait for a server; 0: no limit

    @model_validator(mode="after")
    def _only_with_pgbouncer(self) -> Pooler:
        if self.kind == "none":
            for name in PGBOUNCER_SETTINGS:
                if getattr(self, name) != Pooler.model_fields[name].default:
                    raise FieldProblem(
                        f"pooler.{name}",
                        getattr(self, name),
                        'only used with kind = "pgbouncer" (kind is "none"); '
                        'set kind = "pgbouncer" or remove it',
                    )
        return self

    @property
    def on(self) -> bool:
        """Whether the instances connect through a pooler."""
        return self.kind != "none"

    def settings(self) -> dict[str, str | int | float]:
        """PgBouncer's settings by their own names, as a campaign records them."""
        return {name: getattr(self, name) for name in PGBOUNCER_SETTINGS}


def refuse_unmodelled(pooler: Pooler) -> None:
    """Refuse to simulate a pooler the model has no rule for (exit 2, nothing written)."""
    if pooler.on:
        raise UsageError(UNMODELLED)
